"""ProGAN baseline (Karras et al. 2017; docs/DESIGN.md §2): progressive growing in place.

G and D are built whole from the start and grow by switching blocks on:
phase k trains at ``resolutions[k]`` = image_size / 4, / 2, / 1 (7, 14, 28
on MNIST), and phase k lasts ``cfg.resolved_stage_epochs()[k]`` epochs, the
same split as PS-GAN's stages, so the time tables compare like with like.
Phases with 0 epochs are skipped; past the planned epochs training stays in
the last phase.

Fade-in. When phase k > 0 begins, alpha ramps linearly from 0 to 1 over the
first half of the phase, counted in steps (``epochs_k * steps_per_epoch / 2``;
alpha is the value used by the step about to run, ``step_in_phase /
fade_steps``, clipped to 1). G's output is ``(1 - alpha) * up(toRGB_{k-1}(h))
+ alpha * toRGB_k(block_k(h))``; D's features after its new block are blended
the same way with ``fromRGB_{k-1}(down(x))``; the real images are first
area-downsampled to the phase's resolution and, during the fade, blended as
``(1 - alpha) * up(down(x)) + alpha * x`` so that real and fake images go
through the same transition. up = nearest x2, down = 2x2 average. The first
phase that has epochs does not fade (there is nothing to fade from).

Network (the paper's design, widths scaled to MNIST; level i has
``max(width >> i, 16)`` channels, 64/32/16 at the default width)::

    G   pixelnorm(z) -> EqLinear -> [w0, s/4, s/4] -> lrelu, PN -> EqConv3x3 -> lrelu, PN
        blocks k = 1, 2: up x2 -> EqConv3x3 -> lrelu, PN -> EqConv3x3 -> lrelu, PN
        toRGB_k: EqConv1x1 -> channels (linear output)
    D   fromRGB_k: EqConv1x1 -> lrelu
        blocks k = 2, 1: EqConv3x3 -> lrelu -> EqConv3x3 -> lrelu -> avgpool 2x2
        minibatch std -> EqConv3x3 -> lrelu -> EqLinear -> w0 -> lrelu -> EqLinear -> 1

lrelu = LeakyReLU(0.2), PN = pixelwise feature normalisation
``x / sqrt(mean_c(x^2) + 1e-8)``. Equalized learning rate: weights drawn
from N(0, 1), biases 0, and at run time the weight is multiplied by the He
constant ``gain / sqrt(fan_in)`` (gain sqrt(2); 1 for toRGB and D's last
layer). Minibatch standard deviation: the std of every feature at every
position over a group of images (groups of 4 consecutive images, the official
code's default; the largest divisor of the batch <= 4 when 4 does not divide
it), averaged to one value per group and appended as one more feature map.

Loss: WGAN-GP as in the paper: D minimises ``E[D(fake)] - E[D(real)] +
10 * E[(|grad D(x_hat)| - 1)^2] + 0.001 * E[D(real)^2]`` (x_hat uniformly
between real and fake, per image; z and that mixing weight come from
``Recipe.noise``); G minimises ``-E[D(fake)]``; one D step
per G step; Adam lr 1e-3, betas (0.0, 0.99), eps 1e-8 (``cfg.lr`` /
``cfg.betas`` override). As in the official code the Adam state is reset
when the resolution changes: at the start of a phase and when its fade-in
ends. Not reproduced: the exponential moving average of G's weights that the
paper uses for its images, and its 4x4 start (MNIST's halving gives 7x7).

G's output is linear; `generate` clamps it to [-1, 1].

Under torch.compile (the trainer compiles every module on CUDA): alpha
reaches the networks as a 0-d device tensor and the blend is always computed,
so each network compiles once per phase and step kind (see `_fading`), and
the gradient penalty's forward runs eagerly (`set_stance("force_eager")`):
aot_autograd cannot differentiate a compiled graph twice. Checked on the CPU:
compiled and eager steps agree through all three phases.

Options from ``cfg.options`` (``psgan_fast.config.ModelOptions``): width,
latent_dim and channels_last (defaults: the model's row of
``psgan_fast.models.RECIPES``), mbstd_group (default ``MBSTD_GROUP``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from psgan_fast.config import TrainConfig
from psgan_fast.models import defaults_of, net_settings
from psgan_fast.recipe import GeneratorSet, SinglePairRecipe, StepOutput, place

ADAM_EPS = 1e-8
GP_LAMBDA = 10.0
EPS_DRIFT = 1e-3
# Network sizes, lr and betas: the model's row of psgan_fast.models.RECIPES.
# (channels_last, on by default there, measured interleaved on the CPU too - 1
# thread, load 5.5, CPU ms per 28x28 step after the fade, median of 8: fp32
# 630.6 -> 568.8, bf16 418.3 -> 345.3.)
_DEFAULTS = defaults_of("progan")
LATENT_DIM, WIDTH, MIN_WIDTH = _DEFAULTS.latent_dim, _DEFAULTS.width, _DEFAULTS.min_width
LEAK = 0.2
MBSTD_GROUP = 4  # ModelOptions.mbstd_group's default
NUM_PHASES = 3


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

class EqualizedConv2d(nn.Module):
    """Conv2d whose N(0, 1) weight is scaled at run time by gain / sqrt(fan_in)."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int = 0,
                 gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Linear whose N(0, 1) weight is scaled at run time by gain / sqrt(fan_in)."""

    def __init__(self, fin: int, fout: int, gain: float = math.sqrt(2)) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fout, fin))
        self.bias = nn.Parameter(torch.zeros(fout))
        self.scale = gain / math.sqrt(fin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each pixel's feature vector (dim 1) to unit root-mean-square."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def _group_size(batch: int, group: int) -> int:
    """The largest divisor of `batch` that is <= `group`."""
    g = max(1, min(group, batch))
    while batch % g:
        g -= 1
    return g


def minibatch_std(x: torch.Tensor, group: int = MBSTD_GROUP) -> torch.Tensor:
    """Append one feature map: per group of consecutive images, the std over the
    group of every feature at every position, averaged over features and positions."""
    b, c, h, w = x.shape
    g = _group_size(b, group)
    y = x.float().view(b // g, g, c, h, w)
    std = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1).add(1e-8).sqrt()
    s = std.mean(dim=(1, 2, 3)).to(x.dtype)  # [b // g]
    s = s.view(-1, 1, 1, 1, 1).expand(b // g, g, 1, h, w).reshape(b, 1, h, w)
    return torch.cat([x, s], dim=1)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAK)


Alpha = Union[float, torch.Tensor]


def _blend(old: torch.Tensor, new: torch.Tensor, alpha: Alpha) -> torch.Tensor:
    """(1 - alpha) * old + alpha * new, alpha a float or a 0-d tensor."""
    return old + (new - old) * alpha


def _fading(alpha: Alpha, fade: Optional[bool]) -> bool:
    """Whether the previous resolution's path must be computed.

    Under torch.compile it always is, and neither `alpha` nor `fade` is looked
    at: a Python branch on them would be a guard, and dynamo specialises float
    arguments at 0.0 and 1.0, so the compiled variants (phase x fading x
    D-step/G-step) would pass its recompile limit of 8. The recipe therefore
    passes alpha as a 0-d device tensor (blending with weight 1 gives the new
    path up to rounding) and says with `fade` whether the eager path may skip
    the blend. Eagerly, a float alpha >= 1 or ``fade=False`` skips it.
    """
    if torch.compiler.is_compiling():
        return True
    if fade is not None:
        return fade
    return not (isinstance(alpha, (int, float)) and alpha >= 1.0)



def _widths(width: int) -> list[int]:
    return [max(width >> i, MIN_WIDTH) for i in range(NUM_PHASES)]


def phase_resolutions(image_size: int) -> list[int]:
    """image_size / 4, / 2, / 1 (ValueError unless divisible by 4)."""
    if image_size < 4 or image_size % 4:
        raise ValueError(f"ProGAN doubles the resolution twice: image size {image_size} must be "
                         f"divisible by 4 (pad or resize, e.g. to {-(-image_size // 4) * 4})")
    return [image_size // 4, image_size // 2, image_size]


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------

class _GBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = EqualizedConv2d(cin, cout, 3, padding=1)
        self.conv2 = EqualizedConv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(_lrelu(self.conv1(_upsample(x))))
        return pixel_norm(_lrelu(self.conv2(x)))


class _DBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = EqualizedConv2d(cin, cin, 3, padding=1)
        self.conv2 = EqualizedConv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _downsample(_lrelu(self.conv2(_lrelu(self.conv1(x)))))


class Generator(nn.Module):
    """z -> images at phase k's resolution (linear output), fading in with alpha."""

    def __init__(self, image_size: int = 28, channels: int = 1, latent_dim: int = LATENT_DIM,
                 width: int = WIDTH) -> None:
        super().__init__()
        w = _widths(width)
        self.base = phase_resolutions(image_size)[0]
        self.w0 = w[0]
        self.fc = EqualizedLinear(latent_dim, w[0] * self.base ** 2)
        self.conv = EqualizedConv2d(w[0], w[0], 3, padding=1)
        self.blocks = nn.ModuleList([_GBlock(w[i - 1], w[i]) for i in range(1, NUM_PHASES)])
        self.to_rgb = nn.ModuleList([EqualizedConv2d(w[i], channels, 1, gain=1.0)
                                     for i in range(NUM_PHASES)])

    def forward(self, z: torch.Tensor, phase: int = NUM_PHASES - 1, alpha: Alpha = 1.0,
                fade: Optional[bool] = None) -> torch.Tensor:
        x = _lrelu(self.fc(pixel_norm(z))).view(z.shape[0], self.w0, self.base, self.base)
        x = pixel_norm(_lrelu(self.conv(pixel_norm(x))))
        for block in self.blocks[:max(phase - 1, 0)]:
            x = block(x)
        if phase == 0:
            return self.to_rgb[0](x)
        new = self.to_rgb[phase](self.blocks[phase - 1](x))
        if not _fading(alpha, fade):
            return new
        return _blend(_upsample(self.to_rgb[phase - 1](x)), new, alpha)


