"""PSGANRecipe end to end on tiny networks and random data."""

import copy
import sys

import pytest
import torch

from psgan_fast.config import TrainConfig
from psgan_fast.models import build_recipe
from psgan_fast.models.psgan import PSGANRecipe


CPU = torch.device("cpu")
EXTRA = {"width": 16, "latent_dim": 16}


def make(n=2, stage_epochs=(1, 1, 1), **kw):
    cfg = TrainConfig(generators=n, stage_epochs=stage_epochs, seed=3, extra=dict(EXTRA), **kw)
    return PSGANRecipe(cfg, image_size=28, channels=1, steps_per_epoch=4, device=CPU)


def real_batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 28, 28, generator=g) * 2 - 1


def snapshot(recipe):
    return {name: copy.deepcopy(m.state_dict()) for name, m in recipe.modules().items()}


def test_registry_builds_it_and_contract_values():
    cfg = TrainConfig(generators=3, stage_epochs=(1, 1, 1), extra=dict(EXTRA))
    r = build_recipe(cfg, image_size=28, channels=1, steps_per_epoch=4, device=CPU)
    assert isinstance(r, PSGANRecipe) and r.num_generators == 3 and r.latent_dim == 16
    assert set(r.modules()) == set(r.optimizers()) == {"G0", "G1", "G2", "D"}
    opt = r.optimizers()["G1"]
    # lr: the model's (models.RECIPES); betas: the default update rule's own (R3GAN's (0, 0.99))
    assert opt.param_groups[0]["lr"] == 2e-4 and opt.param_groups[0]["betas"] == (0.0, 0.99)
    assert r.state()["stage"] == 0 and r.resolution() == 7


def test_steps_train_at_the_stage_resolution_and_move_weights():
    torch.manual_seed(0)
    r = make()
    r.begin_epoch(0)
    before = snapshot(r)
    for i in range(3):
        out = r.step(real_batch(seed=i))
    assert out.d_loss.shape == () and out.g_loss.shape == (2,)
    assert torch.isfinite(out.d_loss) and torch.isfinite(out.g_loss).all()
    assert not out.d_loss.requires_grad and not out.g_loss.requires_grad
    # Algorithm 2's three cases (shares of the groups), and the default's mode-seeking term
    assert set(out.extras) == {"case_real", "case_fake1", "case_fake2", "mode_seek"}
    assert sum(out.extras[k].item() for k in ("case_real", "case_fake1", "case_fake2")) == pytest.approx(1.0)
    assert out.extras["mode_seek"].item() > 0
    after = snapshot(r)
    for name in ("G0", "G1", "D"):
        assert not torch.equal(before[name]["head.fc.weight" if name == "D" else "stem.fc.weight"],
                               after[name]["head.fc.weight" if name == "D" else "stem.fc.weight"])
    assert r.modules()["G0"](torch.randn(2, 16)).shape == (2, 1, 7, 7)


def test_step_does_not_synchronise(monkeypatch):
    # No .item()/.tolist() from psgan_fast's own code during a step (torch's
    # CPU Adam reads its CPU step counter with .item(); that is no device sync).
    r = make()
    r.begin_epoch(0)
    calls = []
    for name in ("item", "tolist"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, _name=name, **kw):
            caller = sys._getframe(1).f_code.co_filename
            if "psgan_fast" in caller and "tests" not in caller:
                calls.append((_name, caller))
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    r.step(real_batch())
    assert calls == []


def test_stage_switch_mixes_weights_by_algorithm_1():
    torch.manual_seed(0)
    r = make(alpha=0.25)
    r.begin_epoch(0)
    for i in range(2):
        r.step(real_batch(seed=i))
    old = snapshot(r)
    rng = torch.get_rng_state()
    lines = r.begin_epoch(1)
    assert torch.equal(rng, torch.get_rng_state())  # building a stage leaves the global RNG alone
    assert r.stage() == 1 and r.resolution() == 14
    assert any("stage switch 0 -> 1" in line for line in lines)
    assert any("to_image.14.weight: missing in old" in line for line in lines)

    fresh_g1 = r._make(1, 1).state_dict()  # what stage 1's G1 was initialised to
    fresh_d = r._make(1, 2).state_dict()
    new = snapshot(r)
    for key in ("stem.fc.weight", "stem.bn.running_var"):
        torch.testing.assert_close(new["G1"][key], 0.75 * old["G1"][key] + 0.25 * fresh_g1[key])
    torch.testing.assert_close(new["D"]["head.conv.weight"],
                               0.75 * old["D"]["head.conv.weight"] + 0.25 * fresh_d["head.conv.weight"])
    torch.testing.assert_close(new["G1"]["to_image.14.weight"], fresh_g1["to_image.14.weight"])
    assert new["G1"]["stem.bn.num_batches_tracked"] == old["G1"]["stem.bn.num_batches_tracked"] == 2
    assert all(not opt.state for opt in r.optimizers().values())  # optimisers restarted
    out = r.step(real_batch())
    assert torch.isfinite(out.d_loss) and out.g_loss.shape == (2,)
    assert r.begin_epoch(1) == []  # same stage: nothing to do


