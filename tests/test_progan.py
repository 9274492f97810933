"""ProGAN baseline: growing, fade-in, its layers, the WGAN-GP loss, resume."""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from recipe_state import transplant
from psgan_fast.config import TrainConfig
from psgan_fast.models import build_recipe
from psgan_fast.models import progan as P
from psgan_fast.recipe import StepOutput

SMALL = {"width": 16, "latent_dim": 8}
SIZE = 12  # phases at 3, 6, 12: the same structure as 7, 14, 28, cheaper


def _recipe(stage_epochs=(1, 2, 2), steps_per_epoch=2, size=SIZE, **kw) -> P.ProGANRecipe:
    extra = dict(SMALL, **kw.pop("extra", {}))
    cfg = TrainConfig(model="progan", epochs=sum(stage_epochs), stage_epochs=stage_epochs,
                      extra=extra, **kw)
    return build_recipe(cfg, image_size=size, channels=1, steps_per_epoch=steps_per_epoch,
                        device=torch.device("cpu"))


def _real(batch=4, size=SIZE, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=g) * 2 - 1


def test_shapes_at_each_phase_for_mnist_size():
    torch.manual_seed(0)
    g, d = P.Generator(28, 1, 8, 16), P.Discriminator(28, 1, 16)
    z = torch.randn(4, 8)
    for phase, res in enumerate((7, 14, 28)):
        for alpha in (0.0, 0.5, 1.0):
            x = g(z, phase, alpha)
            assert x.shape == (4, 1, res, res)
            assert d(x, phase, alpha).shape == (4,)
    with pytest.raises(ValueError):
        P.phase_resolutions(30)


def test_recipe_resolutions_follow_the_phases():
    r = _recipe(size=28)
    seen = []
    for epoch in range(5):
        r.begin_epoch(epoch)
        seen.append((r.stage(), r.resolution()))
    assert seen == [(0, 7), (1, 14), (1, 14), (2, 28), (2, 28)]
    assert r.optimizers()["G0"].defaults["lr"] == 1e-3
    assert r.optimizers()["D"].defaults["betas"] == (0.0, 0.99)
    r = _recipe(stage_epochs=(0, 1, 3), size=28, lr=2e-4, betas=(0.5, 0.9))
    r.begin_epoch(0)
    assert (r.stage(), r.resolution(), r.alpha) == (1, 14, 1.0)  # first active phase: no fade
    assert r.optimizers()["G0"].defaults["lr"] == 2e-4
    assert r.optimizers()["G0"].defaults["betas"] == (0.5, 0.9)


def test_alpha_ramps_linearly_over_the_first_half_of_each_new_phase():
    r = _recipe(stage_epochs=(1, 2, 2), steps_per_epoch=2)  # fade: 2 epochs * 2 steps / 2 = 2
    alphas = []
    for epoch in range(5):
        r.begin_epoch(epoch)
        for _ in range(2):
            out = r.step(_real())
            alphas.append((r.stage(), out.extras["alpha"].item()))
    assert alphas == [(0, 1.0), (0, 1.0), (1, 0.0), (1, 0.5), (1, 1.0), (1, 1.0),
                      (2, 0.0), (2, 0.5), (2, 1.0), (2, 1.0)]
    r = _recipe(stage_epochs=(1, 4, 1), steps_per_epoch=3)  # fade over 6 steps
    r.begin_epoch(1)
    assert r.alpha == 0.0
    for k in range(1, 8):
        r._step_in_phase = k
        assert r.alpha == pytest.approx(min(1.0, k / 6))


def test_begin_epoch_on_a_fresh_recipe_resumes_any_epoch():
    for epoch, phase, alpha in [(0, 0, 1.0), (1, 1, 0.0), (2, 1, 0.5), (3, 1, 1.0), (4, 1, 1.0),
                                (5, 2, 0.0), (6, 2, 1.0), (9, 2, 1.0)]:
        r = _recipe(stage_epochs=(1, 4, 2), steps_per_epoch=4)  # phase-1 fade: 8 steps
        r.begin_epoch(epoch)
        assert (r.stage(), r.alpha) == (phase, alpha), epoch


