"""Running: training a run (in this process or in --jobs worker processes) and the cached evaluations."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional, Sequence

from psgan_fast.runlog import epoch_records
from psgan_fast.reproduce.common import (BATCH_SIZE, ROWS, ReproError, _log, _read_json, _write_json, run_name,
                                        stage_split)
from psgan_fast.reproduce.state import Context, Plan


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


def train_config(plan: Plan, row: str, seed: int, run_dir: Path):
    """The TrainConfig of one run of the plan."""
    from psgan_fast.config import TrainConfig

    spec, sch = ROWS[row], plan.schedule
    staged = spec["model"] in ("psgan", "progan")
    extra = {"eval_samples": int(sch.eval_samples)}
    return TrainConfig(
        model=spec["model"], generators=spec["generators"], loss=spec["loss"], epochs=int(sch.epochs),
        stage_epochs=stage_split(int(sch.epochs), row) if staged else None, batch_size=BATCH_SIZE,
        device=plan.device, seed=seed, data_dir=plan.data_dir, out=str(run_dir),
        limit_batches=None if sch.full_epoch else int(sch.limit_batches),
        sample_every=1, checkpoint_every=1, checkpoint_steps=int(sch.checkpoint_steps or 0),
        log_every=max(1, min(50, int(sch.limit_batches))), eval_every=1, progress=False, extra=extra)


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


def train_run(plan: Plan, row: str, seed: int, run_dir: Path, step_limit: Optional[int]) -> int:
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


def _train_worker(plan: Plan, row: str, seed: int, run_dir: str, threads: Optional[int]) -> str:
    """One run in a worker process (--jobs; top-level and with picklable
    arguments for the spawn start method): train it, or mark it failed."""
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


def train_parallel(out: Path, plan: Plan, runs: Sequence[tuple[str, int]], jobs: int) -> None:
    """Train every unfinished run, `jobs` at a time (one process each),
    the longest predicted first so that the last ones finish together."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pred = (plan.prediction or {}).get("runs", {})
    todo = [(row, seed) for row, seed in runs
            if run_status(out / "runs" / run_name(row, seed))[0] in ("new", "partial")]
    todo.sort(key=lambda rs: -pred.get(rs[0], {}).get("total", 0.0))
    if not todo:
        return
    _log(f"training {len(todo)} run(s), {jobs} at a time ...")
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(_train_worker, plan, row, seed, str(out / "runs" / run_name(row, seed)),
                            plan.flags.threads): (row, seed) for row, seed in todo}
        for i, fut in enumerate(as_completed(futs), 1):
            row, seed = futs[fut]
            _log(f"  trained {i}/{len(todo)}: {row} seed {seed} ({fut.result()})")


def train_seconds(run_dir: Path, records: Optional[list[dict]] = None) -> Optional[float]:
    """Cumulative training seconds of a run (its last epoch record);
    `records`: its `epoch_records`, where the caller has read them."""
    recs = epoch_records(run_dir) if records is None else records
    return float(recs[-1]["train_seconds"]) if recs else None


def _eval_key(plan: Plan, ctx: Context) -> dict:
    """What a cached evaluation depends on: the extractor (name, weights and
    definition version: features computed under an older definition, same
    weights, must not be reused) and the sample count."""
    from psgan_fast.metrics.evaluation import CACHE_VERSION

    return {"feature_extractor": ctx.extractor["name"], "weights_sha256": ctx.extractor["weights_sha256"],
            "extractor_version": CACHE_VERSION, "num_samples": int(plan.schedule.final_samples)}


def _cached(path: Path, key: dict) -> Optional[dict]:
    """The result cached in `path` under `key` (None if absent or stale)."""
    doc = _read_json(path)
    return doc["result"] if doc is not None and doc.get("key") == key else None


def evaluate_run(plan: Plan, run_dir: Path, seed: int, ctx: Context) -> dict:
    """The final evaluation of a complete run, cached in final_eval.json."""
    from psgan_fast import checkpoint as ckpt_mod

    ck = ckpt_mod.latest(run_dir)
    key = {"checkpoint": ck.name, **_eval_key(plan, ctx), "seed": seed}
    cache = run_dir / "final_eval.json"
    if (result := _cached(cache, key)) is not None:
        return result
    import warnings

    from psgan_fast.api import load_generators
    from psgan_fast.metrics.evaluation import evaluate_generators

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gens = load_generators(run_dir, device=ctx.device)
    n = key["num_samples"]
    res = evaluate_generators(gens, n, real=ctx.real_ref, feature_extractor=key["feature_extractor"],
                              inception_weights=ctx.inception_weights, device=ctx.device, seed=seed, kid=False)
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


# Reference: real held-out images under the same extractor (the FID floor)


def reference_eval(out: Path, plan: Plan, ctx: Context) -> Optional[dict]:
    """FID / IS of real MNIST test images against the training set, cached
    in reference_eval.json (None without the test split)."""
    key = _eval_key(plan, ctx)
    path = out / "reference_eval.json"
    if (result := _cached(path, key)) is not None:
        return result
    from psgan_fast.data import find_dataset, read_idx
    from psgan_fast.metrics.evaluation import evaluate_images

    try:
        images, _ = find_dataset("mnist", plan.data_dir, "test")
    except (OSError, ValueError):
        return None
    test = read_idx(images)[: key["num_samples"]]
    res = evaluate_images([test], real=ctx.real_ref, feature_extractor=key["feature_extractor"],
                          inception_weights=ctx.inception_weights, device=ctx.device, kid=False)
    result = {"fid": res["union"]["fid"], "is_mean": res["union"]["is_mean"], "is_std": res["union"]["is_std"],
              "num_samples": len(test),
              "real_train_is": ctx.real_ref.summary()["is_mean"]}
    _write_json(path, {"key": key, "result": result})
    return result
