"""PS-GAN's stage networks and the stage schedule (paper §3.2, docs/DESIGN.md §3).

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

With ``skips=True`` (the recommended PS-GAN, docs/DESIGN.md §3 "Stages")
the generator has a ``to_image.<r>`` at every level, upsampled and summed
before the tanh, and the discriminator a ``from_image.<r>`` at every level
fed the area-downsampled image; the new level's ``to_image`` (G) and top
``down`` block (D) start at zero, so a switch continues the previous stage.

Sizes at the default widths (latent 128, width 64, MNIST): the generator
has 0.44M / 0.47M / 0.48M parameters at stages 0/1/2 (the stem's Linear
dominates), the discriminator 0.04M / 0.07M / 0.08M.
"""

from __future__ import annotations

import bisect
from typing import Optional, Sequence

import torch
from torch import nn

from psgan_fast.models import defaults_of
from psgan_fast.registry import D_ARCHS
from psgan_fast.routed import GradRoute, routed_conv2d, routed_linear

_DEFAULTS = defaults_of("psgan")  # network sizes: the model's row of psgan_fast.models.RECIPES
LATENT_DIM, WIDTH, MIN_WIDTH = _DEFAULTS.latent_dim, _DEFAULTS.width, _DEFAULTS.min_width
NUM_STAGES = 3
SLOPE = 0.2  # the discriminator's LeakyReLU slope


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
                 channels: int = 1, width: int = WIDTH, skips: bool = False) -> None:
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
        # skips: an image output at every level, each upsampled (nearest) and
        # summed before the tanh (the "skip" generator of StyleGAN2, Karras et
        # al. 2020). The outputs of the levels below this stage keep their
        # names, so Algorithm 1 carries them over, and the new level's output
        # starts at zero: right after a switch the generator draws the
        # previous stage's images, upsampled, instead of a fresh layer's noise.
        levels = range(stage + 1) if skips else (stage,)
        self.skips = skips
        self.to_image = nn.ModuleDict({
            str(resolutions[i]): nn.Conv2d(widths[i], channels, 3, padding=1) for i in levels})
        if skips and stage > 0:
            top = self.to_image[str(self.resolution)]
            nn.init.zeros_(top.weight)
            nn.init.zeros_(top.bias)

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
        if not self.skips:
            for block in self.up.values():
                x = block(x)
            return torch.tanh(self.to_image[str(self.resolution)](x))
        out = self.to_image[str(self.base)](x)
        for res, block in self.up.items():
            x = block(x)
            out = nn.functional.interpolate(out, scale_factor=2, mode="nearest") + self.to_image[res](x)
        return torch.tanh(out)


