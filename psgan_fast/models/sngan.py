"""SNGAN baseline (Miyato et al. 2018): spectral normalisation on every layer of D.

Registered twice (`psgan_fast.models.RECIPES`): "sngan" (spectral_norm=True)
and "sngan-nosn" (the paper's timing variant with spectral norm removed;
everything else identical).

Networks: the SNGAN paper's "standard CNN" (its Table 3), scaled to MNIST.
The resolution doubles twice, so ``image_size`` must be divisible by 4
(28 -> 7, 14, 28). Level i (i = 0 lowest resolution) has
``max(width >> i, 16)`` channels: 64, 32, 16 at the default width 64, the
same widths as PS-GAN's last stage, so the time tables compare methods and
not network sizes::

    G   z [128] -> Linear -> [w0, s/4, s/4] -> BN -> ReLU
        -> ConvT 4x4 s2 -> w1 -> BN -> ReLU -> ConvT 4x4 s2 -> w2 -> BN -> ReLU
        -> Conv 3x3 -> channels -> tanh                      (images in [-1, 1])
    D   Conv 3x3 -> w2, Conv 4x4 s2 -> w2,     (at s)
        Conv 3x3 -> w1, Conv 4x4 s2 -> w1,     (at s/2)
        Conv 3x3 -> w0,                        (at s/4)
        Linear -> 1 logit; LeakyReLU(0.1) after every conv; no normalisation
        layer, and spectral norm (psgan_fast.kernels, impl="auto") on every
        conv and the linear when enabled.

Loss and optimiser (the paper's setting "C" with the hinge loss, its best
standard-CNN result): D minimises ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``,
G minimises ``-E[D(G(z))]``; Adam lr 2e-4, betas (0.5, 0.999), n_dis = 1
(the model's defaults, its row of ``psgan_fast.models.RECIPES``).
``cfg.lr`` / ``cfg.betas`` override the optimiser; ``cfg.options.sngan_loss
= "bce"`` selects the non-saturating loss the paper also reports.

One step: z ~ N(0, I) from the global RNG (``Recipe.noise``); ONE G
forward; D updated on one forward over cat(real, fake.detach()) (no
BatchNorm in D, so batching the two changes nothing); then G updated through D(fake) with D's parameters frozen
(no weight gradients wasted on D). With spectral norm each D forward in
training mode runs one power iteration, so a step runs two.

Other options from ``cfg.options`` (``psgan_fast.config.ModelOptions``):
width, latent_dim and channels_last (defaults: the model's row of
``psgan_fast.models.RECIPES``, as for PS-GAN), sn_impl ("auto", "triton" or
"ref"; default ``SN_IMPL``). Networks are initialised from a
private RNG seeded by ``cfg.seed`` (the global stream that z comes from is
not moved), with PyTorch's default initialisers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from psgan_fast.config import TrainConfig
from psgan_fast.kernels import spectral_norm as apply_spectral_norm
from psgan_fast.models import defaults_of, net_settings
from psgan_fast.recipe import GeneratorSet, SinglePairRecipe, StepOutput, place

# Network sizes: the model's row of psgan_fast.models.RECIPES. (channels_last,
# on by default there, measured interleaved on the CPU too - 1 thread, load
# 5.5, CPU ms per 28x28 step, median of 8: fp32 152.3 -> 136.6, bf16 87.9 -> 87.6.)
_DEFAULTS = defaults_of("sngan")
LATENT_DIM, WIDTH, MIN_WIDTH = _DEFAULTS.latent_dim, _DEFAULTS.width, _DEFAULTS.min_width
LEAK = 0.1
LOSSES = ("hinge", "bce")  # ModelOptions.sngan_loss; the first is the default
SN_IMPL = "auto"           # ModelOptions.sn_impl's default (psgan_fast.kernels.spectral_norm)


def _widths(width: int) -> list[int]:
    return [max(width >> i, MIN_WIDTH) for i in range(3)]


def _base(image_size: int) -> int:
    if image_size < 4 or image_size % 4:
        raise ValueError(f"SNGAN's networks double the resolution twice: image size {image_size} "
                         f"must be divisible by 4 (pad or resize, e.g. to "
                         f"{-(-image_size // 4) * 4})")
    return image_size // 4


class Generator(nn.Module):
    """z [B, latent] -> images [B, channels, size, size] in [-1, 1]."""

    def __init__(self, image_size: int = 28, channels: int = 1, latent_dim: int = LATENT_DIM,
                 width: int = WIDTH) -> None:
        super().__init__()
        w0, w1, w2 = _widths(width)
        self.base, self.w0 = _base(image_size), w0
        self.fc = nn.Linear(latent_dim, w0 * self.base ** 2)
        self.bn0 = nn.BatchNorm2d(w0)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(w0, w1, 4, stride=2, padding=1), nn.BatchNorm2d(w1), nn.ReLU(True),
            nn.ConvTranspose2d(w1, w2, 4, stride=2, padding=1), nn.BatchNorm2d(w2), nn.ReLU(True))
        self.to_image = nn.Conv2d(w2, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.w0, self.base, self.base)
        x = self.up(torch.relu(self.bn0(x)))
        return torch.tanh(self.to_image(x))


class Discriminator(nn.Module):
    """Images [B, channels, size, size] -> logits [B]."""

    def __init__(self, image_size: int = 28, channels: int = 1, width: int = WIDTH) -> None:
        super().__init__()
        w0, w1, w2 = _widths(width)
        base = _base(image_size)
        self.convs = nn.ModuleList([
            nn.Conv2d(channels, w2, 3, padding=1),
            nn.Conv2d(w2, w2, 4, stride=2, padding=1),
            nn.Conv2d(w2, w1, 3, padding=1),
            nn.Conv2d(w1, w1, 4, stride=2, padding=1),
            nn.Conv2d(w1, w0, 3, padding=1),
        ])
        self.fc = nn.Linear(w0 * base ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAK)
        return self.fc(x.flatten(1)).squeeze(1)


def add_spectral_norm(module: nn.Module, impl: str = SN_IMPL) -> nn.Module:
    """Spectral norm on every Linear and Conv layer of `module` (in place)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            apply_spectral_norm(m, impl=impl)
    return module


