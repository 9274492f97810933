"""PS-GAN's Algorithm 1 (weight transfer at a stage switch) over a whole model, fused.

Semantics are those of the reference, :mod:`psgan_fast.transfer` (docs/DESIGN.md
§3): for every name of the new model's state dict,

* same name and shape in old, both floating point (or complex):
  ``new = (1 - alpha) * old + alpha * new``, computed in at least float32;
* same name and shape, not both floating (integer buffers such as
  BatchNorm's num_batches_tracked): copied from old;
* missing in old, or a shape mismatch: keeps new's value, reported;

and old names missing in new are reported as dropped.

``impl="ref"`` calls :func:`psgan_fast.transfer.mix_weights` (or
``mix_state_dicts`` for a state-dict ``new``): one definition of
Algorithm 1 in the project.

``impl="triton"`` writes into new's tensors in place with ONE launch per
dtype group, through a pointer table: an int64 tensor holding, per tensor,
the old and new data pointers, the element count and the index of its first
block. Each program finds its tensor by binary search over the block starts
and blends one block in float32. Integer buffers of equal dtypes are copied by
the same kernel. The table is the only host-to-device copy; nothing is
concatenated. What the kernel does not cover goes through the same per-tensor
PyTorch arithmetic as the reference: float64 and complex tensors, copies that
change dtype, and tensors that are not contiguous.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Union

import torch
from torch import nn

import psgan_fast.kernels as _k
from psgan_fast import transfer as _transfer

try:  # only the kernel source below needs these names; see kernels/__init__.py
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - Triton missing or broken
    triton = tl = None

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]
_BLOCK = 1024
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _mixable(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def _classify(old_sd: StateDict, new_sd: StateDict, alpha: float):
    """The reference's decisions, name by name: (report, mix names, copy names)."""
    report = _transfer.TransferReport(alpha=float(alpha))
    mix, copy = [], []
    for name, n in new_sd.items():
        o = old_sd.get(name)
        if o is None:
            report.kept_new.append((name, "missing in old"))
        elif o.shape != n.shape:
            report.kept_new.append(
                (name, f"shape mismatch: old {tuple(o.shape)} vs new {tuple(n.shape)}"))
        elif not _mixable(n) or not _mixable(o):
            copy.append(name)
            report.copied.append(name)
        else:
            mix.append(name)
            report.mixed.append(name)
    report.dropped_old = [name for name in old_sd if name not in new_sd]
    return report, mix, copy


# ----------------------------------------------------------------------------------------------
# Triton
# ----------------------------------------------------------------------------------------------

def _mix_kernel(meta_ptr, old_ref, new_ref, n_tensors, a, b, COPY: tl.constexpr,
                LOG_T: tl.constexpr, BLOCK: tl.constexpr):
    """meta = [old ptrs (T), new ptrs (T), numels (T), first block of each (T + 1)].
    old_ref / new_ref are the group's first tensors: they only give the pointer types."""
    pid = tl.program_id(0)
    starts = meta_ptr + 3 * n_tensors
    lo = 0
    hi = n_tensors
    for _ in tl.static_range(LOG_T):  # invariant: starts[lo] <= pid < starts[hi]
        mid = (lo + hi) // 2
        right = tl.load(starts + mid) <= pid
        lo = tl.where(right, mid, lo)
        hi = tl.where(right, hi, mid)
    o_ptr = tl.load(meta_ptr + lo).to(old_ref.dtype)
    n_ptr = tl.load(meta_ptr + n_tensors + lo).to(new_ref.dtype)
    numel = tl.load(meta_ptr + 2 * n_tensors + lo)
    offs = (pid - tl.load(starts + lo)) * BLOCK + tl.arange(0, BLOCK)
    m = offs < numel
    o = tl.load(o_ptr + offs, mask=m)
    if COPY:
        r = o
    else:
        n = tl.load(n_ptr + offs, mask=m)
        r = a * o.to(tl.float32) + b * n.to(tl.float32)
    tl.store(n_ptr + offs, r.to(new_ref.dtype.element_ty), mask=m)


