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
CPU in deterministic mode; tested with a real SIGKILL). `psgan_fast.seeding`
derives those seeds.

The run directory (locking it, what a resume may change, config.json) is
`psgan_fast.rundir`'s; settings are checked by `psgan_fast.config.validate`.

Host syncs. `recipe.step` returns device tensors; the loop adds them to
device accumulators and reads them only every `log_every` steps (and at
epoch ends), which is also where a NaN/Inf loss is detected. No
checkpoint is ever written after a non-finite loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Optional, Sequence

import torch

from psgan_fast import checkpoint as ckpt_mod
from psgan_fast import distributed as dist_mod
from psgan_fast import rundir
from psgan_fast.config import ConfigError, TrainConfig, validate
from psgan_fast.data import BatchStream, find_dataset, to_float
from psgan_fast.ema import GeneratorEMA
from psgan_fast.fsutil import DirLock, read_jsonl
from psgan_fast.hardware import bf16_warning
from psgan_fast.models import build_recipe
from psgan_fast.plots import save_loss_plot, save_sample_grids
from psgan_fast.recipe import Recipe, StepOutput
from psgan_fast.runlog import epochs_in
from psgan_fast.seeding import derived_seed, fork_rng, forked

SAMPLE_COUNT = 64


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
            cfg, self._history, self._changes = rundir.merge_resume(cfg, resume_dir, given)
        self.cfg = validate(cfg)
        self.dist = dist_mod.setup(self.cfg.device)
        self.device = dist_mod.device_for(self.dist, resolve_device(self.cfg.device))
        ws = self.dist.world_size
        if self.cfg.batch_size % ws:
            raise ConfigError("--batch-size", f"the global batch {self.cfg.batch_size} does not divide over "
                                              f"{ws} ranks; choose a multiple of {ws}")
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        run_dir = resume_dir or Path(self.cfg.out or rundir.default_run_dir(self.cfg))
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
        with forked(derived_seed(self.cfg.seed, -1), self.device):
            self.recipe = build_recipe(self.cfg, image_size=h, channels=c, steps_per_epoch=self.steps_per_epoch,
                                       device=self.device)
        self.recipe.shard = (self.dist.rank, ws)
        self.ema = GeneratorEMA.of(self.cfg)
        self.fixed_z = torch.randn(SAMPLE_COUNT, self.recipe.latent_dim,
                                   generator=torch.Generator().manual_seed(self.cfg.seed + 12345)).to(self.device)
        self.compile = self.cfg.compile if self.cfg.compile is not None else self.device.type == "cuda"
        self._compiled: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
        self.epoch_records: list[dict] = []
        self._lock: Optional[DirLock] = None
        self._notes: list[str] = []
        self.resume_ckpt: Optional[Path] = None
        failure: Optional[BaseException] = None
        if self.is_main:
            try:
                self._lock, self.resume_ckpt, notes = rundir.claim(
                    self.run_dir, self.cfg, steps_per_epoch=self.steps_per_epoch,
                    epochs_changed="epochs" in self._changes)
                self._notes += notes
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

    def release(self) -> None:
        """Give up the run directory's lock (`run` does at its end)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _write_config(self) -> None:
        resolved = {
            "device": str(self.device),
            "compile": self.compile,
            "stage_epochs": list(self.cfg.resolved_stage_epochs()),
            "steps_per_epoch": self.steps_per_epoch,
            "image_size": self.image_size,
            "channels": self.channels,
            "num_items": self.stream.num_items,
            "latent_dim": self.recipe.latent_dim,
            "torch_threads": torch.get_num_threads(),
        }
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or "cpu"
        rundir.write_config(self.run_dir, self.cfg, resolved=resolved, world_size=self.dist.world_size,
                            device=device, history=self._history, changes=self._changes, step=self.step)

    def _begin_epoch(self, epoch: int) -> list[str]:
        with forked(derived_seed(self.cfg.seed, epoch), self.device):
            msgs = self.recipe.begin_epoch(epoch)
        self._prepare_recipe()
        return msgs

    def _networks(self) -> dict[str, torch.nn.Module]:
        """What a checkpoint holds: the recipe's networks and the generators' averages."""
        return {**self.recipe.modules(), **(self.ema.modules() if self.ema is not None else {})}

    def _drawing(self):
        """A context in which the recipe's generators draw as a user's would:
        with their averages' weights under --g-ema, else as they are."""
        return self.ema.applied(self.recipe.modules()) if self.ema is not None else contextlib.nullcontext()

    def _prepare_recipe(self) -> None:
        """Make the recipe's current networks and optimisers ready to train
        here: global BatchNorm and one gradient-sync hook per optimiser across
        ranks, compiled modules, and (--g-ema) the average of each generator
        built anew restarted from it. Run whenever the recipe may have built
        new ones (begin_epoch, load_state, settle). What is done is recorded on the
        objects themselves (or in a WeakSet), never by id(): a stage switch
        frees the old networks and optimisers, and CPython may hand a new
        object the id of a freed one, on one rank and not another, so an id
        record would leave that rank's new optimiser without its all-reduce
        and hang the others."""
        if self.dist.enabled:
            for m in self.recipe.modules().values():
                dist_mod.globalise_batchnorm(m)
            for opt in self.recipe.optimizers().values():
                dist_mod.attach_gradient_sync(opt, self.dist.world_size)
        if self.compile:
            for m in self.recipe.modules().values():
                if m not in self._compiled:
                    m.compile()
                    self._compiled.add(m)
        if self.ema is not None:
            self.ema.track(self.recipe.modules())

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
        self.epoch_records = epochs_in(kept)

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
        return ckpt_mod.save(self.run_dir, modules=self._networks(), optimizers=self.recipe.optimizers(),
                             state=state)

    def _restore(self) -> tuple[int, int, dict]:
        ck = self.resume_ckpt
        doc = ckpt_mod.read_state(ck)  # checked by rundir.pick_checkpoint
        epoch, batch = doc["epoch"], doc["batch"]
        self._begin_epoch(epoch)
        try:
            self.recipe.load_state(doc.get("recipe", {}))
            sums = doc.get("epoch_sums") or {}
            self._sums_from_json(sums)
            train_seconds = float(doc.get("train_seconds", 0.0))
        except (KeyError, TypeError, ValueError) as e:
            raise ckpt_mod.CheckpointError(f"{ck}/state.json: unusable recipe state or sums ({e})") from None
        self._prepare_recipe()  # load_state may have built the checkpoint's stage anew
        ckpt_mod.load_modules(ck, self._networks())
        ckpt_mod.load_training(ck, doc, self.recipe.optimizers())
        self.step = int(doc["step"])
        self.train_seconds = train_seconds
        self._truncate_metrics(self.step)
        # A switch load_state deferred until the weights were in happens here,
        # not inside a later step, so its new optimisers get the gradient sync.
        with forked(derived_seed(self.cfg.seed, epoch), self.device):
            settled = self.recipe.settle()
        if settled:
            for line in settled:
                self._message(line)
            self._prepare_recipe()
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
        if self.cfg.model == "psgan" and (label := self.cfg.loss_label()) != "ps":
            title += f", {label} loss"
        last = epoch + 1 == self.cfg.epochs
        if self.is_main:
            save_loss_plot(self.run_dir / "losses.png", self.epoch_records, title)
        if self.is_main and self.cfg.sample_every and ((epoch + 1) % self.cfg.sample_every == 0 or last):
            with self._drawing():
                imgs = self.recipe.generate(self.fixed_z)
            save_sample_grids(self.run_dir / "samples" / f"epoch_{epoch + 1:04d}.png", imgs,
                              f"{title}{', moving average' if self.ema is not None else ''}, "
                              f"epoch {epoch + 1}, {self.recipe.resolution()}px")
        if self.is_main and self.cfg.eval_every and ((epoch + 1) % self.cfg.eval_every == 0 or last):
            self._evaluate(epoch, record)
        for cb in self.callbacks:
            cb.on_epoch_end(record, self.recipe)
        return record

    def _evaluate(self, epoch: int, record: dict) -> None:
        """--eval-every: FID/IS with mnist-lenet on a small sample, logged
        with the wall-clock time so FID-vs-time curves exist for every run.
        Images of earlier stages are upsampled to the data resolution."""
        from psgan_fast.trained_generator import TrainedGenerator
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
        # Everything here runs on a forked RNG: building the feature
        # extractor initialises a network from the global stream, and a run
        # with --eval-every must train exactly as one without it.
        with fork_rng(self.device), self._drawing():
            if getattr(self, "_eval_real", None) is None:
                # The run's own training split is the reference (a Fashion-MNIST
                # run is scored against Fashion-MNIST, not MNIST); its statistics
                # are cached on disk, keyed by the images' hash.
                from psgan_fast.metrics.evaluation import default_real_images, real_reference

                images, source = default_real_images(self.cfg.dataset, "train", self.cfg.data_dir)
                self._eval_real = real_reference(images, source=source, device=self.device)
            res = evaluate_for_training(gens, self.cfg.eval_samples, real=self._eval_real,
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
                if self.ema is not None:
                    self.ema.update(self.recipe.modules())
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
