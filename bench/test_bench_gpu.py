"""GPU-only comparisons (issue: Benchmarks, item 5). Without CUDA every case
here skips with the reason; the time-cost tables (test_bench_tables.py) and
the kernel benchmarks run unchanged on CUDA when it is present.

On CUDA, one PS-GAN training step at 28x28 (stage 2, batch 64, real MNIST),
per pytest-benchmark group:

* ``parallel``: the N = 3 generators run ``sequential`` vs ``fused``
  (torch.func.vmap) vs ``streams`` (one CUDA stream per generator);
* ``compile``: eager vs ``torch.compile`` (the networks compiled in place,
  as the trainer does; compilation happens in untimed warm-up steps);
* ``triton``: SNGAN's training step with spectral norm through the Triton
  kernels vs the PyTorch reference, and PS-GAN's stage switch (Algorithm 1
  over 3 G + D) through the one-launch Triton mix vs the reference.

None of this has been run by the author: the build machine has no GPU.
$PSGAN_BENCH_GPU_ON_CPU=1 runs the cases that can run on the CPU (streams
falls back to sequential there, Triton cases still skip) to check the code
paths, not to time anything.
"""

from __future__ import annotations

import os

import pytest
import torch

from conftest import report
from psgan_fast.bench.timing import make_recipe, real_batches

CUDA = torch.cuda.is_available()
ON_CPU = os.environ.get("PSGAN_BENCH_GPU_ON_CPU", "0") == "1"
DEVICE = torch.device("cuda" if CUDA else "cpu")
STEPS = int(os.environ.get("PSGAN_BENCH_STEPS", "8"))
NO_GPU = "needs a CUDA GPU: streams, fused-vs-sequential on a GPU, torch.compile and Triton are GPU comparisons"

pytestmark = pytest.mark.skipif(not (CUDA or ON_CPU), reason=NO_GPU)


@pytest.fixture(scope="module")
def batches():
    return real_batches(64, 8, DEVICE)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _time_steps(benchmark, recipe, batches, group: str, name: str, *, warmup: int = 2,
                baseline: bool = False) -> None:
    it = iter(range(10 ** 9))

    def step():
        recipe.step(batches[next(it) % len(batches)])
        _sync()

    for _ in range(warmup):  # cudnn autotuning, torch.compile, Triton JIT
        step()
    benchmark.group = f"{group} ({DEVICE.type})"
    benchmark.pedantic(step, rounds=STEPS * 3, iterations=1)
    med = benchmark.stats.stats.median
    benchmark.extra_info.update({"table": "gpu", "group": group, "case": name, "step_seconds": med,
                                 "device": torch.cuda.get_device_name() if CUDA else "cpu"})
    report(benchmark.group, name, 1e3 * med, "ms per step (median)", baseline=baseline, higher_is_better=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("mode", ["sequential", "fused", "streams"])
def test_parallel(benchmark, batches, mode, precision):
    r = make_recipe("psgan-g3", 1000, precision=precision, device=DEVICE, parallel=mode, compile=False)
    r.begin_epoch(2)
    _time_steps(benchmark, r, batches, f"psgan-g3 step, generators in parallel, {precision}", mode,
                baseline=mode == "sequential")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_compile(benchmark, batches, compiled, precision):
    if compiled and not CUDA:
        pytest.skip("torch.compile is timed on CUDA only (on this CPU it was measured 2x slower)")
    r = make_recipe("psgan-g3", 1000, precision=precision, device=DEVICE, compile=compiled)
    r.begin_epoch(2)
    if compiled:
        for m in r.modules().values():
            m.compile()
    _time_steps(benchmark, r, batches, f"psgan-g3 step, torch.compile, {precision}",
                "compiled" if compiled else "eager", warmup=3, baseline=not compiled)


@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_triton_sngan_step(benchmark, batches, impl):
    if not CUDA:
        pytest.skip("the Triton kernels run on CUDA (the CPU interpreter is a correctness tool)")
    r = make_recipe("sngan", 1000, device=DEVICE, compile=False, extra={"sn_impl": impl})
    r.begin_epoch(0)
    _time_steps(benchmark, r, batches, "sngan step, spectral norm", f"sn {impl}", baseline=impl == "ref")


@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_triton_stage_switch(benchmark, impl):
    if not CUDA:
        pytest.skip("the Triton kernels run on CUDA (the CPU interpreter is a correctness tool)")
    from psgan_fast.kernels import mix_weights
    from psgan_fast.stages import build_discriminator, build_generator

    torch.manual_seed(0)
    old = [build_generator(1).to(DEVICE) for _ in range(3)] + [build_discriminator(1).to(DEVICE)]
    new = [build_generator(2).to(DEVICE) for _ in range(3)] + [build_discriminator(2).to(DEVICE)]

    def switch():
        for o, n in zip(old, new):
            mix_weights(o, n, 0.1, impl=impl)
        _sync()

    switch()
    benchmark.group = f"psgan-g3 stage switch 1->2, Algorithm 1 ({DEVICE.type})"
    benchmark.pedantic(switch, rounds=30, iterations=1)
    report(benchmark.group, f"mix {impl}", 1e6 * benchmark.stats.stats.median, "us (median)",
           baseline=impl == "ref", higher_is_better=False)
