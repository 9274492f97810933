"""The benchmarks that moved out of the product modules into
psgan_fast.bench still run (a step or two each, on the CPU)."""

from __future__ import annotations

import psgan_fast.parallel
from psgan_fast.bench import parallel_modes, psgan_throughput
from psgan_fast.models import psgan


def test_the_product_modules_hold_no_benchmarks():
    assert not hasattr(psgan_fast.parallel, "benchmark") and not hasattr(psgan, "benchmark")


def test_parallel_modes_benchmark_runs():
    rows = parallel_modes.benchmark(num_generators=(2,), batch=4, stage=0, repeats=1)
    assert [(n, mode) for n, mode, _, _ in rows] == [(2, "sequential"), (2, "fused")]
    assert all(0 < lo <= med for _, _, lo, med in rows)


def test_psgan_throughput_benchmark_runs():
    res = psgan_throughput.benchmark([(2, "fp32", "sequential", True)], batch=4, steps=1, stage=0)
    (best, median), = res.values()
    assert best >= median > 0
