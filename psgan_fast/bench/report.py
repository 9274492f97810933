"""`python -m psgan_fast.bench.report BENCH_JSON [--out TABLES.md]`

Turns the pytest-benchmark JSON of `pytest bench/ --benchmark-only
--benchmark-json BENCH_JSON` into the paper's Table 3 (time, ratio to
SNGAN) and Table 4 (time, ratio to 2 generators), each row beside the
paper's ratio, plus achieved GFLOP/s against the measured matmul peak.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from psgan_fast.bench.timing import TABLE3, TABLE4

DESCRIPTIONS = {
    "sngan": "spectral norm on D",
    "sngan-nosn": "spectral norm removed",
    "progan": "progressive layer growth",
    "psgan-g1": "stepwise + 1 generator",
    "psgan-g2": "stepwise + 2 generators",
    "psgan-g3": "stepwise + 3 generators",
}


def load_rows(doc: dict) -> dict[str, dict[str, dict]]:
    """precision -> row name -> {"seconds", "flops", "images"} from a
    pytest-benchmark JSON document; also the measured peaks."""
    rows: dict[str, dict[str, dict]] = {}
    for b in doc.get("benchmarks", []):
        info = b.get("extra_info", {})
        if info.get("table") != "time-cost":
            continue
        prec = info["precision"]
        rows.setdefault(prec, {})[info["row"]] = {
            "seconds": info.get("seconds_train", b["stats"]["median"]),
            "flops": info.get("flops", 0.0),
            "images": info.get("images", 0),
            "peak_gflops": info.get("peak_gflops"),
        }
    return rows


def tables(rows: dict[str, dict], precision: str, machine: str = "") -> str:
    r = rows.get(precision, {})
    out = []
    head = f" ({precision}{', ' + machine if machine else ''})"
    base = r.get("sngan", {}).get("seconds")
    out.append(f"### Table 3 — training time relative to SNGAN{head}\n")
    out.append("| model | description | time (s) | ratio | paper ratio | GFLOP/s | % of matmul peak |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for name, _, _, _, paper in TABLE3:
        if name not in r:
            continue
        t = r[name]["seconds"]
        ratio = f"{100 * t / base:.1f}%" if base else "n/a"
        gf = r[name]["flops"] / t / 1e9 if r[name]["flops"] and t else 0.0
        peak = r[name].get("peak_gflops")
        eff = f"{100 * gf / peak:.0f}%" if gf and peak else "n/a"
        model = name.split("-g")[0].upper().replace("-NOSN", " variant")
        out.append(f"| {model} | {DESCRIPTIONS[name]} | {t:.2f} | {ratio} | {100 * paper:.1f}% | {gf:.1f} | {eff} |")
    base2 = r.get("psgan-g2", {}).get("seconds")
    out.append(f"\n### Table 4 — number of generators, relative to 2 generators{head}\n")
    out.append("| generators | time (s) | ratio | paper ratio |")
    out.append("|---:|---:|---:|---:|")
    for n, paper in TABLE4:
        name = f"psgan-g{n}"
        if name not in r:
            continue
        t = r[name]["seconds"]
        ratio = f"{100 * t / base2:.0f}%" if base2 else "n/a"
        out.append(f"| {n} | {t:.2f} | {ratio} | {100 * paper:.0f}% |")
    return "\n".join(out) + "\n"


def render(doc: dict) -> str:
    rows = load_rows(doc)
    if not rows:
        raise ValueError("no time-cost benchmarks in this JSON; run pytest bench/ --benchmark-only "
                         "--benchmark-json FILE first")
    mi = doc.get("machine_info", {})
    machine = f"{mi.get('cpu', {}).get('brand_raw', mi.get('processor', ''))}".strip()
    parts = [tables(rows, p, machine) for p in sorted(rows)]
    return "\n".join(parts)


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