class Discriminator(nn.Module):
    """Images at phase k's resolution -> logits [B], fading in with alpha."""

    def __init__(self, image_size: int = 28, channels: int = 1, width: int = WIDTH,
                 mbstd_group: int = MBSTD_GROUP) -> None:
        super().__init__()
        w = _widths(width)
        base = phase_resolutions(image_size)[0]
        self.mbstd_group = mbstd_group
        self.from_rgb = nn.ModuleList([EqualizedConv2d(channels, w[i], 1)
                                       for i in range(NUM_PHASES)])
        # blocks[i - 1] takes level i (resolution r_i, w[i] channels) to level i - 1.
        self.blocks = nn.ModuleList([_DBlock(w[i], w[i - 1]) for i in range(1, NUM_PHASES)])
        self.conv = EqualizedConv2d(w[0] + 1, w[0], 3, padding=1)
        self.fc1 = EqualizedLinear(w[0] * base ** 2, w[0])
        self.fc2 = EqualizedLinear(w[0], 1, gain=1.0)

    def forward(self, x: torch.Tensor, phase: int = NUM_PHASES - 1, alpha: Alpha = 1.0,
                group: Optional[int] = None, fade: Optional[bool] = None) -> torch.Tensor:
        h = _lrelu(self.from_rgb[phase](x))
        if phase > 0:
            h = self.blocks[phase - 1](h)
            if _fading(alpha, fade):
                h = _blend(_lrelu(self.from_rgb[phase - 1](_downsample(x))), h, alpha)
            for i in range(phase - 1, 0, -1):
                h = self.blocks[i - 1](h)
        h = minibatch_std(h, self.mbstd_group if group is None else group)
        h = _lrelu(self.conv(h))
        h = _lrelu(self.fc1(h.flatten(1)))
        return self.fc2(h).squeeze(1)


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
    """WGAN-GP: E[(|grad critic(x_hat)|_2 - 1)^2], x_hat = real + eps (fake - real),
    eps ~ U(0, 1) per image unless given [B, 1, 1, 1]. Differentiable (create_graph)."""
    if eps is None:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = torch.lerp(real.detach(), fake.detach(), eps).requires_grad_(True)
    out = critic(x_hat).float()
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).square().mean()


