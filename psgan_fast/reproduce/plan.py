"""Planning: the schedule that fits the budget, from a calibration timed on this machine."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from psgan_fast.machine import device_name, loadavg, versions
from psgan_fast.reproduce.common import (BATCH_SIZE, CHECKPOINT_S, JOBS_EFFICIENCY, MAX_EPOCHS, MIN_BATCHES, MIN_EPOCHS,
                                        PLAN_VERSION, PREFERRED_EPOCHS, ROW_IDS, ROWS, RUN_OVERHEAD_S, SMOKE,
                                        TARGET_FRACTION, ReproError, _log, stage_split)
from psgan_fast.reproduce.state import Calibration, Context, Flags, Plan, Schedule, seeds_of


def predict(cal: Union[Calibration, Mapping], rows: Sequence[str], epochs: int, batches: int, *, seeds: int,
            eval_samples: int, final_samples: int) -> dict:
    """Predicted seconds of every run on a schedule, from a calibration
    (a Calibration, or its JSON form): {"runs": {row: {"train", "eval",
    "overhead", "per_batch", "total"}}, "total_seconds", "train_seconds"}.

    A staged model (psgan, progan) spends stage_split(epochs, row)[k] epochs
    at stage k; SNGAN spends every epoch at the final resolution.
    """
    if not isinstance(cal, Calibration):
        cal = Calibration.from_json(cal)
    c = float(cal.eval_seconds_per_image)
    h = float(cal.epoch_overhead_seconds) + CHECKPOINT_S
    out: dict[str, dict] = {}
    for row in rows:
        spec = ROWS[row]
        t = [float(x) for x in cal.step_seconds[row]]
        if spec["model"] in ("psgan", "progan"):
            per_batch = sum(e * s for e, s in zip(stage_split(epochs, row), t))
        else:
            per_batch = epochs * t[-1]
        n = spec["generators"]
        out[row] = {
            "train": batches * per_batch,
            "eval": epochs * n * eval_samples * c + n * final_samples * c,
            "overhead": epochs * h + RUN_OVERHEAD_S,
            "per_batch": per_batch,
        }
        out[row]["total"] = out[row]["train"] + out[row]["eval"] + out[row]["overhead"]
    total = sum(_count(seeds, r) * v["total"] for r, v in out.items())
    return {"runs": out, "total_seconds": total,
            "train_seconds": sum(_count(seeds, r) * v["train"] for r, v in out.items())}


def _count(seeds, row: str) -> int:
    """Seeds of `row`: `seeds` is one count for every row or {row: count}."""
    return int(seeds[row]) if isinstance(seeds, dict) else int(seeds)


def choose_schedule(cal: Union[Calibration, Mapping], *, budget_seconds: float, spent_seconds: float, seeds,
                    full_batches: int, eval_samples: int, final_samples: int, rows: Sequence[str] = ROW_IDS,
                    jobs: int = 1) -> dict:
    """Epochs and batches per epoch such that the predicted time of all runs
    fits TARGET_FRACTION of the budget minus what is already spent: the
    schedule's JSON form (without the sample counts) plus "prediction".

    Prefers PREFERRED_EPOCHS epochs (the 2/3/5 stage split); trades epochs
    for batches when the batches per epoch would fall below MIN_BATCHES;
    once whole epochs fit (full_batches), adds epochs instead.
    """
    # J parallel jobs do about J * JOBS_EFFICIENCY runs' worth of work per second.
    target = TARGET_FRACTION * budget_seconds * (1 if jobs <= 1 else jobs * JOBS_EFFICIENCY) - spent_seconds

    def fit(epochs: int) -> int:
        fixed = predict(cal, rows, epochs, 0, seeds=seeds, eval_samples=eval_samples,
                        final_samples=final_samples)["total_seconds"]
        per_b = sum(_count(seeds, r) * predict(cal, rows, epochs, 1, seeds=1, eval_samples=0,
                                               final_samples=0)["runs"][r]["per_batch"] for r in rows)
        return int(math.floor((target - fixed) / per_b)) if per_b > 0 else full_batches

    epochs = PREFERRED_EPOCHS
    batches = fit(epochs)
    if batches >= full_batches:
        batches = full_batches
        while epochs < MAX_EPOCHS and fit(epochs + 1) >= full_batches:
            epochs += 1
    else:
        while batches < MIN_BATCHES and epochs > MIN_EPOCHS:
            epochs -= 1
            batches = fit(epochs)
    if batches < 1:
        need = predict(cal, rows, MIN_EPOCHS, 1, seeds=seeds, eval_samples=eval_samples,
                       final_samples=final_samples)["total_seconds"]
        raise ReproError(
            f"--budget-minutes {budget_seconds / 60:g} is too small on this machine: "
            f"{spent_seconds / 60:.1f} min went to calibration and even {MIN_EPOCHS} epochs of one batch "
            f"for {len(rows)} models x {seeds} seed(s) are predicted to need "
            f"{(need + spent_seconds) / TARGET_FRACTION / 60:.1f} min; give a larger budget (or --smoke)")
    pred = predict(cal, rows, epochs, batches, seeds=seeds, eval_samples=eval_samples, final_samples=final_samples)
    return {"epochs": epochs, "stage_epochs": list(stage_split(epochs)), "limit_batches": batches,
            "full_epoch": batches >= full_batches, "prediction": pred, "target_seconds": target}


def _calibration_batches(images: Path, labels: Path, count: int, device) -> list:
    from psgan_fast.data import BatchStream, to_float

    stream = BatchStream(images, labels, batch_size=BATCH_SIZE, seed=0)
    out = []
    for x, _ in stream.iter_epoch(0):
        out.append(to_float(x, device))
        if len(out) == count:
            break
    return out


def choose_threads(ctx: Context) -> int:
    """On a CPU with several torch threads, time PS-GAN (2 gens) with one
    thread and with torch's default, and keep the faster: on a shared,
    loaded machine extra OpenMP threads can make every step several times
    slower."""
    import torch

    from psgan_fast.bench.timing import time_training

    default = torch.get_num_threads()
    if ctx.device.type != "cpu" or default <= 1:
        return default
    batches = _calibration_batches(ctx.images, ctx.labels, 2, ctx.device)
    took = {}
    for n in (1, default):
        torch.set_num_threads(n)
        took[n] = time_training("psgan-g2", 2, batches, warmup=1).seconds
    best = min(took, key=took.get)
    _log(f"threads: 1 thread {took[1]:.2f} s, {default} threads {took[default]:.2f} s -> {best}")
    return best


def calibrate(ctx: Context, steps: int, rows: Sequence[str] = ROW_IDS) -> Calibration:
    """Seconds per training step at each stage for every row, and the
    evaluation cost per generated image, measured on this machine now."""
    import tempfile

    import torch

    from psgan_fast.api import TrainedGenerator
    from psgan_fast.bench.timing import make_recipe, time_training
    from psgan_fast.metrics.evaluation import evaluate_generators
    from psgan_fast.plots import save_loss_plot, save_sample_grids

    device = ctx.device
    t_start = time.perf_counter()
    batches = _calibration_batches(ctx.images, ctx.labels, 4, device)
    step_seconds = {}
    for row in rows:
        t = time_training(row, steps, batches, warmup=1)
        step_seconds[row] = [s / steps for s in t.per_stage_seconds]
        _log(f"  calibration: {row:<10} " + " / ".join(f"{s:.3f}" for s in step_seconds[row])
             + " s/step at 7 / 14 / 28 px")
    # Evaluation: sampling a full-resolution generator + features, per image.
    recipe = make_recipe("psgan-g1", 1, device=device)
    recipe.begin_epoch(2)
    g = TrainedGenerator(recipe, 0)
    n = 500
    for count in (50, n):  # a warm-up, then the timed evaluation
        t0 = time.perf_counter()
        evaluate_generators([g], count, real=ctx.real_ref, feature_extractor=ctx.extractor_name,
                            inception_weights=ctx.inception_weights, device=device, kid=False, class_histograms=False)
    per_image = (time.perf_counter() - t0) / n
    # Per-epoch plots: a loss plot and a sample grid.
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        recs = [{"epoch": e, "d_loss": 1.0, "g_loss": [1.0], "stage": 0, "resolution": 28} for e in range(10)]
        save_loss_plot(Path(tmp) / "l.png", recs, "calibration")
        with torch.no_grad():
            save_sample_grids(Path(tmp) / "s.png", [g(torch.randn(64, g.latent_dim, device=device))], "calibration")
        overhead = time.perf_counter() - t0
    return Calibration(steps_per_stage=steps, step_seconds=step_seconds, eval_seconds_per_image=per_image,
                       epoch_overhead_seconds=overhead, seconds=time.perf_counter() - t_start, loadavg=loadavg())


def make_plan(flags: Flags, ctx: Context, *, data_dir: Optional[str], calibration_steps: Optional[int],
              t_start: float, command: str) -> Plan:
    """The plan of a new reproduction: a smoke run's fixed schedule, or one
    fitted to the budget from a calibration (which may choose --threads)."""
    import torch

    from psgan_fast.data import BatchStream

    full = len(BatchStream(ctx.images, ctx.labels, batch_size=BATCH_SIZE, seed=0))
    cal, prediction, fitted = None, None, {}
    if flags.smoke:
        epochs, batches, full_epoch = SMOKE["epochs"], SMOKE["limit_batches"], False
    else:
        steps = calibration_steps or (1 if flags.budget_minutes < 30 else 2)
        if flags.threads is None:
            flags = dataclasses.replace(flags, threads=choose_threads(ctx))
            torch.set_num_threads(flags.threads)
        _log(f"calibrating: {steps} timed step(s) per stage for each of {len(ROW_IDS)} models ...")
        cal = calibrate(ctx, steps)
        spent = time.perf_counter() - t_start
        per_row = {r: len(seeds_of({"seeds": list(range(flags.seeds)), "seed_rows": flags.seed_rows}, r))
                   for r in ROW_IDS}
        sch = choose_schedule(cal, budget_seconds=flags.budget_minutes * 60, spent_seconds=spent, seeds=per_row,
                              jobs=int(flags.jobs or 1), full_batches=full, eval_samples=flags.eval_samples,
                              final_samples=flags.final_samples)
        prediction = sch["prediction"]
        epochs, batches, full_epoch = sch["epochs"], sch["limit_batches"], sch["full_epoch"]
        # Checkpoint inside long epochs (about every 5 predicted minutes).
        slowest = max(max(v) for v in cal.step_seconds.values())
        fitted = {"target_seconds": sch["target_seconds"],
                  "checkpoint_steps": int(300 / slowest) if batches * slowest > 300 else 0}
    schedule = Schedule(epochs=epochs, stage_epochs=list(stage_split(epochs)), limit_batches=batches,
                        full_epoch=full_epoch, **fitted, batch_size=BATCH_SIZE, eval_every=1,
                        eval_samples=flags.eval_samples, final_samples=flags.final_samples, full_epoch_batches=full)
    flags = dataclasses.replace(flags, feature_extractor=ctx.extractor_name)
    return Plan(
        version=PLAN_VERSION, created=time.strftime("%Y-%m-%d %H:%M:%S"), command=command, flags=flags,
        budget_minutes=flags.budget_minutes, smoke=flags.smoke, seeds=list(range(flags.seeds)),
        seed_rows=flags.seed_rows, rows=list(ROW_IDS), device=ctx.device.type, device_name=device_name(ctx.device),
        cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), data_dir=data_dir,
        feature_extractor=ctx.extractor_name, extractor_at_plan=ctx.extractor, schedule=schedule, calibration=cal,
        prediction=prediction, real_reference_seconds=ctx.reference_seconds, versions=versions(),
        loadavg_at_plan=loadavg())
