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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

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

# (row id, model, generators, paper seconds, paper ratio vs SNGAN): Table 3.
# The recommended PS-GAN rows (psgan-rec-gN) train beside them with the default loss.
from psgan_fast.ablate import UNION_SHARE_RANGE, verdict  # noqa: E402  (the "no wasted generator" rule)
from psgan_fast.bench.timing import RECOMMENDED_ROWS, row_loss  # noqa: E402
from psgan_fast.machine import cpu_name as _cpu_name, git_commit, loadavg as _loadavg  # noqa: E402
from psgan_fast.machine import versions as _versions  # noqa: E402
from psgan_fast.paper import TABLE2 as PAPER_TABLE2, TABLE3, TABLE4 as PAPER_TABLE4  # noqa: E402
from psgan_fast.fsutil import atomic_write_text, read_jsonl  # noqa: E402

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


def seeds_of(plan: dict, row: str) -> list[int]:
    """The seeds a row trains: every planned seed, or only the first for a
    row outside --seed-rows."""
    rows = plan.get("seed_rows")
    return list(plan["seeds"]) if rows is None or row in rows else list(plan["seeds"][:1])


def plan_runs(plan: dict) -> list[tuple[str, int]]:
    return [(row, seed) for seed in plan["seeds"] for row in plan["rows"] if seed in seeds_of(plan, row)]


def stage_split(epochs: int) -> tuple[int, ...]:
    from psgan_fast.config import default_stage_epochs

    return default_stage_epochs(epochs, 3)


# --------------------------------------------------------------------------
# Planning


def predict(cal: dict, rows: Sequence[str], epochs: int, batches: int, *, seeds: int, eval_samples: int,
            final_samples: int) -> dict:
    """Predicted seconds of every run on a schedule, from a calibration.

    `cal` holds "step_seconds" (row -> seconds per step at each of the three
    stages), "eval_seconds_per_image" (sampling + features, per generated
    image) and "epoch_overhead_seconds" (plots and sample grids per epoch).
    A staged model (psgan, progan) spends stage_split(epochs)[k] epochs at
    stage k; SNGAN spends every epoch at the final resolution.
    """
    split = stage_split(epochs)
    c = float(cal["eval_seconds_per_image"])
    h = float(cal["epoch_overhead_seconds"]) + CHECKPOINT_S
    out: dict[str, dict] = {}
    for row in rows:
        spec = ROWS[row]
        t = [float(x) for x in cal["step_seconds"][row]]
        if spec["model"] in ("psgan", "progan"):
            per_batch = sum(e * s for e, s in zip(split, t))
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


def choose_schedule(cal: dict, *, budget_seconds: float, spent_seconds: float, seeds: int, full_batches: int,
                    eval_samples: int, final_samples: int, rows: Sequence[str] = ROW_IDS, jobs: int = 1) -> dict:
    """Epochs and batches per epoch such that the predicted time of all runs
    fits TARGET_FRACTION of the budget minus what is already spent.

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


def choose_threads(ctx: dict) -> int:
    """On a CPU with several torch threads, time PS-GAN (2 gens) with one
    thread and with torch's default, and keep the faster: on a shared,
    loaded machine extra OpenMP threads can make every step several times
    slower."""
    import torch

    from psgan_fast.bench.timing import time_training

    default = torch.get_num_threads()
    if ctx["device"].type != "cpu" or default <= 1:
        return default
    batches = _calibration_batches(ctx["images"], ctx["labels"], 2, ctx["device"])
    took = {}
    for n in (1, default):
        torch.set_num_threads(n)
        took[n] = time_training("psgan-g2", 2, batches, warmup=1).seconds
    best = min(took, key=took.get)
    _log(f"threads: 1 thread {took[1]:.2f} s, {default} threads {took[default]:.2f} s -> {best}")
    return best


def calibrate(*, device, images: Path, labels: Path, steps: int, real_ref, feature_extractor: str,
              inception_weights, rows: Sequence[str] = ROW_IDS) -> dict:
    """Seconds per training step at each stage for every row, and the
    evaluation cost per generated image, measured on this machine now."""
    import tempfile

    import torch

    from psgan_fast.api import TrainedGenerator
    from psgan_fast.bench.timing import make_recipe, time_training
    from psgan_fast.metrics.evaluation import evaluate_generators
    from psgan_fast.plots import save_loss_plot, save_sample_grids

    t_start = time.perf_counter()
    batches = _calibration_batches(images, labels, 4, device)
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
    evaluate_generators([g], 50, real=real_ref, feature_extractor=feature_extractor,
                        inception_weights=inception_weights, device=device, kid=False, class_histograms=False)
    t0 = time.perf_counter()
    evaluate_generators([g], n, real=real_ref, feature_extractor=feature_extractor,
                        inception_weights=inception_weights, device=device, kid=False, class_histograms=False)
    per_image = (time.perf_counter() - t0) / n
    # Per-epoch plots: a loss plot and a sample grid.
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        recs = [{"epoch": e, "d_loss": 1.0, "g_loss": [1.0], "stage": 0, "resolution": 28} for e in range(10)]
        save_loss_plot(Path(tmp) / "l.png", recs, "calibration")
        with torch.no_grad():
            save_sample_grids(Path(tmp) / "s.png", [g(torch.randn(64, g.latent_dim, device=device))], "calibration")
        overhead = time.perf_counter() - t0
    return {"steps_per_stage": steps, "step_seconds": step_seconds, "eval_seconds_per_image": per_image,
            "epoch_overhead_seconds": overhead, "seconds": time.perf_counter() - t_start,
            "loadavg": _loadavg()}


# --------------------------------------------------------------------------
# Runs


def run_status(run_dir: Path) -> tuple[str, int]:
    """("new" | "partial" | "complete" | "failed", steps done) of a run directory."""
    from psgan_fast import checkpoint as ckpt_mod

    if (run_dir / "FAILED.json").is_file():
        return "failed", 0
    ck = ckpt_mod.latest(run_dir)
    if ck is None:
        return "new", 0
    state = ckpt_mod.read_state(ck)
    doc = _read_json(run_dir / "config.json") or {}
    epochs = int(doc.get("config", {}).get("epochs", -1))
    spe = int(doc.get("resolved", {}).get("steps_per_epoch", -1))
    if int(state["epoch"]) == epochs - 1 and int(state["batch"]) >= spe:
        return "complete", int(state["step"])
    return "partial", int(state["step"])


def train_config(plan: dict, row: str, seed: int, run_dir: Path):
    from psgan_fast.config import TrainConfig

    spec, sch = ROWS[row], plan["schedule"]
    staged = spec["model"] in ("psgan", "progan")
    extra = {"eval_samples": int(sch["eval_samples"])}
    return TrainConfig(
        model=spec["model"], generators=spec["generators"], loss=spec["loss"], epochs=int(sch["epochs"]),
        stage_epochs=tuple(sch["stage_epochs"]) if staged else None, batch_size=BATCH_SIZE,
        device=plan["device"], seed=seed, data_dir=plan.get("data_dir"), out=str(run_dir),
        limit_batches=None if sch["full_epoch"] else int(sch["limit_batches"]),
        sample_every=1, checkpoint_every=1, checkpoint_steps=int(sch.get("checkpoint_steps", 0)),
        log_every=max(1, min(50, int(sch["limit_batches"]))), eval_every=1, progress=False, extra=extra)


def _check_run_matches(run_dir: Path, cfg) -> None:
    """A run directory from another schedule must not be silently reused."""
    doc = _read_json(run_dir / "config.json")
    if doc is None:
        return
    saved = doc.get("config", {})
    want = cfg.to_json()
    for k in ("model", "generators", "loss", "epochs", "stage_epochs", "batch_size", "seed", "limit_batches"):
        a, b = saved.get(k), want.get(k)
        if k == "stage_epochs" and a is None:
            continue  # frozen to the default split by the trainer on resume
        if a != b:
            raise ReproError(f"{run_dir} was trained with {k}={a!r}, the plan says {b!r}; "
                             "it belongs to another reproduction — use another --out or delete that run")


def train_run(plan: dict, row: str, seed: int, run_dir: Path, step_limit: Optional[int]) -> int:
    """Train (or finish) one run; returns the steps taken in this call.
    `step_limit`: stop after that many steps (a partial checkpoint is kept)."""
    from psgan_fast.config import TrainConfig
    from psgan_fast.trainer import train

    status, step0 = run_status(run_dir)
    if status in ("complete", "failed"):
        return 0
    cfg = train_config(plan, row, seed, run_dir)
    _check_run_matches(run_dir, cfg)
    if status == "new":
        if run_dir.exists():
            shutil.rmtree(run_dir)  # killed before its first checkpoint: start over
        cfg = dataclasses.replace(cfg, max_steps=step_limit)
    else:
        cfg = TrainConfig(resume=str(run_dir), progress=False,
                          max_steps=None if step_limit is None else step0 + step_limit)
    train(cfg)
    return run_status(run_dir)[1] - step0


def _wall_minutes(plan: dict) -> float:
    """The plan's predicted wall clock: the runs' serial total, shared by
    --jobs processes at JOBS_EFFICIENCY."""
    jobs = int(plan["flags"].get("jobs") or 1)
    serial = plan["prediction"]["total_seconds"] / 60
    return serial if jobs <= 1 else serial / (jobs * JOBS_EFFICIENCY)


def _train_worker(plan: dict, row: str, seed: int, run_dir: str, threads: Optional[int]) -> str:
    """One run in a worker process (--jobs): train it, or mark it failed."""
    import torch

    from psgan_fast.trainer import TrainingDiverged

    if threads:
        torch.set_num_threads(int(threads))
    try:
        train_run(plan, row, seed, Path(run_dir), None)
    except TrainingDiverged as e:
        _write_json(Path(run_dir) / "FAILED.json", {"error": "diverged", "detail": str(e)})
        return "diverged"
    return "complete"


def train_parallel(out: Path, plan: dict, runs: Sequence[tuple[str, int]], jobs: int) -> None:
    """Train every unfinished run, `jobs` at a time (one process each),
    the longest predicted first so that the last ones finish together."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pred = (plan.get("prediction") or {}).get("runs", {})
    todo = [(row, seed) for row, seed in runs
            if run_status(out / "runs" / run_name(row, seed))[0] in ("new", "partial")]
    todo.sort(key=lambda rs: -pred.get(rs[0], {}).get("total", 0.0))
    if not todo:
        return
    _log(f"training {len(todo)} run(s), {jobs} at a time ...")
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(_train_worker, plan, row, seed, str(out / "runs" / run_name(row, seed)),
                            plan["flags"].get("threads")): (row, seed) for row, seed in todo}
        for i, fut in enumerate(as_completed(futs), 1):
            row, seed = futs[fut]
            _log(f"  trained {i}/{len(todo)}: {row} seed {seed} ({fut.result()})")


