"""`python -m psgan_fast.ablate`: which ingredient makes PS-GAN collapse?

    python -m psgan_fast.ablate --out runs/ablate --variants paper,rps,rps-r1r2 --seeds 0
    python -m psgan_fast.ablate --list                   # the registered variants
    python -m psgan_fast.ablate --out runs/abl --smoke   # the whole pipeline in a minute (CI)

Every variant trains on ONE fixed schedule (``--epochs`` epochs of
``--batches`` batches of 64, the 20/30/50% stage split of
``config.STAGE_SPLIT`` unless a variant names its own shares, or every
epoch at 28 px for a variant that turns stages off), from the same
seeds, and is scored the same way: mnist-lenet FID of the union of its
generators and of each generator (``--samples`` images each, against MNIST
train), each generator's class histogram (mnist-lenet's argmax), D's
accuracy per epoch (the share of groups in which it picked the real image,
beside chance 1/(N+1)), the milliseconds per training step at 28 px and,
from an evaluation after every epoch (``TIMELINE_SAMPLES`` images per
generator, on a forked RNG: it does not change the training), the largest
top-class share of any generator per epoch, which shows when a generator
collapses and whether it comes back.

A variant is a set of `TrainConfig` overrides on top of the literal
PS-GAN (`VARIANTS`); each changes one thing against its parent, so a row
of the table reads as "this ingredient, and only it". Runs go to
``OUT/runs/<variant>-s<seed>/`` (ordinary run directories: samples/,
metrics.jsonl, checkpoints/); each run's scores are cached in its
``ablation.json``, so an interrupted ablation continues where it stopped
when the same command is run again. ``OUT/ABLATION.md`` and
``OUT/ablation.json`` hold the table. ``--jobs J`` trains J variants at a
time, each on ``--threads`` threads (default: the cores split evenly).

Verdicts (the "no wasted generator" rule of issue #15, docs/DESIGN.md):
a generator is *collapsed* when its most frequent class holds more than 50%
of its samples or fewer than 3 classes hold 5% or more.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Optional, Sequence

from psgan_fast.fsutil import atomic_write_text
from psgan_fast.registry import MODE_SEEK_IMAGE_DISTS, MODE_SEEK_INK_IF_ONE
from psgan_fast.runlog import (MAX_CLASS_SHARE, MIN_CLASS_SHARE, MIN_CLASSES, class_shares, d_picks_real, epochs_in,
                               read_log, top_class_share_per_epoch)

RESULT_VERSION = 1
SMOKE = {"epochs": 3, "batches": 2, "samples": 200}
# Images per generator of the evaluation after every epoch (the collapse timeline).
TIMELINE_SAMPLES = 1000



def _ms_spec_note(lam: float, dist: str = MODE_SEEK_IMAGE_DISTS[0]) -> str:
    """" (= SPEC)" naming the registered --loss that is rps-r1r2-gskips-s118-r8
    plus the mode-seeking term at `lam` with distance `dist` (", the default"
    when it is), else ""."""
    from psgan_fast.config import RECOMMENDED_LOSS
    from psgan_fast.registry import LOSSES

    base = dataclasses.replace(LOSSES["rps-r1r2-gskips-s118-r8"], summary="")
    for name, spec in LOSSES.items():
        if (spec.mode_seek, spec.mode_seek_dist) == (lam, dist) and dataclasses.replace(
                spec, mode_seek=base.mode_seek, mode_seek_dist=base.mode_seek_dist, summary="") == base:
            return f" (= {name}{', the default' if name == RECOMMENDED_LOSS else ''})"
    return ""


# name -> (parent, what changes against the parent, TrainConfig overrides).
# "stages": False puts every epoch at 28 px; a tuple of shares splits the epochs that way. Overrides accumulate from the parent.
VARIANTS: dict[str, tuple[Optional[str], str, dict[str, Any]]] = {
    "paper": (None, "the paper's Algorithm 2 read literally (--loss ps), stepwise stages", {"loss": "ps"}),
    "paper-nostages": ("paper", "no stages: every step at 28 px", {"stages": False}),
    "paper-alt": ("paper", "alternating update: D steps, then G against the new D", {"update": "alternating"}),
    "paper-deep": ("paper", "D with a 3x3 conv per level (SNGAN-like depth)", {"d_arch": "deep"}),
    "soft": ("paper", "soft D gate: D also learns from groups it got right (lambda 1)", {"loss": "ps-soft"}),
    "rps": ("paper", "both gates removed: the N+1-way relativistic softmax", {"loss": "rps"}),
    "rps-r1r2": ("rps", "+ R1 and R2 penalties (gamma 0.1, every 4 steps)", {"r1": 0.1, "r2": 0.1}),
    "rps-alt": ("rps", "alternating update", {"update": "alternating"}),
    "rps-alt-r1r2": ("rps-alt", "+ R1 and R2 penalties (gamma 0.1, every 4 steps)", {"r1": 0.1, "r2": 0.1}),
    "rps-deep": ("rps", "D with a 3x3 conv per level", {"d_arch": "deep"}),
    "rps-nostages": ("rps", "no stages", {"stages": False}),
    "paper-r1r2": ("paper", "+ R1 and R2 penalties (gamma 0.1, every 4 steps)", {"r1": 0.1, "r2": 0.1}),
    "paper-alt-r1r2": ("paper-alt", "+ R1 and R2 penalties", {"r1": 0.1, "r2": 0.1}),
    "paper-skips": ("paper", "skip stage networks: smooth stage switches", {"skips": True}),
    "rps-skips": ("rps", "skip stage networks", {"skips": True}),
    "rps-r1r2-skips": ("rps-r1r2", "skip stage networks", {"skips": True}),
    "rps-r1r2-nostages": ("rps-r1r2", "no stages", {"stages": False}),
    "paper-r1r2-skips": ("paper-r1r2", "skip stage networks", {"skips": True}),
    "recommended": ("paper", "the default until 2026-12-02: rps + R1/R2 + skips in one spec (= rps-r1r2-skips)",
                    {"loss": "rps-r1r2-skips"}),
    "recommended-g1": ("recommended", "1 generator", {"generators": 1}),
    "recommended-g3": ("recommended", "3 generators", {"generators": 3}),
    "recommended-every8": ("recommended", "R1/R2 every 8 steps instead of 4", {"reg_every": 8}),
    "recommended-every16": ("recommended", "R1/R2 every 16 steps instead of 4 (StyleGAN2's interval)",
                            {"reg_every": 16}),
    "recommended-gskips": ("recommended", "skips in G only: D without image inputs below the top",
                           {"d_skips": False}),
    "recommended-lean8": ("recommended-gskips", "R1/R2 every 8 steps on 32 real images and 32 fakes",
                          {"reg_every": 8, "reg_batch": 32}),
    "recommended-lean16": ("recommended-gskips", "R1/R2 every 16 steps on 32 real images and 32 fakes",
                           {"reg_every": 16, "reg_batch": 32}),
    "recommended-beta0": ("recommended", "Adam betas (0, 0.99) as R3GAN", {"betas": (0.0, 0.99)}),
    "recommended-gamma1": ("recommended", "R1/R2 gamma 1 instead of 0.1", {"r1": 1.0, "r2": 1.0}),
    "recommended-beta0-lean8": ("recommended-beta0", "skips in G only, R1/R2 every 8 steps on 32 real images "
                                "and 32 fakes (as recommended-lean8)", {"d_skips": False, "reg_every": 8, "reg_batch": 32}),
    "bce": ("paper", "non-saturating BCE, no N+1 decision", {"loss": "bce"}),
    "recommended-beta0-gskips": ("recommended-beta0", "skips in G only: D without image inputs below the top "
                                 "(= rps-r1r2-gskips, the default until 2026-12-03)",
                                 {"d_skips": False}),
    "recommended-beta0-lean8x64": ("recommended-beta0-gskips", "R1/R2 every 8 steps on 64 real images and 64 fakes",
                                   {"reg_every": 8, "reg_batch": 64}),
    "recommended-split127": ("recommended-beta0-gskips", "stages 10/20/70% of the epochs instead of 20/30/50%",
                             {"stages": (0.1, 0.2, 0.7)}),
    "recommended-split118": ("recommended-beta0-gskips", "stages 10/10/80% of the epochs instead of 20/30/50% "
                             "(= rps-r1r2-gskips-s118, the default until R1/R2 went to every 8 steps)",
                             {"stages": (0.1, 0.1, 0.8)}),
    "recommended-split118-every8": ("recommended-split118", "R1/R2 every 8 steps instead of 4 (the step cost "
                                    "target; = rps-r1r2-gskips-s118-r8, a previous default)", {"reg_every": 8}),
    "recommended-split118-every8-dskips": ("recommended-split118-every8", "skips in D too: D keeps its judgement "
                                           "across a stage switch (+8% step)", {"d_skips": True}),
    # Each generator's mode-seeking term (MSGAN) at several strengths; the
    # registry's spec with each strength is named beside it.
    **{f"recommended-split118-every8-ms{lam:g}": (
        "recommended-split118-every8",
        f"each generator's mode-seeking term (MSGAN), lambda {lam:g}" + _ms_spec_note(lam),
        {"mode_seek": lam}) for lam in (0.1, 0.02, 0.3, 1.0)},
    "recommended-split118-every8-ms0.3-ink": (
        "recommended-split118-every8-ms0.3", "the mode-seeking distance divided by the pair's ink "
        "(--mode-seek-dist l1-ink): thin strokes move apart as thick ones do", {"mode_seek_dist": "l1-ink"}),
    "recommended-split118-every8-ms0.3-ink1": (
        "recommended-split118-every8-ms0.3", "the ink-divided distance with one generator, L1 with more "
        f"(--mode-seek-dist {MODE_SEEK_INK_IF_ONE})" + _ms_spec_note(0.3, MODE_SEEK_INK_IF_ONE),
        {"mode_seek_dist": MODE_SEEK_INK_IF_ONE}),
    "recommended-split118-every8-ms0.3-ema10": (
        "recommended-split118-every8-ms0.3", "scored on each generator's moving average (--g-ema 10: half-life "
        "10k images); trains exactly as its parent, whose scores of the live weights the run also keeps",
        {"g_ema": 10.0}),
    "sngan": (None, "reference: SNGAN (hinge, spectral norm), every step at 28 px",
              {"model": "sngan", "generators": 1, "stages": False}),
    "sngan-beta0": ("sngan", "Adam betas (0, 0.99): does the baseline gain what PS-GAN gains?", {"betas": (0.0, 0.99)}),
}


def resolve_variant(name: str) -> dict[str, Any]:
    """The variant's overrides, its parents' included (parents first)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    parent, _, over = VARIANTS[name]
    base = resolve_variant(parent) if parent else {}
    return {**base, **over}


