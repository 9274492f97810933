"""What the recommended PS-GAN step costs against the paper's, and where the
difference goes.

    python -m psgan_fast.bench.cost [--generators 1,2,3] [--steps 32] [--out docs/results/cost.md]

Every configuration gets its own PS-GAN recipe at the 28x28 stage on the
same random batch; step i of every configuration runs before step i+1 of
any (interleaved, so load from other processes hits them alike), and each
step's process CPU time is taken (one torch thread: the time the step ran,
not the time others held the core). A configuration's figure is the MEAN
over `steps` steps, a multiple of the lazy R1/R2 interval, so the penalty
steps count at their real frequency (a median would hide them). Ratios are
against the paper's rule (`--loss ps`) with the same N, measured in the
same run.

The configurations decompose the recommended default one ingredient at a
time: ps -> rps (gates off) -> + skip networks (in G and D, in G only) ->
+ R1/R2 every 4 steps (a previous default), that with R1/R2's input
gradient by autograd (the reference for D's written-out chain, same
values), G-only skips with R1/R2 every 4 steps, every 8 (two previous
defaults), that + each generator's mode-seeking term (the default; its
strength lambda is a scalar, so rps-r1r2-gskips-s118-r8-ms, the previous
default at lambda 0.1, runs the same computation and has no row), then
the cheaper trade-offs the ablation scored (docs/results/ablation.md):
R1/R2 on fewer images, less often; and the default with the trainer's
update of each generator's moving average (--g-ema) after the step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from psgan_fast.config import RECOMMENDED_LOSS, ModelOptions, TrainConfig
from psgan_fast.fsutil import atomic_write_text
from psgan_fast.registry import MODE_SEEK_IMAGE_DISTS, get_spec


def _every(loss: str) -> str:
    """"R1/R2 every K steps", K the spec's own interval (the registry's)."""
    return f"R1/R2 every {get_spec(loss).reg_every} steps"


def _mode_seek(loss: str) -> str:
    """" + mode-seeking term (lambda L)" where the spec has one (and its
    distance unless MSGAN's l1), else ""."""
    spec = get_spec(loss)
    dist = "" if spec.mode_seek_dist == MODE_SEEK_IMAGE_DISTS[0] else f", distance {spec.mode_seek_dist}"
    return f" + mode-seeking term (lambda {spec.mode_seek:g}{dist})" if spec.mode_seek else ""


# (label, TrainConfig overrides): the paper's rule first (the baseline).
_PREV = "rps-r1r2-skips"  # the default until 2026-12-02: skip networks in G and D
_S118 = "rps-r1r2-gskips-s118"  # the default until R1/R2 went to every 8 steps
_R8 = "rps-r1r2-gskips-s118-r8"  # a default until the mode-seeking term joined it
_MS03 = "rps-r1r2-gskips-s118-r8-ms0.3"  # the default until one generator's distance became ink-divided
_REC = {"loss": RECOMMENDED_LOSS}
# The row the cost target is about.
DEFAULT_LABEL = f"{RECOMMENDED_LOSS} (the default: {_every(RECOMMENDED_LOSS)}{_mode_seek(RECOMMENDED_LOSS)})"
CONFIGS = (
    ("ps (the paper's Algorithm 2)", {"loss": "ps"}),
    ("rps (gates off)", {"loss": "rps"}),
    ("rps + skip networks in G and D", {"loss": "rps", "skips": True}),
    ("rps + skip networks in G", {"loss": "rps", "skips": True, "d_skips": False}),
    (f"{_PREV} (+ {_every(_PREV)}; a previous default)", {"loss": _PREV}),
    # The same update with R1/R2's input gradient by autograd's double backward
    # instead of D's written-out chain (Discriminator.input_gradient): same values.
    ("... R1/R2 gradient by autograd", {"loss": _PREV, "options": ModelOptions(penalty_grad="autograd")}),
    (f"{_S118} (skips in G only, {_every(_S118)}; a previous default)", {"loss": _S118}),
    (f"{_R8} ({_every(_R8)}; a previous default)", {"loss": _R8}),
    (f"{_MS03} ({_every(_MS03)}{_mode_seek(_MS03)}; a previous default)", {"loss": _MS03}),
    (DEFAULT_LABEL, _REC),
    # Cheaper trade-offs measured by the ablation (ablate's recommended-beta0-lean8x64,
    # -beta0-lean8 and, with the old betas, -lean16; Adam's betas do not change the cost).
    # The trainer's update of each generator's moving average after the step (--g-ema).
    ("default + each generator's moving average (--g-ema 10)", {**_REC, "g_ema": 10.0}),
    ("default + R1/R2 on 64 + 64 images", {**_REC, "reg_batch": 64}),
    ("default + R1/R2 on 32 + 32 images", {**_REC, "reg_batch": 32}),
    ("default + R1/R2 every 16 on 32 + 32 images", {**_REC, "reg_every": 16, "reg_batch": 32}),
)


def select(configs, match: Optional[str]):
    """The configurations whose label contains `match` (case-insensitive;
    comma-separated alternatives), after the paper's row, which every ratio
    is taken against; all without `match`. ValueError when nothing else
    matches."""
    if not match:
        return configs
    words = [w.strip().lower() for w in match.split(",") if w.strip()]
    picked = [c for c in configs[1:] if any(w in c[0].lower() for w in words)]
    if not picked:
        raise ValueError(f"no configuration matches {match!r}; the labels are: "
                         + "; ".join(label for label, _ in configs[1:]))
    return (configs[0], *picked)


def step_costs(generators: int, steps: int = 32, warmup: int = 4, configs=CONFIGS,
               image_size: int = 28) -> list[tuple[str, float]]:
    """(label, mean CPU seconds per step at the last stage) per configuration."""
    from psgan_fast.ema import GeneratorEMA
    from psgan_fast.models.psgan import PSGANRecipe

    recipes, averages = [], []
    for _, over in configs:
        cfg = TrainConfig(generators=generators, stage_epochs=(1, 1, 1), epochs=3, **over)
        r = PSGANRecipe(cfg, image_size=image_size, channels=1, steps_per_epoch=10 ** 6, device=torch.device("cpu"))
        for epoch in range(3):
            r.begin_epoch(epoch)
        recipes.append(r)
        ema = GeneratorEMA.of(cfg)
        if ema is not None:
            ema.track(r.modules())
        averages.append(ema)
    x = torch.rand(64, 1, image_size, image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    times: list[list[float]] = [[] for _ in recipes]
    for i in range(warmup + steps):
        order = list(range(len(recipes)))
        order = order[i % len(order):] + order[:i % len(order)]  # rotate who goes first
        for j in order:
            t0 = time.process_time()
            recipes[j].step(x).d_loss.item()
            if averages[j] is not None:  # as the trainer does after each step
                averages[j].update(recipes[j].modules())
            if i >= warmup:
                times[j].append(time.process_time() - t0)
    return [(label, sum(ts) / len(ts)) for (label, _), ts in zip(configs, times)]


def render(results: dict[int, list[tuple[str, float]]], steps: int) -> str:
    from psgan_fast.machine import machine_info

    m = machine_info()
    lines = ["# Step cost: the recommended PS-GAN against the paper's", "",
             f"`python -m psgan_fast.bench.cost` on {m['cpu']} ({m['cores']} cores, load {m['load_average']}), "
             f"torch {m['torch']}, {m['threads']} thread(s), {time.strftime('%Y-%m-%d %H:%M')}: "
             f"28x28 stage, batch 64, mean process CPU time over {steps} interleaved steps.", "",
             "| N | configuration | ms / step | vs the paper's step |", "|---:|---|---:|---:|"]
    for n, rows in results.items():
        base = rows[0][1]
        for label, sec in rows:
            lines.append(f"| {n} | {label} | {1e3 * sec:.1f} | {sec / base:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m psgan_fast.bench.cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--generators", default="1,2,3", help="comma-separated N")
    p.add_argument("--steps", type=int, default=32, help="timed steps per configuration (a multiple of 16, the longest R1/R2 interval)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    p.add_argument("--match", default=None, metavar="TEXT",
                   help="only the configurations whose label contains TEXT (comma-separated alternatives), "
                        "and the paper's, the baseline")
    args = p.parse_args(argv)
    try:
        ns = [int(v) for v in args.generators.split(",") if v]
    except ValueError:
        p.error(f"--generators: expected comma-separated integers, got {args.generators!r}")
    if not ns or min(ns) < 1:
        p.error("--generators: at least one N >= 1")
    if args.steps < 1:
        p.error(f"--steps: must be >= 1, got {args.steps}")
    try:
        configs = select(CONFIGS, args.match)
    except ValueError as e:
        p.error(f"--match: {e}")
    torch.set_num_threads(args.threads)
    results = {n: step_costs(n, args.steps, configs=configs) for n in ns}
    text = render(results, args.steps)
    if args.out:
        atomic_write_text(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
