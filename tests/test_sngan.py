"""SNGAN baseline recipe: contract, spectral norm placement, losses, resume."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from recipe_state import transplant
from psgan_fast.config import TrainConfig
from psgan_fast.models import build_recipe
from psgan_fast.models import sngan as sngan_module
from psgan_fast.models.sngan import Discriminator, Generator, SNGANRecipe
from psgan_fast.recipe import StepOutput

SMALL = {"width": 16, "latent_dim": 8}


def forbid_host_reads(monkeypatch, filename: str) -> None:
    """Make .item() / .tolist() / bool() / float() of a tensor raise when called
    from `filename` (the recipe must not synchronise with the device; torch's
    own CPU-side reads, e.g. Adam's step counter, are fine)."""
    for attr in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, attr)

        def guarded(self, *args, _original=original, _attr=attr):
            if sys._getframe(1).f_code.co_filename == filename:
                raise AssertionError(f"Tensor.{_attr} called inside the recipe")
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, attr, guarded)


def _recipe(model="sngan", size=28, channels=1, **kw) -> SNGANRecipe:
    extra = dict(SMALL, **kw.pop("extra", {}))
    cfg = TrainConfig(model=model, epochs=2, extra=extra, **kw)
    return build_recipe(cfg, image_size=size, channels=channels, steps_per_epoch=5,
                        device=torch.device("cpu"))


def _real(batch=6, size=28, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=g) * 2 - 1


def _sn_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_registry_builds_both_variants_with_and_without_spectral_norm():
    sn, nosn = _recipe("sngan"), _recipe("sngan-nosn")
    assert sn.name == "sngan" and nosn.name == "sngan-nosn"
    layers = _sn_layers(sn.D)
    assert len(layers) == 6 and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in nosn.D.modules())
    assert not any(parametrize.is_parametrized(m) for m in sn.G.modules())  # D only
    # Identical minus spectral norm: same seed, same initial weights everywhere.
    for (k, a), (k2, b) in zip(sn.G.state_dict().items(), nosn.G.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    for m_sn, m_plain in zip(_sn_layers(sn.D), _sn_layers(nosn.D)):
        assert torch.equal(m_sn.parametrizations.weight.original, m_plain.weight)
        assert torch.equal(m_sn.bias, m_plain.bias)


def test_discriminator_layers_are_spectrally_normalised():
    r = _recipe()
    for _ in range(40):  # each training forward runs one power iteration
        r.D(_real(2))
    r.D.eval()  # read the weights without iterating further
    for m in _sn_layers(r.D):
        w = m.weight.detach().flatten(1)
        # Power iteration converges slowly when the top singular values are close.
        assert torch.linalg.matrix_norm(w, 2).item() == pytest.approx(1.0, rel=1e-2)


def test_shapes_generalise_to_other_sizes_and_channels():
    g = Generator(image_size=32, channels=3, latent_dim=8, width=16)
    d = Discriminator(image_size=32, channels=3, width=16)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1
    assert d(x).shape == (2,)
    with pytest.raises(ValueError):
        Generator(image_size=30)


def test_optimiser_defaults_are_the_papers_and_cfg_overrides_them():
    r = _recipe()
    for opt in r.optimizers().values():
        assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.5, 0.999)
    r = _recipe(lr=1e-3, betas=(0.0, 0.9))
    for opt in r.optimizers().values():
        assert opt.defaults["lr"] == 1e-3 and opt.defaults["betas"] == (0.0, 0.9)
    assert set(r.optimizers()) == set(r.modules()) == {"G0", "D"}
    assert r.num_generators == 1 and r.latent_dim == 8 and r.resolution() == 28


def test_rejects_several_generators_and_unknown_loss():
    with pytest.raises(ValueError):
        _recipe(generators=2)
    with pytest.raises(ValueError):
        _recipe(extra={"sngan_loss": "wgan"})


