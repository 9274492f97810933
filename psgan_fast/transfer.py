"""Algorithm 1 (paper §3.3): weight transfer at a stage switch.

    mixed[name] = (1 - alpha) * old[name] + alpha * new[name]

alpha = 0.1 (the paper's value) keeps mostly the trained old weights and a
little of the fresh initialisation. The paper loops over the old model's
names; stage networks differ (`psgan_fast.stages`), so docs/DESIGN.md §3 fixes
what happens to names that do not match:

* name in both, same shape, floating point -> mixed by the formula above
  (computed in at least float32, stored in the new tensor's dtype);
* name in both, same shape, integer/bool (BatchNorm's num_batches_tracked)
  -> copied from old (mixing a counter means nothing);
* name only in new, or a shape mismatch -> new's value kept, reported;
* name only in old -> dropped, reported.

The report is logged through `logging` (logger ``psgan_fast.transfer``).

This module is the plain-PyTorch reference: `mix_state_dicts` is the core
on plain dicts of tensors; `psgan_fast.kernels.mix` (Triton, all tensors in
one launch) keeps the same `mix_weights` signature and uses this as its CPU
fallback and its test oracle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import torch
from torch import nn

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]


@dataclass
class TransferReport:
    """What Algorithm 1 did with each tensor name."""

    alpha: float
    mixed: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    kept_new: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    dropped_old: list[str] = field(default_factory=list)

    def lines(self, prefix: str = "") -> list[str]:
        """Human-readable summary: counts, then every unmatched name with its reason."""
        out = [f"{prefix}mixed {len(self.mixed)} tensors (alpha={self.alpha:g}), copied "
               f"{len(self.copied)} integer buffers, kept {len(self.kept_new)} new, "
               f"dropped {len(self.dropped_old)} old"]
        out += [f"{prefix}  kept new {name}: {reason}" for name, reason in self.kept_new]
        out += [f"{prefix}  dropped old {name}: missing in new" for name in self.dropped_old]
        return out


def alpha_problem(alpha: float) -> Optional[str]:
    """Why `alpha` cannot be Algorithm 1's mixing weight (None if it can:
    0 <= alpha <= 1). The one statement of the rule: `check_alpha`, the
    Triton `mix_weights` and the config's `--alpha` check all use it."""
    return None if 0.0 <= alpha <= 1.0 else f"must be in [0, 1], got {alpha}"


def check_alpha(alpha: float) -> None:
    """ValueError unless `alpha` is a valid mixing weight (`alpha_problem`)."""
    problem = alpha_problem(alpha)
    if problem is not None:
        raise ValueError(f"alpha {problem}")


def _mixable(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def mix_state_dicts(old_sd: StateDict, new_sd: StateDict,
                    alpha: float = 0.1) -> tuple[dict[str, torch.Tensor], TransferReport]:
    """Algorithm 1 on plain dicts: returns (mixed state dict with exactly
    new_sd's names, in new_sd's order, dtypes and devices; report). Inputs
    are not modified."""
    check_alpha(alpha)
    report = TransferReport(alpha=float(alpha))
    mixed: dict[str, torch.Tensor] = {}
    for name, new in new_sd.items():
        old = old_sd.get(name)
        if old is None:
            mixed[name] = new.clone()
            report.kept_new.append((name, "missing in old"))
        elif old.shape != new.shape:
            mixed[name] = new.clone()
            report.kept_new.append(
                (name, f"shape mismatch: old {tuple(old.shape)} vs new {tuple(new.shape)}"))
        elif not _mixable(new) or not _mixable(old):
            mixed[name] = old.detach().to(device=new.device, dtype=new.dtype, copy=True)
            report.copied.append(name)
        else:
            work = torch.promote_types(new.dtype, torch.float32)
            o = old.detach().to(device=new.device, dtype=work)
            n = new.detach().to(dtype=work)
            mixed[name] = ((1.0 - alpha) * o + alpha * n).to(new.dtype)
            report.mixed.append(name)
    report.dropped_old = [name for name in old_sd if name not in new_sd]
    return mixed, report


def mix_weights(old: Union[nn.Module, StateDict], new: nn.Module,
                alpha: float = 0.1) -> tuple[nn.Module, TransferReport]:
    """Algorithm 1: load the mix of `old` (a module or a state dict) and
    `new` into `new` in place (its parameter objects stay the same) and
    return ``(new, report)``; the report is also logged."""
    old_sd = old.state_dict() if isinstance(old, nn.Module) else old
    mixed, report = mix_state_dicts(old_sd, new.state_dict(), alpha)
    new.load_state_dict(mixed)
    for line in report.lines():
        log.info(line)
    return new, report
