"""The Python API for larger pipelines: load trained generators and sample.

    import psgan_fast
    run = psgan_fast.train(psgan_fast.TrainConfig(generators=2, epochs=10))
    gens = psgan_fast.load_generators(run)          # eval-mode nn.Modules
    images = psgan_fast.sample(gens, 64, seed=0)    # [64, 1, 28, 28] in [-1, 1]
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence, Union

import torch
from torch import nn

from psgan_fast import checkpoint as ckpt_mod
from psgan_fast.config import TrainConfig
from psgan_fast.models import build_recipe
from psgan_fast.recipe import Recipe


class TrainedGenerator(nn.Module):
    """Generator k of a trained recipe: forward(z [B, latent_dim]) -> images
    [B, C, H, W] in [-1, 1]. Whatever the recipe needs at run time (fade-in
    alpha, current stage) comes from the checkpoint."""

    def __init__(self, recipe: Recipe, k: int) -> None:
        super().__init__()
        self.recipe = recipe
        self.index = k
        self.net = recipe.modules()[f"G{k}"]
        self.latent_dim = recipe.latent_dim
        self.resolution = recipe.resolution()

    @torch.no_grad()
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.recipe.generate_one(z, self.index)


def _run_dir_of(ckpt: Path) -> Path:
    return ckpt.parent.parent


def load_generators(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> list[TrainedGenerator]:
    """Generators of a run directory (its latest checkpoint) or of one
    checkpoint directory, in eval mode. Warns if the checkpoint is not at
    the final resolution yet (an unfinished stepwise/progressive run)."""
    from psgan_fast.trainer import _derived_seed, _forked, validate

    ckpt = ckpt_mod.resolve(Path(path))
    run_dir = _run_dir_of(ckpt)
    try:
        doc = json.loads((run_dir / "config.json").read_text())
        cfg = validate(TrainConfig.from_json(doc["config"]))
        resolved = doc["resolved"]
    except FileNotFoundError:
        raise ckpt_mod.CheckpointError(f"{run_dir}: no config.json next to the checkpoint") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ckpt_mod.CheckpointError(f"{run_dir}/config.json is not a psgan_fast config: {e}") from None
    state = ckpt_mod.read_state(ckpt)
    device = torch.device(device)
    cfg.device = device.type
    with _forked(_derived_seed(cfg.seed, -1), device):
        recipe = build_recipe(cfg, image_size=resolved["image_size"], channels=resolved["channels"],
                              steps_per_epoch=resolved["steps_per_epoch"], device=device)
        recipe.begin_epoch(int(state["epoch"]))
    recipe.load_state(state.get("recipe", {}))
    ckpt_mod.load_modules(ckpt, recipe.modules())
    if recipe.resolution() != resolved["image_size"]:
        warnings.warn(f"{ckpt}: generators are at {recipe.resolution()}px, the run's final resolution is "
                      f"{resolved['image_size']}px (the run has not reached its last stage)", stacklevel=2)
    gens = [TrainedGenerator(recipe, k) for k in range(recipe.num_generators)]
    for g in gens:
        g.eval()
    return gens


@torch.no_grad()
def sample(generators: Union[nn.Module, Sequence[nn.Module]], n: int, seed: int = 0,
           batch_size: int = 500) -> torch.Tensor:
    """n images [n, C, H, W] in [-1, 1] on the CPU from the union of the
    generators: image i comes from generator i mod N, its noise from a
    torch.Generator seeded with `seed` (the global RNG is untouched)."""
    gens = [generators] if isinstance(generators, nn.Module) else list(generators)
    if not gens:
        raise ValueError("sample() needs at least one generator")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    latent = gens[0].latent_dim
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent, generator=rng)
    owner = torch.arange(n) % len(gens)
    out = None
    for k, g in enumerate(gens):
        idx = (owner == k).nonzero().flatten()
        dev = next(g.parameters()).device
        for s in range(0, len(idx), batch_size):
            part = idx[s:s + batch_size]
            imgs = g(z[part].to(dev)).float().cpu()
            if out is None:
                out = torch.empty((n, *imgs.shape[1:]))
            out[part] = imgs
    return out if out is not None else torch.empty(0)