def test_fade_in_blend_equals_the_formula_at_alpha_0_and_1():
    torch.manual_seed(0)
    g, d = P.Generator(SIZE, 1, 8, 16), P.Discriminator(SIZE, 1, 16)
    z = torch.randn(4, 8)
    old = g(z, 0)  # previous resolution's image
    new = g(z, 1, 1.0)  # the new block's image
    up = F.interpolate(old, scale_factor=2, mode="nearest")
    torch.testing.assert_close(g(z, 1, 0.0), up)
    torch.testing.assert_close(g(z, 1, 0.3), 0.7 * up + 0.3 * new)
    assert not torch.allclose(new, up)  # the blend is not trivially satisfied
    # D at alpha 0 sees exactly what the previous phase's D sees of the downsampled input.
    x = torch.randn(4, 1, 6, 6)
    torch.testing.assert_close(d(x, 1, 0.0), d(F.avg_pool2d(x, 2), 0))
    assert not torch.allclose(d(x, 1, 1.0), d(x, 1, 0.0))
    # Real images: up(down(x)) at alpha 0, the area-downsampled batch at alpha 1.
    r = _recipe()
    r.begin_epoch(1)
    real = _real(size=SIZE)
    area = F.interpolate(real, size=(6, 6), mode="area")
    blur = F.interpolate(F.avg_pool2d(area, 2), scale_factor=2, mode="nearest")
    torch.testing.assert_close(r._prepare_real(real, 0.0), blur)
    torch.testing.assert_close(r._prepare_real(real, 1.0), area)
    torch.testing.assert_close(r._prepare_real(real, 0.25), 0.75 * blur + 0.25 * area)


def test_minibatch_std_by_hand():
    x = torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 4.0]).view(4, 2, 1, 1)
    # Groups of 2 consecutive images: (img0, img1) = ((1, 3), (3, 3)) and
    # (img2, img3) = ((0, 0), (0, 4)). Group 0: feature stds 1 and 0 -> mean 0.5;
    # group 1: feature stds 0 and 2 -> mean 1.0.
    out = P.minibatch_std(x, group=2)
    assert out.shape == (4, 3, 1, 1)
    assert torch.equal(out[:, :2], x)
    torch.testing.assert_close(out[:, 2].flatten(), torch.tensor([0.5, 0.5, 1.0, 1.0]),
                               atol=1e-4, rtol=0)
    # Spatial maps: one value per group, repeated everywhere; groups never mix.
    y = torch.randn(6, 3, 4, 4)
    out = P.minibatch_std(y, group=4)  # 4 does not divide 6: groups of 3
    s = out[:, 3]
    assert torch.equal(s, s[:, :1, :1].expand_as(s))
    expected = y.view(2, 3, 3, 4, 4).std(dim=1, unbiased=False).mean(dim=(1, 2, 3))
    torch.testing.assert_close(s[:, 0, 0], expected.repeat_interleave(3), atol=1e-4, rtol=1e-4)


def test_equalized_learning_rate_scales_n01_weights_by_the_he_constant():
    torch.manual_seed(0)
    conv = P.EqualizedConv2d(16, 32, 3, padding=1)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(16 * 9))
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.05)  # N(0, 1) storage
    assert torch.equal(conv.bias, torch.zeros(32))
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1))
    lin = P.EqualizedLinear(50, 3, gain=1.0)
    assert lin.scale == pytest.approx(1 / math.sqrt(50))
    v = torch.randn(4, 50)
    torch.testing.assert_close(lin(v), v @ (lin.weight / math.sqrt(50)).t() + lin.bias)
    # What equalisation buys: the effective weights have He-init variance.
    assert (conv.weight * conv.scale).var().item() == pytest.approx(2 / (16 * 9), rel=0.1)


def test_pixel_norm():
    x = torch.randn(3, 8, 4, 4) * 5
    y = P.pixel_norm(x)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(3, 4, 4), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(P.pixel_norm(3 * x), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y / y.norm(dim=1, keepdim=True), x / x.norm(dim=1, keepdim=True))


def test_gradient_penalty_on_hand_checkable_critics():
    real, fake = torch.randn(5, 1, 3, 3), torch.randn(5, 1, 3, 3)
    # Linear critic: the gradient is w for every x_hat, so the penalty is (|w| - 1)^2.
    w = torch.randn(1, 1, 3, 3)
    w = (3 * w / w.norm()).requires_grad_(True)
    gp = P.gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake)
    torch.testing.assert_close(gp, torch.tensor(4.0))
    gp.backward()  # create_graph: the penalty trains the critic; d/dw = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(w.grad, 2 * (3 - 1) * w.detach() / 3)
    # Quadratic critic 0.5 |x|^2: the gradient is x_hat itself.
    eps = torch.rand(5, 1, 1, 1)
    x_hat = real + eps * (fake - real)
    expected = (x_hat.flatten(1).norm(dim=1) - 1).square().mean()
    gp = P.gradient_penalty(lambda x: 0.5 * x.square().flatten(1).sum(1), real, fake, eps)
    torch.testing.assert_close(gp, expected)


