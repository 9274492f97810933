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

state.json records the SHA-256 of each tensor file ("files"), checked
before a checkpoint is used. `find` picks the checkpoint LATEST names if it
is intact, else the newest intact one (LATEST lost or dangling, a file
damaged, state.json unreadable), and says what it skipped and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from psgan_fast.fsutil import atomic_write_text, fsync_dir, fsync_file, sha256_file

FORMAT = "psgan_fast-checkpoint"
VERSION = 1
KEEP = 3
TENSOR_FILES = ("weights.safetensors", "optim.safetensors", "rng.safetensors")
TMP_PREFIX = ".tmp-ckpt-"


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


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write a safetensors file; return the SHA-256 of its bytes."""
    data = safetensors_bytes(tensors)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


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
    tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=TMP_PREFIX))
    try:
        weights = {}
        for net, m in modules.items():
            for k, v in m.state_dict().items():
                weights[f"{net}.{k}"] = v.detach().cpu().contiguous()
        optim_tensors: dict[str, torch.Tensor] = {}
        optim_meta: dict[str, Any] = {}
        for name, opt in optimizers.items():
            t, m = _optim_split(name, opt)
            optim_tensors.update(t)
            optim_meta[name] = m
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = s
        files = {name: _write_tensors(tmp / name, tensors)
                 for name, tensors in zip(TENSOR_FILES, (weights, optim_tensors, rng))}
        doc = {"format": FORMAT, "version": VERSION, **state, "optimizers": optim_meta,
               "networks": sorted(modules), "files": files}
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
    # Keep the `keep` newest up to this one. Later-numbered ones exist only
    # after a resume fell back past them (damaged); they are replaced when
    # the run reaches their step again.
    old = [p for p in all_checkpoints(run_dir) if p.name < final.name]
    for p in old[keep - 1:]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def all_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint directory of a run, newest (highest step) first."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    return sorted((p for p in ckdir.glob("ckpt-*") if p.is_dir()), reverse=True)


def problem(ckpt: Path, verify: bool = True) -> Optional[str]:
    """Why `ckpt` cannot be used, or None if it is complete (and, with
    `verify`, every tensor file matches the checksum state.json records)."""
    try:
        doc = read_state(ckpt)
    except CheckpointError as e:
        return str(e)
    recorded = doc.get("files") or {}
    for name in TENSOR_FILES:
        path = ckpt / name
        if not path.is_file():
            return f"{path}: missing from the checkpoint"
        if verify and name in recorded:
            try:
                digest = sha256_file(path)
            except OSError as e:
                return f"{path}: unreadable ({e.strerror})"
            if digest != recorded[name]:
                return f"{path}: checksum mismatch (the file is damaged)"
    return None


def _named_by_latest(run_dir: Path) -> tuple[Optional[Path], Optional[str]]:
    ckdir = Path(run_dir) / "checkpoints"
    try:
        name = (ckdir / "LATEST").read_text().strip()
    except FileNotFoundError:
        return None, f"{ckdir / 'LATEST'} is missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{ckdir / 'LATEST'} is unreadable ({e})"
    if not name.startswith("ckpt-") or "/" in name or not (ckdir / name).is_dir():
        return None, f"{ckdir / 'LATEST'} names {name!r}, which is not a checkpoint of this run"
    return ckdir / name, None


def find(run_dir: Path, verify: bool = True) -> tuple[Optional[Path], list[str]]:
    """The checkpoint to continue a run from: the one LATEST names if it is
    usable, else the newest usable one; None if there is none. Also returns
    a note for each thing passed over (LATEST lost, a damaged checkpoint)."""
    notes: list[str] = []
    named, why = _named_by_latest(run_dir)
    if why and all_checkpoints(run_dir):
        notes.append(why)
    order = ([named] if named else []) + [p for p in all_checkpoints(run_dir) if p != named]
    for ck in order:
        bad = problem(ck, verify)
        if bad is None:
            return ck, notes
        notes.append(f"skipped {ck.name}: {bad}")
    return None, notes


def latest(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint of a run (see `find`; checksums are
    not read), or None if it has none."""
    return find(run_dir, verify=False)[0]


def resolve(path: Path) -> Path:
    """A run directory (-> its latest intact checkpoint) or a checkpoint
    directory, checked against its recorded checksums."""
    path = Path(path)
    if (path / "state.json").is_file():
        bad = problem(path)
        if bad:
            raise CheckpointError(bad)
        return path
    found, notes = find(path)
    if found is None:
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise CheckpointError(f"{path}: neither a checkpoint nor a run directory with one{detail}")
    for note in notes:
        warnings.warn(f"{path}: {note}; using {found.name}", stacklevel=2)
    return found


def clean_temporaries(run_dir: Path) -> int:
    """Remove what killed runs left behind: half-written checkpoint
    directories and atomic-write temporaries. Only call with the run
    directory locked. Returns the number of entries removed."""
    run_dir = Path(run_dir)
    ckdir = run_dir / "checkpoints"
    gone = 0
    for p in list(ckdir.glob(TMP_PREFIX + "*")) if ckdir.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)
        gone += 1
    for d, names in ((run_dir, ("config.json", "metrics.jsonl")), (ckdir, ("LATEST",))):
        for name in names:
            for p in d.glob(f".{name}.*") if d.is_dir() else []:
                p.unlink(missing_ok=True)
                gone += 1
    return gone


def read_state(ckpt: Path) -> dict[str, Any]:
    try:
        doc = json.loads((ckpt / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt}: no state.json; not a psgan_fast checkpoint") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{ckpt}/state.json is not valid JSON: {e}") from None
    except OSError as e:
        raise CheckpointError(f"{ckpt}/state.json is unreadable: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{ckpt}: not a psgan_fast checkpoint (format {doc.get('format')!r})"
                              if isinstance(doc, dict) else f"{ckpt}: not a psgan_fast checkpoint")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{ckpt}: checkpoint format version {doc.get('version')}, "
                              f"this psgan_fast reads version {VERSION}")
    for key in ("epoch", "batch", "step"):
        v = doc.get(key)
        if type(v) is not int or v < 0:
            raise CheckpointError(f"{ckpt}/state.json: {key} must be an integer >= 0, got {v!r}")
    for key, kind in (("files", dict), ("epoch_sums", dict), ("recipe", dict), ("optimizers", dict)):
        if key in doc and not isinstance(doc[key], kind):
            raise CheckpointError(f"{ckpt}/state.json: {key} must be a JSON object, got {doc[key]!r:.60}")
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
