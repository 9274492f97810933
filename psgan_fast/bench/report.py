"""`python -m psgan_fast.bench.report BENCH_JSON [--out TABLES.md]`

Turns the pytest-benchmark JSON of `pytest bench/ --benchmark-only
--benchmark-json BENCH_JSON` into the paper's Table 3 (time, ratio to
SNGAN) and Table 4 (time, ratio to 2 generators), each row beside the
paper's ratio, plus achieved GFLOP/s against the matmul peak measured in the
same run, and the issue's targets (met or not). Prints the Markdown and,
with --out, writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

from psgan_fast.machine import machine_line
from psgan_fast.paper import TABLE3, TABLE4_RATIOS

DESCRIPTIONS = {
    "sngan": "spectral norm on D",
    "sngan-nosn": "spectral norm removed",
    "progan": "progressive layer growth",
    "psgan-g1": "stepwise + 1 generator",
    "psgan-g2": "stepwise + 2 generators",
    "psgan-g3": "stepwise + 3 generators",
}
MODEL_NAMES = {"sngan": "SNGAN", "sngan-nosn": "SNGAN variant", "progan": "ProGAN",
               "psgan-g1": "PS-GAN", "psgan-g2": "PS-GAN", "psgan-g3": "PS-GAN"}
# The targets on this CPU: (numerator row, denominator row, limit)
RATIO_TARGETS = (("psgan-g3", "sngan", 1.30), ("psgan-g1", "sngan", 0.75))
PEAK_TARGET = ("psgan-g3", "bf16", 0.60)


def records_from_json(doc: dict) -> list[dict]:
    """The extra_info of every time-cost / efficiency benchmark, with
    pytest-benchmark's median added as `bench_median`."""
    out = []
    for b in doc.get("benchmarks", []):
        info = dict(b.get("extra_info", {}))
        if info.get("table") in ("time-cost", "efficiency"):
            info.setdefault("bench_median", b.get("stats", {}).get("median"))
            out.append(info)
    return out


def _by(records: Iterable[dict], table: str) -> dict[str, dict[str, dict]]:
    rows: dict[str, dict[str, dict]] = {}
    for r in records:
        if r.get("table") == table:
            rows.setdefault(r["precision"], {})[r["row"]] = r
    return rows


