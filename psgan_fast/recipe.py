"""The contract between the training loop and a GAN method ("recipe").

The loop (`psgan_fast.trainer`) owns data, epochs, logging, samples,
checkpoints and resume; a recipe owns its networks, optimisers, schedule and
update rule. PS-GAN, SNGAN (with and without spectral norm) and ProGAN are
recipes, registered by name in `psgan_fast.models.RECIPES`.

Conventions every recipe follows:

* Images are float tensors in [-1, 1] (tanh generators), NCHW, on the
  recipe's device. `step` receives real images at the *full* data
  resolution; a recipe that trains at a lower resolution downsamples them
  itself (area interpolation, docs/DESIGN.md §3).
* `step` must not call `.item()` or otherwise synchronise with the device:
  it returns detached tensors and the loop decides when to read them.
* Everything needed to continue exactly is reachable through `modules()`,
  `optimizers()` and `state()`/`load_state()` (plain JSON-able values).
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class StepOutput:
    """Detached results of one training step.

    d_loss: scalar tensor, the discriminator loss of this step.
    g_loss: tensor [N], each generator's loss (N = number of generators).
    extras: more scalar tensors to log (e.g. the share of groups in each of
        Algorithm 2's cases, gradient-penalty values); keys are log names.
    """

    d_loss: torch.Tensor
    g_loss: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Recipe(abc.ABC):
    """One GAN training method. See the module docstring for conventions."""

    #: registry name, e.g. "psgan", "sngan", "sngan-nosn", "progan"
    name: str = ""
    #: (rank, world_size) of a data-parallel run; set by the trainer.
    shard: tuple[int, int] = (0, 1)

    def noise(self, batch: int, *shape: int, device: torch.device | None = None,
              kind: str = "normal") -> torch.Tensor:
        """Random numbers for a batch, drawn so that data-parallel ranks
        together draw exactly what one process with the global batch would:
        every rank draws the global batch (`batch * world_size` rows) from the
        shared RNG stream and keeps rows `rank::world_size`, the rows of the
        images its BatchStream shard holds. Use it for z and for any other
        per-sample randomness (e.g. gradient-penalty interpolation).
        kind: "normal" (torch.randn) or "uniform" (torch.rand)."""
        rank, world = self.shard
        draw = torch.randn if kind == "normal" else torch.rand
        full = draw(batch * world, *shape, device=device)
        return full if world == 1 else full[rank::world]

    @property
    @abc.abstractmethod
    def num_generators(self) -> int:
        """How many generators this recipe trains (1 for the baselines)."""

    @property
    @abc.abstractmethod
    def latent_dim(self) -> int:
        """Size of the noise vector z each generator takes."""

    @abc.abstractmethod
    def begin_epoch(self, epoch: int) -> list[str]:
        """Called before each epoch (0-based), also after a resume.

        A stepwise recipe switches stage here (building the next networks and
        transferring weights); a progressive one sets its phase. Returns
        human-readable log lines describing anything that changed.
        """

    @abc.abstractmethod
    def resolution(self) -> int:
        """Side length of the images the recipe currently trains on."""

    def stage(self) -> int:
        """Index of the current stage/phase (0-based), for logs and plots."""
        return 0

    @abc.abstractmethod
    def step(self, real: torch.Tensor) -> StepOutput:
        """One update of D and the generators on a batch of real images."""

    @abc.abstractmethod
    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Each generator's images for noise z [B, latent_dim], at the
        current resolution, in [-1, 1], without touching training state
        (eval-mode behaviour for normalisation layers, no RNG side effects
        beyond what z fixes)."""

    @torch.no_grad()
    def generate_one(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Generator k's images for z; recipes may override to skip the others."""
        return self.generate(z)[k]

    @abc.abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every trainable network by a stable name ("G0", "G1", ..., "D")."""

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by a stable name."""

    def state(self) -> dict[str, Any]:
        """Extra JSON-able state (counters, fade-in alpha, stage index)."""
        return {}

    @torch.no_grad()
    def eval_images(self, g: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``g(*args, **kwargs)`` in eval mode (its mode restored after),
        under bf16 autocast when the recipe trains in bf16 (``self.autocast``
        on ``self.device``): float images clamped to [-1, 1], contiguous.
        The building block of `generate` for every recipe."""
        flag = g.training
        g.eval()
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                return g(*args, **kwargs).float().clamp_(-1, 1).contiguous()
        finally:
            g.train(flag)

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned. Called after `begin_epoch` has
        rebuilt the networks for the checkpoint's epoch and before the
        module and optimiser tensors are loaded."""


@contextlib.contextmanager
def frozen(module: nn.Module):
    """`module`'s parameters take no gradient inside (a generator's update
    backpropagates through D without accumulating into it)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


class SinglePairRecipe(Recipe):
    """A recipe with one generator ``self.G`` and one discriminator
    ``self.D``, trained by ``self.opt_g`` / ``self.opt_d`` (the baselines)."""

    @staticmethod
    def update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimiser step on `loss`: zero the gradients, backward, step."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def d_frozen(self):
        """`frozen(self.D)`: the generator's update does not accumulate into D."""
        return frozen(self.D)

    @property
    def num_generators(self) -> int:
        return 1

    def modules(self) -> dict[str, nn.Module]:
        return {"G0": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G0": self.opt_g, "D": self.opt_d}
