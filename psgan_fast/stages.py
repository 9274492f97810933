"""PS-GAN's stage networks and the stage schedule (paper §3.2, DESIGN.md §3).

Stepwise training trains a simple pair (G0, D0), then a more complex pair
(G1, D1), then (G2, D2). Unlike ProGAN, each stage is a whole network of its
own: a stage switch builds fresh networks and Algorithm 1
(`psgan_fast.transfer`) mixes the previous stage's weights into them. For
that mapping to mean something, every layer that two stages share has the
same name and shape in both, and layers that exist in one stage only carry
their resolution in their name.

Resolutions (the halving rule). With S stages (3 by default) the stage
resolutions are ``size / 2**(S-1), ..., size / 2, size``: 28 -> 7, 14, 28;
32 -> 8, 16, 32; 64 -> 16, 32, 64. A size that is not divisible by 2**(S-1)
(4 for three stages; e.g. 30) raises ValueError: the blocks double the
resolution exactly, so such data must be padded or resized to a multiple of
4 first (30 -> pad to 32).

Architecture (DCGAN class, sized for MNIST on a small CPU). Level i is
resolution ``resolutions[i]``; its feature width is ``max(width >> i, 16)``
(width 64: 64, 32, 16 channels at 7, 14, 28).

Generator of stage k::

    stem            z [B, latent] -> Linear (no bias) -> [B, w0, r0, r0]
                    -> BatchNorm -> ReLU -> Conv3x3 -> BatchNorm -> ReLU
    up.<r1> ...     one block per later level up to stage k:
                    ConvTranspose4x4 stride 2 (doubles) -> BatchNorm -> ReLU
    to_image.<rk>   Conv3x3 -> channels, then tanh (images in [-1, 1])

Discriminator of stage k (no normalisation of any kind: PS-GAN claims to
need no spectral norm, and without BatchNorm each image's logit depends on
that image alone, so Algorithm 2's per-group decision is exactly a function
of the group's N+1 images)::

    from_image.<rk> Conv3x3 channels -> w_k, LeakyReLU(0.2)
    down.<r> ...    one block per level from k down to 1, named by its
                    input resolution: Conv4x4 stride 2 (halves), LeakyReLU
    head            Conv3x3 w0 -> w0, LeakyReLU, flatten, Linear -> 1 logit

So the stage-(k+1) generator is the stage-k one plus one ``up`` block and a
different ``to_image``; the stage-(k+1) discriminator is the stage-k one
plus one ``down`` block and a different ``from_image``. Under Algorithm 1
the stem/head and all earlier blocks map; ``to_image.*``/``from_image.*``
and the new block are reported as "missing in old" and keep their fresh
initialisation.

Sizes at the default widths (latent 128, width 64, MNIST): the generator
has 0.44M / 0.47M / 0.48M parameters at stages 0/1/2 (the stem's Linear
dominates), the discriminator 0.04M / 0.07M / 0.08M.
"""

from __future__ import annotations

import bisect
from typing import Sequence

import torch
from torch import nn

LATENT_DIM = 128
WIDTH = 64
MIN_WIDTH = 16
NUM_STAGES = 3


def _channels_last(weight: torch.Tensor) -> bool:
    """Is this 4-d tensor stored channels_last (and not also plain contiguous)?
    False inside vmap (ParallelGenerators' fused mode), which cannot answer."""
    try:
        return (weight.dim() == 4 and not weight.is_contiguous()
                and weight.is_contiguous(memory_format=torch.channels_last))
    except RuntimeError:  # "NYI: querying is_contiguous inside of vmap ..."
        return False


