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

Host syncs. `recipe.step` returns device tensors; the loop adds them to
device accumulators and reads them only every `log_every` steps (and at
epoch ends), which is also where a NaN/Inf loss is detected. No
checkpoint is ever written after a non-finite loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from psgan_fast import checkpoint as ckpt_mod
from psgan_fast import distributed as dist_mod
from psgan_fast.config import DEVICES, LOSSES, MODELS, PARALLEL, PRECISIONS, TrainConfig
from psgan_fast.data import BatchStream, find_dataset, to_float
from psgan_fast.fsutil import read_jsonl
from psgan_fast.hardware import bf16_warning
from psgan_fast.models import build_recipe
from psgan_fast.plots import save_loss_plot, save_sample_grids
from psgan_fast.recipe import Recipe, StepOutput

SAMPLE_COUNT = 64
# Fields a resumed run may change when given; everything else comes from
# config.json. PER_INVOCATION fields always come from the current call
# (a --max-steps limit stops one invocation, it is not part of the run).
RESUME_OVERRIDABLE = ("epochs", "sample_every", "checkpoint_every", "checkpoint_steps", "log_every",
                      "eval_every")
PER_INVOCATION = ("max_steps", "progress")


class ConfigError(ValueError):
    """A setting is invalid; `flag` names the CLI flag responsible."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


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


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every setting; return the config with `generators` resolved."""
    def need(cond: bool, flag: str, msg: str) -> None:
        if not cond:
            raise ConfigError(flag, msg)

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
    need(cfg.seed >= 0, "--seed", f"must be >= 0, got {cfg.seed}")
    return dataclasses.replace(cfg, generators=n)


def _validate_psgan_knobs(cfg: TrainConfig, need) -> None:
    """PS-GAN's update-rule knobs (None: the --loss spec's own value)."""
    from psgan_fast.config import D_ARCHS, UPDATES
    from psgan_fast.loss import group_loss, get_spec

    need(cfg.d_gate is None or (math.isfinite(cfg.d_gate) and 0.0 <= cfg.d_gate <= 1.0), "--d-gate",
         f"must be in [0, 1], got {cfg.d_gate}")
    grouped = get_spec(cfg.loss).fn is group_loss if cfg.loss in LOSSES else True
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

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> None:
        self.callbacks = list(callbacks)
        resume_dir = Path(cfg.resume) if cfg.resume else None
        if resume_dir is not None:
            cfg = self._merge_resume(cfg, resume_dir)
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
        self.resume_ckpt = ckpt_mod.latest(self.run_dir) if resume_dir is not None else None
        self.epoch_records: list[dict] = []

    # ------------------------------------------------------------------ setup

    @staticmethod
    def _merge_resume(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
        try:
            doc = json.loads((run_dir / "config.json").read_text())
            saved = TrainConfig.from_json(doc["config"])
        except FileNotFoundError:
            raise ConfigError("--resume", f"{run_dir} has no config.json; not a psgan_fast run directory") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError("--resume", f"{run_dir}/config.json is not a psgan_fast config: {e}") from None
        if saved.stage_epochs is None:  # freeze the split the run started with
            saved = dataclasses.replace(saved, stage_epochs=saved.resolved_stage_epochs())
        if cfg.epochs != TrainConfig().epochs and cfg.epochs != saved.epochs:
            extra = cfg.epochs - saved.epochs  # more (or fewer) epochs go to the final stage
            se = list(saved.stage_epochs)
            if se[-1] + extra < 1:
                raise ConfigError("--epochs", f"{cfg.epochs} leaves no epoch for the final stage "
                                              f"(stages {tuple(saved.stage_epochs)})")
            se[-1] += extra
            saved = dataclasses.replace(saved, stage_epochs=tuple(se))
        defaults = TrainConfig()
        changes = {k: getattr(cfg, k) for k in RESUME_OVERRIDABLE if getattr(cfg, k) != getattr(defaults, k)}
        changes.update({k: getattr(cfg, k) for k in PER_INVOCATION})
        return dataclasses.replace(saved, resume=str(run_dir), out=str(run_dir), **changes)

    def _write_config(self) -> None:
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
        doc = ckpt_mod.read_state(ck)
        if doc.get("model") != self.cfg.model or doc.get("generators") != self.cfg.generators:
            raise ckpt_mod.CheckpointError(
                f"{ck}: written by model {doc.get('model')!r} with {doc.get('generators')} generator(s), "
                f"this run is {self.cfg.model!r} with {self.cfg.generators}")
        epoch, batch = int(doc["epoch"]), int(doc["batch"])
        self._begin_epoch(epoch)
        self.recipe.load_state(doc.get("recipe", {}))
        ckpt_mod.load_modules(ck, self.recipe.modules())
        ckpt_mod.load_training(ck, doc, self.recipe.optimizers())
        self.step = int(doc["step"])
        self.train_seconds = float(doc.get("train_seconds", 0.0))
        self._truncate_metrics(self.step)
        return epoch, batch, doc.get("epoch_sums") or {}

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
        self._t_start = time.perf_counter()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        dist_mod.barrier(self.dist)
        self.bar = None
        self.step = 0
        start_epoch, start_batch, sums_json = 0, 0, {}
        self.train_seconds = 0.0  # time inside training steps, summed over invocations
        self._epoch_t0 = time.perf_counter()
        if self.resume_ckpt is not None:
            start_epoch, start_batch, sums_json = self._restore()
        elif self.cfg.resume and self.is_main:
            # A run killed before its first checkpoint starts over.
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        if self.is_main:
            self._write_config()
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
