"""IDX files: reading them, and checking them without holding them in memory.

A file may be raw or gzipped (`train-images-idx3-ubyte[.gz]`). Its header
is validated first (the same checks and words as the Rust parser's in
`psgan_fast._core`), then, for a full check, its decompressed content is
streamed and hashed, reading stops one byte past what the header promises.
The errors: IdxFormatError for a malformed file, DataVerificationError for
a well-formed file with the wrong shape or SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from psgan_fast import _core

PathLike = Union[str, os.PathLike]

IdxFormatError = _core.IdxFormatError


class DataVerificationError(ValueError):
    """A data file's content does not match its known SHA-256 or shape."""


_MAX_DIMS = 4
_U8 = 0x08


def _locate(folder: Path, name: str) -> Optional[Path]:
    """The file `name` in `folder`, raw or gzipped; None if neither is there."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


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
