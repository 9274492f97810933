"""The paper's time-cost study (Tables 3 and 4) and the training-step
efficiency figure, on this machine.

Each configuration trains the same number of real MNIST images through each
stage of the schedule (see psgan_fast/bench/timing.py), at batch 64, with
torch pinned to $PSGAN_BENCH_THREADS threads (default 1; bench/conftest.py).

* ``test_time_cost[<precision>-<row>]`` - one Table 3 row, ids name the model
  and the generator count (sngan, sngan-nosn, progan, psgan-g1/g2/g3). The
  TABLE figure comes from one interleaved measurement of all six rows per
  precision (step i of every row before step i+1 of any, $PSGAN_BENCH_REPEATS
  x $PSGAN_BENCH_STEPS steps per stage; a stage's time is STEPS x the median
  step), so that load from other processes hits every row alike; pytest-
  benchmark's own figure for the test is that row's schedule run alone once
  (its warm-up steps included), kept as a cross-check.
* The efficiency figure comes from the same interleaved measurement: each
  row's training step at 28x28 (the last stage), its FLOPs
  (torch.utils.flop_counter, counted in the stage's warm-up step) and the
  matmul peak measured around it (the best product of the run): achieved
  GFLOP/s and the share of the peak (the report's efficiency table).
* ``test_d_backward[<precision>-routed|two-pass]`` - the PS-GAN step with D's
  routed single backward (the default) against two restricted backward
  passes, interleaved; asserts that both give the same gradients.

Turn the JSON into the paper's tables with:
    python -m psgan_fast.bench.report BENCH_JSON [--out TABLES.md]
(the terminal summary of the run prints the same tables).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from conftest import record_table_row, report
from psgan_fast.bench.timing import make_recipe, matmul_peak, real_batches, time_rows, time_training
from psgan_fast.machine import load_average, machine_info
from psgan_fast.paper import TABLE3

STEPS = int(os.environ.get("PSGAN_BENCH_STEPS", "8"))
REPEATS = int(os.environ.get("PSGAN_BENCH_REPEATS", "2"))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PRECISIONS = ("fp32", "bf16")
ROWS = [r[0] for r in TABLE3]
DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}
_INTERLEAVED: dict[str, dict] = {}


@pytest.fixture(scope="module")
def batches():
    return real_batches(64, 16, DEVICE)


def peak(precision: str) -> float:
    return matmul_peak(DTYPE[precision], device=DEVICE)


def interleaved(precision: str, batches) -> dict:
    """All six rows timed together, once per precision (and the peaks
    around it: the best of the two is the figure)."""
    if precision not in _INTERLEAVED:
        load0, peak0 = load_average(), peak(precision)
        t0 = time.perf_counter()
        timings = time_rows(ROWS, STEPS, batches, precision=precision, repeats=REPEATS)
        took = time.perf_counter() - t0
        _INTERLEAVED[precision] = {"timings": timings, "peak": max(peak0, peak(precision)),
                                   "load": [load0, load_average()], "took": took}
        report(f"matmul peak ({precision}, {torch.get_num_threads()} thread(s))", "2048^3",
               _INTERLEAVED[precision]["peak"], "GFLOP/s")
    return _INTERLEAVED[precision]


@pytest.mark.parametrize("precision,name", [(p, n) for p in PRECISIONS for n in ROWS],
                         ids=[f"{p}-{n}" for p in PRECISIONS for n in ROWS])
def test_time_cost(benchmark, batches, precision, name):
    shared = interleaved(precision, batches)
    t = shared["timings"][name]
    benchmark.group = f"time-cost {precision} ({DEVICE.type})"
    alone = []

    def run():
        alone.append(time_training(name, STEPS, batches, precision=precision, count_flops=False))

    benchmark.pedantic(run, rounds=1, iterations=1)
    info = {"table": "time-cost", "row": name, "precision": precision, "device": str(DEVICE),
            "seconds": t.seconds, "seconds_alone": alone[0].seconds, "wall_seconds": t.wall_seconds,
            "cpu_seconds": t.cpu_seconds,
            "per_stage_seconds": t.per_stage_seconds, "images": t.images, "steps_per_stage": STEPS,
            "repeats": REPEATS, "flops": t.flops, "stage_flops": t.stage_flops,
            "peak_gflops": shared["peak"], "load_average": shared["load"],
            "machine": machine_info(DEVICE)}
    benchmark.extra_info.update(info)
    record_table_row(info)
    report(f"Table 3 ({precision}): seconds for {t.images} images, interleaved", name, t.seconds, "s",
           baseline=name == "sngan", higher_is_better=False)
    report(f"efficiency ({precision}): GFLOP/s over the schedule", name, t.gflops_per_s, "GFLOP/s")
    step = t.per_stage_seconds[-1] / STEPS
    report(f"training step at 28x28 ({precision}): % of the matmul peak {shared['peak']:.0f} GFLOP/s", name,
           100 * t.stage_flops[-1] / step / 1e9 / shared["peak"], "%")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_d_backward(benchmark, batches, precision):
    """Routed (one backward through D) vs two-pass, psgan-g3 at 28x28,
    interleaved step by step; the same gradients from both."""
    recipes = {}
    for mode in ("two-pass", "routed"):
        recipes[mode] = make_recipe("psgan-g3", 1000, precision=precision, device=DEVICE,
                                    extra={"d_backward": mode})
        recipes[mode].begin_epoch(2)
    grads = {}
    for mode, r in recipes.items():
        torch.manual_seed(1)  # same weights and the same z: compare this step's gradients
        r.step(batches[0])
        grads[mode] = {f"{m}.{pn}": p.grad.float().clone() for m, mod in r.modules().items()
                       for pn, p in mod.named_parameters()}
    tol = 1e-4 if precision == "fp32" else 3e-2
    for key, want in grads["two-pass"].items():
        got = grads["routed"][key]
        err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
        assert err < tol or want.norm() == got.norm() == 0, f"{key}: relative gradient error {err:.2e}"

    times: dict[str, list[float]] = {m: [] for m in recipes}
    seq = iter(range(10 ** 9))

    def both():
        i = next(seq)
        for mode in (("routed", "two-pass") if i % 2 else ("two-pass", "routed")):
            t0 = time.perf_counter()
            recipes[mode].step(batches[i % len(batches)])
            if DEVICE.type == "cuda":
                torch.cuda.synchronize(DEVICE)
            times[mode].append(time.perf_counter() - t0)

    benchmark.group = f"PS-GAN D backward ({DEVICE.type})"
    benchmark.pedantic(both, rounds=2 * STEPS, iterations=1, warmup_rounds=1)
    med = {m: statistics.median(ts[1:]) for m, ts in times.items()}
    benchmark.extra_info.update({"table": "d-backward", "precision": precision,
                                 "routed_ms": 1e3 * med["routed"], "two_pass_ms": 1e3 * med["two-pass"]})
    for mode in ("two-pass", "routed"):
        report(f"PS-GAN N=3 step at 28x28, {precision}: D backward", mode, 1e3 * med[mode], "ms (median)",
               baseline=mode == "two-pass", higher_is_better=False)