def stage_resolutions(image_size: int, num_stages: int = NUM_STAGES) -> list[int]:
    """Side length of each stage, lowest first: ``size / 2**(S-1-k)``.

    Raises ValueError when `image_size` is not divisible by ``2**(S-1)``
    (pad or resize such data to a multiple first; see the module docstring).
    """
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    factor = 2 ** (num_stages - 1)
    if image_size < factor or image_size % factor:
        raise ValueError(
            f"image size {image_size} is not divisible by {factor}: {num_stages} stages halve "
            f"the resolution {num_stages - 1} times exactly; pad or resize the images to a "
            f"multiple of {factor} (e.g. {-(-image_size // factor) * factor})")
    return [image_size // 2 ** (num_stages - 1 - k) for k in range(num_stages)]


def level_widths(num_stages: int = NUM_STAGES, width: int = WIDTH) -> list[int]:
    """Feature channels per level (level 0 = lowest resolution)."""
    return [max(width >> i, MIN_WIDTH) for i in range(num_stages)]


class Generator(nn.Module):
    """Stage-k generator: stem + k up blocks + to_image (see module docstring)."""

    def __init__(self, stage: int, resolutions: Sequence[int], *, latent_dim: int = LATENT_DIM,
                 channels: int = 1, width: int = WIDTH) -> None:
        super().__init__()
        if not 0 <= stage < len(resolutions):
            raise ValueError(f"stage {stage} out of range for {len(resolutions)} stages")
        widths = level_widths(len(resolutions), width)
        self.stage, self.latent_dim = stage, latent_dim
        self.base, self.base_width = resolutions[0], widths[0]
        self.resolution = resolutions[stage]
        self.stem = nn.ModuleDict({
            "fc": nn.Linear(latent_dim, widths[0] * self.base ** 2, bias=False),
            "bn": nn.BatchNorm2d(widths[0]),
            "conv": nn.Conv2d(widths[0], widths[0], 3, padding=1, bias=False),
            "bn2": nn.BatchNorm2d(widths[0]),
        })
        self.up = nn.ModuleDict({
            str(resolutions[i]): nn.Sequential(
                nn.ConvTranspose2d(widths[i - 1], widths[i], 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(widths[i]),
                nn.ReLU(inplace=True))
            for i in range(1, stage + 1)})
        self.to_image = nn.ModuleDict({
            str(self.resolution): nn.Conv2d(widths[stage], channels, 3, padding=1)})

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.stem
        x = s["fc"](z).view(z.shape[0], self.base_width, self.base, self.base)
        if _channels_last(s["conv"].weight):
            # The Linear's output is NCHW; a network kept in channels_last
            # would otherwise run BN, ReLU and their backward on mixed
            # layouts (TensorIterator's slow strided path; measured 5-10x
            # slower per op on the 2-core CPU). One small copy fixes it.
            x = x.contiguous(memory_format=torch.channels_last)
        x = torch.relu(s["bn"](x))
        x = torch.relu(s["bn2"](s["conv"](x)))
        for block in self.up.values():
            x = block(x)
        return torch.tanh(self.to_image[str(self.resolution)](x))


class Discriminator(nn.Module):
    """Stage-k discriminator: from_image + k down blocks + head; one logit per image."""

    def __init__(self, stage: int, resolutions: Sequence[int], *, channels: int = 1,
                 width: int = WIDTH) -> None:
        super().__init__()
        if not 0 <= stage < len(resolutions):
            raise ValueError(f"stage {stage} out of range for {len(resolutions)} stages")
        widths = level_widths(len(resolutions), width)
        self.stage = stage
        self.resolution = resolutions[stage]
        self.from_image = nn.ModuleDict({
            str(self.resolution): nn.Conv2d(channels, widths[stage], 3, padding=1)})
        self.down = nn.ModuleDict({
            str(resolutions[i]): nn.Conv2d(widths[i], widths[i - 1], 4, stride=2, padding=1)
            for i in range(stage, 0, -1)})
        self.head = nn.ModuleDict({
            "conv": nn.Conv2d(widths[0], widths[0], 3, padding=1),
            "fc": nn.Linear(widths[0] * resolutions[0] ** 2, 1),
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, r, r] -> logits [B]."""
        act = nn.functional.leaky_relu
        x = act(self.from_image[str(self.resolution)](x), 0.2)
        for conv in self.down.values():
            x = act(conv(x), 0.2)
        x = act(self.head["conv"](x), 0.2)
        fc = self.head["fc"]
        if _channels_last(x):
            # channels_last activations: flatten them in their own (h, w, c)
            # order and permute the Linear's weight (c, h, w) to match - the
            # same dot products, but no NCHW copy of the activations and, in
            # the backward, no NCHW gradient meeting channels_last ones.
            b, c, h, w = x.shape
            weight = fc.weight.view(-1, c, h, w).permute(0, 2, 3, 1).reshape(-1, h * w * c)
            return nn.functional.linear(x.permute(0, 2, 3, 1).reshape(b, -1), weight, fc.bias).squeeze(1)
        return fc(x.flatten(1)).squeeze(1)


def build_generator(stage: int, *, image_size: int = 28, channels: int = 1,
                    latent_dim: int = LATENT_DIM, width: int = WIDTH,
                    num_stages: int = NUM_STAGES) -> Generator:
    """The stage-`stage` generator for `image_size` data (initialised by the
    global torch RNG; seed it, or fork it, for reproducible weights)."""
    return Generator(stage, stage_resolutions(image_size, num_stages), latent_dim=latent_dim,
                     channels=channels, width=width)


def build_discriminator(stage: int, *, image_size: int = 28, channels: int = 1,
                        width: int = WIDTH, num_stages: int = NUM_STAGES) -> Discriminator:
    """The stage-`stage` discriminator for `image_size` data."""
    return Discriminator(stage, stage_resolutions(image_size, num_stages), channels=channels,
                         width=width)


class StageSchedule:
    """Maps epochs to stages from epochs-per-stage (`cfg.resolved_stage_epochs()`).

    Stages with 0 epochs are skipped. Epochs past the planned total stay in
    the last stage that has any epochs.
    """

    def __init__(self, stage_epochs: Sequence[int]) -> None:
        if any(e < 0 for e in stage_epochs):
            raise ValueError(f"stage epochs must be >= 0, got {tuple(stage_epochs)}")
        if not any(stage_epochs):
            raise ValueError(f"no stage has any epochs: {tuple(stage_epochs)}")
        self.stage_epochs = tuple(int(e) for e in stage_epochs)
        self.active = [k for k, e in enumerate(self.stage_epochs) if e > 0]
        self.starts = []  # first epoch of each active stage
        total = 0
        for k in self.active:
            self.starts.append(total)
            total += self.stage_epochs[k]
        self.total_epochs = total

    def stage_for_epoch(self, epoch: int) -> int:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return self.active[bisect.bisect_right(self.starts, epoch) - 1]

    def first_epoch(self, stage: int) -> int:
        """The epoch at which `stage` begins (ValueError for a skipped stage)."""
        if stage not in self.active:
            raise ValueError(f"stage {stage} has no epochs in {self.stage_epochs}")
        return self.starts[self.active.index(stage)]


def stage_for_epoch(epoch: int, stage_epochs: Sequence[int]) -> int:
    """Shorthand for ``StageSchedule(stage_epochs).stage_for_epoch(epoch)``."""
    return StageSchedule(stage_epochs).stage_for_epoch(epoch)