def _launch_group(olds: list[torch.Tensor], news: list[torch.Tensor], alpha: float,
                  copy: bool) -> None:
    """One launch over every (old, new) pair of a group (same dtypes, same device)."""
    T = len(news)
    starts = [0]
    for n in news:
        starts.append(starts[-1] + -(-n.numel() // _BLOCK))
    meta = torch.tensor([o.data_ptr() for o in olds] + [n.data_ptr() for n in news]
                        + [n.numel() for n in news] + starts, dtype=torch.int64)
    meta = meta.to(news[0].device)
    _k._jit(_mix_kernel)[(starts[-1],)](meta, olds[0], news[0], T, 1.0 - alpha, alpha,
                                        COPY=copy, LOG_T=max(0, (T - 1).bit_length()),
                                        BLOCK=_BLOCK)


def _mix_torch(olds, news, alpha: float, copy: bool) -> None:
    """The reference's arithmetic, tensor by tensor, written into new in place."""
    for o, n in zip(olds, news):
        if copy:
            n.copy_(o)
        else:
            work = torch.promote_types(n.dtype, torch.float32)
            n.copy_((1.0 - alpha) * o.to(work) + alpha * n.to(work))


def _mix_triton(old_sd: StateDict, new_sd: StateDict, alpha: float, strict: bool):
    report, mix, copy = _classify(old_sd, new_sd, alpha)
    # Names that share one tensor (tied weights): the last one wins, as when the
    # reference loads its mixed dict name by name.
    targets: dict[tuple, tuple[str, bool]] = {}
    todo = {**{name: False for name in mix}, **{name: True for name in copy}}
    for name in new_sd:
        if name in todo and new_sd[name].numel():
            n = new_sd[name]
            targets.pop(key := (n.data_ptr(), n.dtype, tuple(n.shape), n.stride()), None)
            targets[key] = (name, todo[name])
    groups: dict[tuple, tuple[list, list]] = {}
    loose: list[tuple[torch.Tensor, torch.Tensor, bool]] = []
    with torch.no_grad():
        for name, is_copy in targets.values():
            n = new_sd[name]
            o = old_sd[name].detach().to(n.device)
            fits = n.is_contiguous() and (
                o.dtype == n.dtype if is_copy
                else o.dtype in _KERNEL_DTYPES and n.dtype in _KERNEL_DTYPES)
            if not fits:
                loose.append((o, n, is_copy))
                continue
            olds, news = groups.setdefault((o.dtype, n.dtype, n.device, is_copy), ([], []))
            olds.append(o.contiguous())
            news.append(n)
        pending = [(olds, news, key[3]) for key, (olds, news) in groups.items()]
        for i, (olds, news, is_copy) in enumerate(pending):
            try:
                _launch_group(olds, news, alpha, is_copy)
            except Exception as exc:
                if strict:
                    raise
                # impl="auto": nothing of this group was written; finish in PyTorch.
                _k._disable_auto(exc)
                for olds_, news_, c in pending[i:]:
                    _mix_torch(olds_, news_, alpha, c)
                break
        for o, n, c in loose:
            _mix_torch([o], [n], alpha, c)
    return report


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def mix_weights(old: Union[nn.Module, StateDict], new: Union[nn.Module, MutableMapping],
                alpha: float = 0.1, *, impl: str = "auto"):
    """Algorithm 1: blend ``old``'s weights into ``new`` in place.

    Same signature and result as :func:`psgan_fast.transfer.mix_weights`
    (a drop-in): ``old`` is a module or a state dict, ``new`` a module (or a
    state dict, written into its tensors); returns ``(new, report)`` with a
    :class:`psgan_fast.transfer.TransferReport`, whose lines are also logged.
    The parameter objects of ``new`` stay the same.
    """
    _transfer.check_alpha(alpha)
    old_sd = old.state_dict() if isinstance(old, nn.Module) else old
    new_sd = new.state_dict() if isinstance(new, nn.Module) else new
    tensors = list(new_sd.values())
    if tensors and _k._use_triton(impl, *tensors):
        report = _mix_triton(old_sd, new_sd, alpha, strict=impl == "triton")
        for line in report.lines():
            log.info(line)
        return new, report
    if isinstance(new, nn.Module):
        return _transfer.mix_weights(old, new, alpha)
    mixed, report = _transfer.mix_state_dicts(old_sd, new_sd, alpha)
    with torch.no_grad():
        for name, n in new_sd.items():
            n.copy_(mixed[name])
    for line in report.lines():
        log.info(line)
    return new, report
