"""Checkpoints: atomic, pickle-free, and checked on load.

A checkpoint is a directory `checkpoints/ckpt-<step>/` holding
  weights.safetensors  every network's state dict, keys "<net>.<param>"
  optim.safetensors    every optimiser's tensors, keys "<opt>.<idx>.<name>"
  rng.safetensors      torch's CPU (and CUDA) generator states
  state.json           format version, epoch/batch/step, recipe state,
                       optimiser hyper-parameters, run identity
It is written into a hidden temporary directory, every file fsynced, then
renamed into place; `checkpoints/LATEST` (a one-line file, replaced
atomically) names the newest complete one. A crash at any moment leaves
either the previous checkpoint or the new one, never a torn one. Nothing
is unpickled on load: safetensors and JSON only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from psgan_fast.fsutil import atomic_write_text, fsync_dir, fsync_file

FORMAT = "psgan_fast-checkpoint"
VERSION = 1
KEEP = 3


class CheckpointError(ValueError):
    """A checkpoint is missing, torn, or does not belong to this run/model."""


def _optim_split(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        meta = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{name}.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta[k] = v
        state_meta[str(idx)] = meta
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, {"state": state_meta, "param_groups": groups}


def _optim_join(name: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for idx, m in meta["state"].items():
        state[int(idx)] = dict(m)
    prefix = f"{name}."
    for key, t in tensors.items():
        if not key.startswith(prefix):
            continue
        idx, k = key[len(prefix):].split(".", 1)
        state.setdefault(int(idx), {})[k] = t
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save(
    run_dir: Path,
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    keep: int = KEEP,
) -> Path:
    """Write a checkpoint for `state["step"]` and point LATEST at it."""
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"ckpt-{int(state['step']):09d}"
    tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=".tmp-ckpt-"))
    try:
        weights = {}
        for net, m in modules.items():
            for k, v in m.state_dict().items():
                weights[f"{net}.{k}"] = v.detach().cpu().contiguous()
        save_file(weights, str(tmp / "weights.safetensors"))
        optim_tensors: dict[str, torch.Tensor] = {}
        optim_meta: dict[str, Any] = {}
        for name, opt in optimizers.items():
            t, m = _optim_split(name, opt)
            optim_tensors.update(t)
            optim_meta[name] = m
        save_file(optim_tensors, str(tmp / "optim.safetensors"))
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = s
        save_file(rng, str(tmp / "rng.safetensors"))
        doc = {"format": FORMAT, "version": VERSION, **state, "optimizers": optim_meta,
               "networks": sorted(modules)}
        (tmp / "state.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
        for f in tmp.iterdir():
            fsync_file(f)
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(ckdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckdir / "LATEST", final.name + "\n")
    old = sorted(p for p in ckdir.glob("ckpt-*") if p.is_dir() and p != final)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint of a run, or None if it has none."""
    ckdir = Path(run_dir) / "checkpoints"
    try:
        name = (ckdir / "LATEST").read_text().strip()
    except OSError:
        return None
    path = ckdir / name
    return path if path.is_dir() else None


def resolve(path: Path) -> Path:
    """A run directory (-> its latest checkpoint) or a checkpoint directory."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    found = latest(path)
    if found is None:
        raise CheckpointError(f"{path}: neither a checkpoint nor a run directory with one")
    return found


def read_state(ckpt: Path) -> dict[str, Any]:
    try:
        doc = json.loads((ckpt / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt}: no state.json; not a psgan_fast checkpoint") from None
    except ValueError as e:
        raise CheckpointError(f"{ckpt}/state.json is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{ckpt}: not a psgan_fast checkpoint (format {doc.get('format')!r})"
                              if isinstance(doc, dict) else f"{ckpt}: not a psgan_fast checkpoint")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{ckpt}: checkpoint format version {doc.get('version')}, "
                              f"this psgan_fast reads version {VERSION}")
    return doc


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing from the checkpoint") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None


def load_modules(ckpt: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Load weights into `modules`, strictly: every key and shape must match."""
    weights = _load_tensors(ckpt / "weights.safetensors")
    for net, m in modules.items():
        prefix = f"{net}."
        sd = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if not sd:
            raise CheckpointError(f"{ckpt}: has no weights for network {net!r}")
        own = m.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        bad = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
        if missing or unexpected or bad:
            raise CheckpointError(
                f"{ckpt}: network {net!r} does not match this model "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {bad[:5]})"
            )
        m.load_state_dict(sd)


def _match_param_layout(opt: torch.optim.Optimizer) -> None:
    """Give per-parameter state (Adam's moments) the memory layout of its
    parameter. Checkpoints store tensors contiguous; a channels_last
    parameter with contiguous moments would be updated wrongly by fused
    optimiser kernels, which walk parameter and state as flat buffers."""
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in list(st.items()):
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def load_training(ckpt: Path, doc: dict[str, Any], optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Restore optimiser and RNG state (after `load_modules`)."""
    tensors = _load_tensors(ckpt / "optim.safetensors")
    metas = doc.get("optimizers", {})
    for name, opt in optimizers.items():
        if name not in metas:
            raise CheckpointError(f"{ckpt}: no state for optimiser {name!r}")
        try:
            opt.load_state_dict(_optim_join(name, metas[name], tensors))
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{ckpt}: optimiser {name!r} does not match: {e}") from None
        _match_param_layout(opt)
    rng = _load_tensors(ckpt / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
