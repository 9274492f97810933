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


def test_cost_benchmark_selects_rows_against_the_papers_step(capsys):
    import pytest

    from psgan_fast.bench import cost
    from psgan_fast.config import RECOMMENDED_LOSS

    picked = cost.select(cost.CONFIGS, "DISTANCE l1-ink")  # case-insensitive
    assert [label for label, _ in picked] == [cost.CONFIGS[0][0], cost.DEFAULT_LABEL]
    assert picked[1][1] == {"loss": RECOMMENDED_LOSS} and picked[0][1] == {"loss": "ps"}
    assert cost.select(cost.CONFIGS, None) == cost.CONFIGS
    both = [label for label, _ in cost.select(cost.CONFIGS, "mode-seeking, gskips-s118-r8 (")]
    assert both == [cost.CONFIGS[0][0], "rps-r1r2-gskips-s118-r8 (R1/R2 every 8 steps; a previous default)",
                    "rps-r1r2-gskips-s118-r8-ms0.3 (R1/R2 every 8 steps + mode-seeking term (lambda 0.3); "
                    "a previous default)", cost.DEFAULT_LABEL]
    assert cost.DEFAULT_LABEL == ("rps-r1r2-gskips-s118-r8-ms0.3-ink1 (the default: R1/R2 every 8 steps + "
                                  "mode-seeking term (lambda 0.3, distance l1-ink-n1))")
    with pytest.raises(ValueError, match="no configuration matches 'nope'"):
        cost.select(cost.CONFIGS, "nope")
    assert cost.main(["--generators", "1", "--steps", "1", "--match", "distance l1-ink"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |")]
    assert len(table) == 2 and table[0].endswith("| 1.00x |") and "l1-ink-n1" in table[1]
