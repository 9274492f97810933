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
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from psgan_fast.config import TrainConfig


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

    def eval_images(self, g: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`eval_images` with this recipe's device and precision
        (``self.device``, ``self.autocast``): the building block of
        `generate` for every recipe."""
        return eval_images(g, *args, device=self.device, autocast=self.autocast, **kwargs)

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned. Called after `begin_epoch` has
        rebuilt the networks for the checkpoint's epoch and before the
        module and optimiser tensors are loaded."""

    def settle(self) -> list[str]:
        """Finish what `load_state` had to leave until the checkpoint's
        tensors were loaded (PS-GAN: a stage switch the schedule has already
        passed, whose weight transfer needs the trained weights). The trainer
        calls it on resume right after loading them, before it prepares the
        networks and optimisers for the run (gradient sync across ranks,
        compiling), so nothing is built behind its back in `step`. Returns
        log lines; the default has nothing to finish."""
        return []

    @classmethod
    def build_generators(cls, cfg: "TrainConfig", *, image_size: int, channels: int, steps_per_epoch: int,
                         device: torch.device, epoch: int, state: dict[str, Any], **kwargs: Any) -> "GeneratorSet":
        """Only the generators this recipe would hold after `begin_epoch(epoch)`
        and `load_state(state)` on a fresh recipe built with these arguments
        (`kwargs`: the registry's constructor arguments), in the same form
        and layout, with nothing of D or the optimisers: for sampling from a
        checkpoint (`psgan_fast.api.load_generators`, which loads the
        checkpoint's generator weights into the set's `modules()`)."""
        raise NotImplementedError(f"{cls.__name__} cannot build its generators alone")


def place(module: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """`module` on `device`, channels_last (NHWC) if asked, in train mode."""
    memory = torch.channels_last if channels_last else torch.preserve_format
    return module.to(device, memory_format=memory).train()


@torch.no_grad()
def eval_images(g: nn.Module, *args: Any, device: torch.device, autocast: bool, **kwargs: Any) -> torch.Tensor:
    """``g(*args, **kwargs)`` in eval mode (its mode restored after), under
    bf16 autocast on `device` when `autocast` (a recipe that trains in
    bf16): float images clamped to [-1, 1], contiguous."""
    flag = g.training
    g.eval()
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return g(*args, **kwargs).float().clamp_(-1, 1).contiguous()
    finally:
        g.train(flag)


class GeneratorSet:
    """The generators of a recipe without its discriminator or optimisers,
    enough to sample: what a recipe's ``build_generators`` classmethod
    returns for a checkpoint (the caller loads the generators' weights into
    `modules()`). It answers like the recipe it stands for - `generate_one`,
    `generate`, `modules`, `latent_dim`, `resolution()`, `num_generators` -
    so `psgan_fast.trained_generator.TrainedGenerator` wraps either.

    `args` / `kwargs`: what the recipe passes each generator after z at its
    checkpoint's state (ProGAN: the phase and the fade-in alpha)."""

    def __init__(self, generators: list[nn.Module], *, latent_dim: int, resolution: int, device: torch.device,
                 autocast: bool, args: tuple = (), kwargs: dict[str, Any] | None = None) -> None:
        self.generators = list(generators)
        self.latent_dim = latent_dim
        self._resolution = resolution
        self.device = torch.device(device)
        self.autocast = autocast
        self._args, self._kwargs = tuple(args), dict(kwargs or {})

    @property
    def num_generators(self) -> int:
        return len(self.generators)

    def resolution(self) -> int:
        return self._resolution

    def modules(self) -> dict[str, nn.Module]:
        return {f"G{k}": g for k, g in enumerate(self.generators)}

    @torch.no_grad()
    def generate_one(self, z: torch.Tensor, k: int) -> torch.Tensor:
        return eval_images(self.generators[k], z.to(self.device), *self._args, device=self.device,
                           autocast=self.autocast, **self._kwargs)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> list[torch.Tensor]:
        return [self.generate_one(z, k) for k in range(self.num_generators)]


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