class SNGANRecipe(SinglePairRecipe):
    """SNGAN (``spectral_norm=True``) or the same GAN without it."""

    name = "sngan"

    def __init__(self, cfg: TrainConfig, *, image_size: int, channels: int, steps_per_epoch: int,
                 device: torch.device, spectral_norm: bool = True) -> None:
        if cfg.generators not in (None, 1):
            raise ValueError(f"SNGAN trains one generator, got generators={cfg.generators}")
        self.cfg = cfg
        self.name = "sngan" if spectral_norm else "sngan-nosn"
        self.device = torch.device(device)
        self.image_size, self.channels = image_size, channels
        self.spectral_norm = spectral_norm
        s = net_settings(cfg, self.device.type)
        self._latent = s.latent_dim
        o = cfg.options
        self.sn_impl = o.sn_impl if o.sn_impl is not None else SN_IMPL
        self.loss = o.sngan_loss if o.sngan_loss is not None else LOSSES[0]
        if self.loss not in LOSSES:
            raise ValueError(f"sngan_loss must be one of {LOSSES}, got {self.loss!r}")
        self.lr, self.betas = s.lr, s.betas
        self.autocast = cfg.precision == "bf16"
        self.channels_last = s.channels_last

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            G = Generator(image_size, channels, self._latent, s.width)
            D = Discriminator(image_size, channels, s.width)
            if spectral_norm:  # u vectors drawn here, from the same private RNG
                add_spectral_norm(D, self.sn_impl)
        self.G = place(G, self.device, self.channels_last)
        self.D = place(D, self.device, self.channels_last)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=self.lr, betas=self.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=self.lr, betas=self.betas)
        self._steps = 0
        self._begun = False

    @classmethod
    def build_generators(cls, cfg: TrainConfig, *, image_size: int, channels: int, steps_per_epoch: int,
                         device: torch.device, epoch: int, state: dict[str, Any], **kwargs: Any) -> GeneratorSet:
        device = torch.device(device)
        s = net_settings(cfg, device.type)
        with torch.random.fork_rng(devices=[]):  # as the recipe builds G, before D
            torch.manual_seed(cfg.seed)
            G = Generator(image_size, channels, s.latent_dim, s.width)
        return GeneratorSet([place(G, device, s.channels_last)], latent_dim=s.latent_dim, resolution=image_size,
                            device=device, autocast=cfg.precision == "bf16")

    # -- the contract ------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self._latent

    def resolution(self) -> int:
        return self.image_size

    def begin_epoch(self, epoch: int) -> list[str]:
        if self._begun:
            return []
        self._begun = True
        g = sum(p.numel() for p in self.G.parameters())
        d = sum(p.numel() for p in self.D.parameters())
        sn = f"spectral norm on every D layer (impl={self.sn_impl})" if self.spectral_norm \
            else "no spectral norm"
        return [f"{self.name}: {self.image_size}x{self.image_size}, G {g:,} params, D {d:,} params, "
                f"{sn}, {self.loss} loss, Adam lr={self.lr:g} betas={self.betas}"]

    def step(self, real: torch.Tensor) -> StepOutput:
        real = real.to(self.device, non_blocking=True)
        if real.shape[-2:] != (self.image_size, self.image_size):
            real = F.interpolate(real, size=(self.image_size, self.image_size), mode="area")
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        batch = real.shape[0]
        z = self.noise(batch, self._latent, device=self.device)
        amp = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

        with torch.autocast(**amp):
            fake = self.G(z)
            logits = self.D(torch.cat([real, fake.detach()])).float()
        d_real, d_fake = logits[:batch], logits[batch:]
        if self.loss == "hinge":
            d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        else:
            d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        self.update(self.opt_d, d_loss)

        with self.d_frozen():
            with torch.autocast(**amp):
                g_logits = self.D(fake).float()
            g_loss = -g_logits.mean() if self.loss == "hinge" else F.softplus(-g_logits).mean()
            self.update(self.opt_g, g_loss)
        self._steps += 1
        return StepOutput(d_loss.detach(), g_loss.detach().reshape(1),
                          {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()})

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> list[torch.Tensor]:
        return [self.eval_images(self.G, z.to(self.device))]

    def state(self) -> dict[str, Any]:
        return {"steps": self._steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self._steps = int(state.get("steps", self._steps))
