"""What a run's ``metrics.jsonl`` says, read back by the tools that score
runs (`psgan_fast.ablate`, `psgan_fast.reproduce`). Torch-free.

The trainer appends one record per line; ``"kind": "epoch"`` records close
an epoch and carry the epoch's mean losses and extras (PS-GAN's
``case_real``: the share of groups in which D picked the real image) and
the cumulative ``train_seconds``. ``"kind": "eval"`` records (--eval-every)
carry the per-epoch FID and, since 2026-12-03, each generator's class
histogram ``classes_g{k}``.

As a command, ``python -m psgan_fast.runlog RUN_DIR`` prints a run's
timeline, epoch by epoch: stage, D's share of right picks, FID and each
generator's most frequent class (a collapse shows as a share above 50%) and
the union's rarest and commonest class (the 4–18% band of issue #15).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from psgan_fast.fsutil import read_jsonl

# The no-wasted-generator rule (`psgan_fast.ablate.verdict` applies it): a
# generator's most frequent class at most this share ...
MAX_CLASS_SHARE = 0.50
# ... and at least MIN_CLASSES classes with MIN_CLASS_SHARE of its samples or more.
MIN_CLASSES, MIN_CLASS_SHARE = 3, 0.05
# The union's class shares must all lie in this range (issue #15's target).
UNION_SHARE_RANGE = (0.04, 0.18)


def read_log(run_dir: Path) -> list[dict]:
    """Every record of the run's metrics.jsonl in file order ([] without a log):
    read it once where several of the functions below need it."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def epochs_in(log: list[dict]) -> list[dict]:
    """The epoch records of a run's `read_log`, in file order."""
    return [r for r in log if r.get("kind") == "epoch"]


def epoch_records(run_dir: Path) -> list[dict]:
    """The run's epoch records in file order ([] without a log)."""
    return epochs_in(read_log(run_dir))


def d_picks_real(records: list[dict]) -> list[float]:
    """PS-GAN: the share of groups in which D picked the real image, for
    each finished epoch in order, from a run's `epoch_records` (``case_real``:
    the trainer's mean over every step of the epoch, which is the
    steps-weighted mean of that epoch's logged step windows; an epoch logged
    twice counts once, its last record); [] for the baselines, whose logs
    carry no such share, and for a run without a finished epoch."""
    by_epoch = {int(r["epoch"]): float(r["case_real"]) for r in records if "case_real" in r}
    return [by_epoch[e] for e in sorted(by_epoch)]


def d_picks_real_per_epoch(run_dir: Path) -> list[float]:
    """`d_picks_real` of the run in `run_dir`."""
    return d_picks_real(epoch_records(run_dir))


def final_stage_step_seconds(records: list[dict]) -> Optional[float]:
    """Wall-clock training seconds per step over the epochs of the run's
    last stage (the largest ``stage`` among its epoch records; every epoch
    for a run without stages), from `epoch_records`: the cost of a step at
    the final resolution, whatever the split over the stages. An epoch
    logged twice counts once (its last record). None without such an epoch."""
    by_epoch = {int(r["epoch"]): r for r in records if "seconds" in r and "steps" in r}
    if not by_epoch:
        return None
    last = max(int(r.get("stage", 0)) for r in by_epoch.values())
    final = [r for r in by_epoch.values() if int(r.get("stage", 0)) == last]
    steps = sum(int(r["steps"]) for r in final)
    return sum(float(r["seconds"]) for r in final) / steps if steps else None


def class_shares(hist: Sequence[int]) -> list[float]:
    """A class histogram's shares of its total (all 0 for an empty one)."""
    total = max(1, sum(hist))
    return [h / total for h in hist]


def class_histograms(records: list[dict]) -> dict[int, list[list[int]]]:
    """epoch -> each generator's class histogram, from the run's eval records
    (``classes_g{k}``; an epoch evaluated twice counts once, its last
    record). Epochs without histograms (logs older than them, or no
    --eval-every) are absent."""
    out: dict[int, list[list[int]]] = {}
    for r in records:
        if r.get("kind") != "eval" or "classes_g0" not in r:
            continue
        out[int(r["epoch"])] = [[int(c) for c in r[f"classes_g{k}"]]
                                for k in range(sum(key.startswith("classes_g") for key in r))]
    return out