def _pct(x: Optional[float], digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def time_tables(rows: dict[str, dict], precision: str) -> str:
    r = rows.get(precision, {})
    if not r:
        return ""
    any_row = next(iter(r.values()))
    out = []
    base = r.get("sngan", {}).get("seconds")
    imgs = any_row.get("images", 0)
    spp = any_row.get("steps_per_stage")
    reps = any_row.get("repeats")
    how = (f"{imgs} images per model ({spp} batches of 64 per stage x 3 stages); a stage's time = "
           f"{spp} x the median of {spp * reps if spp and reps else '?'} interleaved steps (wall clock; "
           f"the CPU-time ratio uses the process's CPU time instead)") if spp else ""
    out.append(f"#### Table 3 — training time relative to SNGAN ({precision})\n")
    if how:
        out.append(how + "\n")
    cbase = r.get("sngan", {}).get("cpu_seconds")
    out.append("| model | description | time (s) | ratio | paper ratio | ratio of CPU times | run alone (s) "
               "| GFLOP/s | % of matmul peak |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, _, _, paper in TABLE3:
        if name not in r:
            continue
        x = r[name]
        t = x["seconds"]
        gf = x.get("flops", 0.0) / t / 1e9 if x.get("flops") and t else None
        peak = x.get("peak_gflops")
        alone = x.get("seconds_alone")
        cpu = x.get("cpu_seconds")
        out.append(f"| {MODEL_NAMES[name]} | {DESCRIPTIONS[name]} | {t:.2f} | "
                   f"{_pct(t / base) if base else 'n/a'} | {100 * paper:.1f}% | "
                   f"{_pct(cpu / cbase) if cpu and cbase else 'n/a'} | "
                   f"{'n/a' if alone is None else f'{alone:.2f}'} | {'n/a' if gf is None else f'{gf:.1f}'} | "
                   f"{_pct(gf / peak) if gf and peak else 'n/a'} |")
    base2 = r.get("psgan-g2", {}).get("seconds")
    out.append(f"\n#### Table 4 — number of generators, relative to 2 generators ({precision})\n")
    out.append("| generators | time (s) | ratio | paper ratio |")
    out.append("|---:|---:|---:|---:|")
    for n, paper in TABLE4_RATIOS:
        name = f"psgan-g{n}"
        if name not in r:
            continue
        t = r[name]["seconds"]
        out.append(f"| {n} | {t:.2f} | {_pct(t / base2, 0) if base2 else 'n/a'} | {100 * paper:.0f}% |")
    return "\n".join(out) + "\n"


def efficiency_rows(records: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """precision -> row -> the training step at full resolution (the last
    stage) from the interleaved time-cost measurement: step seconds
    (median), FLOPs per step, GFLOP/s, peak."""
    out: dict[str, dict[str, dict]] = {}
    for prec, rows in _by(records, "time-cost").items():
        for name, x in rows.items():
            spp, stages, fl = x.get("steps_per_stage"), x.get("per_stage_seconds"), x.get("stage_flops")
            if not (spp and stages and fl):
                continue
            step = stages[-1] / spp
            out.setdefault(prec, {})[name] = {"step_seconds": step, "step_flops": fl[-1],
                                             "gflops": fl[-1] / step / 1e9, "peak_gflops": x.get("peak_gflops")}
    return out


def efficiency_table(records: Sequence[dict]) -> str:
    rows = efficiency_rows(records)
    if not rows:
        return ""
    out = ["#### Training-step efficiency at 28x28 (batch 64; the last stage of the interleaved run)\n",
           "| precision | model | step (ms) | GFLOP / step | GFLOP/s | matmul peak (GFLOP/s) | % of peak |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for prec in ("fp32", "bf16"):
        for name, _, _, _, _ in TABLE3:
            x = rows.get(prec, {}).get(name)
            if not x:
                continue
            pk = x["peak_gflops"]
            out.append(f"| {prec} | {name} | {1e3 * x['step_seconds']:.1f} | {x['step_flops'] / 1e9:.2f} | "
                       f"{x['gflops']:.1f} | {'n/a' if not pk else f'{pk:.0f}'} | "
                       f"{_pct(x['gflops'] / pk) if pk else 'n/a'} |")
    return "\n".join(out) + "\n"


def targets(records: Sequence[dict]) -> str:
    time_rows = _by(records, "time-cost")
    eff = efficiency_rows(records)
    out = ["#### Targets (issue: Benchmarks, item 4)\n", "| target | measured | met |", "|---|---:|:---:|"]
    for prec in ("fp32", "bf16"):
        r = time_rows.get(prec, {})
        for num, den, limit in RATIO_TARGETS:
            if num in r and den in r:
                x = r[num]["seconds"] / r[den]["seconds"]
                out.append(f"| {num} / {den} <= {limit:.2f} ({prec}) | {x:.3f} | {'yes' if x <= limit else 'no'} |")
    name, prec, share = PEAK_TARGET
    x = eff.get(prec, {}).get(name)
    if x:
        s = x["gflops"] / x["peak_gflops"]
        out.append(f"| {name} step at 28x28 >= {100 * share:.0f}% of the {prec} matmul peak | {_pct(s)} | "
                   f"{'yes' if s >= share else 'no'} |")
    elif len(out) > 3:
        out.append(f"| {name} step at 28x28 >= {100 * share:.0f}% of the {prec} matmul peak | not measured: "
                   f"no {prec} rows in this run (skipped on a CPU without fast {prec}) | n/a |")
    return "\n".join(out) + "\n" if len(out) > 3 else ""


def _session_peaks(records: list[dict]) -> list[dict]:
    """The machine's matmul peak is the best product measured in the run
    (each benchmark measures it around its own timing; on a shared machine
    a single measurement can land in a busy moment). Every record gets the
    best figure of its precision; `peak_gflops_local` keeps its own."""
    best: dict[str, float] = {}
    for r in records:
        if r.get("peak_gflops"):
            best[r["precision"]] = max(best.get(r["precision"], 0.0), r["peak_gflops"])
    out = []
    for r in records:
        r = dict(r)
        if r.get("precision") in best:
            r.setdefault("peak_gflops_local", r.get("peak_gflops"))
            r["peak_gflops"] = best[r["precision"]]
        out.append(r)
    return out


def render_records(records: Sequence[dict]) -> str:
    records = _session_peaks(list(records))
    if not records:
        raise ValueError("no time-cost or efficiency benchmarks found; run pytest bench/ --benchmark-only "
                         "--benchmark-json FILE first")
    rows = _by(records, "time-cost")
    parts = [f"Machine: {machine_line(records)}.\n"]
    parts += [time_tables(rows, p) for p in ("fp32", "bf16") if p in rows]
    parts += [efficiency_table(records), targets(records)]
    return "\n".join(p for p in parts if p)


def render(doc: dict) -> str:
    return render_records(records_from_json(doc))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m psgan_fast.bench.report", description=__doc__.splitlines()[0])
    p.add_argument("bench_json")
    p.add_argument("--out", default=None, help="also write the Markdown here")
    args = p.parse_args(argv)
    try:
        doc = json.loads(Path(args.bench_json).read_text())
        text = render(doc)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
