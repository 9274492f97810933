"""PS-GAN's training throughput on the CPU by number of generators,
precision, `--parallel` mode and memory layout: training images per second
of `PSGANRecipe.step` at one stage on random data (`psgan_fast.models.psgan`'s
docstring has the measured table and the defaults it backs).

    PYTHONPATH=. python -m psgan_fast.bench.psgan_throughput --threads 1 [--precision fp32] [1 2 3]

The configurations take turns step by step so that load from other
processes hits them alike.
"""

from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence

import torch

from psgan_fast.config import PRECISIONS, ModelOptions, TrainConfig
from psgan_fast.models.psgan import PSGANRecipe
from psgan_fast.stages import stage_resolutions


def benchmark(configs: list[tuple[int, str, str, bool]], *, batch: int = 64, steps: int = 12,
              image_size: int = 28, stage: int = 2) -> dict[tuple, tuple[float, float]]:
    """Training images/s (best, median) of `step` for each (generators,
    precision, parallel, channels_last), at `stage` on random data. The
    configurations take turns step by step so that load from other
    processes hits them alike."""
    stage_epochs = tuple(1 if k == stage else 0 for k in range(len(stage_resolutions(image_size))))
    recipes = {}
    for n, precision, parallel, cl in configs:
        cfg = TrainConfig(generators=n, precision=precision, parallel=parallel,
                          stage_epochs=stage_epochs, options=ModelOptions(channels_last=cl))
        recipes[(n, precision, parallel, cl)] = PSGANRecipe(
            cfg, image_size=image_size, channels=1, steps_per_epoch=steps, device=torch.device("cpu"))
        recipes[(n, precision, parallel, cl)].begin_epoch(0)
    real = torch.rand(batch, 1, image_size, image_size) * 2 - 1
    times: dict[tuple, list[float]] = {key: [] for key in recipes}
    for i in range(steps + 2):
        for key, recipe in recipes.items():
            t0 = time.perf_counter()
            recipe.step(real).d_loss.item()
            if i >= 2:
                times[key].append(time.perf_counter() - t0)
    return {key: (batch / min(ts), batch / sorted(ts)[len(ts) // 2]) for key, ts in times.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m psgan_fast.bench.psgan_throughput",
                                 description="PS-GAN training throughput on the CPU")
    ap.add_argument("generators", nargs="*", type=int, default=[1, 2, 3])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--precision", default=",".join(PRECISIONS),
                    help=f"comma-separated: {', '.join(PRECISIONS)} (default all)")
    args = ap.parse_args(argv)
    precisions = [p for p in args.precision.split(",") if p]
    if not precisions or set(precisions) - set(PRECISIONS):
        ap.error(f"--precision: choose from {', '.join(PRECISIONS)} (comma-separated), got {args.precision!r}")
    torch.set_num_threads(args.threads)
    configs = [(n, prec, par, cl) for n in args.generators for prec in precisions
               for par in ("sequential", "fused") for cl in (False, True)
               if not (n == 1 and par == "fused")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 64, stage 2 (28x28)")
    print("N  precision  parallel    channels_last  best img/s  median img/s")
    for (n, prec, par, cl), (best, med) in benchmark(configs).items():
        print(f"{n}  {prec:<9}  {par:<10}  {str(cl):<13}  {best:10.0f}  {med:12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
