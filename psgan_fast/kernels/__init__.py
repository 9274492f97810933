"""Triton kernels with plain-PyTorch references (the stylegan2-ada ``bias_act`` pattern).

Each op is one public function with an ``impl=`` switch:

* ``"ref"``    the plain-PyTorch reference: the CPU path and the tests' oracle;
* ``"triton"`` the fused Triton kernels; runs on CUDA tensors, or on CPU
  tensors when ``TRITON_INTERPRET=1`` is set (that is how the tests run them).
  If Triton cannot run, this raises with the reason: asking for it explicitly
  must never silently measure or test the reference instead;
* ``"auto"``   Triton for CUDA tensors when Triton works, the reference
  elsewhere (and inside ``torch.compile``, where inductor fuses the reference
  itself). A Triton failure under ``auto`` is remembered, warned about once,
  and the reference is used from then on.

Ops:

* :func:`spectral_norm` / :func:`spectral_normalize` -- SNGAN's spectral
  normalisation (power iteration and W/sigma fused, forward and backward);
* :func:`mix_weights` -- PS-GAN's Algorithm 1 over a whole model, one launch
  per dtype group.

Importing this package never fails: if Triton is missing or broken,
:func:`triton_status` says why and everything runs on the references.
Kernels are compiled lazily on first use, so ``TRITON_INTERPRET`` is read when
a kernel first runs, not when this package is imported.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import torch

IMPLS = ("auto", "triton", "ref")

try:  # Triton is optional: a missing or broken install must not break imports.
    import triton as _triton
    import triton.language as _tl  # noqa: F401  (import checks the install)
    _TRITON_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the environment
    _triton = None
    _TRITON_ERROR = f"triton import failed: {type(exc).__name__}: {exc}"

# Set when a Triton launch failed under impl="auto"; the reference is used after.
_AUTO_DISABLED: str | None = None
_JIT_CACHE: dict[tuple[Callable, bool], Any] = {}


def triton_interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    if _triton is not None:
        try:
            return bool(_triton.knobs.runtime.interpret)
        except AttributeError:  # pragma: no cover - older Triton without knobs
            pass
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_status() -> tuple[bool, str]:
    """(usable, reason): whether Triton imported, and if not (or if it was
    disabled after a failure under ``impl="auto"``) why."""
    if _TRITON_ERROR is not None:
        return False, _TRITON_ERROR
    if _AUTO_DISABLED is not None:
        return False, _AUTO_DISABLED
    return True, "ok"


def _jit(fn: Callable) -> Any:
    """``triton.jit(fn)``, built on first use and cached per interpreter mode.

    The kernels are plain module-level functions (their ``tl.constexpr``
    annotations are strings thanks to ``from __future__ import annotations``),
    so defining them needs no Triton, and whether they are compiled or
    interpreted is decided when they first run.
    """
    key = (fn, triton_interpreting())
    kernel = _JIT_CACHE.get(key)
    if kernel is None:
        kernel = _JIT_CACHE[key] = _triton.jit(fn)
    return kernel


def _use_triton(impl: str, *tensors: torch.Tensor) -> bool:
    """Resolve ``impl`` for these tensors: True for the Triton path."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "ref":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if impl == "auto":
        if _TRITON_ERROR is not None or _AUTO_DISABLED is not None or not on_cuda:
            return False
        return not torch.compiler.is_compiling()
    # impl == "triton": run it or say why not.
    if _TRITON_ERROR is not None:
        raise RuntimeError(f"impl='triton' requested but Triton is unusable ({_TRITON_ERROR})")
    if not (on_cuda or triton_interpreting()):
        raise RuntimeError(
            "impl='triton' needs CUDA tensors, or TRITON_INTERPRET=1 in the environment to "
            "run the kernels on the CPU; use impl='auto' to fall back to the reference")
    return True


def _disable_auto(exc: BaseException) -> None:
    """Remember a Triton failure under impl="auto" and warn once."""
    global _AUTO_DISABLED
    if _AUTO_DISABLED is None:
        _AUTO_DISABLED = f"a Triton kernel failed, using the references: {type(exc).__name__}: {exc}"
        warnings.warn(f"psgan_fast.kernels: {_AUTO_DISABLED}", RuntimeWarning, stacklevel=3)


from psgan_fast.kernels.mix import mix_weights  # noqa: E402
from psgan_fast.kernels.spectral_norm import (  # noqa: E402
    spectral_norm,
    spectral_normalize,
    spectral_sigma,
)

__all__ = [
    "IMPLS",
    "mix_weights",
    "spectral_norm",
    "spectral_normalize",
    "spectral_sigma",
    "triton_interpreting",
    "triton_status",
]
