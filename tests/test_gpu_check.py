"""The CUDA-only checks that `make gpu-check` runs (each skips without CUDA),
and the gpu-check runner itself, which the CPU can test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from psgan_fast import gpu_check

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA: `make gpu-check` runs it on a machine with a GPU")


@pytest.fixture
def exact_fp32():
    """No TF32, so that two ways of computing the same thing agree to fp32 rounding."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _forward_backward(mode: str, z: torch.Tensor) -> list[torch.Tensor]:
    """Outputs, gradients and BatchNorm buffers of 3 generators run in `mode`."""
    from psgan_fast.parallel import ParallelGenerators
    from psgan_fast.stages import build_generator

    torch.manual_seed(0)
    gens = [build_generator(2, latent_dim=z.shape[1], width=16).cuda().train() for _ in range(3)]
    pg = ParallelGenerators(gens, mode)
    assert pg.mode == mode
    outs = pg(z)
    sum((k + 1) * (o ** 2).sum() for k, o in enumerate(outs)).backward()
    torch.cuda.synchronize()
    return [*outs, *(p.grad for g in gens for p in g.parameters()), *(b for g in gens for b in g.buffers())]


@needs_cuda
@pytest.mark.parametrize("mode", ["fused", "streams"])
def test_parallel_modes_match_sequential_on_cuda(mode, exact_fp32):
    z = torch.randn(8, 16, device="cuda")
    for ref, got in zip(_forward_backward("sequential", z), _forward_backward(mode, z), strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)


@needs_cuda
def test_torch_compile_matches_eager_on_cuda(exact_fp32):
    from psgan_fast.stages import LATENT_DIM, build_discriminator, build_generator

    torch.manual_seed(0)
    g, d = build_generator(2).cuda(), build_discriminator(2).cuda()
    z = torch.randn(16, LATENT_DIM, device="cuda")
    params = [*g.parameters(), *d.parameters()]

    def run(gm, dm):
        for p in params:
            p.grad = None
        out = dm(gm(z)).float().sum()
        out.backward()
        return [out.detach(), *(p.grad.clone() for p in params)]

    eager = run(g, d)
    compiled = run(torch.compile(g), torch.compile(d))
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)


@needs_cuda
def test_nccl_with_one_process(tmp_path):
    import torch.distributed as dist

    from psgan_fast import distributed

    assert dist.is_nccl_available(), "this CUDA build of torch has no nccl"
    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        info = distributed.setup("cuda")
        assert (info.rank, info.world_size, info.enabled) == (0, 1, False)
        t = torch.arange(4.0, device="cuda")
        dist.all_reduce(t)
        assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
        lin = torch.nn.Linear(3, 2).cuda()
        lin(torch.randn(5, 3, device="cuda")).sum().backward()
        before = [p.grad.clone() for p in lin.parameters()]
        distributed.average_gradients(lin.parameters(), 1)
        for a, p in zip(before, lin.parameters()):
            torch.testing.assert_close(p.grad, a)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# The runner


def test_without_cuda_it_says_so_in_one_line_and_succeeds(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-m", "psgan_fast.gpu_check", "--out", str(tmp_path / "s.md")],
                       capture_output=True, text=True, timeout=300, env=env, cwd=gpu_check.REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and "no CUDA device" in r.stdout, r.stdout
    assert not (tmp_path / "s.md").exists()


def test_the_runner_summarises_passes_failures_skips_and_timeouts(tmp_path, monkeypatch):
    (tmp_path / "test_fake.py").write_text(textwrap.dedent("""
        import time
        import pytest

        def test_ok():
            pass

        def test_bad():
            assert 1 == 2, "one is not two"

        @pytest.mark.skip(reason="needs a thing")
        def test_skipped():
            pass

        def test_slow():
            time.sleep(120)
    """))
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        def pytest_terminal_summary(terminalreporter):
            terminalreporter.section("psgan_fast: same-run comparisons")
            terminalreporter.write_line("  fused   1.00 ms  50.0% of sequential")
    """))
    monkeypatch.setattr(gpu_check, "REPO", tmp_path)
    steps = [gpu_check.Step("fast", ("test_fake.py", "-k", "not slow"), 1.0),
             gpu_check.Step("slow", ("test_fake.py", "-k", "slow"), 1.0)]
    out = tmp_path / "summary.md"
    assert gpu_check.run(steps, out, budget_s=20, machine="Fake GPU") == 1
    text = out.read_text()
    assert text.startswith("# gpu-check: Fake GPU")
    assert "| fast | FAILED (exit 1) | 1 | 1 | 1 |" in text
    assert "| slow | TIMED OUT | 0 | 0 | 0 |" in text
    assert "test_bad`: AssertionError: one is not two" in text
    assert "- 1 x needs a thing" in text
    assert "fused   1.00 ms  50.0% of sequential" in text
