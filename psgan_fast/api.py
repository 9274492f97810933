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
from typing import Optional, Sequence, Union

import torch
from torch import nn

from psgan_fast import checkpoint as ckpt_mod
from psgan_fast.config import TrainConfig, validate
from psgan_fast.ema import SUFFIX as EMA_SUFFIX
from psgan_fast.models import build_generators
from psgan_fast.trained_generator import TrainedGenerator

__all__ = ["TrainedGenerator", "load_generators", "sample"]


def _run_dir_of(ckpt: Path) -> Path:
    return ckpt.parent.parent


def load_generators(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                    ema: Optional[bool] = None) -> list[TrainedGenerator]:
    """Generators of a run directory (its latest checkpoint) or of one
    checkpoint directory, in eval mode. Only the generators are built (no
    discriminator, no optimisers) and only their weights are read. Warns if
    the checkpoint is not at the final resolution yet (an unfinished
    stepwise/progressive run).

    `ema`: the weights' moving averages of a run trained with --g-ema
    (`psgan_fast.ema`) when True, the live weights when False; None (the
    default) takes the averages where the run kept them."""
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
    gens = build_generators(cfg, image_size=resolved["image_size"], channels=resolved["channels"],
                            steps_per_epoch=resolved["steps_per_epoch"], device=device,
                            epoch=int(state["epoch"]), state=state.get("recipe", {}))
    has_ema = float(cfg.g_ema) > 0
    if ema and not has_ema:
        raise ckpt_mod.CheckpointError(f"{ckpt}: the run kept no moving averages of its generators "
                                       "(trained without --g-ema)")
    use_ema = has_ema if ema is None else bool(ema)
    nets = gens.modules()
    ckpt_mod.load_modules(ckpt, {name + EMA_SUFFIX: m for name, m in nets.items()} if use_ema else nets)
    if gens.resolution() != resolved["image_size"]:
        warnings.warn(f"{ckpt}: generators are at {gens.resolution()}px, the run's final resolution is "
                      f"{resolved['image_size']}px (the run has not reached its last stage)", stacklevel=2)
    out = [TrainedGenerator(gens, k) for k in range(gens.num_generators)]
    for g in out:
        g.eval()
    return out


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
