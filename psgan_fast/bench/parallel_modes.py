"""How `--parallel`'s modes run PS-GAN's N generators, timed: forward +
backward of all N stage generators per call (`psgan_fast.parallel`; its
docstring has the measured table and the choice of `auto` it backs).

    PYTHONPATH=. python -m psgan_fast.bench.parallel_modes --threads 1

Modes alternate call by call so that load from other processes hits them
alike; the minimum is the least disturbed figure. On a GPU:
`benchmark(modes=("sequential", "fused", "streams"), device="cuda")`.
"""

from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence

import torch

from psgan_fast.parallel import ParallelGenerators
from psgan_fast.stages import build_generator


def benchmark(num_generators: Sequence[int] = (1, 2, 3), batch: int = 64, stage: int = 2,
              repeats: int = 15, modes: Sequence[str] = ("sequential", "fused"),
              device: str = "cpu") -> list[tuple[int, str, float, float]]:
    """(N, mode, min ms, median ms) of forward + backward of all N
    generators. Modes alternate call by call so that load from other
    processes hits them alike; the minimum is the least disturbed figure."""
    results = []
    for n in num_generators:
        torch.manual_seed(0)
        gens = [build_generator(stage).to(device) for _ in range(n)]
        z = torch.randn(batch, gens[0].latent_dim, device=device)
        runners = {mode: ParallelGenerators(gens, mode) for mode in modes}
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for i in range(repeats + 2):
            for mode, runner in runners.items():
                t0 = time.perf_counter()
                sum(f.float().sum() for f in runner(z)).backward()
                if device == "cuda":
                    torch.cuda.synchronize()
                if i >= 2:
                    times[mode].append(time.perf_counter() - t0)
        for mode in modes:
            ts = sorted(times[mode])
            results.append((n, mode, 1000 * ts[0], 1000 * ts[len(ts) // 2]))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m psgan_fast.bench.parallel_modes",
                                 description="sequential vs fused generators on the CPU")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    torch.set_num_threads(ap.parse_args(argv).threads)
    rows = benchmark()
    print(f"torch threads: {torch.get_num_threads()}")
    print("N  mode        min ms  median ms")
    for n, mode, ms_min, ms_med in rows:
        print(f"{n}  {mode:<10}  {ms_min:6.1f}  {ms_med:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
