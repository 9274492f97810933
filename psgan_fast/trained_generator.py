"""`TrainedGenerator`: one trained generator as a plain `nn.Module`.

forward(z [B, latent_dim]) -> images [B, C, H, W] in [-1, 1], run the way
its recipe runs it (eval mode, the recipe's precision, and whatever the
recipe needs at run time, such as ProGAN's phase and fade-in alpha). It
wraps a live recipe (the trainer's evaluation) or the `GeneratorSet` a
recipe builds for a checkpoint (`psgan_fast.api.load_generators`).
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

from psgan_fast.recipe import GeneratorSet, Recipe


class TrainedGenerator(nn.Module):
    """Generator k of a trained recipe: forward(z [B, latent_dim]) -> images
    [B, C, H, W] in [-1, 1]. Whatever the recipe needs at run time (fade-in
    alpha, current stage) comes from the checkpoint."""

    def __init__(self, recipe: Union[Recipe, GeneratorSet], k: int) -> None:
        super().__init__()
        self.recipe = recipe
        self.index = k
        self.net = recipe.modules()[f"G{k}"]
        self.latent_dim = recipe.latent_dim
        self.resolution = recipe.resolution()

    @torch.no_grad()
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.recipe.generate_one(z, self.index)
