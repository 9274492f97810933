"""Stage networks and the stage schedule (psgan_fast.stages)."""

import pytest
import torch

from psgan_fast.config import TrainConfig
from helpers.schedule import first_epoch, stage_for_epoch
from psgan_fast.stages import StageSchedule, build_discriminator, build_generator, stage_resolutions


def test_halving_rule():
    assert stage_resolutions(28) == [7, 14, 28]
    assert stage_resolutions(32) == [8, 16, 32]
    assert stage_resolutions(64, num_stages=4) == [8, 16, 32, 64]
    assert stage_resolutions(30, num_stages=1) == [30]
    with pytest.raises(ValueError, match="multiple of 4.*32"):
        stage_resolutions(30)
    with pytest.raises(ValueError):
        stage_resolutions(2)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3)])
def test_every_stage_has_the_right_shapes(size, channels):
    z = torch.randn(5, 16)
    for k, res in enumerate(stage_resolutions(size)):
        g = build_generator(k, image_size=size, channels=channels, latent_dim=16, width=16)
        d = build_discriminator(k, image_size=size, channels=channels, width=16)
        x = g(z)
        assert x.shape == (5, channels, res, res)
        assert x.abs().max() <= 1.0
        assert d(x).shape == (5,)


def test_next_stage_keeps_every_shared_name_and_shape():
    for k in range(2):
        for build in (build_generator, build_discriminator):
            old, new = build(k, width=16).state_dict(), build(k + 1, width=16).state_dict()
            unmapped = {n for n in old if n not in new}
            assert all(n.startswith(("to_image.", "from_image.")) for n in unmapped)
            for name in old.keys() - unmapped:
                assert old[name].shape == new[name].shape, name
            added = {n for n in new if n not in old}
            # exactly one new block plus the new image layer
            assert {n.split(".")[0] + "." + n.split(".")[1] for n in added} == (
                {f"up.{[7, 14, 28][k + 1]}", f"to_image.{[7, 14, 28][k + 1]}"}
                if build is build_generator else
                {f"down.{[7, 14, 28][k + 1]}", f"from_image.{[7, 14, 28][k + 1]}"})


def test_discriminator_scores_each_image_alone():
    d = build_discriminator(2, width=16).train()
    x = torch.randn(6, 1, 28, 28)
    y = x.clone()
    y[1:] = torch.randn(5, 1, 28, 28)
    assert torch.equal(d(x)[0], d(y)[0])  # no BatchNorm: others do not leak in


def test_default_capacity_is_dcgan_class():
    g, d = build_generator(2), build_discriminator(2)
    assert 1e5 <= sum(p.numel() for p in g.parameters()) <= 1e6
    assert 1e4 <= sum(p.numel() for p in d.parameters()) <= 1e6
    assert not any("spectral" in n or "weight_orig" in n for n, _ in d.named_parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())


def test_schedule_maps_epochs_to_stages():
    s = StageSchedule((2, 3, 5))
    assert [s.stage_for_epoch(e) for e in range(12)] == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert first_epoch(s, 1) == 2 and s.total_epochs == 10


def test_schedule_skips_stages_without_epochs():
    assert [stage_for_epoch(e, (0, 2, 3)) for e in range(5)] == [1, 1, 2, 2, 2]
    assert [stage_for_epoch(e, (2, 0, 1)) for e in range(4)] == [0, 0, 2, 2]
    # past the plan: the last stage that has epochs
    assert stage_for_epoch(9, (3, 2, 0)) == 1
    with pytest.raises(ValueError):
        first_epoch(StageSchedule((1, 0, 1)), 1)
    with pytest.raises(ValueError):
        StageSchedule((0, 0, 0))
    with pytest.raises(ValueError):
        StageSchedule((1, -1, 1))


def test_schedule_follows_the_config_split():
    cfg = TrainConfig(epochs=10, loss="ps")  # the default 20/30/50% split
    s = StageSchedule(cfg.resolved_stage_epochs())
    assert [s.stage_for_epoch(e) for e in range(10)] == [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    s = StageSchedule(TrainConfig(epochs=10).resolved_stage_epochs())  # the recommended loss's 10/10/80%
    assert [s.stage_for_epoch(e) for e in range(10)] == [0, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    cfg = TrainConfig(epochs=2)  # too few epochs: stage 0 skipped
    assert [StageSchedule(cfg.resolved_stage_epochs()).stage_for_epoch(e) for e in range(2)] == [1, 2]
