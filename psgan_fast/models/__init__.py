"""Registry of training recipes by `--model` name, and each model's defaults.

`RECIPES` is the one list of models (`psgan_fast.config.MODELS` is its
keys) and the one table of their defaults: what a run trains with where the
config leaves a setting None (TrainConfig's lr, betas and generators; the
network sizes and layout of `config.ModelOptions`). `net_settings` resolves
them for a config. Options only one model has keep their default in that
model's module.

Each recipe module is imported lazily, by name, so that this registry (and
`psgan_fast.config`, which derives its choice list from it) needs no torch,
`import psgan_fast` stays cheap, and a broken optional model cannot break
the others.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this registry stays torch-free: psgan_fast.config derives MODELS from it
    import torch

    from psgan_fast.config import TrainConfig
    from psgan_fast.recipe import GeneratorSet, Recipe


@dataclass(frozen=True)
class ModelDefaults:
    """A model's defaults (see the module docstring)."""

    lr: float                    # Adam's learning rate
    betas: tuple[float, float]   # Adam's betas
    generators: int = 1          # N (only PS-GAN trains more than one)
    latent_dim: int = 128        # size of the noise vector z
    width: int = 64              # feature channels at the lowest resolution; level i has
    min_width: int = 16          # max(width >> i, min_width): 64, 32, 16 at 7, 14, 28 px
    # Device types whose networks are channels_last (NHWC) by default: measured
    # 15-25% faster PS-GAN training steps on the 2-core CPU (oneDNN, fp32 and
    # bf16 alike; SNGAN and ProGAN faster too, see their modules); on CUDA it is
    # cuDNN's preferred layout for bf16 tensor cores (not measured here: no GPU
    # on the build machine).
    channels_last_on: tuple[str, ...] = ("cpu", "cuda")


@dataclass(frozen=True)
class ModelEntry:
    module: str                  # where the recipe class lives (imported on use)
    cls: str                     # the Recipe subclass
    defaults: ModelDefaults
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments

    def recipe_class(self) -> type["Recipe"]:
        return getattr(importlib.import_module(self.module), self.cls)


_GAN_ADAM = dict(lr=2e-4, betas=(0.5, 0.999))  # DCGAN's Adam, the PS-GAN and SNGAN papers' setting

RECIPES: dict[str, ModelEntry] = {
    "psgan": ModelEntry("psgan_fast.models.psgan", "PSGANRecipe", ModelDefaults(**_GAN_ADAM, generators=2)),
    "sngan": ModelEntry("psgan_fast.models.sngan", "SNGANRecipe", ModelDefaults(**_GAN_ADAM),
                        {"spectral_norm": True}),
    "sngan-nosn": ModelEntry("psgan_fast.models.sngan", "SNGANRecipe", ModelDefaults(**_GAN_ADAM),
                             {"spectral_norm": False}),
    "progan": ModelEntry("psgan_fast.models.progan", "ProGANRecipe", ModelDefaults(lr=1e-3, betas=(0.0, 0.99))),
}


def _entry(model: str) -> ModelEntry:
    try:
        return RECIPES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(RECIPES)}") from None


def defaults_of(model: str) -> ModelDefaults:
    return _entry(model).defaults


@dataclass(frozen=True)
class NetSettings:
    """A model's settings for one config on one device type, resolved: the
    config's value where it sets one, else the model's default."""

    lr: float
    betas: tuple[float, float]
    latent_dim: int
    width: int
    min_width: int
    channels_last: bool


def net_settings(cfg: "TrainConfig", device_type: str) -> NetSettings:
    d, o = defaults_of(cfg.model), cfg.options
    return NetSettings(
        lr=cfg.lr if cfg.lr is not None else d.lr,
        betas=tuple(cfg.betas) if cfg.betas is not None else d.betas,
        latent_dim=o.latent_dim if o.latent_dim is not None else d.latent_dim,
        width=o.width if o.width is not None else d.width,
        min_width=d.min_width,
        channels_last=o.channels_last if o.channels_last is not None else device_type in d.channels_last_on,
    )


def build_recipe(cfg: "TrainConfig", *, image_size: int, channels: int, steps_per_epoch: int,
                 device: "torch.device") -> "Recipe":
    """Construct the recipe named by `cfg.model`."""
    entry = _entry(cfg.model)
    return entry.recipe_class()(cfg, image_size=image_size, channels=channels, steps_per_epoch=steps_per_epoch,
                                device=device, **entry.kwargs)


def build_generators(cfg: "TrainConfig", *, image_size: int, channels: int, steps_per_epoch: int,
                     device: "torch.device", epoch: int, state: dict[str, Any]) -> "GeneratorSet":
    """Only the generators of `cfg.model` as a checkpoint at `epoch` with
    recipe state `state` holds them (`Recipe.build_generators`), untrained:
    load the checkpoint's generator weights into the set's `modules()`."""
    entry = _entry(cfg.model)
    return entry.recipe_class().build_generators(cfg, image_size=image_size, channels=channels,
                                                 steps_per_epoch=steps_per_epoch, device=device, epoch=epoch,
                                                 state=state, **entry.kwargs)
