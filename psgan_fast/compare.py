"""`python -m psgan_fast.compare`: two configurations paired seed by seed.

    python -m psgan_fast.compare --a runs/seeds-g2 --b runs/seeds-g3 \\
        --label-a "2 generators" --label-b "3 generators" --out docs/results/X/compare

Each side is one or more ablation tables (``OUT/ablation.json`` of
`python -m psgan_fast.ablate`, or the directory holding it, or one run's
cached ``OUT/runs/<variant>-s<seed>/ablation.json``), comma-separated. The
runs of both sides must share one schedule (epochs, batches of 64,
evaluation samples); the sides may differ in anything else (N, variant).
Runs are paired by seed: with the same seed the two configurations start
from the same data order and noise, so the per-seed differences of union
FID cancel much of the seed-to-seed spread that unpaired means carry.

The report (``--out DIR``: COMPARE.md and compare.json; else Markdown on
stdout) gives, per seed, both union FIDs, their difference (B − A), the
union's class-share range and collapsed generators (`ablate.verdict`, the
"no wasted generator" rule); then each side's mean ± sd, the paired
difference's mean ± sd, Student's paired t-test, the Wilcoxon signed-rank
test and the sign count, and a verdict: B below or above A when the paired
t-test's two-sided p is under ALPHA, else "not established".
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from psgan_fast.ablate import verdict
from psgan_fast.runlog import UNION_SHARE_RANGE
from psgan_fast.fsutil import atomic_write_text

# Two-sided significance level of the verdict.
ALPHA = 0.05
SCHEDULE_KEYS = ("epochs", "batches", "samples")


class CompareError(ValueError):
    """An input that cannot be compared: the message names the file and the problem."""


def _table_path(p: Path) -> Path:
    return p / "ablation.json" if p.is_dir() else p


def load_side(paths: Sequence[str], variant: Optional[str] = None) -> tuple[dict[int, dict], dict]:
    """{seed: result} and the shared schedule of one side's ablation tables.
    Raises CompareError for a missing or malformed file, runs on different
    schedules, several variants without `variant` to choose one, or two
    different results for one seed."""
    runs: dict[tuple[str, int], dict] = {}
    schedule: Optional[dict] = None
    variants: set[str] = set()
    for raw in paths:
        path = _table_path(Path(raw))
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise CompareError(f"{path}: no such file (an ablation.json or the directory holding one)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CompareError(f"{path}: not a readable JSON file ({e})") from None
        try:
            if isinstance(doc, dict) and "results" in doc:    # a table: ablate's OUT/ablation.json
                results, opts = list(doc["results"]), doc["options"]
            elif isinstance(doc, dict) and "result" in doc:   # one run's cache: OUT/runs/<v>-s<seed>/ablation.json
                results, opts = [doc["result"]], doc["key"]
            else:
                raise KeyError("results")
            sched = {k: int(opts[k]) for k in SCHEDULE_KEYS}
            for r in results:
                float(r["fid"]), int(r["seed"]), str(r["variant"]), list(r["union_class_shares"])
                [list(g["class_histogram"]) for g in r["per_generator"]]
        except (KeyError, TypeError, ValueError) as e:
            raise CompareError(f"{path}: not an ablation table of psgan_fast.ablate (missing or bad {e})") from None
        if schedule is None:
            schedule = sched
        elif sched != schedule:
            raise CompareError(f"{path}: schedule {sched} differs from {schedule} of the side's other files")
        for r in results:
            if variant is not None and r["variant"] != variant:
                continue
            variants.add(r["variant"])
            key = (r["variant"], int(r["seed"]))
            if key in runs and runs[key]["fid"] != r["fid"]:
                raise CompareError(f"{path}: seed {key[1]} of {key[0]} has two different results "
                                   f"(FID {runs[key]['fid']:.4f} and {r['fid']:.4f})")
            runs[key] = r
    if len(variants) > 1:
        raise CompareError(f"several variants on one side ({', '.join(sorted(variants))}): choose one "
                           "with --variant-a / --variant-b")
    if not runs:
        raise CompareError(f"no runs{f' of variant {variant!r}' if variant else ''} in {', '.join(paths)}")
    assert schedule is not None
    return {seed: r for (_, seed), r in runs.items()}, schedule


def _p_values(diffs: list[float]) -> dict[str, Optional[float]]:
    """Two-sided p of the paired t-test, the Wilcoxon signed-rank test and
    the sign test on the differences (None where undefined)."""
    from scipy import stats

    n = len(diffs)
    out: dict[str, Optional[float]] = {"t": None, "p_t": None, "p_wilcoxon": None, "p_sign": None}
    if n < 2:
        return out
    if statistics.stdev(diffs) > 0:  # the paired t-test: a one-sample test of the differences against 0
        res = stats.ttest_1samp(diffs, 0.0)
        out["t"], out["p_t"] = float(res.statistic), float(res.pvalue)
    nonzero = [d for d in diffs if d != 0]
    if nonzero:
        out["p_wilcoxon"] = float(stats.wilcoxon(nonzero).pvalue)
        below = sum(d < 0 for d in nonzero)
        out["p_sign"] = float(stats.binomtest(below, len(nonzero)).pvalue)
    return out


def _run_summary(r: dict) -> dict[str, Any]:
    lo, hi = UNION_SHARE_RANGE
    shares = r["union_class_shares"]
    return {"fid": r["fid"], "is": r.get("is"), "union_min": min(shares), "union_max": max(shares),
            "union_in_band": bool(lo <= min(shares) and max(shares) <= hi),
            "collapsed": sum(verdict(g["class_histogram"])["collapsed"] for g in r["per_generator"]),
            "generators": len(r["per_generator"])}


def compare(a: dict[int, dict], b: dict[int, dict]) -> dict[str, Any]:
    """The paired comparison of two sides ({seed: result}); B − A per seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise CompareError(f"no seed in common (A: {sorted(a)}, B: {sorted(b)})")
    rows = [{"seed": s, "a": _run_summary(a[s]), "b": _run_summary(b[s]), "diff": b[s]["fid"] - a[s]["fid"]}
            for s in seeds]
    fa, fb, diffs = ([r["a"]["fid"] for r in rows], [r["b"]["fid"] for r in rows], [r["diff"] for r in rows])

    def ms(xs: list[float]) -> dict[str, Optional[float]]:
        return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else None}

    p = _p_values(diffs)
    if p["p_t"] is not None and p["p_t"] < ALPHA:
        word = "below" if statistics.fmean(diffs) < 0 else "above"
        result = f"B {word} A (paired t-test, p < {ALPHA})"
    else:
        result = "not established" + (f" (paired t-test, p >= {ALPHA})" if p["p_t"] is not None else
                                      " (fewer than 2 pairs, or no spread)")
    return {"seeds": seeds, "unpaired_a": sorted(set(a) - set(b)), "unpaired_b": sorted(set(b) - set(a)),
            "rows": rows, "a": ms(fa), "b": ms(fb), "diff": ms(diffs),
            "b_lower": sum(d < 0 for d in diffs), **p, "alpha": ALPHA, "verdict": result}


