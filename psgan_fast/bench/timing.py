"""Time a fixed, comparable amount of training for each model.

"Comparable" (issue: Benchmarks): every configuration pushes the same
number of real images through each of the three stages of the schedule
(7x7, 14x14, 28x28 on MNIST) at the same batch size. SNGAN has no stages:
it trains at full resolution on the same total number of images (its three
"stages" are three epochs of the same network). ProGAN spends the same
images per phase, fading in as it would in a real run.
The loader is not timed: batches are converted to float before the clock
starts, so the table compares models, not data paths.

The paper's Table 3 rows, with the names used here:
  sngan (spectral norm on D), sngan-nosn, progan, psgan-g1, psgan-g2, psgan-g3

How a row's time is measured (`time_rows`). Per stage, every row first
takes `warmup` untimed steps (oneDNN/cuDNN primitive caches, allocator; the
first of them also counts the step's FLOPs with torch.utils.flop_counter),
then `repeats * steps_per_stage` timed steps. Several rows are timed
*interleaved*: step i of every row runs before step i+1 of any (the order
rotating), so load from other processes on a shared machine hits all rows
alike. A row's time for the stage is ``steps_per_stage * median(step
time)``: the time of `steps_per_stage` batches, robust to the odd step that
another process delayed. `Timing.wall_seconds` keeps the plain sum (divided
by `repeats`) for comparison, `Timing.cpu_seconds` the same figure from the
process's CPU time (with one thread: the time the step ran, not the time
other processes held the core).

Threads. On the project's shared 2-core machine two OpenMP threads ran the
training steps 10-40x slower than one whenever other processes were busy
(load average 5-7; measured interleaved, see docs/BENCHMARKS.md), so the benchmarks
pin torch to `bench_threads()` threads: $PSGAN_BENCH_THREADS, default 1.
The matmul peak is measured with the same thread count.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from psgan_fast.config import TrainConfig
from psgan_fast.data import BatchStream, mnist, to_float
from psgan_fast.models import build_recipe
from psgan_fast.paper import TABLE3

# Table 3's PS-GAN rows are the paper's method: Algorithm 2 read literally.
ROW_LOSS = {"psgan-g1": "ps", "psgan-g2": "ps", "psgan-g3": "ps"}
# The recommended PS-GAN (TrainConfig's default loss), timed and reproduced
# beside the paper's rows; not in the paper, so no paper seconds or ratio.
RECOMMENDED_ROWS = tuple((f"psgan-rec-g{n}", "psgan", n, None, None) for n in (1, 2, 3))
STAGES = 3
THREADS_ENV = "PSGAN_BENCH_THREADS"


def row(name: str) -> tuple:
    for r in TABLE3 + RECOMMENDED_ROWS:
        if r[0] == name:
            return r
    raise KeyError(f"unknown benchmark row {name!r}; choose from "
                   f"{', '.join(r[0] for r in TABLE3 + RECOMMENDED_ROWS)}")


def row_loss(name: str) -> str:
    """The PS-GAN loss a row trains with (the paper's for Table 3's rows,
    the default for the recommended ones; ignored by the baselines)."""
    return ROW_LOSS.get(name, TrainConfig.loss)


def bench_threads() -> int:
    """Torch threads for benchmarks: $PSGAN_BENCH_THREADS, default 1 (see module docstring)."""
    value = os.environ.get(THREADS_ENV, "1")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"${THREADS_ENV} must be a positive integer, got {value!r}")
    return n


@dataclass
class Timing:
    """One row's measurement. `seconds`: the table figure (per stage,
    steps_per_stage x median step time, summed over stages)."""

    name: str
    seconds: float
    images: int
    steps: int
    flops: float = 0.0
    per_stage_seconds: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)  # per stage: every timed step
    wall_seconds: float = 0.0                          # plain sums / repeats
    stage_flops: list = field(default_factory=list)    # FLOPs of one step, per stage
    cpu_seconds: float = 0.0                           # as `seconds`, from process CPU time

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "seconds": self.seconds, "images": self.images, "steps": self.steps,
                "flops": self.flops, "per_stage_seconds": self.per_stage_seconds,
                "wall_seconds": self.wall_seconds, "stage_flops": self.stage_flops,
                "cpu_seconds": self.cpu_seconds,
                "step_ms": [[round(1e3 * t, 3) for t in ts] for ts in self.step_seconds]}


def real_batches(batch_size: int, count: int, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """`count` real MNIST batches, already float on `device`."""
    images, labels = mnist(split="train", download=False)
    stream = BatchStream(images, labels, batch_size=batch_size, seed=seed)
    out = []
    epoch = 0
    while len(out) < count:
        for x, _ in stream.iter_epoch(epoch):
            out.append(to_float(x, device))
            if len(out) == count:
                break
        epoch += 1
    return out


def make_recipe(name: str, steps_per_stage: int, *, precision: str = "fp32", batch_size: int = 64,
                device: Optional[torch.device] = None, parallel: str = "auto", seed: int = 0,
                compile: Optional[bool] = None, extra: Optional[dict] = None):
    """The recipe of Table 3 row `name`, planned for 3 epochs of
    `steps_per_stage` steps (one epoch per stage for psgan/progan)."""
    _, model, gens, _, _ = row(name)
    device = torch.device(device or "cpu")
    stage_epochs = (1,) * STAGES if model in ("psgan", "progan") else None
    cfg = TrainConfig(model=model, generators=gens, epochs=STAGES, stage_epochs=stage_epochs,
                      loss=row_loss(name), batch_size=batch_size, precision=precision, parallel=parallel, seed=seed,
                      device=device.type, compile=compile, progress=False, extra=dict(extra or {}))
    torch.manual_seed(seed)
    return build_recipe(cfg, image_size=28, channels=1, steps_per_epoch=steps_per_stage, device=device)


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: totals need no
    per-module attribution, and the tracker's backward hooks break under
    autograd.grad (ProGAN's gradient penalty)."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of `fn()` (torch.utils.flop_counter; matmuls and convolutions,
    forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return float(counter.get_total_flops())


def step_flops(recipe, batch: torch.Tensor) -> float:
    """FLOPs of one training step. It IS a training step (weights move);
    the harness uses it as a warm-up step."""
    return count_flops(lambda: recipe.step(batch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rows(names: Sequence[str], steps_per_stage: int, batches: Sequence[torch.Tensor], *,
              precision: str = "fp32", repeats: int = 1, warmup: int = 1, count_flops_: bool = True,
              parallel: str = "auto", compile: Optional[bool] = None,
              extra: Optional[dict] = None) -> dict[str, Timing]:
    """Time the rows `names` interleaved (see the module docstring); one
    Timing per row. Every row sees the same batches in the same order."""
    if steps_per_stage < 1 or repeats < 1 or warmup < 0:
        raise ValueError("steps_per_stage and repeats must be >= 1, warmup >= 0")
    device = batches[0].device
    timed = steps_per_stage * repeats
    recipes = {n: make_recipe(n, timed + warmup, precision=precision, device=device,
                              batch_size=batches[0].shape[0], parallel=parallel, compile=compile,
                              extra=extra) for n in names}
    steps: dict[str, list[list[float]]] = {n: [] for n in names}
    cpu: dict[str, list[list[float]]] = {n: [] for n in names}
    flops: dict[str, list[float]] = {n: [] for n in names}
    for stage in range(STAGES):
        for n, r in recipes.items():
            r.begin_epoch(stage)
            for w in range(warmup):
                x = batches[w % len(batches)]
                if w == 0 and count_flops_:
                    flops[n].append(step_flops(r, x))
                else:
                    r.step(x)
            if warmup == 0 and count_flops_:
                flops[n].append(0.0)
            _sync(device)
            steps[n].append([])
            cpu[n].append([])
        order = list(names)
        for i in range(timed):
            x = batches[(warmup + i) % len(batches)]
            k = i % len(order)
            for n in order[k:] + order[:k]:
                t0, c0 = time.perf_counter(), time.process_time()
                recipes[n].step(x)
                _sync(device)
                steps[n][stage].append(time.perf_counter() - t0)
                cpu[n][stage].append(time.process_time() - c0)
    out = {}
    for n in names:
        per_stage = [steps_per_stage * statistics.median(ts) for ts in steps[n]]
        fl = [f * steps_per_stage for f in flops[n]] if count_flops_ else []
        out[n] = Timing(name=n, seconds=sum(per_stage), images=STAGES * steps_per_stage * batches[0].shape[0],
                        steps=STAGES * steps_per_stage, flops=float(sum(fl)), per_stage_seconds=per_stage,
                        step_seconds=steps[n], wall_seconds=sum(sum(ts) for ts in steps[n]) / repeats,
                        stage_flops=flops[n],
                        cpu_seconds=sum(steps_per_stage * statistics.median(ts) for ts in cpu[n]))
    return out


def time_training(name: str, steps_per_stage: int, batches: Sequence[torch.Tensor], *, precision: str = "fp32",
                  parallel: str = "auto", count_flops: bool = False, warmup: int = 1,
                  compile: Optional[bool] = None, repeats: int = 1, extra: Optional[dict] = None) -> Timing:
    """One row alone: `steps_per_stage` timed steps (x `repeats`) in each of
    the 3 stages after `warmup` untimed ones (see `time_rows`)."""
    return time_rows([name], steps_per_stage, batches, precision=precision, repeats=repeats, warmup=warmup,
                     count_flops_=count_flops, parallel=parallel, compile=compile, extra=extra)[name]


def matmul_peak(dtype: torch.dtype, n: Optional[int] = None, reps: Optional[int] = None,
                device: Optional[torch.device] = None) -> float:
    """Measured matmul GFLOP/s for square n x n matrices of `dtype`: the
    best of `reps` products, with the current torch thread count. On the CPU
    n = 1024 and many repetitions (100 bf16, 30 fp32: 2-20 ms each): on a
    shared machine the best of many short products finds the moments the
    core was free (n = 2048 reached at most the same figure, and measured as
    low as a quarter of it at load 6-7 with 5-10 repetitions). On CUDA n = 8192."""
    device = torch.device(device or "cpu")
    if n is None:
        n = 8192 if device.type == "cuda" else 1024
    if reps is None:
        reps = 10 if device.type == "cuda" else (30 if dtype == torch.float32 else 100)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9