def train_seconds(run_dir: Path) -> Optional[float]:
    """Cumulative training seconds of a run (its last epoch record)."""
    recs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"]
    return float(recs[-1]["train_seconds"]) if recs else None


def evaluate_run(plan: dict, run_dir: Path, seed: int, ctx: dict) -> dict:
    """The final evaluation of a complete run, cached in final_eval.json."""
    from psgan_fast import checkpoint as ckpt_mod

    ck = ckpt_mod.latest(run_dir)
    from psgan_fast.metrics.evaluation import CACHE_VERSION

    # The extractor's definition version is part of the key: features computed
    # under an older definition (same weights) must not be reused.
    key = {"checkpoint": ck.name, "feature_extractor": ctx["extractor"]["name"],
           "weights_sha256": ctx["extractor"]["weights_sha256"], "extractor_version": CACHE_VERSION,
           "num_samples": int(plan["schedule"]["final_samples"]), "seed": seed}
    cache = run_dir / "final_eval.json"
    doc = _read_json(cache)
    if doc is not None and doc.get("key") == key:
        return doc["result"]
    import warnings

    from psgan_fast.api import load_generators
    from psgan_fast.metrics.evaluation import evaluate_generators

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gens = load_generators(run_dir, device=ctx["device"])
    n = key["num_samples"]
    res = evaluate_generators(gens, n, real=ctx["real_ref"], feature_extractor=key["feature_extractor"],
                              inception_weights=ctx.get("inception_weights"), device=ctx["device"], seed=seed,
                              kid=False)
    result = {
        "fid": res["union"]["fid"], "is_mean": res["union"]["is_mean"], "is_std": res["union"]["is_std"],
        "class_histogram": res["union"].get("class_histogram"),
        "generators": [{"fid": g["fid"], "is_mean": g["is_mean"], "class_histogram": g.get("class_histogram")}
                       for g in res["generators"]],
        "num_samples": n, "feature_extractor": res["feature_extractor"], "seconds": res["seconds"],
        "train_seconds": train_seconds(run_dir), "steps": int(ckpt_mod.read_state(ck)["step"]),
    }
    _write_json(cache, {"key": key, "result": result})
    return result


# --------------------------------------------------------------------------
# Reference: real held-out images under the same extractor (the FID floor)


def reference_eval(out: Path, plan: dict, ctx: dict) -> Optional[dict]:
    from psgan_fast.metrics.evaluation import CACHE_VERSION

    key = {"feature_extractor": ctx["extractor"]["name"], "weights_sha256": ctx["extractor"]["weights_sha256"],
           "extractor_version": CACHE_VERSION, "num_samples": int(plan["schedule"]["final_samples"])}
    path = out / "reference_eval.json"
    doc = _read_json(path)
    if doc is not None and doc.get("key") == key:
        return doc["result"]
    from psgan_fast.data import find_dataset, read_idx
    from psgan_fast.metrics.evaluation import evaluate_images

    try:
        images, _ = find_dataset("mnist", plan.get("data_dir"), "test")
    except (OSError, ValueError):
        return None
    test = read_idx(images)[: key["num_samples"]]
    res = evaluate_images([test], real=ctx["real_ref"], feature_extractor=key["feature_extractor"],
                          inception_weights=ctx.get("inception_weights"), device=ctx["device"], kid=False)
    result = {"fid": res["union"]["fid"], "is_mean": res["union"]["is_mean"], "is_std": res["union"]["is_std"],
              "num_samples": len(test),
              "real_train_is": ctx["real_ref"].summary()["is_mean"]}
    _write_json(path, {"key": key, "result": result})
    return result


# --------------------------------------------------------------------------
# Figures


def _seed0_run(out: Path, plan: dict, row: str) -> Path:
    return out / "runs" / run_name(row, plan["seeds"][0])