class Discriminator(nn.Module):
    """Stage-k discriminator: from_image + k down blocks + head; one logit per image."""

    def __init__(self, stage: int, resolutions: Sequence[int], *, channels: int = 1,
                 width: int = WIDTH, arch: str = "paper", skips: bool = False) -> None:
        super().__init__()
        if not 0 <= stage < len(resolutions):
            raise ValueError(f"stage {stage} out of range for {len(resolutions)} stages")
        if arch not in D_ARCHS:
            raise ValueError(f"unknown discriminator architecture {arch!r}; choose from {', '.join(D_ARCHS)}")
        widths = level_widths(len(resolutions), width)
        self.stage = stage
        self.resolution = resolutions[stage]
        # skips: the image, area-downsampled, enters at every level through its
        # own from_image (StyleGAN2's "skip" discriminator, added to the
        # features there); the levels below this stage keep their names and
        # the new top level's down block starts at zero, so right after a
        # switch D scores an image as the previous stage's D scored it
        # downsampled.
        self.skips = skips
        levels = range(stage, -1, -1) if skips else (stage,)
        self.from_image = nn.ModuleDict({
            str(resolutions[i]): nn.Conv2d(channels, widths[i], 3, padding=1) for i in levels})
        # "deep": a Conv3x3 at each level before it is halved (SNGAN's
        # standard-CNN D has one there); named by resolution, so the levels a
        # stage switch keeps transfer under Algorithm 1 like the others.
        self.mid = nn.ModuleDict({
            str(resolutions[i]): nn.Conv2d(widths[i], widths[i], 3, padding=1)
            for i in range(stage, 0, -1)} if arch == "deep" else {})
        self.down = nn.ModuleDict({
            str(resolutions[i]): nn.Conv2d(widths[i], widths[i - 1], 4, stride=2, padding=1)
            for i in range(stage, 0, -1)})
        self.head = nn.ModuleDict({
            "conv": nn.Conv2d(widths[0], widths[0], 3, padding=1),
            "fc": nn.Linear(widths[0] * resolutions[0] ** 2, 1),
        })
        if skips and stage > 0:
            top = self.down[str(self.resolution)]
            nn.init.zeros_(top.weight)
            nn.init.zeros_(top.bias)

    def forward(self, x: torch.Tensor, route: Optional[GradRoute] = None,
                keep: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """Images [B, C, r, r] -> logits [B].

        `route` (a `psgan_fast.routed.GradRoute`) selects the routed backward:
        the same forward values, but a backward that serves Algorithm 2's two
        losses in one pass (`psgan_fast.routed`). Only PSGANRecipe.step uses it.
        `keep`, a dict, receives each LeakyReLU's input by layer name ("from",
        "mid.<r>", "down.<r>", "from.<r>", "head"), for `input_gradient`."""

        def conv(name: str, m: nn.Conv2d, h: torch.Tensor, first: bool = False) -> torch.Tensor:
            out = m(h) if route is None else routed_conv2d(m, h, route, first)
            if keep is not None:
                keep[name] = out
            return nn.functional.leaky_relu(out, SLOPE)

        image = x
        x = conv("from", self.from_image[str(self.resolution)], x, first=True)
        for res, m in self.down.items():
            if res in self.mid:
                x = conv(f"mid.{res}", self.mid[res], x)
            x = conv(f"down.{res}", m, x)
            if self.skips:  # the image enters again at the level below (see __init__)
                image = nn.functional.avg_pool2d(image, 2)
                key = str(image.shape[-1])
                x = x + conv(f"from.{key}", self.from_image[key], image, first=True)
        x = conv("head", self.head["conv"], x)
        fc = self.head["fc"]
        weight = fc.weight
        if _channels_last(x):
            # channels_last activations: flatten them in their own (h, w, c)
            # order and permute the Linear's weight (c, h, w) to match - the
            # same dot products, but no NCHW copy of the activations and, in
            # the backward, no NCHW gradient meeting channels_last ones.
            b, c, h, w = x.shape
            weight = weight.view(-1, c, h, w).permute(0, 2, 3, 1).reshape(-1, h * w * c)
            flat = x.permute(0, 2, 3, 1).reshape(b, -1)
        else:
            flat = x.flatten(1)
        if route is None:
            return nn.functional.linear(flat, weight, fc.bias).squeeze(1)
        return routed_linear(flat, weight, fc.bias, route).squeeze(1)

    def input_gradient(self, x: torch.Tensor, pre: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """d(sum of the logits)/dx for images `x` [B, C, r, r]: each image's
        gradient of its own logit (D scores every image alone), differentiable
        in D's weights - what R1/R2 penalise.

        The same values as ``torch.autograd.grad(D(x).sum(), x,
        create_graph=True)`` (tests/test_psgan_variants.py checks them and the
        penalty's weight gradients), computed as D's backward written out: a
        forward without autograd keeps each LeakyReLU's pre-activation, then
        the chain runs back with ``conv_transpose2d`` of the gradient by each
        layer's weight, every slope taken as the constant it is almost
        everywhere. Autograd's own route differentiates its convolution
        backward by a second-order rule that, on the CPU, computes the weight
        gradient as a convolution with the batch as channels and the feature
        map as the kernel (half of the penalty pass in a profile); the
        written-out chain's weight gradients are ordinary convolution
        backward. The pre-activations come from `forward` itself (`keep`);
        only their signs matter, so a caller that has just run `forward` over
        the same images with the same weights may pass what it kept as `pre`
        (rows in the order of `x`) and save the forward.
        Measured in `psgan_fast.bench.cost` ("R1/R2 by autograd")."""
        if pre is None:
            pre = {}  # each LeakyReLU's input, by layer name
            with torch.no_grad():
                self.forward(x, keep=pre)

        def back(g: torch.Tensor, name: str, m: nn.Conv2d) -> torch.Tensor:
            g = torch.ops.aten.leaky_relu_backward(g, pre[name], SLOPE, False)
            return nn.functional.conv_transpose2d(g, m.weight, stride=m.stride, padding=m.padding)

        b, c = x.shape[0], self.head["conv"].out_channels
        r = pre["head"].shape[-1]
        g = self.head["fc"].weight.view(1, c, r, r).expand(b, c, r, r)
        if pre["head"].is_contiguous(memory_format=torch.channels_last):
            g = g.contiguous(memory_format=torch.channels_last)
        g = back(g, "head", self.head["conv"])
        image_grad = None  # the gradient reaching the downsampled images, at the current level
        for res in reversed(list(self.down)):
            if self.skips:
                key = str(int(res) // 2)
                gi = back(g, f"from.{key}", self.from_image[key])
                image_grad = gi if image_grad is None else image_grad + gi
                # avg_pool2d(2)'s adjoint: each input pixel gets a quarter of its output's gradient
                image_grad = nn.functional.interpolate(image_grad, scale_factor=2, mode="nearest") * 0.25
            g = back(g, f"down.{res}", self.down[res])
            if res in self.mid:
                g = back(g, f"mid.{res}", self.mid[res])
        g = back(g, "from", self.from_image[str(self.resolution)])
        return g if image_grad is None else g + image_grad


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
