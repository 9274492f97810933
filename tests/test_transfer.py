"""Algorithm 1 (psgan_fast.transfer) on hand-made tensors and stage networks."""

import logging

import pytest
import torch
from torch import nn

from psgan_fast.stages import build_discriminator, build_generator
from psgan_fast.transfer import mix_state_dicts, mix_weights


def handmade():
    old = {
        "w": torch.tensor([1.0, 2.0, -4.0]),
        "count": torch.tensor(7),
        "flag": torch.tensor([True, False]),
        "resized": torch.ones(2, 3),
        "only_old": torch.zeros(1),
    }
    new = {
        "w": torch.tensor([3.0, 0.0, 4.0]),
        "count": torch.tensor(0),
        "flag": torch.tensor([False, False]),
        "resized": torch.full((3, 3), 5.0),
        "only_new": torch.full((2,), 9.0),
    }
    return old, new


def test_mixes_matching_floats_by_the_paper_formula():
    old, new = handmade()
    mixed, report = mix_state_dicts(old, new, 0.1)
    expected = [0.9 * 1.0 + 0.1 * 3.0, 0.9 * 2.0 + 0.1 * 0.0, 0.9 * -4.0 + 0.1 * 4.0]
    torch.testing.assert_close(mixed["w"], torch.tensor(expected))
    assert report.mixed == ["w"]


def test_integer_and_bool_buffers_are_copied_from_old():
    old, new = handmade()
    mixed, report = mix_state_dicts(old, new, 0.1)
    assert mixed["count"].item() == 7 and mixed["count"].dtype == new["count"].dtype
    assert mixed["flag"].tolist() == [True, False]
    assert sorted(report.copied) == ["count", "flag"]


def test_unmatched_names_and_shapes_keep_new_and_are_reported():
    old, new = handmade()
    mixed, report = mix_state_dicts(old, new, 0.1)
    assert list(mixed) == list(new)  # exactly new's names, new's order
    torch.testing.assert_close(mixed["resized"], new["resized"])
    torch.testing.assert_close(mixed["only_new"], new["only_new"])
    reasons = dict(report.kept_new)
    assert reasons["only_new"] == "missing in old"
    assert reasons["resized"].startswith("shape mismatch") and "(2, 3)" in reasons["resized"]
    assert report.dropped_old == ["only_old"]
    text = "\n".join(report.lines())
    assert "only_new: missing in old" in text and "only_old: missing in new" in text


def test_alpha_zero_gives_old_and_alpha_one_gives_new_exactly():
    old, new = handmade()
    m0, _ = mix_state_dicts(old, new, 0.0)
    m1, _ = mix_state_dicts(old, new, 1.0)
    assert torch.equal(m0["w"], old["w"])
    assert torch.equal(m1["w"], new["w"])


def test_inputs_are_not_modified_and_bad_alpha_is_rejected():
    old, new = handmade()
    before = {k: v.clone() for k, v in new.items()}
    mixed, _ = mix_state_dicts(old, new, 0.5)
    mixed["only_new"].add_(1)  # the result does not alias the input
    for k in new:
        assert torch.equal(new[k], before[k])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            mix_state_dicts(old, new, bad)


def test_low_precision_tensors_mix_in_fp32_and_keep_their_dtype():
    old = {"w": torch.tensor([1.0, 3.0], dtype=torch.bfloat16)}
    new = {"w": torch.tensor([2.0, 5.0], dtype=torch.bfloat16)}
    mixed, _ = mix_state_dicts(old, new, 0.25)
    assert mixed["w"].dtype == torch.bfloat16
    torch.testing.assert_close(mixed["w"].float(), torch.tensor([1.25, 3.5]))


def test_mix_weights_loads_into_new_in_place_and_logs(caplog):
    torch.manual_seed(0)
    old, new = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    old(torch.randn(8, 3))
    old(torch.randn(8, 3))  # num_batches_tracked = 2, running stats moved
    weight = new[0].weight
    expected = 0.9 * old[0].weight.detach() + 0.1 * new[0].weight.detach()
    expected_rm = 0.9 * old[1].running_mean + 0.1 * new[1].running_mean
    with caplog.at_level(logging.INFO, logger="psgan_fast.transfer"):
        out, report = mix_weights(old, new, alpha=0.1)
    assert out is new and new[0].weight is weight  # same parameter object, new values
    torch.testing.assert_close(new[0].weight.detach(), expected)
    torch.testing.assert_close(new[1].running_mean, expected_rm)
    assert new[1].num_batches_tracked.item() == 2
    assert "1.num_batches_tracked" in report.copied
    assert any("mixed" in r.message for r in caplog.records)


def test_mix_weights_accepts_a_state_dict():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    expected = 0.5 * a.weight.detach() + 0.5 * b.weight.detach()
    mix_weights(a.state_dict(), b, alpha=0.5)
    torch.testing.assert_close(b.weight.detach(), expected)


def test_stage_switch_maps_shared_layers_and_reports_the_rest():
    g0, g1 = build_generator(0, width=16, latent_dim=8), build_generator(1, width=16, latent_dim=8)
    stem_old = g0.stem["fc"].weight.detach().clone()
    stem_new = g1.stem["fc"].weight.detach().clone()
    _, report = mix_weights(g0, g1, alpha=0.1)
    torch.testing.assert_close(g1.stem["fc"].weight.detach(), 0.9 * stem_old + 0.1 * stem_new)
    kept = {name for name, _ in report.kept_new}
    assert {"to_image.14.weight", "to_image.14.bias", "up.14.0.weight"} <= kept
    assert all(name.startswith(("to_image.", "up.14.")) for name in kept)
    assert set(report.dropped_old) == {"to_image.7.weight", "to_image.7.bias"}

    d1, d2 = build_discriminator(1, width=16), build_discriminator(2, width=16)
    _, report = mix_weights(d1, d2, alpha=0.1)
    assert "down.14.weight" in report.mixed and "head.fc.weight" in report.mixed
    kept = {name for name, _ in report.kept_new}
    assert kept == {"from_image.28.weight", "from_image.28.bias", "down.28.weight", "down.28.bias"}
