"""Data-parallel training on torch.distributed (torchrun; gloo on the CPU,
nccl on CUDA).

Rules (the same for every `--model`):

* `--batch-size` is the GLOBAL batch. Each of the W ranks trains on
  `batch_size / W` images (it must divide), so the learning rate needs no
  scaling: one step of a W-rank run is one step of a single process with
  the same global batch, up to the order of floating-point sums.
* Data: `BatchStream` shards each shuffled epoch by rank (strided), so batch
  t of all ranks together holds exactly global batch t.
* Noise: `Recipe.noise` draws the global batch's noise on every rank (all
  ranks share one RNG stream) and keeps the rows of its own images.
* Gradients: before every optimiser step, the gradients of that
  optimiser's parameters are averaged over ranks in one flat all-reduce
  (an optimiser step pre-hook). Losses are means over each rank's groups,
  so the average over ranks is the mean over the global batch; Algorithm
  2's masks stay per group.
* BatchNorm: in training mode, batch statistics are computed over the
  global batch (sums all-reduced, differentiably), as SyncBatchNorm does on
  GPUs (torch's SyncBatchNorm does not run on the CPU).
* Ranks out of step: every rank must issue the same collectives in the
  same order. A rank that waits in a collective longer than
  $PSGAN_FAST_DIST_TIMEOUT seconds (default 1800) fails with gloo's
  "Timed out waiting" error and a traceback through that collective,
  rather than hanging (`collective_timeout`).
* Only rank 0 writes the run directory (config, metrics, samples, plots,
  checkpoints); every rank holds identical weights.
* Resume: a checkpoint does not depend on the world size. A run may resume
  with another number of ranks as long as the global batch divides by it
  (refused otherwise): data order, noise and updates are unchanged.
  Exception: ProGAN's minibatch-standard-deviation layer sees each rank's
  images only (as in multi-GPU ProGAN), so ProGAN's updates depend on W.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import nn


TIMEOUT_ENV = "PSGAN_FAST_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # torch's own default for gloo; far above any one collective


def collective_timeout() -> datetime.timedelta:
    """How long a rank waits in one collective before it fails with an error
    instead of hanging: $PSGAN_FAST_DIST_TIMEOUT seconds, default 1800 (30
    min). Ranks that have fallen out of step (one waits in a collective the
    others never issue) then stop with gloo's "Timed out waiting ... ms"
    error and a traceback through the collective, rather than forever.
    Keep it far above the longest time rank 0 works alone between two
    collectives (sample grids, checkpoints, --eval-every)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_pref: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/...), or
    use one the caller already initialised; a single process otherwise."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=collective_timeout())
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def device_for(info: DistInfo, device: torch.device) -> torch.device:
    """One GPU per rank on CUDA."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def average_gradients(params: Iterable[torch.Tensor], world_size: int) -> None:
    """Average the gradients of `params` over all ranks in one all-reduce."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat.div_(world_size)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


_SYNC_MARK = "_psgan_fast_gradient_sync"  # the hook's handle, kept on the optimiser itself


def attach_gradient_sync(optimizer: torch.optim.Optimizer, world_size: int):
    """Average gradients over ranks right before every `optimizer.step()`.

    Idempotent: an optimiser that already has the hook keeps its one hook.
    The mark lives on the optimiser object. Never track hooked optimisers by
    `id()`: once a stage switch frees the old optimisers, CPython may give a
    new one the id of a freed one, and whether it does depends on each
    process's heap, so one rank would skip the hook and stop issuing the
    all-reduce the other ranks wait in (the intermittent two-rank hang)."""
    handle = getattr(optimizer, _SYNC_MARK, None)
    if handle is not None:
        return handle

    def hook(opt, args, kwargs):
        average_gradients((p for g in opt.param_groups for p in g["params"]), world_size)
        return None

    handle = optimizer.register_step_pre_hook(hook)
    setattr(optimizer, _SYNC_MARK, handle)
    return handle


def has_gradient_sync(optimizer: torch.optim.Optimizer) -> bool:
    return getattr(optimizer, _SYNC_MARK, None) is not None


class _GlobalBatchNormMixin:
    """BatchNorm whose training-mode statistics cover the global batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)  # type: ignore[misc]
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims),
                           torch.tensor([x.numel() / c], dtype=torch.float32, device=x.device)])
        total = all_reduce(local)
        count = total[2 * c]
        mean = total[:c] / count
        var = (total[c:2 * c] / count - mean * mean).clamp_min(0)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)  # type: ignore[attr-defined]
        if self.affine:  # type: ignore[attr-defined]
            y = y * self.weight.view(shape) + self.bias.view(shape)  # type: ignore[attr-defined]
        if self.track_running_stats:  # type: ignore[attr-defined]
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[attr-defined]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # type: ignore[attr-defined]
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)  # type: ignore[attr-defined]
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)  # type: ignore[attr-defined]
        return y.to(x.dtype)


class GlobalBatchNorm1d(_GlobalBatchNormMixin, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(_GlobalBatchNormMixin, nn.BatchNorm2d):
    pass


def globalise_batchnorm(module: nn.Module) -> int:
    """Switch every BatchNorm1d/2d in `module` to global-batch statistics,
    in place (same parameters, buffers and state-dict keys). Returns how
    many were switched."""
    n = 0
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
            n += 1
        elif type(m) is nn.BatchNorm1d:
            m.__class__ = GlobalBatchNorm1d
            n += 1
    return n


def all_mean(values: torch.Tensor, info: Optional[DistInfo]) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging); identity on one process."""
    if info is None or not info.enabled:
        return values
    v = values.clone()
    dist.all_reduce(v)
    return v / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
