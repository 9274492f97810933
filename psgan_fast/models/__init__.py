"""Registry of training recipes by `--model` name.

Each entry is imported lazily so that `import psgan_fast` stays cheap and a
broken optional model cannot break the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from psgan_fast.config import TrainConfig
    from psgan_fast.recipe import Recipe

# name -> (module, class, extra constructor kwargs)
RECIPES: dict[str, tuple[str, str, dict]] = {
    "psgan": ("psgan_fast.models.psgan", "PSGANRecipe", {}),
    "sngan": ("psgan_fast.models.sngan", "SNGANRecipe", {"spectral_norm": True}),
    "sngan-nosn": ("psgan_fast.models.sngan", "SNGANRecipe", {"spectral_norm": False}),
    "progan": ("psgan_fast.models.progan", "ProGANRecipe", {}),
}


def build_recipe(
    cfg: "TrainConfig",
    *,
    image_size: int,
    channels: int,
    steps_per_epoch: int,
    device: torch.device,
) -> "Recipe":
    """Construct the recipe named by `cfg.model`."""
    try:
        mod_name, cls_name, extra = RECIPES[cfg.model]
    except KeyError:
        raise ValueError(f"unknown model {cfg.model!r}; choose from {', '.join(RECIPES)}") from None
    cls = getattr(importlib.import_module(mod_name), cls_name)
    return cls(cfg, image_size=image_size, channels=channels, steps_per_epoch=steps_per_epoch,
               device=device, **extra)
