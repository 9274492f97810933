"""Running N generators (psgan_fast.parallel): fused == sequential, forward
and gradients; BatchNorm stays per generator; the streams fallback."""

import logging

import pytest
import torch

import psgan_fast.parallel as parallel
from psgan_fast.parallel import ParallelGenerators, resolve_mode
from psgan_fast.stages import build_generator


LATENT = 16


def make_gens(n, stage=1, seed=0):
    torch.manual_seed(seed)
    return [build_generator(stage, latent_dim=LATENT, width=16).train() for _ in range(n)]


def run(mode, n, z, stage=1, weights=None):
    """Fakes, each generator's grads and buffers after one forward+backward."""
    gens = make_gens(n, stage)
    outs = ParallelGenerators(gens, mode)(z)
    weights = weights or [float(k + 1) for k in range(n)]
    sum(w * (o ** 2).sum() for w, o in zip(weights, outs)).backward()
    grads = [{k: p.grad.clone() for k, p in g.named_parameters()} for g in gens]
    bufs = [{k: b.clone() for k, b in g.named_buffers()} for g in gens]
    return outs, grads, bufs


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fused_matches_sequential_forward_gradients_and_running_stats(n):
    z = torch.randn(6, LATENT)
    outs_s, grads_s, bufs_s = run("sequential", n, z)
    outs_f, grads_f, bufs_f = run("fused", n, z)
    for a, b in zip(outs_s, outs_f):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for gs, gf in zip(grads_s, grads_f):
        assert gs.keys() == gf.keys()
        for k in gs:
            torch.testing.assert_close(gs[k], gf[k], rtol=1e-3, atol=1e-5, msg=k)
    for bs, bf in zip(bufs_s, bufs_f):
        for k in bs:
            torch.testing.assert_close(bs[k], bf[k], rtol=1e-4, atol=1e-6, msg=k)
    # running stats really moved, once, and differ between generators
    assert bufs_f[0]["stem.bn.num_batches_tracked"].item() == 1
    if n > 1:
        assert not torch.equal(bufs_f[0]["stem.bn.running_mean"], bufs_f[1]["stem.bn.running_mean"])


def test_fused_takes_per_generator_noise():
    gens = make_gens(2)
    z = torch.randn(2, 4, LATENT)
    with torch.no_grad():
        fused = ParallelGenerators(gens, "fused")(z)
    gens = make_gens(2)
    with torch.no_grad():
        seq = [g(zk) for g, zk in zip(gens, z)]
    for a, b in zip(seq, fused):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        ParallelGenerators(gens, "fused")(torch.randn(3, 4, LATENT))


def test_gradients_reach_only_the_generator_that_produced_the_output():
    gens = make_gens(2)
    outs = ParallelGenerators(gens, "fused")(torch.randn(4, LATENT))
    outs[1].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in gens[0].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gens[1].parameters())


def test_fused_in_eval_mode_uses_and_keeps_running_stats():
    gens = [g.eval() for g in make_gens(2)]
    before = [{k: b.clone() for k, b in g.named_buffers()} for g in gens]
    z = torch.randn(4, LATENT)
    with torch.no_grad():
        fused = ParallelGenerators(gens, "fused")(z)
        seq = [g(z) for g in gens]
    for a, b in zip(seq, fused):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for g, b in zip(gens, before):
        for k, v in g.named_buffers():
            assert torch.equal(v, b[k])


def test_fused_under_bf16_autocast_runs_in_fp32():
    gens = make_gens(2)
    z = torch.randn(4, LATENT)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = ParallelGenerators(gens, "fused")(z)
    assert all(f.dtype == torch.float32 for f in fused)


def test_streams_fall_back_to_sequential_off_cuda_with_one_notice(caplog, monkeypatch):
    monkeypatch.setattr(parallel, "_notified", set())
    gens = make_gens(2)
    with caplog.at_level(logging.WARNING, logger="psgan_fast.parallel"):
        a = ParallelGenerators(gens, "streams", torch.device("cpu"))
        b = ParallelGenerators(gens, "streams", torch.device("cpu"))
    assert a.mode == b.mode == "sequential"
    assert len([r for r in caplog.records if "streams" in r.message]) == 1


def test_resolve_mode():
    assert resolve_mode("auto", torch.device("cpu")) == "sequential"
    assert resolve_mode("auto", torch.device("cuda")) == "sequential"  # until measured on a GPU
    assert resolve_mode("streams", torch.device("cuda")) == "streams"
    assert resolve_mode("fused", torch.device("cpu")) == "fused"
    with pytest.raises(ValueError, match="unknown parallel mode"):
        resolve_mode("threads", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_streams_match_sequential_on_cuda():
    z = torch.randn(8, LATENT, device="cuda")
    results = []
    for mode in ("sequential", "streams"):
        gens = [g.cuda() for g in make_gens(2)]
        outs = ParallelGenerators(gens, mode)(z)
        sum(o.sum() for o in outs).backward()
        results.append((outs, [p.grad.clone() for g in gens for p in g.parameters()]))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        torch.testing.assert_close(a, b)
