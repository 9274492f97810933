"""The command: flags, the context a reproduction runs in, and main()."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from psgan_fast.machine import loadavg
from psgan_fast.reproduce.common import (BATCH_SIZE, DEFAULT_EVAL_SAMPLES, JOBS_EFFICIENCY, PLAN_VERSION, ROW_IDS, ROWS,
                                        SMOKE, TARGET_FRACTION, Interrupted, ReproError, _log, _read_json,
                                        _write_json, run_name)
from psgan_fast.reproduce.plan import make_plan
from psgan_fast.reproduce.report import write_report
from psgan_fast.reproduce.run import evaluate_run, reference_eval, run_status, train_parallel, train_run
from psgan_fast.reproduce.state import Context, Flags, Plan, extend_plan, plan_runs


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
    a("--extend", action="store_true",
      help="train more seeds in a started reproduction: --seeds may grow and --seed-rows gain rows; the "
           "schedule stays the plan's, so the new runs compare with the old ones (its budget and prediction "
           "do not cover them)")
    a("--stop-after-steps", type=_positive_int, default=None,
      help="stop after this many training steps in this invocation, as if killed (for testing resume)")
    return p


# What --extend may change in a started reproduction (psgan_fast.reproduce.state.extend_plan).
EXTENDABLE_FLAGS = ("seeds", "seed_rows")
PLAN_FLAGS = ("budget_minutes", "seeds", "seed_rows", "jobs", "feature_extractor", "device", "smoke", "eval_samples",
              "final_samples", "threads")


def _resolve_flags(args: argparse.Namespace, plan: Optional[Plan]) -> Flags:
    """Flags of this invocation; for a started reproduction, those given must match the plan."""
    given = {k: getattr(args, k) for k in PLAN_FLAGS if getattr(args, k) is not None}
    if args.extend:
        if plan is None:
            raise ReproError(f"--extend adds seeds to a started reproduction, and {args.out} has no plan.json; "
                             "drop --extend to plan a new one")
        given = {k: v for k, v in given.items() if k not in EXTENDABLE_FLAGS}  # extend_plan checks them
    if plan is not None:
        flags = plan.flags
        conflicts = [f"--{k.replace('_', '-')} {v} (planned: {getattr(flags, k)})" for k, v in given.items()
                     if getattr(flags, k) != v and not (k == "smoke" and not v and not flags.smoke)]
        if conflicts:
            raise ReproError(
                f"{args.out} is a started reproduction planned with different settings: {'; '.join(conflicts)}. "
                "Rerun with the planned settings (or only --out to take them from plan.json), or use a new --out"
                + (" (or add --extend to train more seeds in it)." if any(k in given for k in EXTENDABLE_FLAGS)
                   else "."))
        return dataclasses.replace(flags)
    smoke = bool(given.get("smoke"))
    budget = given.get("budget_minutes", SMOKE["budget_minutes"] if smoke else None)
    if budget is None:
        raise ReproError("--budget-minutes is required to plan a new reproduction (or use --smoke)")
    return Flags(
        budget_minutes=budget, seeds=given.get("seeds", 1), seed_rows=given.get("seed_rows"),
        jobs=given.get("jobs", 1), feature_extractor=given.get("feature_extractor"),
        device=given.get("device", "auto"), smoke=smoke,
        threads=given.get("threads", 1 if smoke else None),  # None: chosen by a timing when planning
        eval_samples=given.get("eval_samples", SMOKE["eval_samples"] if smoke else DEFAULT_EVAL_SAMPLES),
        final_samples=given.get("final_samples",
                                SMOKE["final_samples"] if smoke else (10000 if budget >= 120 else 5000)))


def _setup_context(flags: Flags, inception_weights: Optional[str], data_dir: Optional[str]) -> Context:
    """Device, data, extractor and real-data reference; clear errors when missing."""
    import torch

    from psgan_fast.data import find_dataset, read_idx

    if flags.device == "cuda" and not torch.cuda.is_available():
        raise ReproError("--device cuda: no CUDA device is available here")
    device = torch.device("cuda" if flags.device == "cuda" or (flags.device == "auto" and
                                                                torch.cuda.is_available()) else "cpu")
    try:
        images, labels = find_dataset("mnist", data_dir, "train")
    except (OSError, ValueError) as e:
        raise ReproError(f"MNIST is not available: {e}. Set PSGAN_FAST_DATA or pass --data-dir "
                         "(or run `python -m psgan_fast.data fetch`)") from None
    from psgan_fast.metrics import extractors as ex
    from psgan_fast.metrics.evaluation import get_extractor, real_reference

    try:
        name = flags.feature_extractor or ex.default_feature_extractor(inception_weights)
        fe = get_extractor(name, inception_weights=inception_weights, device=device)
        if name != ex.MNIST_LENET:  # the per-epoch FID curves always use mnist-lenet
            get_extractor(ex.MNIST_LENET, device=device)
    except (FileNotFoundError, ex.InceptionWeightsUnavailable, ValueError) as e:
        raise ReproError(f"feature extractor unavailable: {e}") from None
    t0 = time.perf_counter()
    ref = real_reference(read_idx(images), source="mnist-train", feature_extractor=name,
                         inception_weights=inception_weights, device=device)
    return Context(device=device, images=images, labels=labels, extractor=fe.identity, extractor_name=name,
                   real_ref=ref, inception_weights=inception_weights, reference_seconds=time.perf_counter() - t0)


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
        doc = _read_json(plan_path)
        if doc is not None and doc.get("version") != PLAN_VERSION:
            raise ReproError(f"{plan_path} has plan version {doc.get('version')}, this psgan_fast writes "
                             f"{PLAN_VERSION}; use a new --out")
        plan = None if doc is None else Plan.from_json(doc)
        flags = _resolve_flags(args, plan)
        if args.extend:
            before = len(plan_runs(plan))
            plan = extend_plan(plan, args.seeds, args.seed_rows, command=argv_text,
                               at=time.strftime("%Y-%m-%d %H:%M:%S"), all_rows=ROW_IDS)
            flags = dataclasses.replace(plan.flags)
            _write_json(plan_path, plan.to_json())
            _log(f"extended {plan_path}: seeds {', '.join(map(str, plan.seeds))} for "
                 f"{', '.join(plan.seed_rows or ROW_IDS)}; {len(plan_runs(plan)) - before} more run(s)")
        if flags.threads:
            import torch

            torch.set_num_threads(int(flags.threads))
        data_dir = args.data_dir if plan is None else (args.data_dir or plan.data_dir)
        ctx = _setup_context(flags, args.inception_weights, data_dir)
        if plan is not None and ctx.extractor_name != plan.feature_extractor:
            raise ReproError(f"plan.json uses {plan.feature_extractor}, which is not available now")
        out.mkdir(parents=True, exist_ok=True)
        progress = _read_json(out / "progress.json") or {"invocations": []}
        inv = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": argv_text, "wall_seconds": 0.0,
               "status": "running"}
        progress["invocations"].append(inv)

        def save_progress(status: Optional[str] = None) -> None:
            inv["wall_seconds"] = time.perf_counter() - t_start
            if status:
                inv["status"] = status
            progress["loadavg_last"] = loadavg()
            _write_json(out / "progress.json", progress)

        if plan is None:
            plan = make_plan(flags, ctx, data_dir=args.data_dir, calibration_steps=args.calibration_steps,
                             t_start=t_start, command=argv_text)
            _write_json(plan_path, plan.to_json())
            sch = plan.schedule
            _log(f"plan: {sch.epochs} epochs (stages {'/'.join(map(str, sch.stage_epochs))}) x "
                 f"{sch.limit_batches} batches of {BATCH_SIZE}, {len(plan.seeds)} seed(s), "
                 f"{ctx.extractor_name}" + (f"; predicted {plan.wall_minutes():.1f} min of "
                                            f"{plan.budget_minutes:g}" if plan.prediction else " (smoke)")
                 + f" -> {plan_path}")
        else:
            _log(f"resuming the reproduction planned in {plan_path}")
        ctx.reference = reference_eval(out, plan, ctx)
        ctx.command = argv_text
        save_progress()
        runs = plan_runs(plan)
        left = args.stop_after_steps
        from psgan_fast.trainer import TrainingDiverged

        if plan.jobs > 1 and left is None:  # train in parallel; the loop below then evaluates
            train_parallel(out, plan, runs, plan.jobs)

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
