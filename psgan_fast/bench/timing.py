"""Time a fixed, comparable amount of training for each model.

"Comparable" (issue: Benchmarks): every configuration pushes the same
number of real images through each of the three stages of the schedule
(7x7, 14x14, 28x28 on MNIST) at the same batch size. SNGAN has no stages:
it trains at full resolution on the same total number of images. ProGAN
spends the same images per phase, fading in as it would in a real run.
The loader is not timed: batches are converted to float before the clock
starts, so the table compares models, not data paths.

The paper's Table 3 rows, with the names used here:
  sngan (spectral norm on D), sngan-nosn, progan, psgan-g1, psgan-g2, psgan-g3
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from psgan_fast.config import TrainConfig
from psgan_fast.data import BatchStream, mnist, to_float
from psgan_fast.models import build_recipe

# (row id, model, generators, paper seconds, paper ratio vs SNGAN)
TABLE3 = (
    ("sngan", "sngan", 1, 3920, 1.000),
    ("sngan-nosn", "sngan-nosn", 1, 3506, 0.894),
    ("progan", "progan", 1, 5277, 1.346),
    ("psgan-g1", "psgan", 1, 3784, 0.965),
    ("psgan-g2", "psgan", 2, 4851, 1.237),
    ("psgan-g3", "psgan", 3, 6214, 1.585),
)
# Table 4: generators -> ratio vs 2 generators (paper)
TABLE4 = ((1, 0.78), (2, 1.00), (3, 1.28))


def row(name: str) -> tuple:
    for r in TABLE3:
        if r[0] == name:
            return r
    raise KeyError(f"unknown benchmark row {name!r}; choose from {', '.join(r[0] for r in TABLE3)}")


@dataclass
class Timing:
    name: str
    seconds: float
    images: int
    steps: int
    flops: float = 0.0
    per_stage_seconds: list = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


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
                compile: Optional[bool] = None):
    _, model, gens, _, _ = row(name)
    device = device or torch.device("cpu")
    stage_epochs = (1, 1, 1) if model in ("psgan", "progan") else None
    epochs = 3
    cfg = TrainConfig(model=model, generators=gens, epochs=epochs, stage_epochs=stage_epochs,
                      batch_size=batch_size, precision=precision, parallel=parallel, seed=seed,
                      device=device.type, compile=compile, progress=False)
    torch.manual_seed(seed)
    return build_recipe(cfg, image_size=28, channels=1, steps_per_epoch=steps_per_stage, device=device)


def step_flops(recipe, batch: torch.Tensor) -> float:
    """FLOPs of one training step (torch.utils.flop_counter), on a copy of
    the RNG state so the timed run is unaffected."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng():
        counter = FlopCounterMode(display=False)
        with counter:
            recipe.step(batch)
    return float(counter.get_total_flops())


def time_training(name: str, steps_per_stage: int, batches: list[torch.Tensor], *, precision: str = "fp32",
                  parallel: str = "auto", count_flops: bool = False, warmup: int = 1,
                  compile: Optional[bool] = None) -> Timing:
    """Train `name` for `steps_per_stage` steps in each of the 3 epochs
    (= stages for psgan/progan) and time it. `warmup` untimed steps per stage
    run first (allocator and oneDNN primitive caches)."""
    device = batches[0].device
    recipe = make_recipe(name, steps_per_stage + warmup, precision=precision, device=device,
                         batch_size=batches[0].shape[0], parallel=parallel, compile=compile)
    total, flops, per_stage = 0.0, 0.0, []
    k = 0
    for epoch in range(3):
        recipe.begin_epoch(epoch)
        for _ in range(warmup):
            recipe.step(batches[k % len(batches)])
            k += 1
        if count_flops:
            flops += step_flops(recipe, batches[0]) * steps_per_stage
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps_per_stage):
            recipe.step(batches[k % len(batches)])
            k += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        per_stage.append(dt)
        total += dt
    n = 3 * steps_per_stage
    return Timing(name, total, n * batches[0].shape[0], n, flops, per_stage)


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5, device: Optional[torch.device] = None) -> float:
    """Measured matmul GFLOP/s for square n x n matrices of `dtype`."""
    device = device or torch.device("cpu")
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9
