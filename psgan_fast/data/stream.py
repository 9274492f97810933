"""Batches for training: `BatchStream` over the Rust streamer, and `to_float`.

The prefetching batch streamer lives in Rust (`psgan_fast._core`): it
gathers shuffled, sharded batches on a background thread with the GIL
released. This module validates what it is given (IDX files or uint8
arrays) and hands its batches to torch without a copy.
"""

from __future__ import annotations

import os
from typing import Iterator, Union

import numpy as np
import torch

from psgan_fast import _core
from psgan_fast.data.idx import IdxFormatError, PathLike, read_idx


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