# ----------------------------------------------------------------------------------------------
# Recipe
# ----------------------------------------------------------------------------------------------

class _Phases:
    """ProGAN's phase schedule for a config (the recipe's, and its
    `build_generators`'): phase k lasts ``phase_epochs[k]`` epochs of
    `steps_per_epoch` steps; phases with 0 epochs are skipped."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.phase_epochs = tuple(int(e) for e in cfg.resolved_stage_epochs(NUM_PHASES))
        if len(self.phase_epochs) != NUM_PHASES or any(e < 0 for e in self.phase_epochs) \
                or not any(self.phase_epochs):
            raise ValueError(f"ProGAN needs {NUM_PHASES} phase lengths with some epochs, "
                             f"got {self.phase_epochs}")
        self.active = [k for k, e in enumerate(self.phase_epochs) if e > 0]
        self.starts = {k: sum(self.phase_epochs[:k]) for k in self.active}

    def phase_for_epoch(self, epoch: int) -> int:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return [k for k in self.active if self.starts[k] <= epoch][-1]

    def start(self, epoch: int) -> tuple[int, int]:
        """(phase, steps into it) at the start of `epoch`."""
        phase = self.phase_for_epoch(epoch)
        return phase, (epoch - self.starts[phase]) * self.steps_per_epoch

    def checked(self, phase: int) -> int:
        """A phase read from a checkpoint, which must have epochs."""
        if phase not in self.active:
            raise ValueError(f"checkpoint phase {phase} has no epochs in {self.phase_epochs}")
        return phase

    def fade_steps(self, phase: int) -> float:
        """Steps of phase's fade-in (0 for the first active phase: no fade)."""
        if phase == self.active[0]:
            return 0.0
        return self.phase_epochs[phase] * self.steps_per_epoch / 2

    def alpha(self, phase: int, step_in_phase: int) -> float:
        """The fade-in alpha of the step `step_in_phase` steps into `phase`."""
        fade = self.fade_steps(phase)
        return 1.0 if fade <= 0 else min(1.0, step_in_phase / fade)


