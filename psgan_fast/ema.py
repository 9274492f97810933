"""An exponential moving average of each generator's weights (`--g-ema`).

The average is what a trained generator draws with, not what it trains:
the live weights train exactly as without it (the average reads them
after each step and writes nothing back), and sample grids, the per-epoch
evaluation and `psgan_fast.api.load_generators` use the average. ProGAN
(Karras et al. 2018, §A.1: β 0.999), StyleGAN2 and R3GAN sample from such
an average; it smooths away the step-to-step jitter of a GAN's last
updates.

The strength is a half-life in thousands of images (StyleGAN2's
``ema_kimg``): after `half_life_kimg` × 1000 images the live weights'
contribution is half; per step of `batch` images the average moves by
1 − β with β = 0.5 ** (batch / (1000 · half_life_kimg)).

Each generator's average starts from (and restarts at) a copy of its live
network whenever the recipe hands over a different network object, e.g. at
a PS-GAN stage switch, which builds new networks at the next resolution
(Algorithm 1's transfer has already mixed the weights then). Checkpoints
keep the averages as networks ``G<k>_ema`` beside ``G<k>`` (`modules`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import weakref
from typing import Any, Iterator, Optional

import torch
from torch import nn

# A checkpoint network name's suffix for a generator's average: "G0" -> "G0_ema".
SUFFIX = "_ema"


def is_generator(name: str) -> bool:
    """Recipes name their generators "G0", "G1", ... (`Recipe.modules`)."""
    return name.startswith("G") and name[1:].isdigit()


def beta_for(half_life_kimg: float, batch: int) -> float:
    """β of one step of `batch` images for a half-life of `half_life_kimg` thousand images."""
    if not (math.isfinite(half_life_kimg) and half_life_kimg > 0):
        raise ValueError(f"the half-life must be a positive number of thousands of images, got {half_life_kimg!r}")
    return 0.5 ** (batch / (1000.0 * half_life_kimg))


class GeneratorEMA:
    """The averages of a recipe's generators (see the module docstring)."""

    def __init__(self, beta: float) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self.beta = beta
        self.shadows: dict[str, nn.Module] = {}
        self._of: dict[str, weakref.ref] = {}  # each average's live network (identity, never id())

    @classmethod
    def of(cls, cfg: Any) -> Optional["GeneratorEMA"]:
        """The averages a TrainConfig asks for (`g_ema`, its batch size); None when off."""
        return cls(beta_for(cfg.g_ema, cfg.batch_size)) if cfg.g_ema > 0 else None

    def track(self, modules: dict[str, nn.Module]) -> list[str]:
        """Start the average of each generator in `modules` not yet tracked,
        or handed over as a different network object, from a copy of it.
        Returns the names (re)started."""
        started = []
        for name, m in modules.items():
            if not is_generator(name):
                continue
            ref = self._of.get(name)
            if ref is None or ref() is not m:
                shadow = copy.deepcopy(m)
                shadow.requires_grad_(False)
                self.shadows[name] = shadow.eval()
                self._of[name] = weakref.ref(m)
                started.append(name)
        return started

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        """One step: each average moves 1 − β of the way to its live weights
        (floating-point buffers, e.g. BatchNorm statistics, too; integer
        buffers are copied)."""
        avg, live = [], []
        for name, shadow in self.shadows.items():
            src = modules[name]
            for (_, a), (_, p) in zip(shadow.named_parameters(), src.named_parameters()):
                avg.append(a)
                live.append(p.detach())
            for (_, a), (_, b) in zip(shadow.named_buffers(), src.named_buffers()):
                if a.is_floating_point():
                    avg.append(a)
                    live.append(b)
                else:
                    a.copy_(b)
        if avg:
            torch._foreach_lerp_(avg, live, 1.0 - self.beta)

    def modules(self) -> dict[str, nn.Module]:
        """The averages as checkpoint networks ("G0_ema", ...)."""
        return {name + SUFFIX: shadow for name, shadow in self.shadows.items()}

    @contextlib.contextmanager
    def applied(self, modules: dict[str, nn.Module]) -> Iterator[None]:
        """Inside, the live generators hold their averages' weights (so the
        recipe's own sampling path draws from the averages); the live
        weights are put back on exit, bit for bit."""
        saved = {}
        try:
            with torch.no_grad():
                for name, shadow in self.shadows.items():
                    live = modules[name].state_dict()
                    saved[name] = {k: v.clone() for k, v in live.items()}
                    avg = shadow.state_dict()
                    for k, v in live.items():
                        v.copy_(avg[k])
            yield
        finally:
            with torch.no_grad():
                for name, sd in saved.items():
                    for k, v in modules[name].state_dict().items():
                        v.copy_(sd[k])
