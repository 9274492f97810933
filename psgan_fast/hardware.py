"""What the CPU can do fast, where a default or a warning depends on it.

bf16 on the CPU. ``--precision bf16`` runs the networks under bf16 autocast.
That pays only where the CPU has bf16 (or at least AVX-512) arithmetic that
oneDNN uses: on the 2-core Xeon with AVX-512 + AMX-BF16 the PS-GAN step ran
1.5-2x faster in bf16 than in fp32. On a CPU without it oneDNN and MKL fall
back to reference loops: on the 2-core AMD EPYC (Zen 3, AVX2 only) this
project also runs on, a 1024^3 bf16 matmul reached 0.93 GFLOP/s against 67
in fp32, and the 28x28 training steps were ~10x slower in bf16
(``python -m psgan_fast.bench.ab psgan-g1,psgan-g3,sngan --precision
fp32,bf16 --stages 2 --steps 4 --threads 1``: psgan-g1 190 vs 1,885 ms,
psgan-g3 390 vs 4,224 ms, sngan 216 vs 1,747 ms, 2026-12-01).

`cpu_bf16_fast()` answers "is bf16 autocast on this CPU worth it": torch's
own test of whether oneDNN has a bf16 path (AVX-512 BW/VL/DQ or newer), and,
should that private hook be missing, the CPU's flags from /proc/cpuinfo.
The trainer warns when bf16 is asked for on a CPU where it is not; the
benchmarks skip their bf16 cases there (with that reason) unless
``PSGAN_BENCH_BF16=1``.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Iterable, Optional

# x86 flags (Linux /proc/cpuinfo names) that give oneDNN a fast bf16 path:
# native bf16 dot products, AMX tiles, or AVX-512 (oneDNN's bf16 emulation
# with AVX-512 runs at about fp32 speed; with AVX2 only it does not exist).
_X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "avx512bw"})
# aarch64 "Features" line: the BF16 extension (BFDOT/BFMMLA).
_ARM_BF16_FLAGS = frozenset({"bf16"})

# Why bf16 is slow here (the benchmarks' skip reason), and the trainer's advice.
BF16_SLOW_REASON = ("this CPU has no fast bf16 arithmetic (no AVX-512 / AVX512-BF16 / AMX): bf16 autocast falls "
                    "back to reference kernels, measured ~10x slower than fp32 on an AVX2-only CPU")
BF16_SLOW_NOTE = f"{BF16_SLOW_REASON}; use --precision fp32"


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo text (x86 "flags", arm "Features")."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


def bf16_from_flags(flags: Iterable[str], machine: str) -> Optional[bool]:
    """Whether the flags promise fast bf16 on this architecture; None if unknown."""
    flags = frozenset(flags)
    if not flags:
        return None
    m = machine.lower()
    if m in ("x86_64", "amd64", "i686", "i386"):
        return bool(flags & _X86_BF16_FLAGS)
    if m in ("aarch64", "arm64"):
        return bool(flags & _ARM_BF16_FLAGS)
    return None


@functools.lru_cache(maxsize=1)
def cpu_bf16_fast() -> Optional[bool]:
    """True when bf16 autocast can be expected to pay on this CPU, False when
    it is known not to (reference-kernel fallback), None when unknown."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return bf16_from_flags(parse_cpu_flags(text), platform.machine())


def bf16_warning(device_type: str, precision: str) -> Optional[str]:
    """A one-line warning when bf16 is asked for on a CPU where it is slow."""
    if device_type == "cpu" and precision == "bf16" and cpu_bf16_fast() is False:
        return f"warning: --precision bf16: {BF16_SLOW_NOTE}"
    return None