def test_generate_is_eval_mode_and_leaves_training_state_alone():
    r = make(n=3)
    r.begin_epoch(1)
    r.step(real_batch())
    state = snapshot(r)
    flags = {k: m.training for k, m in r.modules().items()}
    z = torch.randn(5, 16)
    rng = torch.get_rng_state()
    imgs = r.generate(z)
    assert len(imgs) == 3
    for img in imgs:
        assert img.shape == (5, 1, 14, 14) and img.min() >= -1 and img.max() <= 1
    assert {k: m.training for k, m in r.modules().items()} == flags
    assert torch.equal(rng, torch.get_rng_state())
    for name, sd in snapshot(r).items():
        for k, v in sd.items():
            assert torch.equal(v, state[name][k]), (name, k)
    # eval mode: an image does not depend on the rest of the batch
    z = torch.randn(4, 16)
    torch.testing.assert_close(r.generate(z[:1])[0], r.generate(z)[0][:1])
    r.modules()["G0"].eval()
    r.generate(z)
    assert not r.modules()["G0"].training and r.modules()["G1"].training


@pytest.mark.parametrize("kw", [{"precision": "bf16"}, {"loss": "bce"}, {"parallel": "fused"},
                                {"parallel": "streams"}])
def test_variants_train(kw):
    torch.manual_seed(0)
    r = make(stage_epochs=(0, 0, 1), **kw)
    r.begin_epoch(0)
    assert r.resolution() == 28
    for i in range(2):
        out = r.step(real_batch(seed=i))
    assert torch.isfinite(out.d_loss) and torch.isfinite(out.g_loss).all()
    assert all(img.dtype == torch.float32 for img in r.generate(torch.randn(2, 16)))
    torch.testing.assert_close(r.generate_one(torch.ones(2, 16), 1), r.generate(torch.ones(2, 16))[1])


def test_fused_and_sequential_recipes_agree():
    results = []
    for mode in ("sequential", "fused"):
        torch.manual_seed(0)
        r = make(parallel=mode)
        r.begin_epoch(0)
        out = r.step(real_batch())
        results.append((out, snapshot(r)))
    (a, sa), (b, sb) = results
    torch.testing.assert_close(a.d_loss, b.d_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.g_loss, b.g_loss, rtol=1e-4, atol=1e-5)
    for name in sa:
        for k in sa[name]:
            torch.testing.assert_close(sa[name][k], sb[name][k], rtol=1e-3, atol=1e-4, msg=f"{name}.{k}")


def checkpoint(r):
    return {"state": r.state(), "modules": snapshot(r),
            "optim": {k: copy.deepcopy(o.state_dict()) for k, o in r.optimizers().items()},
            "rng": torch.get_rng_state()}


def restore(r, ckpt):
    r.load_state(ckpt["state"])
    for name, m in r.modules().items():
        m.load_state_dict(ckpt["modules"][name])
    for name, o in r.optimizers().items():
        o.load_state_dict(ckpt["optim"][name])
    torch.set_rng_state(ckpt["rng"])


@pytest.mark.parametrize("second_begin", [True, False])
def test_resume_across_a_stage_switch_is_exact(second_begin):
    torch.manual_seed(0)
    a = make()
    a.begin_epoch(0)
    a.step(real_batch(seed=0))
    ckpt = checkpoint(a)  # end of epoch 0
    a.begin_epoch(1)
    want = [a.step(real_batch(seed=s)) for s in (1, 2)]

    b = make()
    assert b.begin_epoch(1) and b.stage() == 1  # a fresh recipe builds stage 1 directly
    restore(b, ckpt)
    assert b.stage() == 0  # the checkpoint's stage
    if second_begin:
        b.begin_epoch(1)
    got = [b.step(real_batch(seed=s)) for s in (1, 2)]  # otherwise step switches itself
    assert b.stage() == 1
    for x, y in zip(want, got):
        assert torch.equal(x.d_loss, y.d_loss) and torch.equal(x.g_loss, y.g_loss)
    for name, sd in snapshot(a).items():
        for k, v in sd.items():
            assert torch.equal(v, snapshot(b)[name][k])


def test_fresh_recipe_builds_a_later_stage_directly():
    r = make(stage_epochs=(1, 1, 2))
    lines = r.begin_epoch(3)
    assert r.stage() == 2 and r.resolution() == 28
    assert not any("transfer" in line for line in lines)
    out = r.step(real_batch())
    assert torch.isfinite(out.d_loss)
    assert r.generate(torch.randn(2, 16))[0].shape == (2, 1, 28, 28)


def test_loading_state_before_begin_epoch_keeps_the_loaded_weights():
    torch.manual_seed(0)
    a = make()
    a.begin_epoch(0)
    a.step(real_batch())
    ckpt = checkpoint(a)
    b = make()
    restore(b, ckpt)           # a trainer that loads first ...
    lines = b.begin_epoch(1)   # ... then begins the next epoch: a real switch
    a.begin_epoch(1)
    assert any("stage switch 0 -> 1" in line for line in lines)
    for name, sd in snapshot(a).items():
        for k, v in sd.items():
            assert torch.equal(v, snapshot(b)[name][k])
    assert "staying at stage 1" in b.begin_epoch(0)[0]  # stages never go back
    assert b.stage() == 1


def test_channels_last_does_not_change_results():
    results = []
    for cl in (False, True):
        torch.manual_seed(0)
        cfg = TrainConfig(generators=2, stage_epochs=(0, 1, 0), extra={**EXTRA, "channels_last": cl})
        r = PSGANRecipe(cfg, image_size=28, channels=1, steps_per_epoch=4, device=CPU)
        r.begin_epoch(0)
        results.append([r.step(real_batch(seed=s)) for s in range(2)])
    for a, b in zip(*results):
        torch.testing.assert_close(a.d_loss, b.d_loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.g_loss, b.g_loss, rtol=1e-4, atol=1e-5)
