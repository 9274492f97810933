"""Interleaved A/B of training-step time between model-option variants.

    python -m psgan_fast.bench.ab ROWS [--precision fp32,bf16] [--stages 2]
        [--steps 10] [--threads 1] --variant '{"d_backward": "two-pass"}' --variant '{}'

ROWS: Table 3 row ids (psgan-g3, sngan, ...), comma-separated. Every
(row, precision, stage, variant) gets its own recipe on random images at
28x28 (stage k: PS-GAN's stage, ProGAN's phase past its fade-in; SNGAN has
one); then step i of every recipe runs before step i+1 of any, so load from
other processes hits every variant alike. Prints the median wall and CPU
(process) time per step and each variant's ratio to the first. With one
torch thread the CPU time excludes the time other processes took the core,
so it is the steadier figure on a shared machine.

A variant is a JSON object of `psgan_fast.config.ModelOptions` fields (the
keys of the old untyped `cfg.extra` dict, e.g. d_backward); a model ignores
the fields it does not have, as before.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from typing import Optional, Sequence

import torch

from psgan_fast.bench.cpu_runtime import configure_cpu
from psgan_fast.config import ModelOptions
from psgan_fast.bench.timing import STAGES, make_recipe
from psgan_fast.machine import load_average


def run(rows: Sequence[str], precisions: Sequence[str], stages: Sequence[int], variants: Sequence[dict],
        steps: int = 10, warmup: int = 2) -> dict[tuple, tuple[float, float]]:
    """(row, precision, stage, variant index) -> (median wall s, median CPU s) per step."""
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    recipes = {}
    for stage in stages:
        for name in rows:
            for prec in precisions:
                for vi, options in enumerate(variants):  # make_recipe takes them as the old `extra` dict
                    r = make_recipe(name, 10 ** 6, precision=prec, extra=options)
                    for epoch in range(stage + 1):
                        r.begin_epoch(epoch)
                    if name == "progan":
                        r._step_in_phase = 10 ** 9  # past the fade-in (alpha = 1)
                    recipes[(name, prec, stage, vi)] = r
    times: dict[tuple, list[tuple[float, float]]] = {k: [] for k in recipes}
    keys = list(recipes)
    for i in range(steps + warmup):
        j = i % len(keys)
        for k in keys[j:] + keys[:j]:
            w0, c0 = time.perf_counter(), time.process_time()
            recipes[k].step(x)
            if i >= warmup:
                times[k].append((time.perf_counter() - w0, time.process_time() - c0))
    return {k: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
            for k, ts in times.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m psgan_fast.bench.ab", description=__doc__.splitlines()[0])
    p.add_argument("rows")
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--stages", default=str(STAGES - 1))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-malloc-tuning", action="store_true")
    p.add_argument("--variant", action="append", default=[], help="model options as JSON; give two or more")
    a = p.parse_args(argv)
    variants = [json.loads(v) for v in a.variant] or [{}]
    known = [f.name for f in dataclasses.fields(ModelOptions)]
    for v in variants:
        if not isinstance(v, dict) or set(v) - set(known):
            p.error(f"--variant: a JSON object of model options ({', '.join(known)}), got {json.dumps(v)}")
    rows, precs = a.rows.split(","), a.precision.split(",")
    stages = [int(s) for s in a.stages.split(",")]
    rt = configure_cpu(a.threads, malloc=not a.no_malloc_tuning)
    load0 = load_average()
    res = run(rows, precs, stages, variants, steps=a.steps)
    print(f"torch {torch.__version__}, {rt['threads']} thread(s), malloc tuned {rt['malloc_tuned']}, "
          f"load average {load0} -> {load_average()}; median of {a.steps} interleaved steps, ms")
    for i, v in enumerate(variants):
        print(f"  v{i} = {json.dumps(v)}")
    for stage in stages:
        for name in rows:
            for prec in precs:
                base = res[(name, prec, stage, 0)]
                cells = []
                for vi in range(len(variants)):
                    w, c = res[(name, prec, stage, vi)]
                    ratio = f" ({w / base[0]:.3f} / {c / base[1]:.3f})" if vi else ""
                    cells.append(f"v{vi} wall {1e3 * w:7.1f} cpu {1e3 * c:7.1f}{ratio}")
                print(f"stage {stage} {name:10s} {prec}: " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