@pytest.mark.parametrize("model", ["sngan", "sngan-nosn"])
def test_steps_give_finite_detached_losses_and_move_weights(model, monkeypatch):
    r = _recipe(model)
    r.begin_epoch(0)
    before = {k: copy.deepcopy(m.state_dict()) for k, m in r.modules().items()}

    forbid_host_reads(monkeypatch, sngan_module.__file__)
    outs = [r.step(_real(seed=i)) for i in range(2)]
    monkeypatch.undo()
    for out in outs:
        assert isinstance(out, StepOutput)
        assert out.d_loss.shape == () and out.g_loss.shape == (1,)
        assert not out.d_loss.requires_grad and not out.g_loss.requires_grad
        assert torch.isfinite(out.d_loss) and torch.isfinite(out.g_loss).all()
        assert set(out.extras) == {"d_real", "d_fake"}
    for name, m in r.modules().items():
        after = m.state_dict()
        moved = [k for k in after if after[k].is_floating_point()
                 and not torch.equal(after[k], before[name][k])]
        assert moved, f"{name} did not change"
    if model == "sngan":
        assert any(k.endswith("._u") for k in moved)  # the power iteration ran
    assert all(p.requires_grad for p in r.D.parameters())  # frozen only during G's update


class _ConstG(nn.Module):
    def __init__(self, img):
        super().__init__()
        self.img = img
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, z):
        return self.img + self.p


class _MeanD(nn.Module):
    """logit = 2 * mean pixel (its parameter is not in the recipe's optimiser, so
    it stays 2 and the expected losses are known)."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.s * x.flatten(1).mean(1)


@pytest.mark.parametrize("loss", ["hinge", "bce"])
def test_losses_are_the_papers_formulas(loss):
    r = _recipe(extra={"sngan_loss": loss})
    fake = torch.linspace(-1, 1, 6).view(6, 1, 1, 1).expand(6, 1, 28, 28).contiguous()
    real = _real()
    r.G, r.D = _ConstG(fake), _MeanD()
    out = r.step(real)
    dr, df = 2 * real.flatten(1).mean(1), 2 * fake.flatten(1).mean(1)
    if loss == "hinge":
        d_exp = F.relu(1 - dr).mean() + F.relu(1 + df).mean()
        g_exp = -df.mean()
    else:
        d_exp = F.softplus(-dr).mean() + F.softplus(df).mean()
        g_exp = F.softplus(-df).mean()
    torch.testing.assert_close(out.d_loss, d_exp)
    torch.testing.assert_close(out.g_loss, g_exp.reshape(1))
    torch.testing.assert_close(out.extras["d_real"], dr.mean())


def test_generate_is_eval_mode_and_leaves_training_state_alone():
    r = _recipe()
    r.step(_real())
    bn = {k: v.clone() for k, v in r.G.state_dict().items() if "running" in k or "num_batches" in k}
    z = torch.randn(5, 8)
    rng = torch.get_rng_state()
    imgs = r.generate(z)
    assert len(imgs) == 1 and imgs[0].shape == (5, 1, 28, 28)
    assert imgs[0].min() >= -1 and imgs[0].max() <= 1
    assert r.G.training and r.D.training
    assert all(torch.equal(r.G.state_dict()[k], v) for k, v in bn.items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(r.generate(z)[0], imgs[0])  # deterministic given z


def test_bf16_autocast_step_runs():
    r = _recipe(precision="bf16")
    out = r.step(_real())
    assert torch.isfinite(out.d_loss) and out.d_loss.dtype == torch.float32
    assert r.generate(torch.randn(2, 8))[0].dtype == torch.float32


def test_resume_from_checkpointed_tensors_is_exact():
    a = _recipe()
    a.begin_epoch(0)
    for i in range(2):
        a.step(_real(seed=i))
    b = _recipe()
    b.begin_epoch(1)
    transplant(a, b)
    assert b.state() == a.state() == {"steps": 2}
    torch.manual_seed(123)
    out_a = a.step(_real(seed=9))
    torch.manual_seed(123)
    out_b = b.step(_real(seed=9))
    assert torch.equal(out_a.d_loss, out_b.d_loss) and torch.equal(out_a.g_loss, out_b.g_loss)
