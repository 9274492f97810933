"""Evaluate a training run: FID, IS and KID per generator and for their union.

    python -m psgan_fast.evaluate RUN_DIR --num-samples 10000 --json out.json
    python -m psgan_fast.evaluate RUN_DIR --checkpoint RUN_DIR/checkpoints/epoch_0010
    python -m psgan_fast.evaluate --images mnist:test --images fashion-mnist:test   # data sets as "fakes"

Each generator draws --num-samples images (noise seeded with seed + k); the
union is --num-samples images, image i from generator i mod N (what
`psgan_fast.sample` draws). IS is mean ± std over 10 splits, KID mean ± std
over random subsets (torch-fidelity's definitions). Class histograms come
from mnist-lenet's argmax and show how the generators split the digits
(a generator that covers few classes is collapsing).

Feature extractor (--feature-extractor): `auto` picks inception-v3-compat,
the paper's, when its weights are on this machine (--inception-weights PATH,
$PSGAN_FAST_INCEPTION_WEIGHTS, or the torch hub cache), else mnist-lenet.
Naming inception-v3-compat lets torch-fidelity download the weights. Every
result records the extractor and the SHA-256 of its weights. mnist-lenet's
IS is bounded by 10 (10 classes), so it is not comparable with the paper's
Inception IS.

Real data (--real): the run's data set, train split, by default; its
features and statistics are cached, keyed by the data's hash and the
extractor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from psgan_fast.fsutil import atomic_write_text
from psgan_fast.metrics import extractors as ex
from psgan_fast.train import MAX_SEED, _int_at_least

DATASETS = ("mnist", "fashion-mnist")


def _dataset_spec(text: str) -> tuple[str, str]:
    """'mnist', 'mnist:test', 'fashion-mnist:train' or 'PATH[:split]' -> (name, split)."""
    name, sep, split = text.rpartition(":")
    if sep and split in ("train", "test"):
        return name, split
    return text, "train"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m psgan_fast.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", type=Path, help="a training run directory (its latest checkpoint)")
    ap.add_argument("--checkpoint", type=Path, help="a checkpoint directory (default: the run's latest)")
    ap.add_argument("--images", action="append", default=[], metavar="DATASET[:SPLIT]",
                    help="evaluate a data set (mnist, fashion-mnist or an IDX folder) instead of generators; "
                         "repeatable")
    ap.add_argument("--num-samples", type=_int_at_least(2), default=10000, help="images per generator (default 10000)")
    ap.add_argument("--feature-extractor", default="auto", choices=("auto",) + ex.EXTRACTORS)
    ap.add_argument("--inception-weights", type=Path, help="local inception-v3-compat weights (offline use)")
    ap.add_argument("--real", metavar="DATASET[:SPLIT]",
                    help="real data (default: the run's data set, train split; mnist without a run)")
    ap.add_argument("--data-dir", type=Path, help="folder holding the real data's IDX files")
    ap.add_argument("--num-real", type=_int_at_least(2),
                    help="use a fixed random subset of this many real images (default: all for mnist-lenet, "
                         "10000 for inception)")
    ap.add_argument("--seed", type=_int_at_least(0, MAX_SEED - 1000), default=0)
    ap.add_argument("--batch-size", type=_int_at_least(1), default=500)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--no-kid", action="store_true", help="skip KID (the slowest metric with Inception)")
    ap.add_argument("--kid-subsets", type=_int_at_least(1), default=100)
    ap.add_argument("--kid-subset-size", type=_int_at_least(2), default=1000)
    ap.add_argument("--no-cache", action="store_true", help="recompute the real statistics")
    ap.add_argument("--json", type=Path, help="write the full result here")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def _load_split(spec: str, data_dir: Optional[Path]) -> tuple[np.ndarray, str]:
    from psgan_fast.data import find_dataset, read_idx

    name, split = _dataset_spec(spec)
    images_path, _ = find_dataset(name, data_dir if name in DATASETS else None, split)
    return read_idx(images_path), f"{name}:{split}"


def _run_dataset(run_dir: Optional[Path]) -> tuple[str, Optional[Path]]:
    if run_dir is None:
        return "mnist", None
    try:
        cfg = json.loads((run_dir / "config.json").read_text())["config"]
        return cfg.get("dataset", "mnist"), (Path(cfg["data_dir"]) if cfg.get("data_dir") else None)
    except (OSError, KeyError, ValueError):
        return "mnist", None


def _fmt(x: Optional[float], width: int, prec: int) -> str:
    return f"{x:{width}.{prec}f}" if x is not None else " " * (width - 1) + "-"


def format_summary(res: dict) -> str:
    fe = res["feature_extractor"]
    real = res["real"]
    lines = [
        f"feature extractor: {fe['name']}" + (f" (weights sha256 {fe['weights_sha256'][:12]})"
                                             if fe.get("weights_sha256") else ""),
        f"real: {real['source']}, {real['count']} images, IS {real['is_mean']:.3f} ± {real['is_std']:.3f}",
        "",
        f"{'set':<22} {'n':>6} {'FID':>10} {'IS':>16} {'KID x 1e3':>16}  classes (mnist-lenet argmax, %)",
    ]
    rows = [(g.get("name", f"G{g['index']}"), g) for g in res["generators"]]
    if res.get("union") is not None and len(res["generators"]) > 1:
        rows.append(("union", res["union"]))
    for name, g in rows:
        kid = (f"{1e3 * g['kid_mean']:7.3f} ± {1e3 * g['kid_std']:5.3f}" if "kid_mean" in g else "-")
        hist = ""
        if "class_histogram" in g:
            tot = max(1, sum(g["class_histogram"]))
            hist = " ".join(f"{100 * c / tot:4.1f}" for c in g["class_histogram"])
        lines.append(f"{name:<22} {g['num_samples']:>6} {g['fid']:10.3f} "
                     f"{g['is_mean']:8.3f} ± {g['is_std']:5.3f} {kid:>16}  {hist}")
    lines.append("")
    lines.append(f"({res['seconds']:.1f} s)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from psgan_fast.metrics import evaluation as ev

    if args.run_dir is None and args.checkpoint is None and not args.images:
        print("error: give a RUN_DIR, --checkpoint or --images", file=sys.stderr)
        return 2
    if args.json is not None:
        problem = _unwritable(args.json)
        if problem:
            print(f"error: --json: {problem}", file=sys.stderr)
            return 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    progress = not args.no_progress and sys.stderr.isatty()

    try:
        if args.feature_extractor == "auto":
            name = ex.default_feature_extractor(args.inception_weights)
            if name == ex.MNIST_LENET:
                print("note: Inception weights not found on this machine; using mnist-lenet "
                      "(--feature-extractor inception-v3-compat downloads them, or give --inception-weights PATH)",
                      file=sys.stderr)
        else:
            name = args.feature_extractor

        # Real data: the run's data set unless --real says otherwise.
        run_dir = args.run_dir
        if run_dir is None and args.checkpoint is not None:
            run_dir = args.checkpoint.resolve().parent.parent
        if args.real:
            real_images, real_source = _load_split(args.real, args.data_dir)
        else:
            dataset, data_dir = _run_dataset(run_dir)
            real_images, real_source = _load_split(f"{dataset}:train", args.data_dir or data_dir)
        num_real = args.num_real if args.num_real is not None else (None if name == ex.MNIST_LENET else 10000)
        if num_real is not None and num_real < len(real_images):
            pick = np.sort(np.random.default_rng(args.seed).permutation(len(real_images))[:num_real])
            real_images = real_images[pick]
            real_source += f" (random {num_real}, seed {args.seed})"
        t0 = time.perf_counter()
        ref = ev.real_reference(real_images, source=real_source, feature_extractor=name,
                                inception_weights=args.inception_weights, device=device,
                                batch_size=args.batch_size, cache=not args.no_cache, progress=progress)
        common = dict(real=ref, feature_extractor=name, inception_weights=args.inception_weights, device=device,
                      batch_size=args.batch_size, kid=not args.no_kid, kid_subsets=args.kid_subsets,
                      kid_subset_size=args.kid_subset_size, seed=args.seed, progress=progress)
        if args.images:
            sets, names = [], []
            for spec in args.images:
                imgs, label = _load_split(spec, None)
                sets.append(imgs[:args.num_samples])
                names.append(label)
            res = ev.evaluate_images(sets, union=False, **common)
            for g, label in zip(res["generators"], names):
                g["name"] = label
            res["num_samples"] = args.num_samples
        else:
            from psgan_fast.api import load_generators

            gens = load_generators(args.checkpoint or args.run_dir, device=device)
            res = ev.evaluate_generators(gens, args.num_samples, **common)
            for g in res["generators"]:
                g["name"] = f"G{g['index']}"
        res["seconds"] = time.perf_counter() - t0
    except (ex.InceptionWeightsUnavailable, OSError, ValueError) as e:  # ValueError: CheckpointError too
        print(f"error: {e}", file=sys.stderr)
        return 1

    res["command"] = ["python", "-m", "psgan_fast.evaluate", *(argv if argv is not None else sys.argv[1:])]
    res["run_dir"] = None if run_dir is None else os.fspath(run_dir)
    res["checkpoint"] = None if args.checkpoint is None else os.fspath(args.checkpoint)
    print(format_summary(res))
    if args.json:
        try:
            atomic_write_text(args.json, json.dumps(res, indent=1) + "\n")
        except OSError as e:
            print(f"error: --json: cannot write {args.json}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"wrote {args.json}")
    return 0


def _unwritable(path: Path) -> Optional[str]:
    """Why the result could not be written to `path`, found before the
    evaluation runs (a probe file in its folder); None if it can be."""
    if path.is_dir():
        return f"{path} is a directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
        if path.exists():
            with open(path, "ab"):
                pass
    except OSError as e:
        return f"cannot write {path}: {e.strerror or e}"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
