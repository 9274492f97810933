"""--g-ema: each generator's moving average is sampled, evaluated and saved,
the training itself is bit for bit the same, and a resumed run keeps it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import psgan_fast
from psgan_fast import checkpoint as ckpt_mod
from psgan_fast.config import ConfigError, TrainConfig, validate
from psgan_fast.ema import SUFFIX, GeneratorEMA, beta_for

TINY = {"width": 8, "latent_dim": 8}


def small(tmp_path, name, **kw) -> TrainConfig:
    base = dict(generators=2, epochs=3, stage_epochs=(1, 1, 1), limit_batches=3, log_every=1, seed=5,
                out=str(tmp_path / name), progress=False, extra=dict(TINY), deterministic=True)
    return TrainConfig(**{**base, **kw})


def test_beta_is_a_half_life_in_thousands_of_images():
    b = beta_for(10, 64)
    assert b ** (10_000 / 64) == pytest.approx(0.5)
    assert beta_for(1, 1000) == pytest.approx(0.5) and beta_for(1, 500) == pytest.approx(0.5 ** 0.5)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="half-life"):
            beta_for(bad, 64)
    with pytest.raises(ConfigError, match="--g-ema"):
        validate(TrainConfig(g_ema=-1.0))


def test_update_is_a_lerp_and_a_new_network_restarts_its_average():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = GeneratorEMA(0.75)
    assert ema.track({"G0": g, "D": nn.Linear(2, 2)}) == ["G0"]  # D has no average
    start = {k: v.clone() for k, v in g.state_dict().items()}
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    g(torch.randn(5, 3))  # moves the BatchNorm statistics
    ema.update({"G0": g})
    avg, live = ema.shadows["G0"].state_dict(), g.state_dict()
    for k, v in live.items():
        if v.is_floating_point():
            assert torch.allclose(avg[k], 0.75 * start[k] + 0.25 * v), k
        else:
            assert torch.equal(avg[k], v), k
    assert ema.track({"G0": g}) == []                    # the same network: the average goes on
    g2 = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert ema.track({"G0": g2}) == ["G0"]               # a new one (a stage switch): it restarts
    assert all(torch.equal(a, b) for a, b in zip(ema.shadows["G0"].state_dict().values(),
                                                  g2.state_dict().values()))


def test_applied_swaps_the_averages_in_and_puts_the_live_weights_back():
    torch.manual_seed(1)
    g = nn.Linear(3, 2)
    ema = GeneratorEMA(0.5)
    ema.track({"G0": g})
    before = {k: v.clone() for k, v in g.state_dict().items()}
    with torch.no_grad():
        g.weight.mul_(3)
    ema.update({"G0": g})
    live = {k: v.clone() for k, v in g.state_dict().items()}
    with ema.applied({"G0": g}):
        assert torch.allclose(g.weight, 0.5 * before["weight"] + 0.5 * live["weight"])
    assert all(torch.equal(g.state_dict()[k], live[k]) for k in live)
    with pytest.raises(RuntimeError, match="boom"), ema.applied({"G0": g}):
        raise RuntimeError("boom")
    assert all(torch.equal(g.state_dict()[k], live[k]) for k in live)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, mnist_train):
    root = tmp_path_factory.mktemp("ema")
    return (psgan_fast.train(small(root, "plain")), psgan_fast.train(small(root, "ema", g_ema=0.1)))


def test_the_training_is_unchanged_and_the_averages_are_saved_and_loaded(pair):
    plain, ema = pair
    a = load_file(str(ckpt_mod.latest(plain) / "weights.safetensors"))
    b = load_file(str(ckpt_mod.latest(ema) / "weights.safetensors"))
    assert set(b) - set(a) == {k.replace("G0.", "G0" + SUFFIX + ".", 1) for k in a if k.startswith("G0.")} | {
        k.replace("G1.", "G1" + SUFFIX + ".", 1) for k in a if k.startswith("G1.")}
    assert all(torch.equal(a[k], b[k]) for k in a)  # G0, G1 and D trained exactly as without
    z = torch.randn(6, TINY["latent_dim"], generator=torch.Generator().manual_seed(0))
    live_plain = [g(z) for g in psgan_fast.load_generators(plain)]
    live = [g(z) for g in psgan_fast.load_generators(ema, ema=False)]
    avg = [g(z) for g in psgan_fast.load_generators(ema)]  # the default: the averages
    assert all(torch.equal(x, y) for x, y in zip(live_plain, live))
    assert all(not torch.equal(x, y) for x, y in zip(live, avg))
    with pytest.raises(ckpt_mod.CheckpointError, match="no moving averages"):
        psgan_fast.load_generators(plain, ema=True)


def test_a_resumed_run_keeps_its_averages_exactly(tmp_path, pair, mnist_train):
    _, full = pair
    part = psgan_fast.train(small(tmp_path, "part", g_ema=0.1, max_steps=5))  # stops inside the 14 px epoch
    resumed = psgan_fast.train(TrainConfig(resume=str(part), progress=False))
    a = load_file(str(ckpt_mod.latest(full) / "weights.safetensors"))
    b = load_file(str(ckpt_mod.latest(resumed) / "weights.safetensors"))
    assert a.keys() == b.keys() and any(SUFFIX in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
