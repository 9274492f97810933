"""Stage-schedule shorthands that only the tests use (once in
psgan_fast.stages, which needs only `StageSchedule.stage_for_epoch`)."""

from __future__ import annotations

from typing import Sequence

from psgan_fast.stages import StageSchedule


def stage_for_epoch(epoch: int, stage_epochs: Sequence[int]) -> int:
    """Shorthand for ``StageSchedule(stage_epochs).stage_for_epoch(epoch)``."""
    return StageSchedule(stage_epochs).stage_for_epoch(epoch)


def first_epoch(schedule: StageSchedule, stage: int) -> int:
    """The epoch at which `stage` begins (ValueError for a skipped stage)."""
    if stage not in schedule.active:
        raise ValueError(f"stage {stage} has no epochs in {schedule.stage_epochs}")
    return schedule.starts[schedule.active.index(stage)]
