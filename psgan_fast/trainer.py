"""The training loop: data, epochs, logs, samples, checkpoints, resume.

The loop is the same for every model; what differs (networks, optimisers,
stage schedule, update rule) lives in a recipe (`psgan_fast.recipe`).

Exact resume. A checkpoint records (epoch, batches done in that epoch,
global step), the networks, optimisers, the torch RNG state and the
recipe's own state. The order of batches is a pure function of (seed,
epoch), so the loop resumes at the same batch. Building networks (recipe
construction and `begin_epoch`) runs under `torch.random.fork_rng` with a
seed derived from (seed, epoch), so it never advances the training RNG
stream: a resumed run rebuilds the networks of the checkpoint's epoch,
loads the saved tensors and RNG state, and continues bit for bit (on the
CPU in deterministic mode; tested with a real SIGKILL).

The run directory. A run holds an exclusive lock on its directory for its
life (`fsutil.DirLock`; the kernel drops it when the process dies). A fresh
run refuses a directory that already holds files unless `overwrite`; a
resume continues from the checkpoint `checkpoint.find` picks (LATEST's if
intact, else the newest intact one, with a warning) or refuses without
touching anything. Settings that define the run are fixed on a resume;
epochs and the logging/checkpoint/eval cadence may change, and each start
and resume is recorded in config.json's "history".

Host syncs. `recipe.step` returns device tensors; the loop adds them to
device accumulators and reads them only every `log_every` steps (and at
epoch ends), which is also where a NaN/Inf loss is detected. No
checkpoint is ever written after a non-finite loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Optional, Sequence

import torch

from psgan_fast import checkpoint as ckpt_mod
from psgan_fast import distributed as dist_mod
from psgan_fast.config import DEVICES, LOSSES, MODELS, PARALLEL, PRECISIONS, TrainConfig
from psgan_fast.data import BatchStream, find_dataset, to_float
from psgan_fast.fsutil import DirLock, LockHeld, read_jsonl
from psgan_fast.hardware import bf16_warning
from psgan_fast.models import build_recipe
from psgan_fast.plots import save_loss_plot, save_sample_grids
from psgan_fast.recipe import Recipe, StepOutput
from psgan_fast.train import MAX_SEED

SAMPLE_COUNT = 64
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


class ConfigError(ValueError):
    """A setting is invalid; `flag` names the CLI flag responsible."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


