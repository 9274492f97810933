"""The run directory: claiming it, resuming into it, and its config.json.

A run holds an exclusive lock on its directory for its life
(`fsutil.DirLock`; the kernel drops it when the process dies). A fresh run
refuses a directory that already holds files unless `overwrite`; a resume
continues from the checkpoint `checkpoint.find` picks (LATEST's if intact,
else the newest intact one, with a warning) or refuses without touching
anything. Settings that define the run are fixed on a resume; epochs and
the logging/checkpoint/eval cadence may change, and each start and resume
is recorded in config.json's "history". `psgan_fast.trainer.Trainer` calls
these functions; they hold no state of their own.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Collection, Optional

from psgan_fast import checkpoint as ckpt_mod
from psgan_fast.config import ConfigError, TrainConfig, flag_of, validate
from psgan_fast.fsutil import DirLock, LockHeld
from psgan_fast.machine import versions as machine_versions

# Fields a resumed run may change when given (recorded in config.json's
# history); RELOCATABLE ones say where the run continues, not what it
# computes. Any other field given with a value other than the run's is
# refused. PER_INVOCATION fields always come from the current call (a
# --max-steps limit stops one invocation, it is not part of the run).
RESUME_OVERRIDABLE = ("epochs", "sample_every", "checkpoint_every", "checkpoint_steps", "log_every",
                      "eval_every")
RELOCATABLE = ("device", "compile", "data_dir")
PER_INVOCATION = ("max_steps", "progress", "overwrite")
# What a run writes into its directory (what --overwrite removes).
RUN_FILES = ("config.json", "metrics.jsonl", "losses.png", "samples", "checkpoints")


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.model}-g{cfg.num_generators()}-{stamp}"


def merge_resume(cfg: TrainConfig, run_dir: Path,
                 given: Optional[Collection[str]]) -> tuple[TrainConfig, list[dict], dict[str, list]]:
    """The run's saved config with what may change on a resume applied, its
    history so far, and the changes (field: [before, after]); refuses
    (naming them) given settings that cannot change."""
    try:
        doc = json.loads((run_dir / "config.json").read_text())
        saved = validate(TrainConfig.from_json(doc["config"]))
    except FileNotFoundError:
        raise ConfigError("--resume", f"{run_dir} has no config.json; not a psgan_fast run directory") from None
    except OSError as e:
        raise ConfigError("--resume", f"cannot read {run_dir}/config.json: {e.strerror or e}") from None
    except ConfigError as e:
        raise ConfigError("--resume", f"{run_dir}/config.json has a bad setting: {e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError("--resume", f"{run_dir}/config.json is not a psgan_fast config: {e}") from None
    history = [h for h in doc.get("history", []) if isinstance(h, dict)] if isinstance(doc, dict) else []
    if saved.stage_epochs is None:  # freeze the split the run started with
        saved = dataclasses.replace(saved, stage_epochs=saved.resolved_stage_epochs())
    defaults = TrainConfig()
    if given is None:
        given = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)]
    given = set(given) - {"resume"}
    if cfg.out is not None and "out" in given and Path(cfg.out).resolve() != run_dir.resolve():
        raise ConfigError("--out", f"a resumed run stays in its directory {run_dir}; drop --out "
                                   "(or start a new run with --out alone)")
    stages_before = list(saved.stage_epochs)
    if "epochs" in given and cfg.epochs != saved.epochs:
        extra = cfg.epochs - saved.epochs  # more (or fewer) epochs go to the final stage
        se = list(saved.stage_epochs)
        if se[-1] + extra < 1:
            raise ConfigError("--epochs", f"{cfg.epochs} leaves no epoch for the final stage "
                                          f"(stages {tuple(saved.stage_epochs)})")
        se[-1] += extra
        saved = dataclasses.replace(saved, stage_epochs=tuple(se))
    mine, theirs = cfg.to_json(), saved.to_json()
    free = RESUME_OVERRIDABLE + RELOCATABLE + PER_INVOCATION + ("out", "resume")
    fixed = sorted(k for k in given if k not in free and mine[k] != theirs[k])
    if fixed:
        was = ", ".join(f"{k}={theirs[k]!r}" for k in fixed)
        raise ConfigError(", ".join(flag_of(k) for k in fixed),
                          f"cannot change when resuming {run_dir} (it was trained with {was}); "
                          f"these settings are fixed for a run's life: start a new run with --out to change them")
    changes = {k: getattr(cfg, k) for k in RESUME_OVERRIDABLE + RELOCATABLE if k in given}
    changed = {k: [theirs[k], mine[k]] for k in changes if mine[k] != theirs[k]}
    if theirs["stage_epochs"] != stages_before:
        changed["stage_epochs"] = [stages_before, theirs["stage_epochs"]]
    changes.update({k: getattr(cfg, k) for k in PER_INVOCATION})
    return dataclasses.replace(saved, resume=str(run_dir), out=str(run_dir), **changes), history, changed


def claim(run_dir: Path, cfg: TrainConfig, *, steps_per_epoch: int,
          epochs_changed: bool) -> tuple[DirLock, Optional[Path], list[str]]:
    """Lock the run directory for the run's life: returns (the lock, the
    checkpoint a resume continues from or None, notes to log). A fresh run
    refuses a directory that already holds files (unless cfg.overwrite); a
    resume picks its checkpoint (falling back past a lost LATEST or a
    damaged checkpoint) or refuses, having changed nothing. Then the
    leftovers of killed runs are removed."""
    resuming = cfg.resume is not None
    flag = "--resume" if resuming else "--out"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(flag, f"{run_dir} is a file, not a directory")
    if not resuming:
        refuse_occupied(run_dir, cfg.overwrite)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = DirLock(run_dir)
    except LockHeld:
        raise
    except OSError as e:
        raise ConfigError(flag, f"cannot use {run_dir} as the run directory: {e.strerror or e}") from None
    notes: list[str] = []
    resume_ckpt = None
    try:
        if lock.stale:
            notes.append(f"took over the lock of {lock.stale}, which is no longer running")
        if resuming:
            resume_ckpt, picked = pick_checkpoint(run_dir, cfg, steps_per_epoch=steps_per_epoch,
                                                  epochs_changed=epochs_changed)
            notes += picked
        else:
            refuse_occupied(run_dir, cfg.overwrite)
            if cfg.overwrite:
                for name in RUN_FILES:
                    p = run_dir / name
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        ckpt_mod.clean_temporaries(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock, resume_ckpt, notes


def refuse_occupied(run_dir: Path, overwrite: bool) -> None:
    try:
        entries = sorted(p.name for p in run_dir.iterdir() if p.name != DirLock.NAME)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError("--out", f"cannot use {run_dir} as the run directory: {e.strerror or e}") from None
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError("--out", f"{run_dir} is not empty ({shown}); continue that run with --resume "
                                   f"{run_dir}, replace it with --overwrite, or choose another --out")


def pick_checkpoint(run_dir: Path, cfg: TrainConfig, *, steps_per_epoch: int,
                    epochs_changed: bool) -> tuple[Path, list[str]]:
    """The checkpoint a resume continues from, and notes on what was passed over."""
    found, notes = ckpt_mod.find(run_dir)
    if found is None:
        why = "; ".join(notes) if notes else "it has no checkpoint"
        raise ckpt_mod.CheckpointError(
            f"{run_dir}: no complete checkpoint to resume from ({why}); nothing was changed. "
            f"To start it over: --out {run_dir} --overwrite")
    doc = ckpt_mod.read_state(found)
    if doc.get("model") != cfg.model or doc.get("generators") != cfg.generators:
        raise ckpt_mod.CheckpointError(
            f"{found}: written by model {doc.get('model')!r} with {doc.get('generators')} generator(s), "
            f"this run is {cfg.model!r} with {cfg.generators}")
    epoch, batch = doc["epoch"], doc["batch"]
    if batch > steps_per_epoch:
        raise ckpt_mod.CheckpointError(f"{found}: batch {batch} is beyond the run's {steps_per_epoch} "
                                       "batches per epoch")
    if epoch >= cfg.epochs:
        if not epochs_changed:
            raise ckpt_mod.CheckpointError(f"{found}: epoch {epoch} is beyond the run's {cfg.epochs} epochs")
        done = epoch + (batch >= steps_per_epoch)
        raise ConfigError("--epochs", f"{cfg.epochs} is fewer than the {done} epoch(s) the run has "
                                      f"already trained ({found.name})")
    return found, [f"{n}; resuming from {found.name}" for n in notes]


def versions() -> dict[str, str]:
    """What config.json records: `machine.versions` with Triton when it imports."""
    return machine_versions(optional=("triton",), missing=None)


def write_config(run_dir: Path, cfg: TrainConfig, *, resolved: dict[str, Any], world_size: int, device: str,
                 history: list[dict], changes: dict[str, list], step: int) -> None:
    """config.json: the config, what it resolved to on this machine, and the
    history of starts and resumes with this one appended."""
    event = {"event": "resume" if cfg.resume else "start", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "step": step}
    if changes:
        event["changes"] = changes  # field: [before, after]
    doc = {
        "config": cfg.to_json(),
        "resolved": resolved,
        "world_size": world_size,
        "versions": versions(),
        "device": device,
        "history": [*history, event],
    }
    ckpt_mod.atomic_write_text(run_dir / "config.json", json.dumps(doc, indent=1))