def _f(x: Optional[float], d: int = 2) -> str:
    return "—" if x is None else f"{x:.{d}f}"


def _pm(m: dict) -> str:
    return _f(m["mean"]) + ("" if m["sd"] is None else f" ± {_f(m['sd'])}")


def _band(s: dict) -> str:
    return f"{s['union_min']:.1%}–{s['union_max']:.1%}" + ("" if s["union_in_band"] else " (out)")


def render(res: dict, labels: tuple[str, str], schedule: dict, setup: Optional[dict] = None) -> str:
    la, lb = labels
    lo, hi = UNION_SHARE_RANGE
    lines = [f"# {lb} (B) against {la} (A), paired by seed", ""]
    if setup:
        lines += [f"Made by `{setup['command']}` at commit {setup['commit'] or '?'}, {setup['date']}.", ""]
    lines += [f"Schedule: {schedule['epochs']} epochs × {schedule['batches']} batches of 64; mnist-lenet FID on "
              f"{schedule['samples']} samples per generator against MNIST train. Union shares out of "
              f"{lo:.0%}–{hi:.0%} are marked (out); collapsed: generators with one class over half their "
              "samples or fewer than 3 classes at 5% or more.", "",
              f"| seed | A: FID | B: FID | B − A | A: union class shares | B: union class shares "
              f"| A / B collapsed |", "|---:|---:|---:|---:|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['seed']} | {_f(r['a']['fid'])} | {_f(r['b']['fid'])} | {r['diff']:+.2f} "
                     f"| {_band(r['a'])} | {_band(r['b'])} | {r['a']['collapsed']} / {r['b']['collapsed']} |")
    n = len(res["rows"])
    out_a = sum(not r["a"]["union_in_band"] for r in res["rows"])
    out_b = sum(not r["b"]["union_in_band"] for r in res["rows"])
    lines += ["", f"- **{la}:** {_pm(res['a'])}; union out of band in {out_a} of {n} runs.",
              f"- **{lb}:** {_pm(res['b'])}; union out of band in {out_b} of {n} runs.",
              f"- **Paired difference (B − A):** {_pm(res['diff'])} over {n} seeds; B lower on "
              f"{res['b_lower']} of {n}. Paired t-test t = {_f(res['t'])}, p = {_f(res['p_t'], 3)}; "
              f"Wilcoxon signed-rank p = {_f(res['p_wilcoxon'], 3)}; sign test p = {_f(res['p_sign'], 3)}.",
              f"- **Verdict:** {res['verdict']}."]
    if res["unpaired_a"] or res["unpaired_b"]:
        lines.append(f"- Left out, no partner: A seeds {res['unpaired_a'] or '—'}, B seeds {res['unpaired_b'] or '—'}.")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m psgan_fast.compare", description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True, help="side A: comma-separated ablation.json files or directories")
    p.add_argument("--b", required=True, help="side B: the same")
    p.add_argument("--label-a", default="A", help="side A's name in the report")
    p.add_argument("--label-b", default="B", help="side B's name in the report")
    p.add_argument("--variant-a", help="side A's variant, where its tables hold several")
    p.add_argument("--variant-b", help="side B's variant")
    p.add_argument("--out", help="write COMPARE.md and compare.json here (default: Markdown on stdout)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        a, sched_a = load_side([x for x in args.a.split(",") if x], args.variant_a)
        b, sched_b = load_side([x for x in args.b.split(",") if x], args.variant_b)
        if sched_a != sched_b:
            raise CompareError(f"the sides ran different schedules (A: {sched_a}, B: {sched_b}): "
                               "their FIDs are not comparable")
        res = compare(a, b)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from psgan_fast.machine import git_commit

    words = list(sys.argv[1:] if argv is None else argv)
    setup = {"command": "python -m psgan_fast.compare " + shlex.join(words), "commit": git_commit(),
             "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    labels = (args.label_a, args.label_b)
    md = render(res, labels, sched_a, setup)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "compare.json", json.dumps(
            {"setup": setup, "labels": labels, "schedule": sched_a, **res}, indent=1))
        atomic_write_text(out / "COMPARE.md", md)
        print(f"wrote {out / 'COMPARE.md'}", file=sys.stderr)
    else:
        print(md, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