def make_figures(out: Path, plan: dict) -> dict[str, str]:
    """Figures 4-9, extra sample grids and FID vs training time; returns
    {figure stem: path relative to out} for those that could be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from psgan_fast.plots import save_loss_plot

    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    epochs = int(plan["schedule"]["epochs"])
    for stem, fig, row in LOSS_FIGURES:
        recs = [r for r in read_jsonl(_seed0_run(out, plan, row) / "metrics.jsonl") if r.get("kind") == "epoch"]
        if recs:
            save_loss_plot(figdir / f"{stem}.png", recs, f"Fig. {fig}: {LABELS[row]}, average loss per epoch")
            made[stem] = f"figures/{stem}.png"
    for stem, _, row in SAMPLE_FIGURES + EXTRA_SAMPLE_FIGURES:
        src = _seed0_run(out, plan, row) / "samples" / f"epoch_{epochs:04d}.png"
        if src.is_file():
            shutil.copyfile(src, figdir / f"{stem}.png")
            made[stem] = f"figures/{stem}.png"
    # FID (per-epoch, mnist-lenet, small sample) against cumulative training seconds.
    fig, ax = plt.subplots(figsize=(8, 5))
    any_curve = False
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(ROW_IDS):
        for j, seed in enumerate(plan["seeds"]):
            ev = [r for r in read_jsonl(out / "runs" / run_name(row, seed) / "metrics.jsonl")
                  if r.get("kind") == "eval" and r.get("fid") is not None]
            if not ev:
                continue
            any_curve = True
            ax.plot([r["train_seconds"] for r in ev], [r["fid"] for r in ev], "-o" if j == 0 else "--",
                    ms=3, lw=1.5 if j == 0 else 0.8, color=colors[i % len(colors)],
                    label=LABELS[row] if j == 0 else None)
    if any_curve:
        ax.set_yscale("log")
        ax.set_xlabel("cumulative training time (s, excludes evaluation)")
        ax.set_ylabel(f"FID (mnist-lenet, {plan['schedule']['eval_samples']} samples/generator)")
        ax.set_title("FID against wall-clock training time" + (" (dashed: further seeds)" if len(plan["seeds"]) > 1
                                                               else ""))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(figdir / "fid_vs_time.png", dpi=100)
        made["fid_vs_time"] = "figures/fid_vs_time.png"
    plt.close(fig)
    return made


# --------------------------------------------------------------------------
# The report


def d_right_share(run_dir: Path) -> Optional[float]:
    """PS-GAN: the share of groups in which D picked the real image during
    the run's last epoch (``case_real`` of its last epoch record); None for
    the baselines, whose logs carry no such share."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    recs = [r for r in read_jsonl(path) if r.get("kind") == "epoch" and "case_real" in r]
    return float(recs[-1]["case_real"]) if recs else None


def collect(out: Path, plan: dict) -> dict[str, list[dict]]:
    """row -> one entry per seed: status, train seconds, evaluation."""
    table: dict[str, list[dict]] = {}
    for row in ROW_IDS:
        for seed in seeds_of(plan, row):
            rd = out / "runs" / run_name(row, seed)
            status, steps = run_status(rd) if rd.exists() else ("new", 0)
            doc = _read_json(rd / "final_eval.json") if status == "complete" else None
            entry = {"seed": seed, "status": status, "steps": steps, "train_seconds": train_seconds(rd),
                     "eval": doc["result"] if doc else None, "d_right": d_right_share(rd)}
            if status == "failed":
                entry["error"] = (_read_json(rd / "FAILED.json") or {}).get("error")
            table.setdefault(row, []).append(entry)
    return table


def _agg(entries: list[dict], what: str) -> tuple[Optional[float], Optional[float]]:
    if what == "time":
        return _mean_sd([e["train_seconds"] for e in entries if e["status"] == "complete"])
    return _mean_sd([e["eval"][what] for e in entries if e["eval"] is not None])


