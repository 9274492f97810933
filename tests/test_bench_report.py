"""`python -m psgan_fast.bench.report`: the paper's tables and the targets
from time-cost records, including a run whose bf16 cases were skipped."""

from __future__ import annotations

import json

from psgan_fast.bench import report
from psgan_fast.paper import TABLE3

SECONDS = {"sngan": 10.0, "sngan-nosn": 9.0, "progan": 20.0, "psgan-g1": 5.0, "psgan-g2": 8.0, "psgan-g3": 12.0}


def records(precision: str, peak: float = 100.0) -> list[dict]:
    out = []
    for name, *_ in TABLE3:
        t = SECONDS[name]
        out.append({"table": "time-cost", "row": name, "precision": precision, "seconds": t,
                    "cpu_seconds": t, "seconds_alone": t, "images": 1536, "steps_per_stage": 8, "repeats": 2,
                    "per_stage_seconds": [t / 4, t / 4, t / 2], "flops": 1e9 * t, "stage_flops": [1e9, 1e9, 2e9],
                    "peak_gflops": peak, "load_average": [1.0, 1.5], "machine": {"cpu": "test CPU", "cores": 2}})
    return out


def test_ratios_and_targets_from_fp32_only(tmp_path, capsys):
    doc = {"benchmarks": [{"extra_info": r, "stats": {"median": r["seconds"]}} for r in records("fp32")]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    assert report.main([str(path), "--out", str(tmp_path / "t.md")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "| PS-GAN | stepwise + 3 generators | 12.00 | 120.0% | 158.5% |" in text
    assert "| 1 | 5.00 | 62% | 78% |" in text  # Table 4: 5 / 8
    assert "| psgan-g3 / sngan <= 1.30 (fp32) | 1.200 | yes |" in text
    assert "| psgan-g1 / sngan <= 0.75 (fp32) | 0.500 | yes |" in text
    # the bf16 peak target is reported as not measured rather than silently dropped
    assert "60% of the bf16 matmul peak | not measured" in text
    assert "bf16" not in text.split("#### Targets")[0]


def test_peak_target_judged_when_bf16_ran():
    # psgan-g3's 28x28 step: 2 GFLOP in 12/2/8 s -> 2.67 GFLOP/s, 66.7% of a 4 GFLOP/s peak
    text = report.render_records(records("fp32") + records("bf16", peak=4.0))
    assert "| psgan-g3 step at 28x28 >= 60% of the bf16 matmul peak | 66.7% | yes |" in text
    text = report.render_records(records("fp32") + records("bf16", peak=5.0))
    assert "| psgan-g3 step at 28x28 >= 60% of the bf16 matmul peak | 53.3% | no |" in text


def test_no_records_is_an_error(tmp_path, capsys):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"benchmarks": []}))
    assert report.main([str(path)]) == 1
    assert "no time-cost" in capsys.readouterr().err