def flag_of(field_name: str) -> str:
    """The CLI flag of a TrainConfig field."""
    return {"progress": "--no-progress", "extra": "extra"}.get(field_name, "--" + field_name.replace("_", "-"))


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the run stopped before saving anything bad."""


@dataclass
class StepInfo:
    """What callbacks see after each step (values are device tensors)."""

    epoch: int
    batch: int
    step: int
    output: StepOutput
    recipe: Recipe


class Callback:
    """Hooks for larger pipelines; override what you need."""

    def on_step(self, info: StepInfo) -> None:  # noqa: D401
        """After every training step (keep it cheap: no host syncs)."""

    def on_epoch_end(self, record: dict[str, Any], recipe: Recipe) -> None:
        """After each epoch, with its averaged metrics record."""


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON-ish value fits a TrainConfig annotation (no bool for
    int or float, lists accepted for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is typing.Union:
        return any(_conforms(value, a) for a in args)
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float)
    if hint in (bool, str):
        return type(value) is hint
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return "a list of " + (_describe(args[0]).split(" ", 1)[1] + "s" if args[-1] is Ellipsis
                               else f"{len(args)} values")
    return _KINDS.get(hint, "an object")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every setting; return the config with `generators` resolved."""
    def need(cond: bool, flag: str, msg: str) -> None:
        if not cond:
            raise ConfigError(flag, msg)

    for name, hint in typing.get_type_hints(TrainConfig).items():
        value = getattr(cfg, name)
        need(_conforms(value, hint), flag_of(name),
             f"must be {_describe(hint)}, got {value!r} ({type(value).__name__})")
    need(cfg.model in MODELS, "--model", f"unknown model {cfg.model!r}; choose from {', '.join(MODELS)}")
    n = cfg.num_generators()
    need(isinstance(n, int) and n >= 1, "--generators", f"must be >= 1, got {n}")
    need(cfg.model == "psgan" or n == 1, "--generators", f"{cfg.model} trains one generator; only psgan takes N > 1")
    need(cfg.epochs >= 1, "--epochs", f"must be >= 1, got {cfg.epochs}")
    if cfg.stage_epochs is not None:
        se = tuple(cfg.stage_epochs)
        need(len(se) == 3, "--stage-epochs", f"needs 3 values (7x7, 14x14, 28x28 stages), got {len(se)}")
        need(all(e >= 0 for e in se), "--stage-epochs", f"values must be >= 0, got {se}")
        need(sum(se) == cfg.epochs, "--stage-epochs",
             f"sums to {sum(se)} but --epochs is {cfg.epochs}")
        need(se[-1] >= 1, "--stage-epochs", "the final stage needs at least one epoch")
    need(0.0 <= cfg.alpha <= 1.0, "--alpha", f"must be in [0, 1], got {cfg.alpha}")
    need(cfg.batch_size >= 2, "--batch-size", f"must be >= 2, got {cfg.batch_size}")
    need(cfg.lr is None or (cfg.lr > 0 and math.isfinite(cfg.lr)), "--lr", f"must be > 0, got {cfg.lr}")
    if cfg.betas is not None:
        need(len(cfg.betas) == 2 and all(0.0 <= b < 1.0 for b in cfg.betas), "--betas",
             f"needs two values in [0, 1), got {cfg.betas}")
    need(cfg.loss in LOSSES, "--loss", f"choose from {', '.join(LOSSES)}")
    _validate_psgan_knobs(cfg, need)
    need(cfg.parallel in PARALLEL, "--parallel", f"choose from {', '.join(PARALLEL)}")
    need(cfg.precision in PRECISIONS, "--precision", f"choose from {', '.join(PRECISIONS)}")
    need(cfg.device in DEVICES, "--device", f"choose from {', '.join(DEVICES)}")
    need(cfg.device != "cuda" or torch.cuda.is_available(), "--device", "cuda requested but no CUDA device is available")
    need(cfg.max_steps is None or cfg.max_steps >= 1, "--max-steps", f"must be >= 1, got {cfg.max_steps}")
    need(cfg.limit_batches is None or cfg.limit_batches >= 1, "--limit-batches",
         f"must be >= 1, got {cfg.limit_batches}")
    for flag, v in (("--sample-every", cfg.sample_every), ("--checkpoint-every", cfg.checkpoint_every),
                    ("--checkpoint-steps", cfg.checkpoint_steps), ("--eval-every", cfg.eval_every)):
        need(v >= 0, flag, f"must be >= 0, got {v}")
    need(cfg.log_every >= 1, "--log-every", f"must be >= 1, got {cfg.log_every}")
    need(0 <= cfg.seed <= MAX_SEED, "--seed", f"must be in [0, 2**63 - 1], got {cfg.seed}")
    return dataclasses.replace(cfg, generators=n)


def _validate_psgan_knobs(cfg: TrainConfig, need) -> None:
    """PS-GAN's update-rule knobs (None: the --loss spec's own value)."""
    from psgan_fast.config import D_ARCHS, UPDATES
    from psgan_fast.loss import get_spec

    need(cfg.d_gate is None or (math.isfinite(cfg.d_gate) and 0.0 <= cfg.d_gate <= 1.0), "--d-gate",
         f"must be in [0, 1], got {cfg.d_gate}")
    grouped = get_spec(cfg.loss).gated if cfg.loss in LOSSES else True
    need(grouped or (cfg.d_gate is None and cfg.g_gate is None), "--d-gate" if cfg.d_gate is not None else "--g-gate",
         f"the gates apply to the group-softmax losses (ps-soft, rps, ...), not to --loss {cfg.loss}")
    for flag, v in (("--r1", cfg.r1), ("--r2", cfg.r2)):
        need(v is None or (math.isfinite(v) and v >= 0.0), flag, f"must be a number >= 0, got {v}")
    need(cfg.reg_every >= 1, "--reg-every", f"must be >= 1, got {cfg.reg_every}")
    need(cfg.update is None or cfg.update in UPDATES, "--update", f"choose from {', '.join(UPDATES)}")
    need(cfg.d_arch is None or cfg.d_arch in D_ARCHS, "--d-arch", f"choose from {', '.join(D_ARCHS)}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _derived_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


def _forked(seed: int, device: torch.device):
    devices = [device.index or 0] if device.type == "cuda" else []
    ctx = torch.random.fork_rng(devices=devices)

    class _Ctx:
        def __enter__(self):
            ctx.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc):
            return ctx.__exit__(*exc)

    return _Ctx()