def test_steps_give_finite_losses_and_move_weights_without_host_syncs(monkeypatch):
    r = _recipe(stage_epochs=(1, 1, 1), steps_per_epoch=2)
    r.begin_epoch(1)  # a fading phase: every path is exercised
    before = {k: copy.deepcopy(m.state_dict()) for k, m in r.modules().items()}
    for attr in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, attr)

        def guarded(self, *args, _original=original, _attr=attr):
            if sys._getframe(1).f_code.co_filename == P.__file__:
                raise AssertionError(f"Tensor.{_attr} called inside the recipe")
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, attr, guarded)
    outs = [r.step(_real(seed=i)) for i in range(2)]
    monkeypatch.undo()
    for out in outs:
        assert isinstance(out, StepOutput)
        assert out.d_loss.shape == () and out.g_loss.shape == (1,)
        assert not out.d_loss.requires_grad
        assert torch.isfinite(out.d_loss) and torch.isfinite(out.g_loss).all()
        assert {"gp", "drift", "wdist", "alpha"} <= set(out.extras)
    for name, m in r.modules().items():
        after = m.state_dict()
        assert any(not torch.equal(after[k], before[name][k]) for k in after), name
    # Unused blocks (the 12x12 ones in phase 1) have not moved.
    assert torch.equal(r.G.to_rgb[2].weight, before["G0"]["to_rgb.2.weight"])
    assert torch.equal(r.D.from_rgb[2].weight, before["D"]["from_rgb.2.weight"])


def test_d_loss_is_wgan_gp_with_drift():
    """Recompute the step's D loss from its logged parts."""
    r = _recipe()
    r.begin_epoch(0)
    out = r.step(_real())
    e = out.extras
    # d_fake - d_real = -wdist; the loss adds 10 * gp and 0.001 * drift.
    torch.testing.assert_close(out.d_loss, -e["wdist"] + 10 * e["gp"] + 0.001 * e["drift"])
    assert e["gp"] > 0 and e["drift"] > 0


def test_adam_state_resets_at_phase_start_and_at_fade_end():
    r = _recipe(stage_epochs=(1, 2, 2), steps_per_epoch=2)
    r.begin_epoch(0)
    r.step(_real())
    assert len(r.opt_g.state) > 0
    r.begin_epoch(1)  # new phase: state cleared
    assert len(r.opt_g.state) == 0 and len(r.opt_d.state) == 0
    r.step(_real())  # alpha 0 -> 0.5
    assert len(r.opt_g.state) > 0
    r.step(_real())  # alpha 0.5, the fade ends after this step
    assert r.alpha == 1.0 and len(r.opt_g.state) == 0


def test_generate_returns_clamped_images_at_the_current_resolution():
    r = _recipe(stage_epochs=(1, 2, 2))
    r.begin_epoch(1)
    z = torch.randn(3, 8) * 50  # large inputs: the linear output leaves [-1, 1]
    rng = torch.get_rng_state()
    imgs = r.generate(z)
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(imgs) == 1 and imgs[0].shape == (3, 1, 6, 6)
    assert imgs[0].min() >= -1 and imgs[0].max() <= 1
    assert r.G.training


def test_bf16_step_runs():
    r = _recipe(precision="bf16")
    r.begin_epoch(1)
    out = r.step(_real())
    assert torch.isfinite(out.d_loss) and out.d_loss.dtype == torch.float32


def test_resume_mid_fade_is_exact():
    a = _recipe(stage_epochs=(1, 2, 2), steps_per_epoch=4)  # phase-1 fade: 4 steps
    for epoch in (0, 1):
        a.begin_epoch(epoch)
        for i in range(2 if epoch else 1):
            a.step(_real(seed=i))
    b = _recipe(stage_epochs=(1, 2, 2), steps_per_epoch=4)
    b.begin_epoch(1)
    state = transplant(a, b)
    assert state["phase"] == 1 and state["step_in_phase"] == 2 and state["alpha"] == 0.5
    assert b.state() == a.state()
    for i in range(3):  # crosses the end of the fade (and its optimiser reset)
        torch.manual_seed(100 + i)
        out_a = a.step(_real(seed=10 + i))
        torch.manual_seed(100 + i)
        out_b = b.step(_real(seed=10 + i))
        assert torch.equal(out_a.d_loss, out_b.d_loss) and torch.equal(out_a.g_loss, out_b.g_loss)
        assert torch.equal(out_a.extras["alpha"], out_b.extras["alpha"])
