"""What a measurement ran on: CPU, cores, load, torch threads, GPU, package
versions and the git commit, gathered (and, for benchmark records, described)
in one place for the benchmarks, the ablation and the reproduction."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Optional, Sequence


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> Optional[list[float]]:
    """The 1-, 5- and 15-minute load averages (None where unavailable)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def load_average() -> Optional[float]:
    """The 1-minute load average (None where unavailable)."""
    la = loadavg()
    return None if la is None else la[0]


def machine_info(device=None) -> dict:
    """What the numbers were measured on: CPU, cores, torch, threads, GPU."""
    import torch

    from psgan_fast.bench.cpu_runtime import _state as runtime_state

    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_average": load_average(),
            "malloc_tuned": bool(runtime_state.get("malloc", False))}
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def device_name(device) -> str:
    """A torch device in words: the GPU's name, or the CPU's."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def versions(optional: tuple[str, ...] = ("torch_fidelity",), missing: Optional[str] = "unavailable") -> dict:
    """psgan_fast, Python, torch, numpy, the platform, and the `optional`
    packages' versions (a package that does not import gets `missing`, or
    no key when `missing` is None)."""
    import importlib

    import numpy
    import torch

    from psgan_fast import __version__

    v = {"psgan_fast": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "numpy": numpy.__version__, "platform": platform.platform()}
    for name in optional:
        try:
            v[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - an optional package
            if missing is not None:
                v[name] = missing
    return v


def git_commit() -> Optional[str]:
    """The short commit of the checkout this package runs from (None outside git)."""
    import subprocess

    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                           cwd=os.path.dirname(os.path.abspath(__file__)))
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_line(records: Sequence[dict]) -> str:
    """One line on the machine behind benchmark records (their `machine`,
    a `machine_info()` dict, and `load_average`, one figure or a list)."""
    m = next((r.get("machine") for r in records if r.get("machine")), None) or {}
    loads = [x for r in records for x in (r.get("load_average") if isinstance(r.get("load_average"), list)
                                          else [r.get("load_average")]) if x is not None]
    parts = [m.get("gpu") or m.get("cpu", "?")]
    if m.get("cores"):
        parts.append(f"{m['cores']} CPUs")
    if m.get("threads"):
        parts.append(f"{m['threads']} torch thread(s)")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    if "malloc_tuned" in m:
        parts.append("malloc tuned" if m["malloc_tuned"] else "default malloc")
    if loads:
        parts.append(f"load average {min(loads):.1f}-{max(loads):.1f}")
    return ", ".join(parts)