def train_config(variant: str, *, generators: int, seed: int, epochs: int, batches: int, run_dir: Path,
                 timeline_samples: int = TIMELINE_SAMPLES):
    """The variant's TrainConfig; `timeline_samples` > 0 evaluates after every
    epoch (which leaves the training as it is without)."""
    from psgan_fast.config import TrainConfig, default_stage_epochs

    over = resolve_variant(variant)
    stages = over.pop("stages", True)
    gens = over.pop("generators", generators)
    model = over.pop("model", "psgan")
    if stages is True:
        stage_epochs = default_stage_epochs(epochs)
    elif stages is False:
        stage_epochs = (0, 0, epochs)
    else:
        stage_epochs = default_stage_epochs(epochs, weights=stages)
    return TrainConfig(model=model, generators=gens, epochs=epochs, stage_epochs=stage_epochs,
                       limit_batches=batches, seed=seed, out=str(run_dir), progress=False,
                       log_every=max(1, batches // 4), checkpoint_every=epochs,
                       eval_every=1 if timeline_samples > 0 else 0,
                       extra={"eval_samples": timeline_samples} if timeline_samples > 0 else None, **over)


def verdict(hist: Sequence[int]) -> dict[str, Any]:
    """Shares of a class histogram and whether the generator collapsed."""
    shares = class_shares(hist)
    top = max(shares)
    classes = sum(s >= MIN_CLASS_SHARE for s in shares)
    return {"top_class": int(shares.index(top)), "top_share": top, "classes_5pct": int(classes),
            "collapsed": bool(top > MAX_CLASS_SHARE or classes < MIN_CLASSES)}


def _epoch_stats(recs: list[dict]) -> tuple[list[float], Optional[float]]:
    """D's accuracy per epoch and ms per step in the last epoch, from a
    run's epoch records."""
    acc = d_picks_real(recs)
    ms = None
    if len(recs) >= 2:
        a, b = recs[-2], recs[-1]
        steps = b["step"] - a["step"]
        if steps > 0:
            ms = 1000.0 * (b["train_seconds"] - a["train_seconds"]) / steps
    elif recs and recs[-1]["step"]:
        ms = 1000.0 * recs[-1]["train_seconds"] / recs[-1]["step"]
    return acc, ms


def run_variant(variant: str, seed: int, opts: dict) -> dict:
    """Train (or finish) one variant and score it; cached in ablation.json."""
    import torch

    torch.set_num_threads(opts["threads"])
    run_dir = Path(opts["out"]) / "runs" / f"{variant}-s{seed}"
    key = {"version": RESULT_VERSION, "variant": variant, "overrides": resolve_variant(variant), "seed": seed,
           "generators": opts["generators"], "epochs": opts["epochs"], "batches": opts["batches"],
           "samples": opts["samples"]}
    cache = run_dir / "ablation.json"
    if cache.is_file():
        doc = json.loads(cache.read_text())
        if doc.get("key") == key:
            return doc["result"]
    import warnings

    from psgan_fast import checkpoint as ckpt_mod
    from psgan_fast.api import load_generators
    from psgan_fast.config import TrainConfig
    from psgan_fast.metrics.evaluation import evaluate_generators
    from psgan_fast.trainer import train

    cfg = train_config(variant, generators=opts["generators"], seed=seed, epochs=opts["epochs"],
                       batches=opts["batches"], run_dir=run_dir, timeline_samples=min(TIMELINE_SAMPLES,
                                                                                       opts["samples"]))
    ck = ckpt_mod.latest(run_dir) if run_dir.is_dir() else None
    t0 = time.perf_counter()
    if ck is None:  # nothing to keep (a run killed before its first checkpoint): start afresh
        train(dataclasses.replace(cfg, overwrite=run_dir.exists()))
    elif int(ckpt_mod.read_state(ck)["epoch"]) + 1 < cfg.epochs:  # killed part-way: continue it
        train(TrainConfig(resume=str(run_dir), progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gens = load_generators(run_dir)  # the averages under --g-ema
        live_gens = load_generators(run_dir, ema=False) if cfg.g_ema > 0 else None
    res = evaluate_generators(gens, opts["samples"], seed=seed, kid=False)
    live = None
    if live_gens is not None:  # the live weights of the same run, scored the same way
        lres = evaluate_generators(live_gens, opts["samples"], seed=seed, kid=False)
        live = {"fid": lres["union"]["fid"], "is": lres["union"]["is_mean"],
                "union_class_shares": class_shares(lres["union"]["class_histogram"]),
                "per_generator_fid": [g["fid"] for g in lres["generators"]]}
    log = read_log(run_dir)  # read once for D's accuracy, the step time and the timeline
    acc, ms = _epoch_stats(epochs_in(log))
    per_gen = []
    for g in res["generators"]:
        per_gen.append({"fid": g["fid"], "is": g["is_mean"], "class_histogram": g["class_histogram"],
                        **verdict(g["class_histogram"])})
    result = {
        "variant": variant, "seed": seed, "generators": len(gens), "fid": res["union"]["fid"],
        "is": res["union"]["is_mean"], "union_class_shares": class_shares(res["union"]["class_histogram"]),
        "per_generator": per_gen, "d_accuracy": acc, "chance": 1.0 / (len(gens) + 1), "ms_per_step": ms,
        "top_share_per_epoch": top_class_share_per_epoch(log),
        "wall_seconds": time.perf_counter() - t0,
        **({"live": live} if live is not None else {}),
    }
    atomic_write_text(cache, json.dumps({"key": key, "result": result}, indent=1))
    return result


def _fmt(x: Optional[float], digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _write_table(out: Path, results: list[dict], opts: dict, argv: Optional[Sequence[str]],
                 wall_seconds: float) -> None:
    """ablation.json and ABLATION.md, with the command, commit and machine."""
    from psgan_fast.machine import git_commit, machine_info

    m = machine_info()
    words = list(sys.argv[1:] if argv is None else argv)
    setup = {"command": "python -m psgan_fast.ablate " + " ".join(words), "commit": git_commit(),
             "machine": f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}",
             "date": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_seconds": wall_seconds}
    atomic_write_text(out / "ablation.json", json.dumps({"setup": setup, "options": opts, "results": results},
                                                        indent=1))
    atomic_write_text(out / "ABLATION.md", render(results, opts, setup))
    print(f"wrote {out / 'ABLATION.md'} ({len(results)} runs)", file=sys.stderr)


def render(results: list[dict], opts: dict, setup: Optional[dict] = None) -> str:
    """The Markdown table (one row per variant and seed)."""
    from psgan_fast.config import STAGE_SPLIT, format_split

    lines = ["# PS-GAN ablation", ""]
    if setup:
        lines += [f"Made by `{setup['command']}` at commit {setup['commit'] or '?'} on {setup['machine']}, "
                  f"{setup['date']} ({setup['wall_seconds'] / 60:.1f} min of wall clock in this invocation; "
                  "rows cached from earlier invocations keep their own results).", ""]
    lines += [
        f"Schedule: {opts['epochs']} epochs x {opts['batches']} batches of 64 "
        f"(stages {format_split(STAGE_SPLIT)} unless a row says otherwise), "
        f"{opts['generators']} generators unless a row "
        f"says otherwise; mnist-lenet FID on {opts['samples']} samples per generator against MNIST train.",
        f"A generator is collapsed when one class holds > {MAX_CLASS_SHARE:.0%} of its samples or fewer "
        f"than {MIN_CLASSES} classes hold >= {MIN_CLASS_SHARE:.0%}. D acc: the share of groups in which D "
        "picked the real image in each epoch, first to last, beside chance 1/(N+1). ms/step: the last epoch's training "
        "time per step (wall clock on a shared machine: compare costs with `python -m psgan_fast.bench.ab`). "
        "Worst top class per epoch: the largest share any one generator gives its most frequent class, after "
        f"each epoch ({min(TIMELINE_SAMPLES, opts['samples'])} samples per generator; above {MAX_CLASS_SHARE:.0%}: collapsed that "
        "epoch; — for runs scored before it was logged).", "",
        "| variant | changes (vs parent) | seed | union FID | per-generator FID | top class share per G "
        "| collapsed G | union class shares | D acc (chance) | worst top class per epoch | ms/step 28px |",
        "|---|---|---:|---:|---|---|---:|---|---|---|---:|",
    ]
    for r in results:
        parent, what, _ = VARIANTS[r["variant"]]
        pg = r["per_generator"]
        fids = " / ".join(_fmt(g["fid"]) for g in pg)
        tops = " / ".join(f"{g['top_share']:.0%} '{g['top_class']}'" for g in pg)
        shares = r["union_class_shares"]
        acc = r["d_accuracy"]
        acc_txt = " → ".join(f"{a * 100:.0f}" for a in acc) + f"% ({r['chance']:.0%})" if acc else "—"
        tops_t = r.get("top_share_per_epoch") or []
        top_txt = (" → ".join("?" if t is None else f"{t * 100:.0f}" for t in tops_t) + "%"
                   if any(t is not None for t in tops_t) else "—")
        lines.append(
            f"| {r['variant']} | {what}{f' ({parent})' if parent else ''} | {r['seed']} | {_fmt(r['fid'], 2)} "
            f"| {fids} | {tops} | {sum(g['collapsed'] for g in pg)}/{len(pg)} "
            f"| {min(shares):.1%}-{max(shares):.1%} | {acc_txt} | {top_txt} | {_fmt(r['ms_per_step'], 0)} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, argv: Optional[Sequence[str]]) -> int:
    """`--report`: the table of every scored run in `out` (variants in
    registry order, then seeds), under the schedule they share."""
    docs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/ablation.json"))]
    docs = [d for d in docs if d["key"]["variant"] in VARIANTS]
    if not docs:
        print(f"error: no scored runs in {out / 'runs'}", file=sys.stderr)
        return 1
    keys = {(d["key"]["generators"], d["key"]["epochs"], d["key"]["batches"], d["key"]["samples"]) for d in docs}
    if len(keys) > 1:
        print(f"error: the runs in {out} were made on different schedules {sorted(keys)}", file=sys.stderr)
        return 1
    order = list(VARIANTS)
    docs.sort(key=lambda d: (order.index(d["key"]["variant"]), d["key"]["seed"]))
    g, e, b, n = keys.pop()
    opts = {"generators": g, "epochs": e, "batches": b, "samples": n}
    _write_table(out, [d["result"] for d in docs], opts, argv, 0.0)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m psgan_fast.ablate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="ablation directory (runs/, ABLATION.md, ablation.json)")
    p.add_argument("--variants", default="paper,rps,rps-r1r2",
                   help="comma-separated variant names (--list shows them)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--generators", type=int, default=2, help="N for every variant that does not set it")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run")
    p.add_argument("--batches", type=int, default=200, help="batches of 64 per epoch")
    p.add_argument("--samples", type=int, default=5000, help="evaluation samples per generator")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at a time")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job (default: cores / jobs)")
    p.add_argument("--smoke", action="store_true", help=f"tiny schedule {SMOKE} (CI)")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    p.add_argument("--report", action="store_true",
                   help="train nothing: write the table from every run already scored in --out")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, (parent, what, over) in VARIANTS.items():
            print(f"{name:<16} {what}" + (f"  [from {parent}]" if parent else "") + f"  {over}")
        return 0
    if not args.out:
        parser.error("--out is required (the ablation directory)")
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"--variants: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if args.smoke:
        args.epochs, args.batches, args.samples = SMOKE["epochs"], SMOKE["batches"], SMOKE["samples"]
    for flag, v, low in (("--generators", args.generators, 1), ("--epochs", args.epochs, 3),
                         ("--batches", args.batches, 1), ("--samples", args.samples, 10), ("--jobs", args.jobs, 1)):
        if v < low:
            parser.error(f"{flag}: must be >= {low}, got {v}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    opts = {"out": args.out, "generators": args.generators, "epochs": args.epochs, "batches": args.batches,
            "samples": args.samples, "threads": threads}
    out = Path(args.out)
    if args.report:
        return write_report(out, argv)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for v in variants for s in seeds]
    results: dict[tuple[str, int], dict] = {}
    t0 = time.perf_counter()
    for i, ((v, s), res) in enumerate(_run_all(jobs, opts, args.jobs), 1):
        results[(v, s)] = res
        print(f"[{i}/{len(jobs)}] {v} seed {s}: FID {res['fid']:.2f} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
    _write_table(out, [results[j] for j in jobs], opts, argv, time.perf_counter() - t0)
    return 0


def _run_all(jobs: list[tuple[str, int]], opts: dict, workers: int):
    """(job, result) as each run finishes: in this process, or `workers` at a time."""
    if workers == 1:
        for v, s in jobs:
            yield (v, s), run_variant(v, s, opts)
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(run_variant, v, s, opts): (v, s) for v, s in jobs}
        for fut in as_completed(futs):
            yield futs[fut], fut.result()


if __name__ == "__main__":
    raise SystemExit(main())
