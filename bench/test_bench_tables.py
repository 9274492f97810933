"""The paper's time-cost study (Tables 3 and 4) on this machine.

Each configuration trains the same number of real MNIST images through each
stage of the schedule (see psgan_fast/bench/timing.py), at batch 64. Ids
name the model and the generator count. Turn the JSON into the paper's
tables with: python -m psgan_fast.bench.report BENCH_JSON
Steps per stage: $PSGAN_BENCH_STEPS (default 8).
"""

from __future__ import annotations

import os

import pytest
import torch

from psgan_fast.bench.timing import TABLE3, matmul_peak, real_batches, time_training

from conftest import report

STEPS = int(os.environ.get("PSGAN_BENCH_STEPS", "8"))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_PEAK: dict[str, float] = {}


def peak(precision: str) -> float:
    if precision not in _PEAK:
        _PEAK[precision] = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32, device=DEVICE)
        report("matmul peak (2048^3)", precision, _PEAK[precision], "GFLOP/s")
    return _PEAK[precision]


@pytest.fixture(scope="module")
def batches():
    return real_batches(64, 16, DEVICE)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", [r[0] for r in TABLE3])
def test_time_cost(benchmark, batches, name, precision):
    benchmark.group = f"time-cost {precision}"
    results = []

    def run():
        t = time_training(name, STEPS, batches, precision=precision, count_flops=not results)
        results.append(t)
        return t

    benchmark.pedantic(run, rounds=1, iterations=1)
    t = results[0]
    pk = peak(precision)
    benchmark.extra_info.update({"table": "time-cost", "row": name, "precision": precision,
                                 "images": t.images, "flops": t.flops, "seconds_train": t.seconds,
                                 "per_stage_seconds": t.per_stage_seconds, "peak_gflops": pk,
                                 "device": str(DEVICE)})
    # pytest-benchmark's own timing also covers building the networks; the
    # tables use `seconds_train`, the training steps alone.
    base = name == "sngan"
    report(f"Table 3 ({precision}): seconds for {t.images} images", name, t.seconds, "s", baseline=base,
           higher_is_better=False)
    report(f"efficiency ({precision})", name, t.flops / t.seconds / 1e9, "GFLOP/s")
