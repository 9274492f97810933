"""`python -m psgan_fast.reproduce`: reproduce the paper's Tables 2-4 and Figures 4-9.

    python -m psgan_fast.reproduce --out REPORT_DIR --budget-minutes 60 [--seeds K]
                                   [--feature-extractor mnist-lenet|inception-v3-compat]
                                   [--device auto|cpu|cuda]
    python -m psgan_fast.reproduce --out REPORT_DIR --smoke        # whole pipeline in minutes (CI)
    python -m psgan_fast.reproduce --out REPORT_DIR                # resume a started reproduction

One command trains the six models of the paper's Table 3 (SNGAN, SNGAN
without spectral norm, ProGAN, PS-GAN with 1, 2 and 3 generators) for every
seed, all on the same schedule, evaluates each (FID / IS of the union of its
generators), and writes ``REPORT_DIR/REPORT.md`` with Tables 2-4 beside the
paper's numbers, Figures 4-9 and an FID-against-training-time plot
(``REPORT_DIR/figures/``), the setup that produced them, and a paragraph,
generated from the numbers, on which of the paper's claims they support.

The schedule. Every run trains the same number of epochs, with the same
stage split (PS-GAN stages and ProGAN phases at 7 -> 14 -> 28 px; SNGAN has
one stage and spends every epoch at 28 px), the same number of batches of 64
per epoch, and FID/IS (mnist-lenet, a small sample) after every epoch. The
schedule comes from the budget: each model's speed per stage is measured
with a few timed steps (``psgan_fast.bench.timing.time_training``), the
evaluation cost per image likewise, and the number of epochs and batches per
epoch are chosen so that the predicted time of every run (times seeds), its
evaluations and the report fit ``TARGET_FRACTION`` of the budget. The plan
(schedule, calibration, prediction) is written to ``REPORT_DIR/plan.json``
before any training and reused, never recomputed, by later invocations.

Resume. Run directories are ``REPORT_DIR/runs/<row>-s<seed>``. A run whose
latest checkpoint is its last epoch's end is skipped; a run with an earlier
checkpoint continues from it (``TrainConfig(resume=run_dir)``: the trainer
resumes exactly); a run directory without a checkpoint starts over. The
final evaluation of a run is cached in ``<run>/final_eval.json``, keyed by
the checkpoint, extractor (name and weights' SHA-256) and sample count, so
a killed reproduction (at any moment: during calibration, training,
evaluation or the report) continues where it stopped when the same command,
or just ``--out REPORT_DIR``, is run again. Flags that conflict with the
plan of a started reproduction are refused (exit 1).

Training time (Tables 3 and 4) is the run's cumulative ``train_seconds``
from ``metrics.jsonl``: time inside the training loop only, summed over
invocations, excluding evaluation, plots and checkpoints.

Exit status: 0 done, 1 an error (missing data or weights, a conflicting or
corrupt plan), 2 a bad flag, 130 interrupted (``--stop-after-steps`` or
Ctrl-C; run the command again to resume).

The package: ``common`` (constants, rows, helpers), ``state`` (the
dataclasses Flags, Schedule, Calibration and Plan, saved as plan.json, and
Context), ``plan`` (calibration
and the schedule), ``run`` (training and the cached evaluations),
``figures``, ``claims`` (the generated prose), ``report`` (REPORT.md and
results.json) and ``cli`` (flags and ``main``).
"""

from psgan_fast.fsutil import read_jsonl
from psgan_fast.paper import TABLE2 as PAPER_TABLE2, TABLE4 as PAPER_TABLE4
from psgan_fast.reproduce.claims import MAX_COST_RATIO, TIE, _compare, claims, recommended_section
from psgan_fast.reproduce.cli import build_parser, main
from psgan_fast.reproduce.common import (BATCH_SIZE, DEFAULT_EVAL_SAMPLES, DESCRIPTIONS, EXTRA_SAMPLE_FIGURES,
                                        JOBS_EFFICIENCY, LABELS, LOSS_FIGURES, MAX_EPOCHS, MIN_BATCHES, MIN_EPOCHS,
                                        PAPER_ROW_IDS, PLAN_VERSION, PREFERRED_EPOCHS, REC_ROW_IDS, ROW_IDS, ROWS,
                                        SAMPLE_FIGURES, SMOKE, TARGET_FRACTION, Interrupted, ReproError, run_name,
                                        stage_split)
from psgan_fast.reproduce.figures import make_figures
from psgan_fast.reproduce.plan import calibrate, choose_schedule, choose_threads, make_plan, predict
from psgan_fast.reproduce.report import (collect, d_picks_real_per_epoch, d_right_share, render_report, results_doc,
                                        write_report)
from psgan_fast.reproduce.run import (evaluate_run, reference_eval, run_status, train_config, train_parallel,
                                     train_run, train_seconds)
from psgan_fast.reproduce.state import Calibration, Context, Flags, Plan, Schedule, extend_plan, plan_runs, seeds_of

__all__ = [
    "BATCH_SIZE", "DEFAULT_EVAL_SAMPLES", "DESCRIPTIONS", "EXTRA_SAMPLE_FIGURES", "JOBS_EFFICIENCY", "LABELS",
    "LOSS_FIGURES", "MAX_COST_RATIO", "MAX_EPOCHS", "MIN_BATCHES", "MIN_EPOCHS", "PAPER_ROW_IDS", "PAPER_TABLE2",
    "PAPER_TABLE4", "PLAN_VERSION", "PREFERRED_EPOCHS", "REC_ROW_IDS", "ROW_IDS", "ROWS", "SAMPLE_FIGURES",
    "SMOKE", "TARGET_FRACTION", "TIE", "_compare", "build_parser", "calibrate", "Calibration", "choose_schedule",
    "choose_threads", "claims", "collect", "Context", "d_picks_real_per_epoch", "d_right_share", "evaluate_run",
    "extend_plan", "Flags", "Interrupted", "main", "make_figures", "make_plan", "Plan", "plan_runs", "predict", "read_jsonl",
    "recommended_section", "reference_eval", "render_report", "ReproError", "results_doc", "run_name",
    "run_status", "Schedule", "seeds_of", "stage_split", "train_config", "train_parallel", "train_run",
    "train_seconds", "write_report",
]
