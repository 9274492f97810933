"""The reproduction's constants, rows, errors and small helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from psgan_fast.bench.timing import RECOMMENDED_ROWS, row_loss
from psgan_fast.fsutil import atomic_write_text
from psgan_fast.paper import TABLE3

PLAN_VERSION = 2  # 2: the recommended PS-GAN rows, per-row seeds, --jobs
# Share of the budget that the predicted training + evaluation may take;
# the rest absorbs prediction error (a shared machine's load changes).
TARGET_FRACTION = 0.85
BATCH_SIZE = 64
PREFERRED_EPOCHS = 10  # the trainer's default split of 10 epochs is 2 / 3 / 5
MIN_EPOCHS = 3  # one per stage
MAX_EPOCHS = 200
MIN_BATCHES = 16  # below this, trade epochs for batches per epoch
SMOKE = {"epochs": 3, "limit_batches": 2, "eval_samples": 200, "final_samples": 200, "budget_minutes": 5.0}
DEFAULT_EVAL_SAMPLES = 500  # per generator, per epoch (FID-vs-time curves)
# Per-run overheads the calibration does not time (seconds; conservative).
RUN_OVERHEAD_S = 4.0  # building the trainer, loading generators for the final evaluation
CHECKPOINT_S = 0.5  # per epoch
# With --jobs J, J runs train at once (one process each); the planner counts
# J * JOBS_EFFICIENCY runs' worth of work per wall-clock second (the longest
# run and the shared memory bus keep it below J).
JOBS_EFFICIENCY = 0.8

# Table 3's rows (psgan_fast.paper) and the recommended PS-GAN rows (psgan-rec-gN), which train
# beside them with the default loss.
PAPER_ROW_IDS = tuple(r[0] for r in TABLE3)
REC_ROW_IDS = tuple(r[0] for r in RECOMMENDED_ROWS)
ROW_IDS = PAPER_ROW_IDS + REC_ROW_IDS
ROWS = {r[0]: {"model": r[1], "generators": r[2], "paper_seconds": r[3], "paper_ratio": r[4], "loss": row_loss(r[0])}
        for r in TABLE3 + RECOMMENDED_ROWS}
LABELS = {
    "sngan": "SNGAN", "sngan-nosn": "SNGAN variant", "progan": "ProGAN",
    "psgan-g1": "PS-GAN (1 gen)", "psgan-g2": "PS-GAN (2 gens)", "psgan-g3": "PS-GAN (3 gens)",
    **{f"psgan-rec-g{n}": f"PS-GAN recommended ({n} gen{'s' if n > 1 else ''})" for n in (1, 2, 3)},
}
DESCRIPTIONS = {
    "sngan": "spectral norm on D", "sngan-nosn": "spectral norm removed", "progan": "progressive layer growth",
    "psgan-g1": "stepwise + 1 generator", "psgan-g2": "stepwise + 2 generators", "psgan-g3": "stepwise + 3 generators",
    **{f"psgan-rec-g{n}": f"recommended update (--loss {ROWS[f'psgan-rec-g{n}']['loss']}), {n} generator(s)"
       for n in (1, 2, 3)},
}
# The figures: (file stem, paper figure, row).
LOSS_FIGURES = (("fig4_sngan_losses", 4, "sngan"), ("fig5_progan_losses", 5, "progan"),
                ("fig6_psgan2_losses", 6, "psgan-g2"))
SAMPLE_FIGURES = (("fig7_sngan_samples", 7, "sngan"), ("fig8_progan_samples", 8, "progan"),
                  ("fig9_psgan2_samples", 9, "psgan-g2"))
EXTRA_SAMPLE_FIGURES = (("extra_sngan_nosn_samples", None, "sngan-nosn"), ("extra_psgan1_samples", None, "psgan-g1"),
                        ("extra_psgan3_samples", None, "psgan-g3"))


class ReproError(RuntimeError):
    """A problem the user must fix (printed as `error: ...`, exit 1)."""


class Interrupted(RuntimeError):
    """--stop-after-steps reached: the reproduction stops as if killed."""


# --------------------------------------------------------------------------
# Small helpers


def _write_json(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=False) + "\n")


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ReproError(f"{path} is not valid JSON ({e}); delete it to recompute it") from None


def _log(text: str) -> None:
    print(text, flush=True)


def _mean_sd(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def _fmt(m: Optional[float], sd: Optional[float] = None, digits: int = 2) -> str:
    if m is None:
        return "—"
    return f"{m:.{digits}f}" if sd is None else f"{m:.{digits}f} ± {sd:.{digits}f}"


def run_name(row: str, seed: int) -> str:
    return f"{row}-s{seed}"


def stage_split(epochs: int, row: Optional[str] = None) -> tuple[int, ...]:
    """Epochs per stage (7 / 14 / 28 px) of `row` on a schedule of `epochs`:
    what its TrainConfig resolves to without --stage-epochs (the recommended
    PS-GAN's loss has its own split). Without a row: the default split, the
    paper's PS-GAN's and ProGAN's (the plan's `schedule.stage_epochs`)."""
    from psgan_fast.config import TrainConfig, default_stage_epochs

    if row is None:
        return default_stage_epochs(epochs, 3)
    return TrainConfig(model=ROWS[row]["model"], loss=ROWS[row]["loss"], epochs=epochs).resolved_stage_epochs(3)


def _agg(entries: list[dict], what: str) -> tuple[Optional[float], Optional[float]]:
    if what == "time":
        return _mean_sd([e["train_seconds"] for e in entries if e["status"] == "complete"])
    if what == "step":  # wall-clock seconds per step at the final stage
        return _mean_sd([e["final_step_seconds"] for e in entries
                         if e["status"] == "complete" and e.get("final_step_seconds")])
    return _mean_sd([e["eval"][what] for e in entries if e["eval"] is not None])


def _pct(x: Optional[float], digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"