def top_classes(records: list[dict]) -> dict[int, list[tuple[int, float]]]:
    """epoch -> (most frequent class, its share) of each generator, for the
    epochs of `class_histograms`."""
    out: dict[int, list[tuple[int, float]]] = {}
    for e, hists in class_histograms(records).items():
        out[e] = []
        for hist in hists:
            top = max(range(len(hist)), key=hist.__getitem__)
            out[e].append((top, class_shares(hist)[top]))
    return out


def union_extremes(records: list[dict]) -> dict[int, tuple[tuple[int, float], tuple[int, float]]]:
    """epoch -> ((rarest class, its share), (commonest class, its share)) of
    the union of the generators' samples (every generator draws the same
    number, so the union's histogram is the sum of theirs), for the epochs
    of `class_histograms`; ties go to the lower class."""
    out = {}
    for e, hists in class_histograms(records).items():
        shares = class_shares([sum(col) for col in zip(*hists)])
        lo = min(range(len(shares)), key=shares.__getitem__)
        hi = max(range(len(shares)), key=shares.__getitem__)
        out[e] = ((lo, shares[lo]), (hi, shares[hi]))
    return out


def top_class_share_per_epoch(log: list[dict]) -> list[Optional[float]]:
    """The largest top-class share of any generator, for each finished epoch
    of a run's `read_log` in order (None where that epoch has no class
    histograms): the collapse-over-time line of the reproduction report."""
    tops = top_classes(log)
    epochs = sorted({int(r["epoch"]) for r in epochs_in(log)})
    return [max(s for _, s in tops[e]) if e in tops else None for e in epochs]


def timeline(run_dir: Path) -> list[dict]:
    """One row per finished epoch: epoch (1-based), stage, resolution, D's
    share of right picks (PS-GAN), FID of the union, each generator's
    (class, share) and the union's rarest and commonest (class, share) where
    the log has them."""
    records = read_log(run_dir)
    epochs = {int(r["epoch"]): r for r in epochs_in(records)}
    evals = {int(r["epoch"]): r for r in records if r.get("kind") == "eval"}
    tops, union = top_classes(records), union_extremes(records)
    return [{"epoch": e + 1, "stage": r.get("stage"), "resolution": r.get("resolution"),
             "d_picks_real": r.get("case_real"), "fid": evals.get(e, {}).get("fid"), "top_classes": tops.get(e),
             "union_rarest": union[e][0] if e in union else None,
             "union_commonest": union[e][1] if e in union else None}
            for e, r in sorted(epochs.items())]


def timeline_markdown(run_dir: Path) -> str:
    rows = timeline(run_dir)
    n = max((len(r["top_classes"] or []) for r in rows), default=0)
    head = ["epoch", "stage (px)", "D picks real", "FID (union)"] + [f"G{k + 1}: top class" for k in range(n)]
    if n:
        head.append("union: rarest – commonest class")
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    lo, hi = UNION_SHARE_RANGE
    for r in rows:
        cells = [str(r["epoch"]), f"{r['stage']} ({r['resolution']})",
                 "—" if r["d_picks_real"] is None else f"{100 * r['d_picks_real']:.0f}%",
                 "—" if r["fid"] is None else f"{r['fid']:.2f}"]
        tops = r["top_classes"] or []
        cells += [f"{100 * s:.0f}% '{c}'" + (" **collapsed**" if s > MAX_CLASS_SHARE else "") for c, s in tops]
        cells += ["—"] * (n - len(tops))
        if n:
            if r["union_rarest"] is None:
                cells.append("—")
            else:
                (c0, s0), (c1, s1) = r["union_rarest"], r["union_commonest"]
                cells.append(f"{100 * s0:.1f}% '{c0}' – {100 * s1:.1f}% '{c1}'"
                             + (f" **outside {lo:.0%}–{hi:.0%}**" if s0 < lo or s1 > hi else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m psgan_fast.runlog",
                                description="A run's timeline from its metrics.jsonl: stage, D's share of right "
                                            "picks, FID, each generator's most frequent class and the union's "
                                            "rarest and commonest class, per epoch (class histograms need "
                                            "--eval-every).")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a Markdown table")
    args = p.parse_args(argv)
    if not (args.run_dir / "metrics.jsonl").is_file():
        print(f"error: {args.run_dir} has no metrics.jsonl (not a run directory?)", file=sys.stderr)
        return 1
    try:
        print(json.dumps(timeline(args.run_dir), indent=1) if args.json else timeline_markdown(args.run_dir))
    except (ValueError, KeyError, TypeError) as e:
        print(f"error: {args.run_dir / 'metrics.jsonl'} is not a training log this version reads "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