class ProGANRecipe(SinglePairRecipe):
    name = "progan"

    def __init__(self, cfg: TrainConfig, *, image_size: int, channels: int, steps_per_epoch: int,
                 device: torch.device) -> None:
        if cfg.generators not in (None, 1):
            raise ValueError(f"ProGAN trains one generator, got generators={cfg.generators}")
        self.cfg = cfg
        self.device = torch.device(device)
        self.image_size, self.channels = image_size, channels
        self.resolutions = phase_resolutions(image_size)
        self.phases = _Phases(cfg, steps_per_epoch)
        s = net_settings(cfg, self.device.type)
        self._latent = s.latent_dim
        self.lr, self.betas = s.lr, s.betas
        self.autocast = cfg.precision == "bf16"
        self.channels_last = s.channels_last
        mbstd_group = cfg.options.mbstd_group if cfg.options.mbstd_group is not None else MBSTD_GROUP

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            G = Generator(image_size, channels, self._latent, s.width)
            D = Discriminator(image_size, channels, s.width, mbstd_group)
        self.G = place(G, self.device, self.channels_last)
        self.D = place(D, self.device, self.channels_last)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=self.lr, betas=self.betas,
                                      eps=ADAM_EPS)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=self.lr, betas=self.betas,
                                      eps=ADAM_EPS)
        self._alpha_t = torch.ones((), device=self.device)
        self._phase = self.phases.active[0]
        self._step_in_phase = 0
        self._steps = 0

    @classmethod
    def build_generators(cls, cfg: TrainConfig, *, image_size: int, channels: int, steps_per_epoch: int,
                         device: torch.device, epoch: int, state: dict[str, Any], **kwargs: Any) -> GeneratorSet:
        device = torch.device(device)
        s = net_settings(cfg, device.type)
        phases = _Phases(cfg, steps_per_epoch)
        phase, step_in_phase = phases.start(epoch)       # what begin_epoch(epoch) sets,
        if "phase" in state:                             # then load_state(state)
            phase = phases.checked(int(state["phase"]))
        alpha = phases.alpha(phase, int(state.get("step_in_phase", step_in_phase)))
        with torch.random.fork_rng(devices=[]):  # as the recipe builds G, before D
            torch.manual_seed(cfg.seed)
            G = Generator(image_size, channels, s.latent_dim, s.width)
        return GeneratorSet([place(G, device, s.channels_last)], latent_dim=s.latent_dim,
                            resolution=phase_resolutions(image_size)[phase], device=device,
                            autocast=cfg.precision == "bf16",
                            args=(phase, torch.ones((), device=device).fill_(alpha)), kwargs={"fade": alpha < 1.0})

    # -- schedule ----------------------------------------------------------
    @property
    def alpha(self) -> float:
        """The fade-in alpha the next step uses."""
        return self.phases.alpha(self._phase, self._step_in_phase)

    def _reset_optimizers(self) -> None:
        for opt in (self.opt_g, self.opt_d):
            opt.state.clear()

    # -- the contract ------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self._latent

    def resolution(self) -> int:
        return self.resolutions[self._phase]

    def stage(self) -> int:
        return self._phase

    def begin_epoch(self, epoch: int) -> list[str]:
        phase, step_in_phase = self.phases.start(epoch)
        fresh = self._steps == 0 and self._step_in_phase == 0
        if phase == self._phase and not fresh:
            return []
        changed = phase != self._phase
        self._phase = phase
        # On a fresh recipe resuming mid-phase this puts alpha where the run had
        # it; load_state then restores the exact counter.
        self._step_in_phase = step_in_phase
        if changed:
            self._reset_optimizers()
        r = self.resolution()
        fade = self.phases.fade_steps(phase)
        how = f"fade-in over {fade:g} steps" if fade else "no fade-in"
        return [f"progan phase {phase}: {r}x{r}, {self.phases.phase_epochs[phase]} epoch(s), {how}, "
                f"alpha {self.alpha:.3f}"]

    def _prepare_real(self, real: torch.Tensor, alpha: float) -> torch.Tensor:
        r = self.resolution()
        if real.shape[-2:] != (r, r):
            real = F.interpolate(real, size=(r, r), mode="area")
        if alpha < 1.0:
            real = torch.lerp(_upsample(_downsample(real)), real, alpha)
        return real

    def step(self, real: torch.Tensor) -> StepOutput:
        phase, alpha = self._phase, self.alpha
        real = self._prepare_real(real.to(self.device, non_blocking=True), alpha)
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        batch = real.shape[0]
        group = _group_size(batch, self.D.mbstd_group)  # groups never mix real and fake
        z = self.noise(batch, self._latent, device=self.device)
        amp = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

        fade = alpha < 1.0
        alpha_t = self._alpha_t.fill_(alpha)  # a tensor: see _fading

        def critic(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(**amp):
                return self.D(x, phase, alpha_t, group, fade=fade).float()

        with torch.autocast(**amp):
            fake = self.G(z, phase, alpha_t, fade=fade)
        logits = critic(torch.cat([real, fake.detach()]))
        d_real, d_fake = logits[:batch], logits[batch:]
        eps = self.noise(batch, 1, 1, 1, device=self.device, kind="uniform").to(real.dtype)
        # aot_autograd cannot differentiate twice: if D was torch.compile'd (the
        # trainer does on CUDA), the penalty's forward runs it eagerly.
        with torch.compiler.set_stance("force_eager"):
            gp = gradient_penalty(critic, real, fake.detach().to(real.dtype), eps)
        drift = d_real.square().mean()
        d_loss = d_fake.mean() - d_real.mean() + GP_LAMBDA * gp + EPS_DRIFT * drift
        self.update(self.opt_d, d_loss)

        with self.d_frozen():
            g_loss = -critic(fake).mean()
            self.update(self.opt_g, g_loss)

        self._steps += 1
        self._step_in_phase += 1
        if alpha < 1.0 <= self.alpha:  # the fade-in just ended: the resolution is now r_k
            self._reset_optimizers()
        extras = {"gp": gp.detach(), "drift": drift.detach(),
                  "wdist": (d_real.mean() - d_fake.mean()).detach(),
                  "alpha": torch.tensor(alpha)}
        return StepOutput(d_loss.detach(), g_loss.detach().reshape(1), extras)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> list[torch.Tensor]:
        alpha = self.alpha
        return [self.eval_images(self.G, z.to(self.device), self._phase, self._alpha_t.fill_(alpha),
                                 fade=alpha < 1.0)]

    def state(self) -> dict[str, Any]:
        return {"phase": self._phase, "step_in_phase": self._step_in_phase,
                "steps": self._steps, "alpha": self.alpha}

    def load_state(self, state: dict[str, Any]) -> None:
        if "phase" in state:
            self._phase = self.phases.checked(int(state["phase"]))
        self._step_in_phase = int(state.get("step_in_phase", self._step_in_phase))
        self._steps = int(state.get("steps", self._steps))