def _versions() -> dict[str, str]:
    import numpy

    from psgan_fast import __version__

    v = {"psgan_fast": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "numpy": numpy.__version__, "platform": platform.platform()}
    try:
        import triton

        v["triton"] = triton.__version__
    except Exception:  # noqa: BLE001 - triton is optional
        pass
    return v


def _default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.model}-g{cfg.num_generators()}-{stamp}"


class Trainer:
    """Runs one training job described by a TrainConfig. Use `train()`."""

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Callback] = (),
                 given: Optional[Collection[str]] = None) -> None:
        """`given`: the fields the caller set explicitly (the CLI knows);
        None counts every field that differs from its default as given."""
        self.callbacks = list(callbacks)
        if cfg.resume and cfg.overwrite:
            raise ConfigError("--overwrite", "cannot be combined with --resume, which continues the run")
        resume_dir = Path(cfg.resume) if cfg.resume else None
        self._history: list[dict] = []
        self._changes: dict[str, list] = {}
        if resume_dir is not None:
            cfg = self._merge_resume(cfg, resume_dir, given)
        self.cfg = validate(cfg)
        self.dist = dist_mod.setup(self.cfg.device)
        self.device = dist_mod.device_for(self.dist, resolve_device(self.cfg.device))
        ws = self.dist.world_size
        if self.cfg.batch_size % ws:
            raise ConfigError("--batch-size", f"the global batch {self.cfg.batch_size} does not divide over "
                                              f"{ws} ranks; choose a multiple of {ws}")
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        run_dir = resume_dir or Path(self.cfg.out or _default_run_dir(self.cfg))
        if self.dist.enabled:  # every rank must agree on rank 0's (time-stamped) default
            holder = [str(run_dir)]
            torch.distributed.broadcast_object_list(holder, src=0)
            run_dir = Path(holder[0])
        self.run_dir = run_dir
        self.is_main = self.dist.is_main
        images, labels = find_dataset(self.cfg.dataset, self.cfg.data_dir, "train")
        self.stream = BatchStream(images, labels, batch_size=self.cfg.batch_size // ws, seed=self.cfg.seed,
                                  rank=self.dist.rank, world_size=ws)
        c, h, w = self.stream.image_shape
        if h != w:
            raise ConfigError("--dataset", f"images must be square, got {h}x{w}")
        self.image_size, self.channels = h, c
        self.steps_per_epoch = len(self.stream)
        if self.cfg.limit_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, self.cfg.limit_batches)
        if self.steps_per_epoch < 1:
            raise ConfigError("--batch-size", f"{self.cfg.batch_size} is larger than the data set")
        torch.manual_seed(self.cfg.seed)
        with _forked(_derived_seed(self.cfg.seed, -1), self.device):
            self.recipe = build_recipe(self.cfg, image_size=h, channels=c, steps_per_epoch=self.steps_per_epoch,
                                       device=self.device)
        self.recipe.shard = (self.dist.rank, ws)
        self._synced: set[int] = set()
        self.fixed_z = torch.randn(SAMPLE_COUNT, self.recipe.latent_dim,
                                   generator=torch.Generator().manual_seed(self.cfg.seed + 12345)).to(self.device)
        self.compile = self.cfg.compile if self.cfg.compile is not None else self.device.type == "cuda"
        self._compiled: set[int] = set()
        self.epoch_records: list[dict] = []
        self._lock: Optional[DirLock] = None
        self._notes: list[str] = []
        self.resume_ckpt: Optional[Path] = None
        failure: Optional[BaseException] = None
        if self.is_main:
            try:
                self._claim_run_dir()
            except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
                failure = e
        if self.dist.enabled:  # rank 0 picked the checkpoint (and holds the lock)
            holder = [None if self.resume_ckpt is None else str(self.resume_ckpt), failure and str(failure)]
            torch.distributed.broadcast_object_list(holder, src=0)
            self.resume_ckpt = None if holder[0] is None else Path(holder[0])
            if holder[1] and not self.is_main:
                raise RuntimeError(f"rank 0 could not take the run directory: {holder[1]}")
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------ setup

    def _merge_resume(self, cfg: TrainConfig, run_dir: Path, given: Optional[Collection[str]]) -> TrainConfig:
        """The run's saved config with what may change on a resume applied;
        refuses (naming them) given settings that cannot change."""
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
        self._history = [h for h in doc.get("history", []) if isinstance(h, dict)] if isinstance(doc, dict) else []
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
        self._changes = {k: [theirs[k], mine[k]] for k in changes if mine[k] != theirs[k]}
        if theirs["stage_epochs"] != stages_before:
            self._changes["stage_epochs"] = [stages_before, theirs["stage_epochs"]]
        changes.update({k: getattr(cfg, k) for k in PER_INVOCATION})
        return dataclasses.replace(saved, resume=str(run_dir), out=str(run_dir), **changes)

    def _claim_run_dir(self) -> None:
        """Lock the run directory for this run's life. A fresh run refuses a
        directory that already holds files (unless --overwrite); a resume
        picks its checkpoint (falling back past a lost LATEST or a damaged
        checkpoint) or refuses, having changed nothing. Then the leftovers of
        killed runs are removed."""
        run_dir, resuming = self.run_dir, self.cfg.resume is not None
        flag = "--resume" if resuming else "--out"
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(flag, f"{run_dir} is a file, not a directory")
        if not resuming:
            self._refuse_occupied()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = DirLock(run_dir)
        except LockHeld:
            raise
        except OSError as e:
            raise ConfigError(flag, f"cannot use {run_dir} as the run directory: {e.strerror or e}") from None
        try:
            if self._lock.stale:
                self._notes.append(f"took over the lock of {self._lock.stale}, which is no longer running")
            if resuming:
                self.resume_ckpt = self._pick_checkpoint()
            else:
                self._refuse_occupied()
                if self.cfg.overwrite:
                    for name in RUN_FILES:
                        p = run_dir / name
                        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            ckpt_mod.clean_temporaries(run_dir)
        except BaseException:
            self.release()
            raise

    def _refuse_occupied(self) -> None:
        try:
            entries = sorted(p.name for p in self.run_dir.iterdir() if p.name != DirLock.NAME)
        except FileNotFoundError:
            return
        except OSError as e:
            raise ConfigError("--out", f"cannot use {self.run_dir} as the run directory: {e.strerror or e}") from None
        if entries and not self.cfg.overwrite:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ConfigError("--out", f"{self.run_dir} is not empty ({shown}); continue that run with --resume "
                                       f"{self.run_dir}, replace it with --overwrite, or choose another --out")

    def _pick_checkpoint(self) -> Path:
        found, notes = ckpt_mod.find(self.run_dir)
        if found is None:
            why = "; ".join(notes) if notes else "it has no checkpoint"
            raise ckpt_mod.CheckpointError(
                f"{self.run_dir}: no complete checkpoint to resume from ({why}); nothing was changed. "
                f"To start it over: --out {self.run_dir} --overwrite")
        self._notes += [f"{n}; resuming from {found.name}" for n in notes]
        doc = ckpt_mod.read_state(found)
        if doc.get("model") != self.cfg.model or doc.get("generators") != self.cfg.generators:
            raise ckpt_mod.CheckpointError(
                f"{found}: written by model {doc.get('model')!r} with {doc.get('generators')} generator(s), "
                f"this run is {self.cfg.model!r} with {self.cfg.generators}")
        epoch, batch = doc["epoch"], doc["batch"]
        if batch > self.steps_per_epoch:
            raise ckpt_mod.CheckpointError(f"{found}: batch {batch} is beyond the run's {self.steps_per_epoch} "
                                           "batches per epoch")
        if epoch >= self.cfg.epochs:
            if "epochs" not in self._changes:
                raise ckpt_mod.CheckpointError(f"{found}: epoch {epoch} is beyond the run's {self.cfg.epochs} epochs")
            done = epoch + (batch >= self.steps_per_epoch)
            raise ConfigError("--epochs", f"{self.cfg.epochs} is fewer than the {done} epoch(s) the run has "
                                          f"already trained ({found.name})")
        return found

    def release(self) -> None:
        """Give up the run directory's lock (`run` does at its end)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _write_config(self) -> None:
        event = {"event": "resume" if self.cfg.resume else "start", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "step": self.step}
        if self._changes:
            event["changes"] = self._changes  # field: [before, after]
        doc = {
            "config": self.cfg.to_json(),
            "resolved": {
                "device": str(self.device),
                "compile": self.compile,
                "stage_epochs": list(self.cfg.resolved_stage_epochs()),
                "steps_per_epoch": self.steps_per_epoch,
                "image_size": self.image_size,
                "channels": self.channels,
                "num_items": self.stream.num_items,
                "latent_dim": self.recipe.latent_dim,
                "torch_threads": torch.get_num_threads(),
            },
            "world_size": self.dist.world_size,
            "versions": _versions(),
            "device": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or "cpu",
            "history": [*self._history, event],
        }
        ckpt_mod.atomic_write_text(self.run_dir / "config.json", json.dumps(doc, indent=1))

    def _begin_epoch(self, epoch: int) -> list[str]:
        with _forked(_derived_seed(self.cfg.seed, epoch), self.device):
            msgs = self.recipe.begin_epoch(epoch)
        if self.dist.enabled:
            for m in self.recipe.modules().values():
                dist_mod.globalise_batchnorm(m)
            for opt in self.recipe.optimizers().values():
                if id(opt) not in self._synced:
                    dist_mod.attach_gradient_sync(opt, self.dist.world_size)
                    self._synced.add(id(opt))
        if self.compile:
            for m in self.recipe.modules().values():
                if id(m) not in self._compiled:
                    m.compile()
                    self._compiled.add(id(m))
        return msgs

    # ------------------------------------------------------------------ logs

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """Drop records a killed run wrote after its last checkpoint."""
        path = self.run_dir / "metrics.jsonl"
        kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
        if self.is_main:
            ckpt_mod.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self.epoch_records = [r for r in kept if r.get("kind") == "epoch"]

    def _message(self, text: str) -> None:
        """Log a line to metrics.jsonl and print it; indented detail lines
        (e.g. the per-tensor transfer report) go to the log only."""
        if not self.is_main:
            return
        if ":   " in text:
            self._log({"kind": "message", "step": self.step, "text": text})
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr)
        self._log({"kind": "message", "step": self.step, "text": text})

    # ------------------------------------------------------------------ loop

    def _save(self, epoch: int, batch: int, sums: dict[str, Any]) -> Optional[Path]:
        if not self.is_main:
            return None
        state = {
            "epoch": epoch, "batch": batch, "step": self.step, "model": self.cfg.model,
            "generators": self.cfg.generators, "recipe": self.recipe.state(),
            "stage": self.recipe.stage(), "resolution": self.recipe.resolution(),
            "epoch_sums": sums, "seed": self.cfg.seed,
            "train_seconds": self.train_seconds + (time.perf_counter() - self._epoch_t0 if batch < self.steps_per_epoch else 0.0),
        }
        return ckpt_mod.save(self.run_dir, modules=self.recipe.modules(), optimizers=self.recipe.optimizers(),
                             state=state)

    def _restore(self) -> tuple[int, int, dict]:
        ck = self.resume_ckpt
        doc = ckpt_mod.read_state(ck)  # checked by _pick_checkpoint
        epoch, batch = doc["epoch"], doc["batch"]
        self._begin_epoch(epoch)
        try:
            self.recipe.load_state(doc.get("recipe", {}))
            sums = doc.get("epoch_sums") or {}
            self._sums_from_json(sums)
            train_seconds = float(doc.get("train_seconds", 0.0))
        except (KeyError, TypeError, ValueError) as e:
            raise ckpt_mod.CheckpointError(f"{ck}/state.json: unusable recipe state or sums ({e})") from None
        ckpt_mod.load_modules(ck, self.recipe.modules())
        ckpt_mod.load_training(ck, doc, self.recipe.optimizers())
        self.step = int(doc["step"])
        self.train_seconds = train_seconds
        self._truncate_metrics(self.step)
        return epoch, batch, sums

    def _sums_to_json(self, sums: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in sums.items()}

    def _sums_from_json(self, d: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in d.items()}

    @staticmethod
    def _accumulate(acc: dict[str, torch.Tensor], out: StepOutput) -> None:
        vals = {"d_loss": out.d_loss, "g_loss": out.g_loss, **out.extras}
        for k, v in vals.items():
            v = v.detach().to(torch.float64)
            if k in acc:
                acc[k] += v
            else:
                acc[k] = v.clone()

    def _means(self, acc: dict[str, torch.Tensor], n: int) -> dict[str, Any]:
        """Means of accumulated values (over ranks too); a host sync."""
        out = {}
        for k, v in acc.items():
            out[k] = dist_mod.all_mean(v / max(n, 1), self.dist).tolist()
        return out

    def _check_finite(self, means: dict[str, Any], epoch: int) -> None:
        g = means["g_loss"]
        vals = [means["d_loss"], *(g if isinstance(g, list) else [g])]
        if not all(math.isfinite(v) for v in vals):
            last = ckpt_mod.latest(self.run_dir)
            where = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
            raise TrainingDiverged(
                f"non-finite loss at epoch {epoch + 1}, step {self.step} "
                f"(d_loss={means['d_loss']}, g_loss={means['g_loss']}); training stopped and {where}. "
                "Try a lower --lr, --precision fp32, or another --seed.")

    def _record(self, kind: str, epoch: int, acc: dict[str, torch.Tensor], n: int, seconds: float) -> dict:
        """A metrics record of the means of `acc` over n steps (a host sync);
        stops the run on a non-finite loss."""
        means = self._means(acc, n)
        g = means["g_loss"] if isinstance(means["g_loss"], list) else [means["g_loss"]]
        means["g_loss"] = g
        self._check_finite(means, epoch)
        return {"kind": kind, "epoch": epoch, "step": self.step, "stage": self.recipe.stage(),
                "resolution": self.recipe.resolution(), **means, "g_loss_mean": sum(g) / len(g), "steps": n,
                "images_per_s": n * self.cfg.batch_size / seconds if seconds > 0 else None}

    def _end_of_epoch(self, epoch: int, acc: dict[str, torch.Tensor], n: int, seconds: float) -> dict:
        record = self._record("epoch", epoch, acc, n, seconds)
        self.train_seconds += seconds
        record["seconds"] = seconds
        record["train_seconds"] = self.train_seconds
        self._log(record)
        self.epoch_records.append(record)
        title = f"{self.cfg.model} N={self.cfg.num_generators()}"
        if self.cfg.model == "psgan" and self.cfg.loss != "ps":
            title += f", {self.cfg.loss} loss"
        last = epoch + 1 == self.cfg.epochs
        if self.is_main:
            save_loss_plot(self.run_dir / "losses.png", self.epoch_records, title)
        if self.is_main and self.cfg.sample_every and ((epoch + 1) % self.cfg.sample_every == 0 or last):
            imgs = self.recipe.generate(self.fixed_z)
            save_sample_grids(self.run_dir / "samples" / f"epoch_{epoch + 1:04d}.png", imgs,
                              f"{title}, epoch {epoch + 1}, {self.recipe.resolution()}px")
        if self.is_main and self.cfg.eval_every and ((epoch + 1) % self.cfg.eval_every == 0 or last):
            self._evaluate(epoch, record)
        for cb in self.callbacks:
            cb.on_epoch_end(record, self.recipe)
        return record

    def _evaluate(self, epoch: int, record: dict) -> None:
        """--eval-every: FID/IS with mnist-lenet on a small sample, logged
        with the wall-clock time so FID-vs-time curves exist for every run.
        Images of earlier stages are upsampled to the data resolution."""
        from psgan_fast.api import TrainedGenerator
        from psgan_fast.metrics import evaluate_for_training

        size = self.image_size

        class _FullRes(torch.nn.Module):
            def __init__(self, g: TrainedGenerator) -> None:
                super().__init__()
                self.g, self.latent_dim = g, g.latent_dim

            def forward(self, z: torch.Tensor) -> torch.Tensor:
                x = self.g(z)
                if x.shape[-1] != size:
                    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
                return x

        gens = [_FullRes(TrainedGenerator(self.recipe, k)) for k in range(self.recipe.num_generators)]
        if getattr(self, "_eval_real", None) is None:
            # The run's own training split is the reference (a Fashion-MNIST
            # run is scored against Fashion-MNIST, not MNIST); its statistics
            # are cached on disk, keyed by the images' hash.
            from psgan_fast.metrics.evaluation import default_real_images, real_reference

            images, source = default_real_images(self.cfg.dataset, "train", self.cfg.data_dir)
            self._eval_real = real_reference(images, source=source, device=self.device)
        with torch.random.fork_rng(devices=[]):
            res = evaluate_for_training(gens, int(self.cfg.extra.get("eval_samples", 2000)), real=self._eval_real,
                                        seed=self.cfg.seed, device=self.device)
        res.update({"kind": "eval", "epoch": epoch, "step": self.step, "train_seconds": self.train_seconds,
                    "wall_seconds": time.perf_counter() - self._t_start})
        self._log(res)
        record["eval"] = res

    def run(self) -> Path:
        try:
            return self._run()
        finally:
            self.release()

    def _run(self) -> Path:
        self._t_start = time.perf_counter()
        dist_mod.barrier(self.dist)
        self.bar = None
        self.step = 0
        start_epoch, start_batch, sums_json = 0, 0, {}
        self.train_seconds = 0.0  # time inside training steps, summed over invocations
        self._epoch_t0 = time.perf_counter()
        if self.resume_ckpt is not None:
            start_epoch, start_batch, sums_json = self._restore()
        if self.is_main:
            self._write_config()
        for note in self._notes:
            self._message(f"warning: {note}")
        slow_bf16 = bf16_warning(self.device.type, self.cfg.precision)
        if slow_bf16:
            self._message(slow_bf16)
        total = self.cfg.epochs * self.steps_per_epoch
        if self.cfg.max_steps:
            total = min(total, self.cfg.max_steps)
        if self.cfg.progress and self.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=min(self.step, total), unit="step", dynamic_ncols=True,
                            desc=f"{self.cfg.model}", leave=True)
        try:
            self._loop(start_epoch, start_batch, sums_json, total)
        finally:
            if self.bar is not None:
                self.bar.close()
        dist_mod.barrier(self.dist)
        return self.run_dir

    def _loop(self, start_epoch: int, start_batch: int, sums_json: dict, total: int) -> None:
        cfg = self.cfg
        resumed_epoch = start_epoch if self.resume_ckpt is not None else None
        for epoch in range(start_epoch, cfg.epochs):
            if epoch != resumed_epoch:
                for msg in self._begin_epoch(epoch):
                    self._message(msg)
                first, acc = 0, {}
            else:
                first, acc = start_batch, self._sums_from_json(sums_json)
                if first >= self.steps_per_epoch:
                    continue  # the checkpoint was taken after this epoch had ended
            window: dict[str, torch.Tensor] = {}
            wn, t_window, t_epoch = 0, time.perf_counter(), time.perf_counter()
            self._epoch_t0 = t_epoch
            stopped, done = False, first
            self.stream.set_epoch(epoch)
            for b, (x, _) in enumerate(self.stream.iter_epoch(epoch, first), start=first):
                if b >= self.steps_per_epoch:
                    break
                out = self.recipe.step(to_float(x, self.device))
                self.step += 1
                done = b + 1
                self._accumulate(acc, out)
                self._accumulate(window, out)
                wn += 1
                for cb in self.callbacks:
                    cb.on_step(StepInfo(epoch, b, self.step, out, self.recipe))
                if self.step % cfg.log_every == 0:
                    self._log_window(epoch, window, wn, time.perf_counter() - t_window)
                    window, wn, t_window = {}, 0, time.perf_counter()
                if self.bar is not None:
                    self.bar.update(1)
                if cfg.max_steps and self.step >= cfg.max_steps:
                    stopped = True
                    break
                if cfg.checkpoint_steps and self.step % cfg.checkpoint_steps == 0 and done < self.steps_per_epoch:
                    self._check_finite(self._means(acc, done), epoch)
                    self._save(epoch, done, self._sums_to_json(acc))
            if stopped and done < self.steps_per_epoch:
                if wn:
                    self._log_window(epoch, window, wn, time.perf_counter() - t_window)
                self._check_finite(self._means(acc, done), epoch)
                self._save(epoch, done, self._sums_to_json(acc))
                return
            if wn:
                self._log_window(epoch, window, wn, time.perf_counter() - t_window)
            self._end_of_epoch(epoch, acc, self.steps_per_epoch, time.perf_counter() - t_epoch)
            last = epoch + 1 == cfg.epochs
            if last or stopped or (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0):
                self._save(epoch, self.steps_per_epoch, {})
            if stopped:
                return

    def _log_window(self, epoch: int, window: dict[str, torch.Tensor], n: int, seconds: float) -> None:
        rec = self._record("step", epoch, window, n, seconds)
        g = rec["g_loss"]
        self._log(rec)
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"stage {self.recipe.stage()} {self.recipe.resolution()}px d {rec['d_loss']:.3f} "
                f"g {' '.join(f'{v:.3f}' for v in g)} {rec['images_per_s'] or 0:.0f} img/s", refresh=False)


def train(config: TrainConfig, callbacks: Sequence[Callback] = ()) -> Path:
    """Train as `config` says; return the run directory."""
    return Trainer(config, callbacks).run()
