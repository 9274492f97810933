"""Process-wide CPU settings measured to matter for training on a small,
shared machine. The benchmarks apply them (bench/conftest.py); a training
process can too (`configure_cpu()`).

Threads. On the project's 2-core box, shared with other jobs (load average
3-7), two OpenMP threads made PS-GAN/SNGAN training steps 10-40x slower than
one (psgan-g3 bf16 at 28x28: 200 ms vs 9,300 ms per step, interleaved in one
process; OMP_WAIT_POLICY=PASSIVE did not help: 1,800+ ms). One thread is the
default here; on an idle machine more may pay, so it is a parameter.

Allocator. glibc returns large freed blocks to the kernel (mmap'd blocks
above M_MMAP_THRESHOLD, and the heap top above M_TRIM_THRESHOLD), so a
training step that frees and reallocates tens of MB of activations takes
fresh zero-filled pages every step: 9,400 minor page faults and ~16 ms of
system time per psgan-g3 bf16 step (28x28, 1 thread). `tune_malloc()` keeps
freed memory in the process: 0 faults, and user+sys CPU time per step 126 ->
107 ms, wall 254 -> 214 ms (medians over 5 processes of each kind, run
alternately, 15 steps each after 3 warm-up steps, load average 6.0).
"""

from __future__ import annotations

import ctypes
import sys

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_state: dict[str, object] = {}


def tune_malloc() -> bool:
    """glibc only: serve large allocations from the heap and never trim it,
    so freed activation memory is reused instead of page-faulted back in.
    Returns whether it took effect (False on other platforms / C libraries).
    Memory then stays at the process's peak."""
    if "malloc" in _state:
        return bool(_state["malloc"])
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            # glibc may cap the mmap threshold (32 MiB on older releases): try high, then the cap.
            ok = any(mallopt(_M_MMAP_THRESHOLD, v) == 1 for v in (1 << 30, 32 << 20))
            ok = ok and mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    _state["malloc"] = ok
    return ok


def configure_cpu(threads: int = 1, *, malloc: bool = True) -> dict:
    """Set torch's intra-op thread count and (optionally) `tune_malloc()`.
    Returns what was set, for logs."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return {"threads": torch.get_num_threads(), "malloc_tuned": tune_malloc() if malloc else False}
