"""What a run's ``metrics.jsonl`` says, read back by the tools that score
runs (`psgan_fast.ablate`, `psgan_fast.reproduce`). Torch-free.

The trainer appends one record per line; ``"kind": "epoch"`` records close
an epoch and carry the epoch's mean losses and extras (PS-GAN's
``case_real``: the share of groups in which D picked the real image) and
the cumulative ``train_seconds``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from psgan_fast.fsutil import read_jsonl


def epoch_records(run_dir: Path) -> list[dict]:
    """The run's epoch records in file order ([] without a log)."""
    return [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r.get("kind") == "epoch"]


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