def _pct(x: Optional[float], digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


# Relative gap below which two single-seed numbers are called a tie.
TIE = 0.02


def _compare(a: tuple, b: tuple, k: int) -> str:
    """'<', '>' or '≈' for (mean, sd) pairs: a tie when the gap is under TIE
    of their size, or (several seeds) under twice the combined seed spread."""
    (ma, sa), (mb, sb) = a, b
    gap = ma - mb
    if abs(gap) <= TIE * max(abs(ma), abs(mb)):
        return "≈"
    if k > 1 and sa is not None and sb is not None and abs(gap) <= 2 * math.sqrt(sa ** 2 + sb ** 2):
        return "≈"
    return "<" if gap < 0 else ">"


def claims(table: dict, plan: dict, reference: Optional[dict]) -> list[str]:
    """Paragraphs, generated from the numbers, on which of the paper's claims
    they support. Two numbers count as different only when they differ by
    more than TIE (relative) and, with several seeds, by more than twice the
    combined standard deviation over seeds."""
    k = len(plan["seeds"])
    fid = {r: _agg(table[r], "fid") for r in ROW_IDS}
    isc = {r: _agg(table[r], "is_mean") for r in ROW_IDS}
    tim = {r: _agg(table[r], "time") for r in ROW_IDS}
    out: list[str] = []
    noise = (f"two numbers count as different only when they differ by more than {int(TIE * 100)}%"
             + (" and by more than twice their combined standard deviation over seeds" if k > 1 else "")
             + "; otherwise they are called a tie (≈)")
    if plan.get("smoke"):
        out.append("*This is a smoke run: a few steps per model test the pipeline; its numbers say nothing "
                   "about the paper.*")
    out.append(f"Rule used below: {noise}.")

    def word(c: str) -> str:
        return {"<": "lower than", ">": "higher than", "≈": "tied with"}[c]

    have2 = all(fid[r][0] is not None for r in ("sngan", "progan", "psgan-g2"))
    if not have2:
        out.append("**Table 2 (PS-GAN (2 gens) has the lowest FID):** not all of SNGAN, ProGAN and PS-GAN (2 gens) "
                   "have been evaluated yet, so this claim is not tested.")
    else:
        vs_sn, vs_pro = _compare(fid["psgan-g2"], fid["sngan"], k), _compare(fid["psgan-g2"], fid["progan"], k)
        verdict = ("supported" if vs_sn == vs_pro == "<" else
                   "partly supported" if "<" in (vs_sn, vs_pro) else "not supported")
        pro_sn = _compare(fid["progan"], fid["sngan"], k)
        out.append(
            "**Table 2 — PS-GAN (2 gens) has a lower FID than SNGAN and ProGAN (6.87 vs 8.34 and 7.29): "
            f"{verdict}.** "
            f"Ours: PS-GAN (2 gens) {_fmt(*fid['psgan-g2'])}, SNGAN {_fmt(*fid['sngan'])}, ProGAN "
            f"{_fmt(*fid['progan'])}: PS-GAN is {word(vs_sn)} SNGAN and {word(vs_pro)} ProGAN. The paper also puts "
            f"ProGAN ahead of SNGAN (7.29 < 8.34); here ProGAN's FID is {word(pro_sn)} SNGAN's.")
        if all(isc[r][0] is not None for r in ("sngan", "progan", "psgan-g2")):
            order = sorted(("sngan", "progan", "psgan-g2"), key=lambda r: -isc[r][0])
            rel = [_compare(isc[order[i]], isc[order[i + 1]], k) for i in range(2)]
            shown = f"{LABELS[order[0]]} {'≈' if rel[0] == '≈' else '>'} {LABELS[order[1]]} " \
                    f"{'≈' if rel[1] == '≈' else '>'} {LABELS[order[2]]}"
            same = order == ["progan", "psgan-g2", "sngan"]
            same_text = ("the same order" if same and "≈" not in rel else
                         "the same order, but with ties" if same else "not the same order")
            out.append(f"IS ranks them {shown} ({', '.join(_fmt(*isc[r]) for r in order)}); the paper's IS ranks "
                       f"ProGAN (12.7) > PS-GAN (12.2) > SNGAN (11.6) — {same_text}.")
    f = [fid[f"psgan-g{n}"] for n in (1, 2, 3)]
    s = [isc[f"psgan-g{n}"] for n in (1, 2, 3)]
    if any(x[0] is None for x in f):
        out.append("**Table 4 — more generators, lower FID:** not all PS-GAN runs are evaluated yet.")
    else:
        c12, c23, c13 = _compare(f[0], f[1], k), _compare(f[1], f[2], k), _compare(f[0], f[2], k)
        verdict = ("supported" if c12 == c23 == ">" else
                   "partly supported" if c13 == ">" or ">" in (c12, c23) else "not supported")
        sc = [_compare(s[0], s[1], k), _compare(s[1], s[2], k)]
        is_trend = ("rises" if sc == ["<", "<"] else "falls" if sc == [">", ">"] else
                    "is flat (ties)" if sc == ["≈", "≈"] else "is not monotone")
        out.append(
            f"**Table 4 — FID falls as generators are added (7.15 → 6.87 → 6.68): {verdict}.** "
            "Ours, 1 → 2 → 3 "
            f"generators: {' → '.join(_fmt(*x) for x in f)}, i.e. FID(1) {c12} FID(2) {c23} FID(3). "
            f"IS {is_trend}: {' → '.join(_fmt(*x) for x in s)}; the paper's rises 11.9 → 12.2 → 12.7.")
    base = tim["sngan"][0]
    if base is None or any(tim[r][0] is None for r in PAPER_ROW_IDS):
        out.append("**Table 3 — training time:** not every run has finished, so the time ratios are incomplete.")
    else:
        ratio = {r: tim[r][0] / base for r in PAPER_ROW_IDS}
        ours = sorted(PAPER_ROW_IDS, key=lambda r: ratio[r])
        paper = sorted(PAPER_ROW_IDS, key=lambda r: ROWS[r]["paper_ratio"])
        pairs = [(x, y) for i, x in enumerate(PAPER_ROW_IDS) for y in PAPER_ROW_IDS[i + 1:]]
        agree = sum((ratio[x] < ratio[y]) == (ROWS[x]["paper_ratio"] < ROWS[y]["paper_ratio"]) for x, y in pairs)
        g = [tim[f"psgan-g{n}"] for n in (1, 2, 3)]
        grows = _compare(g[0], g[1], k) == "<" and _compare(g[1], g[2], k) == "<"
        nosn = _compare(tim["sngan-nosn"], tim["sngan"], k)
        g1 = _compare(tim["psgan-g1"], tim["sngan"], k)
        out.append(
            f"**Table 3 — training time.** Our order, cheapest first: {', '.join(LABELS[r] for r in ours)}; the "
            f"paper's: {', '.join(LABELS[r] for r in paper)} ({agree} of {len(pairs)} pairwise orderings agree). "
            f"Relative to SNGAN: PS-GAN (2 gens) {_pct(ratio['psgan-g2'])} (paper 123.7%), PS-GAN (3 gens) "
            f"{_pct(ratio['psgan-g3'])} (paper 158.5%), PS-GAN (1 gen) {_pct(ratio['psgan-g1'])} (paper 96.5%), "
            f"ProGAN {_pct(ratio['progan'])} (paper 134.6%), SNGAN without spectral norm "
            f"{_pct(ratio['sngan-nosn'])} (paper 89.4%). That removing spectral norm saves time is "
            f"{'supported' if nosn == '<' else 'not supported'}; that PS-GAN with one generator is cheaper than SNGAN "
            f"is {'supported' if g1 == '<' else 'not supported'}; that each extra generator adds time is "
            f"{'supported' if grows else 'not supported'} (1 / 2 / 3 generators: "
            f"{_pct(g[0][0] / g[1][0], 0)} / 100% / {_pct(g[2][0] / g[1][0], 0)} of 2 generators; paper 78% / 100% / "
            f"128%).")
        cal = plan.get("calibration") or {}
        st = (cal.get("step_seconds") or {}).get("psgan-g2")
        if st and st[-1] > 0:
            out.append(f"Where the stepwise models' time goes: in the calibration a PS-GAN (2 gens) step at 7×7 took "
                       f"{_pct(st[0] / st[-1], 0)} and at 14×14 {_pct(st[1] / st[-1], 0)} of a 28×28 step on this "
                       f"{plan['device']}; the paper does not report per-stage costs on its GPU, so differences in "
                       "the ratios may come from how cheap the early stages are on each device.")
    sch = plan["schedule"]
    steps = sch["epochs"] * sch["limit_batches"]
    cav = [f"Each run saw {steps:,} batches of 64 ({steps * 64:,} images, {steps * 64 / 60000:.2f} passes over "
           "MNIST's 60,000 training images), a small fraction of the paper's training, so every model is early on "
           "its learning curve: the quality comparison is one of early training, not of converged models."]
    if reference is not None:
        best = min((v[0] for v in fid.values() if v[0] is not None), default=None)
        if best is not None:
            cav.append(f"For scale, real held-out MNIST test images score FID {reference['fid']:.2f} (IS "
                       f"{reference['is_mean']:.2f}) under the same extractor and sample size; our best model "
                       f"scores FID {best:.2f}.")
    cav.append(f"FID/IS use the {plan['feature_extractor']} extractor, so absolute values are not comparable with "
               "the paper's Inception numbers; only orderings and ratios are.")
    if plan["feature_extractor"] == "mnist-lenet":
        cav.append("mnist-lenet's IS is bounded by 10 (ten classes); the paper's Inception IS exceeds 10.")
    cav.append("One seed gives no estimate of run-to-run spread, so small gaps in FID or time may be noise."
               if k == 1 else f"Means and standard deviations are over {k} seeds.")
    cav.append("Times come from a shared machine whose load varied while the runs trained (load averages in the "
               "setup), so the time ratios carry that noise; Table 3's calibration column is an independent short "
               "measurement of the same ratios.")
    out.append("**Caveats.** " + " ".join(cav))
    shares = []
    for r in ("psgan-g1", "psgan-g2", "psgan-g3"):
        m, _ = _mean_sd([e["d_right"] for e in table[r] if e.get("d_right") is not None])
        if m is not None:
            n = ROWS[r]["generators"]
            shares.append(f"{LABELS[r]} {_pct(m)} (chance {_pct(1 / (n + 1), 0)})")
    if shares:
        out.append("**The discriminator under Algorithm 2.** The paper claims that N+1-way classification restrains D "
                   "indirectly, so that it no longer outruns the generators. In the last epoch D picked the real "
                   "image in " + ", ".join(shares) + " of the groups. Algorithm 2 updates D only in the groups it "
                   "gets wrong, so D stops learning wherever it is right: a share near 100% means D still wins almost "
                   "every group (and receives almost no gradient), a share near chance means the generators keep "
                   "up. The loss curves are in Figures 4–6.")
    else:
        out.append("The paper's qualitative claim that the discriminator no longer outruns the generators is visible "
                   "only in the loss curves (Figures 4–6).")
    return out


# The recommended step may cost at most this much more than the paper's.
MAX_COST_RATIO = 1.15


def _classes(entries: list[dict]) -> tuple[Optional[float], Optional[int], Optional[tuple[float, float]]]:
    """Over a row's evaluated seeds: the largest top-class share of any
    generator, the number of collapsed generators, and the union's class
    share range (min, max)."""
    tops, collapsed, lo, hi = [], 0, [], []
    for e in entries:
        ev = e.get("eval") or {}
        for g in ev.get("generators", []):
            if g.get("class_histogram"):
                v = verdict(g["class_histogram"])
                tops.append(v["top_share"])
                collapsed += v["collapsed"]
        h = ev.get("class_histogram")
        if h:
            tot = max(1, sum(h))
            lo.append(min(h) / tot)
            hi.append(max(h) / tot)
    if not tops:
        return None, None, None
    return max(tops), collapsed, (min(lo), max(hi)) if lo else None


def recommended_section(table: dict, plan: dict) -> list[str]:
    """The paper's PS-GAN (Algorithm 2 read literally) and the recommended
    one beside SNGAN, with the targets of issue #15 checked from the numbers."""
    k = len(plan["seeds"])
    rows = [r for r in ("sngan",) + tuple(f"psgan-g{n}" for n in (1, 2, 3)) + REC_ROW_IDS if r in table]
    if not any(r in table for r in REC_ROW_IDS):
        return []
    lo_ok, hi_ok = UNION_SHARE_RANGE
    L = ["## The paper's PS-GAN and the recommended one, beside SNGAN\n",
         f"The paper's rows train `--loss ps` (Algorithm 2 read literally); the recommended rows train "
         f"`--loss {ROWS[REC_ROW_IDS[0]]['loss']}`, the default of `--model psgan` (docs/DESIGN.md). A generator is "
         "collapsed when one class holds more than 50% of its samples or fewer than 3 classes hold 5% or more "
         "(mnist-lenet's argmax).\n",
         "| model | loss | seeds | FID | IS | time vs paper's PS-GAN (same N) | largest top-class share of a generator "
         "| collapsed generators | union class shares | D picks the real image (last epoch; chance) |",
         "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        entries = table[r]
        t = _agg(entries, "time")[0]
        n = ROWS[r]["generators"]
        faithful = f"psgan-g{n}" if r.startswith("psgan-rec") else None
        tf = _agg(table[faithful], "time")[0] if faithful else None
        top, coll, rng = _classes(entries)
        d, _ = _mean_sd([e["d_right"] for e in entries if e.get("d_right") is not None])
        n_eval = sum(e["eval"] is not None for e in entries)
        L.append(f"| {LABELS[r]} | {ROWS[r]['loss'] if ROWS[r]['model'] == 'psgan' else '—'} | {n_eval} "
                 f"| {_fmt(*_agg(entries, 'fid'))} | {_fmt(*_agg(entries, 'is_mean'))} "
                 f"| {_pct(t / tf) if t and tf else '—'} | {_pct(top, 0)} "
                 f"| {'—' if coll is None else coll} | "
                 f"{'—' if rng is None else f'{rng[0]:.1%}–{rng[1]:.1%}'} "
                 f"| {_pct(d, 0) if d is not None else '—'}"
                 f"{f' ({_pct(1 / (n + 1), 0)})' if d is not None else ''} |")
    L.append("")
    fid = {r: _agg(table[r], "fid") for r in rows}
    out = []
    if fid.get("psgan-rec-g2", (None,))[0] is not None and fid["sngan"][0] is not None:
        c = _compare(fid["psgan-rec-g2"], fid["sngan"], k)
        out.append(f"- Recommended PS-GAN (2 gens) FID {_fmt(*fid['psgan-rec-g2'])} vs SNGAN {_fmt(*fid['sngan'])}: "
                   f"{'at or below SNGAN — target met' if c in ('<', '≈') else 'above SNGAN — target missed'}.")
    if all(fid.get(f"psgan-rec-g{n}", (None,))[0] is not None for n in (2, 3)):
        c = _compare(fid["psgan-rec-g3"], fid["psgan-rec-g2"], k)
        out.append(f"- 3 generators vs 2 (recommended): {_fmt(*fid['psgan-rec-g3'])} vs {_fmt(*fid['psgan-rec-g2'])}: "
                   f"{'Table 4 order held' if c in ('<', '≈') else 'Table 4 order not held'}.")
    for group, label in ((REC_ROW_IDS, "recommended"), (tuple(f"psgan-g{n}" for n in (1, 2, 3)), "paper's")):
        stats = [(r, _classes(table[r])) for r in group if r in table]
        stats = [(r, c) for r, c in stats if c[0] is not None]
        if stats:
            wasted = sum(c[1] for _, c in stats)
            union_ok = all(c[2] is not None and c[2][0] >= lo_ok and c[2][1] <= hi_ok for _, c in stats)
            out.append(f"- No wasted generator ({label} PS-GAN): {wasted} collapsed generator(s) over "
                       f"{len(stats)} model(s); union class shares {'all' if union_ok else 'not all'} within "
                       f"{lo_ok:.0%}–{hi_ok:.0%}.")
    costs = []
    for n in (1, 2, 3):
        t, tf = _agg(table.get(f"psgan-rec-g{n}", []), "time")[0], _agg(table.get(f"psgan-g{n}", []), "time")[0]
        if t and tf:
            costs.append(t / tf)
    if costs:
        out.append(f"- Cost of the recommended update: {', '.join(_pct(c, 0) for c in costs)} of the paper's "
                   f"training time for N = 1, 2, 3 (target ≤ {_pct(MAX_COST_RATIO, 0)}): "
                   f"{'met' if max(costs) <= MAX_COST_RATIO else 'missed'}.")
    return L + out + [""]


def render_report(out: Path, plan: dict, table: dict, figures: dict[str, str], reference: Optional[dict],
                  ctx: dict, progress: dict) -> str:
    sch = plan["schedule"]
    k = len(plan["seeds"])
    n_done = sum(e["eval"] is not None for v in table.values() for e in v)
    n_all = sum(len(v) for v in table.values())
    L: list[str] = []
    a = L.append
    a("# PS-GAN reproduction: Tables 2–4 and Figures 4–9\n")
    a(f"Planned {plan['created']} by `{plan['command']}`; this report written {time.strftime('%Y-%m-%d %H:%M:%S')}"
      f" by `{ctx.get('command', plan['command'])}`.  ")
    a(f"Status: **{'complete' if n_done == n_all else f'partial — {n_done} of {n_all} runs evaluated'}**.\n")
    # Setup.
    ext = ctx["extractor"]
    v = plan["versions"]
    wall = sum(inv.get("wall_seconds", 0.0) for inv in progress.get("invocations", []))
    pred = plan.get("prediction") or {}
    a("## Setup\n")
    a(f"- **Feature extractor:** `{ext['name']}` (weights `{ext.get('weights')}`, SHA-256 "
      f"`{(ext.get('weights_sha256') or 'n/a')[:16]}…`). Final evaluation: {sch['final_samples']} samples per "
      "generator; a model's FID/IS is that of the union of its generators (image i from generator i mod N) "
      "against the 60,000 MNIST training images. FID-vs-time curves: mnist-lenet, "
      f"{sch['eval_samples']} samples per generator after every epoch.")
    if ext["name"] == "mnist-lenet":
        a("- **IS note:** mnist-lenet has 10 classes, so its IS is at most 10; the paper used the 1000-class "
          "Inception network (IS > 10). Compare orderings, not values.")
    a(f"- **Device:** {plan['device_name']} (`{plan['device']}`), {plan['cpu_count']} CPU cores, "
      f"{plan['torch_threads']} torch threads.")
    a(f"- **Versions:** psgan_fast {v.get('psgan_fast')}, torch {v.get('torch')}, torch-fidelity "
      f"{v.get('torch_fidelity')}, numpy {v.get('numpy')}, Python {v.get('python')}, {v.get('platform')}.")
    if plan["smoke"]:
        planned = "smoke run: a fixed tiny schedule, no calibration"
    else:
        planned = (f"calibration took {(plan.get('calibration') or {}).get('seconds', 0) / 60:.1f} min; training "
                   f"and evaluation were predicted to take {_wall_minutes(plan):.1f} min of wall clock "
                   f"({pred.get('total_seconds', 0) / 60:.1f} min of work, {plan['flags'].get('jobs') or 1} "
                   f"run(s) at a time; the plan aims at {int(TARGET_FRACTION * 100)}% of the budget)")
    a(f"- **Budget:** {plan['budget_minutes']:g} min ({planned}). Wall-clock so far: {wall / 60:.1f} min over "
      f"{len(progress.get('invocations', []))} invocation(s).")
    la = [plan.get("loadavg_at_plan"), progress.get("loadavg_last")]
    if any(la):
        a(f"- **Machine load** (1/5/15-min load averages): {la[0]} when planned, {la[1]} at the last report "
          f"({plan['cpu_count']} cores: a load above that means other work shared the CPU and wall-clock "
          "times are noisy).")
    split = sch["stage_epochs"]
    a(f"- **Schedule (identical for every run):** {sch['epochs']} epochs of "
      f"{'full epochs' if sch['full_epoch'] else str(sch['limit_batches']) + ' batches'} of {BATCH_SIZE} "
      f"({sch['limit_batches'] * BATCH_SIZE:,} images per epoch); PS-GAN stages and ProGAN phases "
      f"{split[0]} / {split[1]} / {split[2]} epochs at 7 / 14 / 28 px; SNGAN trains all {sch['epochs']} epochs at "
      f"28 px. Seeds: {', '.join(map(str, plan['seeds']))}. The paper trained on all 60,000 images per epoch on "
      "an RTX 3080.")
    a("- **Training time** is each run's cumulative `train_seconds` (training loop only; evaluation, plots and "
      "checkpoints excluded).\n")
    # Table 2.
    sfx = f" (mean ± sd over {k} seeds)" if k > 1 else ""
    a(f"## Table 2 — quality{sfx}\n")
    a("| model | FID (ours) | FID (paper) | IS (ours) | IS (paper) |")
    a("|---|---:|---:|---:|---:|")
    for row in ("sngan", "progan", "psgan-g2"):
        pf, pi = PAPER_TABLE2[row]
        a(f"| {LABELS[row]} | {_fmt(*_agg(table[row], 'fid'))} | {pf} | {_fmt(*_agg(table[row], 'is_mean'))} | {pi} |")
    if reference is not None:
        a(f"| *real MNIST test images (reference)* | {reference['fid']:.2f} | — | {reference['is_mean']:.2f} | — |")
    a("")
    # Table 3.
    a(f"## Table 3 — training time relative to SNGAN{sfx}\n")
    a("| model | description | time (s, ours) | ratio (ours) | ratio (calibration) | time (s, paper) | "
      "ratio (paper) |")
    a("|---|---|---:|---:|---:|---:|---:|")
    base = _agg(table["sngan"], "time")[0]
    runs_pred = pred.get("runs", {})
    pbase = runs_pred.get("sngan", {}).get("per_batch")
    for row in ROW_IDS:
        m, sd = _agg(table[row], "time")
        cal_ratio = runs_pred.get(row, {}).get("per_batch")
        cal = _pct(cal_ratio / pbase) if cal_ratio and pbase else "—"
        a(f"| {LABELS[row]} | {DESCRIPTIONS[row]} | {_fmt(m, sd, 1)} | {_pct(m / base) if m and base else '—'} | "
          f"{cal} | {ROWS[row]['paper_seconds'] or '—'} | {_pct(ROWS[row]['paper_ratio'])} |")
    a("\n*ratio (calibration)*: the same ratio predicted from the short timing harness run before training "
      "(`psgan_fast.bench.timing.time_training`, a few steps per stage), an independent measurement.\n")
    # Table 4.
    a(f"## Table 4 — number of generators (ratios relative to 2 generators){sfx}\n")
    a("| generators | time (s) | ratio | FID | IS | time (s, paper) | ratio (paper) | FID (paper) | IS (paper) |")
    a("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base2 = _agg(table["psgan-g2"], "time")[0]
    for n in (1, 2, 3):
        row = f"psgan-g{n}"
        m, sd = _agg(table[row], "time")
        p = PAPER_TABLE4[n]
        a(f"| {n} | {_fmt(m, sd, 1)} | {_pct(m / base2, 0) if m and base2 else '—'} | "
          f"{_fmt(*_agg(table[row], 'fid'))} | {_fmt(*_agg(table[row], 'is_mean'))} | {p['seconds']} | "
          f"{_pct(p['ratio'], 0)} | {p['fid'][0]} ± {p['fid'][1]} | {p['is'][0]} ± {p['is'][1]} |")
    a("")
    L.extend(recommended_section(table, plan))
    # Every run.
    a("## Every run\n")
    a("| run | status | steps | train (s) | FID | IS | FID per generator | samples per class 0–9 (mnist-lenet) |")
    a("|---|---|---:|---:|---:|---:|---|---|")
    for row in ROW_IDS:
        for e in table[row]:
            ev = e["eval"] or {}
            per = ", ".join(f"{g['fid']:.2f}" for g in ev.get("generators", [])) if ev else "—"
            hist = " ".join(map(str, ev["class_histogram"])) if ev.get("class_histogram") else "—"
            status = e["status"] + (f" ({e['error']})" if e.get("error") else "")
            a(f"| `runs/{run_name(row, e['seed'])}` | {status} | {e['steps']} | "
              f"{_fmt(e['train_seconds'], None, 1)} | {_fmt(ev.get('fid'))} | {_fmt(ev.get('is_mean'))} | "
              f"{per} | {hist} |")
    a("")
    # Figures.
    a("## Figures\n")
    if not figures:
        a("*(Figures are drawn when every run has finished.)*\n")
    for stem, fig, row in LOSS_FIGURES + SAMPLE_FIGURES:
        if stem in figures:
            what = "average D and G loss per epoch (one curve per generator; dashed lines: stage switches)" \
                if "losses" in stem else "samples after the last epoch (fixed noise)"
            a(f"**Figure {fig}** — {LABELS[row]}, {what}.\n\n![Figure {fig}]({figures[stem]})\n")
    for stem, _, row in EXTRA_SAMPLE_FIGURES:
        if stem in figures:
            a(f"**Extra** — {LABELS[row]}, samples after the last epoch.\n\n![{LABELS[row]}]({figures[stem]})\n")
    if "fid_vs_time" in figures:
        a("**FID against training time** — every model, FID after each epoch (mnist-lenet, "
          f"{sch['eval_samples']} samples per generator; earlier stages upsampled to 28 px) against cumulative "
          "training seconds.\n\n![FID vs time](figures/fid_vs_time.png)\n")
    # Claims.
    a("## What the numbers say about the paper's claims\n")
    for para in claims(table, plan, reference):
        a(para + "\n")
    return "\n".join(L) + "\n"


def write_report(out: Path, plan: dict, ctx: dict, progress: dict, *, figures: bool) -> Path:
    table = collect(out, plan)
    figs = make_figures(out, plan) if figures else {}
    ref = ctx.get("reference")
    text = render_report(out, plan, table, figs, ref, ctx, progress)
    atomic_write_text(out / "REPORT.md", text)
    atomic_write_text(out / "results.json", json.dumps(results_doc(plan, table, ref, progress), indent=1))
    return out / "REPORT.md"


def results_doc(plan: dict, table: dict, reference: Optional[dict], progress: dict) -> dict:
    """The numbers behind REPORT.md in one JSON file (for docs/results/):
    the command, commit, machine, budget and schedule, and per row and seed
    the FID / IS / training time, D's last-epoch accuracy and the class
    histograms of the union and of each generator."""
    rows = {}
    for row, entries in table.items():
        rows[row] = {"label": LABELS[row], "model": ROWS[row]["model"], "generators": ROWS[row]["generators"],
                     "loss": ROWS[row]["loss"] if ROWS[row]["model"] == "psgan" else None,
                     "runs": [{"seed": e["seed"], "status": e["status"], "steps": e["steps"],
                               "train_seconds": e["train_seconds"], "d_picks_real": e.get("d_right"),
                               **({k: e["eval"].get(k) for k in ("fid", "is_mean", "is_std", "class_histogram",
                                                                 "generators", "num_samples")}
                                  if e["eval"] else {})} for e in entries]}
    return {"command": plan["command"], "commit": git_commit(), "created": plan["created"],
            "machine": {"device": plan["device_name"], "cores": plan["cpu_count"], "torch_threads":
                        plan["torch_threads"], "versions": plan["versions"]},
            "budget_minutes": plan["budget_minutes"], "flags": plan["flags"], "schedule": plan["schedule"],
            "wall_seconds": sum(inv.get("wall_seconds", 0.0) for inv in progress.get("invocations", [])),
            "feature_extractor": plan["feature_extractor"], "reference": reference, "rows": rows}


# --------------------------------------------------------------------------
# The command


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _row_list(text: str) -> list[str]:
    rows = [r for r in text.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        raise argparse.ArgumentTypeError(f"unknown row(s) {', '.join(bad) or repr(text)}; choose from "
                                         f"{', '.join(ROW_IDS)}")
    return rows


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m psgan_fast.reproduce",
        description="Train SNGAN, ProGAN and PS-GAN (1-3 generators) under one budget and schedule, evaluate "
                    "them, and write REPORT.md with the paper's Tables 2-4 and Figures 4-9.",
        epilog="Run the same command (or just --out REPORT_DIR) again to resume a killed reproduction.")
    a = p.add_argument
    a("--out", required=True, metavar="REPORT_DIR", help="where plan.json, runs/, figures/ and REPORT.md go")
    a("--budget-minutes", type=_positive_float, default=None,
      help="wall-clock budget for the whole reproduction; the schedule is chosen to fit "
           f"{int(TARGET_FRACTION * 100)}%% of it (required for a new reproduction unless --smoke)")
    a("--seeds", type=_positive_int, default=None, help="seeds per model (default 1; mean ± sd when > 1)")
    a("--seed-rows", type=_row_list, default=None, metavar="ROWS",
      help="comma-separated rows that get every --seeds seed; the others train seed 0 only "
           f"(default: all rows; rows: {', '.join(ROW_IDS)})")
    a("--jobs", type=_positive_int, default=None,
      help="runs trained at once, one process each (default 1; the schedule counts on "
           f"{int(JOBS_EFFICIENCY * 100)}%% of J runs' speed)")
    a("--feature-extractor", choices=("mnist-lenet", "inception-v3-compat"), default=None,
      help="FID/IS features (default: inception-v3-compat when its weights are on this machine, else mnist-lenet)")
    a("--inception-weights", default=None, metavar="PATH", help="local inception-v3-compat weights file")
    a("--device", choices=("auto", "cpu", "cuda"), default=None, help="training and evaluation device (default auto)")
    a("--data-dir", default=None, help="folder holding MNIST (default: $PSGAN_FAST_DATA or the cache)")
    a("--smoke", action="store_true", default=None,
      help=f"a tiny schedule ({SMOKE['epochs']} epochs x {SMOKE['limit_batches']} batches, "
           f"{SMOKE['final_samples']} evaluation samples, 1 seed): the whole pipeline in minutes")
    a("--eval-samples", type=_positive_int, default=None,
      help=f"samples per generator for the per-epoch FID (default {DEFAULT_EVAL_SAMPLES})")
    a("--final-samples", type=_positive_int, default=None,
      help="samples per generator for the final FID/IS (default 10000 for budgets of 2 h or more, else 5000)")
    a("--calibration-steps", type=_positive_int, default=None,
      help="timed steps per stage and model when planning (default 2; 1 for budgets under 30 min)")
    a("--threads", type=_positive_int, default=None,
      help="torch CPU threads (default: on a CPU, 1 or torch's default, whichever a short timing finds faster; "
           "1 for --smoke)")
    a("--stop-after-steps", type=_positive_int, default=None,
      help="stop after this many training steps in this invocation, as if killed (for testing resume)")
    return p


PLAN_FLAGS = ("budget_minutes", "seeds", "seed_rows", "jobs", "feature_extractor", "device", "smoke", "eval_samples",
              "final_samples", "threads")


def _resolve_flags(args: argparse.Namespace, plan: Optional[dict]) -> dict:
    """Flags of this invocation; for a started reproduction, those given must match the plan."""
    given = {k: getattr(args, k) for k in PLAN_FLAGS if getattr(args, k) is not None}
    if plan is not None:
        flags = plan["flags"]
        conflicts = [f"--{k.replace('_', '-')} {v} (planned: {flags.get(k)})" for k, v in given.items()
                     if flags.get(k) != v and not (k == "smoke" and not v and not flags.get(k))]
        if conflicts:
            raise ReproError(
                f"{args.out} is a started reproduction planned with different settings: {'; '.join(conflicts)}. "
                "Rerun with the planned settings (or only --out to take them from plan.json), or use a new --out.")
        return dict(flags)
    smoke = bool(given.get("smoke"))
    flags = {
        "budget_minutes": given.get("budget_minutes", SMOKE["budget_minutes"] if smoke else None),
        "seeds": given.get("seeds", 1),
        "seed_rows": given.get("seed_rows"),
        "jobs": given.get("jobs", 1),
        "feature_extractor": given.get("feature_extractor"),
        "device": given.get("device", "auto"),
        "smoke": smoke,
        "threads": given.get("threads", 1 if smoke else None),  # None: chosen by a timing when planning
    }
    if flags["budget_minutes"] is None:
        raise ReproError("--budget-minutes is required to plan a new reproduction (or use --smoke)")
    flags["eval_samples"] = given.get("eval_samples", SMOKE["eval_samples"] if smoke else DEFAULT_EVAL_SAMPLES)
    flags["final_samples"] = given.get(
        "final_samples", SMOKE["final_samples"] if smoke else (10000 if flags["budget_minutes"] >= 120 else 5000))
    return flags


def _setup_context(flags: dict, args: argparse.Namespace, data_dir: Optional[str]) -> dict:
    """Device, data, extractor and real-data reference; clear errors when missing."""
    import torch

    from psgan_fast.data import find_dataset, read_idx

    if flags["device"] == "cuda" and not torch.cuda.is_available():
        raise ReproError("--device cuda: no CUDA device is available here")
    device = torch.device("cuda" if flags["device"] == "cuda" or (flags["device"] == "auto" and
                                                                   torch.cuda.is_available()) else "cpu")
    try:
        images, labels = find_dataset("mnist", data_dir, "train")
    except (OSError, ValueError) as e:
        raise ReproError(f"MNIST is not available: {e}. Set PSGAN_FAST_DATA or pass --data-dir "
                         "(or run `python -m psgan_fast.data fetch`)") from None
    from psgan_fast.metrics import extractors as ex
    from psgan_fast.metrics.evaluation import get_extractor, real_reference

    try:
        name = flags["feature_extractor"] or ex.default_feature_extractor(args.inception_weights)
        fe = get_extractor(name, inception_weights=args.inception_weights, device=device)
        if name != ex.MNIST_LENET:  # the per-epoch FID curves always use mnist-lenet
            get_extractor(ex.MNIST_LENET, device=device)
    except (FileNotFoundError, ex.InceptionWeightsUnavailable, ValueError) as e:
        raise ReproError(f"feature extractor unavailable: {e}") from None
    t0 = time.perf_counter()
    ref = real_reference(read_idx(images), source="mnist-train", feature_extractor=name,
                         inception_weights=args.inception_weights, device=device)
    return {"device": device, "images": images, "labels": labels, "extractor": fe.identity, "extractor_name": name,
            "real_ref": ref, "inception_weights": args.inception_weights,
            "reference_seconds": time.perf_counter() - t0}


def make_plan(out: Path, flags: dict, args: argparse.Namespace, ctx: dict, t_start: float, argv_text: str) -> dict:
    import torch

    from psgan_fast.data import BatchStream

    full = len(BatchStream(ctx["images"], ctx["labels"], batch_size=BATCH_SIZE, seed=0))
    budget_s = flags["budget_minutes"] * 60
    if flags["smoke"]:
        cal = None
        epochs, batches = SMOKE["epochs"], SMOKE["limit_batches"]
        schedule = {"epochs": epochs, "stage_epochs": list(stage_split(epochs)), "limit_batches": batches,
                    "full_epoch": False}
        prediction = None
    else:
        steps = args.calibration_steps or (1 if flags["budget_minutes"] < 30 else 2)
        if flags["threads"] is None:
            flags = dict(flags, threads=choose_threads(ctx))
            torch.set_num_threads(flags["threads"])
        _log(f"calibrating: {steps} timed step(s) per stage for each of {len(ROW_IDS)} models ...")
        cal = calibrate(device=ctx["device"], images=ctx["images"], labels=ctx["labels"], steps=steps,
                        real_ref=ctx["real_ref"], feature_extractor=ctx["extractor_name"],
                        inception_weights=ctx["inception_weights"])
        spent = time.perf_counter() - t_start
        per_row = {r: len(seeds_of({"seeds": list(range(flags["seeds"])), "seed_rows": flags["seed_rows"]}, r))
                   for r in ROW_IDS}
        sch = choose_schedule(cal, budget_seconds=budget_s, spent_seconds=spent, seeds=per_row,
                              jobs=int(flags.get("jobs") or 1),
                              full_batches=full, eval_samples=flags["eval_samples"],
                              final_samples=flags["final_samples"])
        prediction = sch.pop("prediction")
        schedule = sch
        # Checkpoint inside long epochs (about every 5 predicted minutes).
        slowest = max(max(v) for v in cal["step_seconds"].values())
        schedule["checkpoint_steps"] = int(300 / slowest) if schedule["limit_batches"] * slowest > 300 else 0
    schedule.update({"batch_size": BATCH_SIZE, "eval_every": 1, "eval_samples": flags["eval_samples"],
                     "final_samples": flags["final_samples"], "full_epoch_batches": full})
    flags = dict(flags, feature_extractor=ctx["extractor_name"])
    return {
        "version": PLAN_VERSION, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "command": argv_text,
        "flags": flags, "budget_minutes": flags["budget_minutes"], "smoke": flags["smoke"],
        "seeds": list(range(flags["seeds"])), "seed_rows": flags["seed_rows"], "rows": list(ROW_IDS), "device": ctx["device"].type,
        "device_name": torch.cuda.get_device_name(ctx["device"]) if ctx["device"].type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "data_dir": args.data_dir,
        "feature_extractor": ctx["extractor_name"], "extractor_at_plan": ctx["extractor"],
        "schedule": schedule, "calibration": cal, "prediction": prediction,
        "real_reference_seconds": ctx["reference_seconds"], "versions": _versions(), "loadavg_at_plan": _loadavg(),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    argv_text = "python -m psgan_fast.reproduce " + " ".join(argv_list)
    t_start = time.perf_counter()
    out = Path(args.out)
    progress: dict = {}
    try:
        if out.exists() and not out.is_dir():
            raise ReproError(f"--out {out} exists and is not a directory")
        plan_path = out / "plan.json"
        plan = _read_json(plan_path)
        if plan is not None and plan.get("version") != PLAN_VERSION:
            raise ReproError(f"{plan_path} has plan version {plan.get('version')}, this psgan_fast writes "
                             f"{PLAN_VERSION}; use a new --out")
        flags = _resolve_flags(args, plan)
        if flags.get("threads"):
            import torch

            torch.set_num_threads(int(flags["threads"]))
        data_dir = args.data_dir if plan is None else (args.data_dir or plan.get("data_dir"))
        ctx = _setup_context(flags, args, data_dir)
        if plan is not None and ctx["extractor_name"] != plan["feature_extractor"]:
            raise ReproError(f"plan.json uses {plan['feature_extractor']}, which is not available now")
        out.mkdir(parents=True, exist_ok=True)
        progress = _read_json(out / "progress.json") or {"invocations": []}
        inv = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": argv_text, "wall_seconds": 0.0,
               "status": "running"}
        progress["invocations"].append(inv)

        def save_progress(status: Optional[str] = None) -> None:
            inv["wall_seconds"] = time.perf_counter() - t_start
            if status:
                inv["status"] = status
            progress["loadavg_last"] = _loadavg()
            _write_json(out / "progress.json", progress)

        if plan is None:
            plan = make_plan(out, flags, args, ctx, t_start, argv_text)
            _write_json(plan_path, plan)
            sch = plan["schedule"]
            pred = plan["prediction"]
            _log(f"plan: {sch['epochs']} epochs (stages {'/'.join(map(str, sch['stage_epochs']))}) x "
                 f"{sch['limit_batches']} batches of {BATCH_SIZE}, {len(plan['seeds'])} seed(s), "
                 f"{ctx['extractor_name']}" + (f"; predicted {_wall_minutes(plan):.1f} min of "
                                              f"{plan['budget_minutes']:g}" if pred else " (smoke)")
                 + f" -> {plan_path}")
        else:
            _log(f"resuming the reproduction planned in {plan_path}")
        ctx["reference"] = reference_eval(out, plan, ctx)
        ctx["command"] = argv_text
        save_progress()
        runs = plan_runs(plan)
        left = args.stop_after_steps
        from psgan_fast.trainer import TrainingDiverged

        jobs = int(plan["flags"].get("jobs") or 1)
        if jobs > 1 and left is None:  # train in parallel; the loop below then evaluates
            train_parallel(out, plan, runs, jobs)

        for i, (row, seed) in enumerate(runs, 1):
            rd = out / "runs" / run_name(row, seed)
            status, step0 = run_status(rd) if rd.exists() else ("new", 0)
            t0 = time.perf_counter()
            if status in ("new", "partial"):
                _log(f"[{i}/{len(runs)}] {row} seed {seed}: "
                     f"{'training' if status == 'new' else f'resuming at step {step0}'} ...")
                try:
                    taken = train_run(plan, row, seed, rd, left)
                except TrainingDiverged as e:
                    _write_json(rd / "FAILED.json", {"error": "diverged", "detail": str(e)})
                    _log(f"[{i}/{len(runs)}] {row} seed {seed}: diverged ({e}); continuing with the other runs")
                    save_progress()
                    continue
                if left is not None:
                    left -= taken
                    if run_status(rd)[0] != "complete" or left <= 0:
                        raise Interrupted
            status, steps = run_status(rd)
            if status == "failed":
                _log(f"[{i}/{len(runs)}] {row} seed {seed}: failed earlier (see {rd / 'FAILED.json'}); skipped")
                continue
            cached = (rd / "final_eval.json").is_file()
            res = evaluate_run(plan, rd, seed, ctx)
            _log(f"[{i}/{len(runs)}] {row} seed {seed}: {steps} steps, train {res['train_seconds']:.1f} s, "
                 f"FID {res['fid']:.2f}, IS {res['is_mean']:.2f}"
                 + (" (done earlier)" if status == "complete" and cached and time.perf_counter() - t0 < 1 else "")
                 + f" [{time.perf_counter() - t0:.0f} s]")
            save_progress()
            write_report(out, plan, ctx, progress, figures=False)
        save_progress("done")
        report = write_report(out, plan, ctx, progress, figures=True)
        _log(f"report: {report}")
        return 0
    except Interrupted:
        if progress:
            try:
                progress["invocations"][-1]["status"] = "stopped"
                _write_json(out / "progress.json", progress)
            except Exception:  # noqa: BLE001
                pass
        print(f"stopped after --stop-after-steps {args.stop_after_steps}; resume with: "
              f"python -m psgan_fast.reproduce --out {out}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: python -m psgan_fast.reproduce --out {out}", file=sys.stderr)
        return 130
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
