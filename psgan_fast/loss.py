"""PS-GAN's loss update (paper §3.4, Algorithm 2) for N generators, its
variants, and a non-saturating BCE loss for ablation (`--loss bce`).

`LOSSES` (defined in the torch-free `psgan_fast.registry`, re-exported
here) registers each update rule as a `LossSpec`: the name of its loss
function in this module and its default knobs (gates, R1/R2, update order, D architecture, skip stage
networks, Adam betas). "ps" is Algorithm 2 read literally (below); "ps-soft" lets D
learn from the groups it got right too; "rps" drops both gates (the N+1-way
relativistic softmax); "rps-r1r2-skips" adds R1/R2 and skip stage
networks (the default until 2026-12-02); "rps-r1r2-gskips" keeps the
skips in G only and takes Adam betas (0, 0.99); "rps-r1r2-gskips-s118"
is that rule with 10 / 10 / 80% of the epochs at 7 / 14 / 28 px, and
"rps-r1r2-gskips-s118-r8" that with R1/R2 every 8 steps instead of 4,
"rps-r1r2-gskips-s118-r8-ms" that plus each generator's mode-seeking
term (`mode_seeking_loss`) at lambda 0.1, "...-ms0.3" at 0.3, and
"...-ms0.3-ink1" that with a single generator's distance divided by the
ink (`--mode-seek-dist l1-ink-n1`); the recommended default is
`psgan_fast.config.RECOMMENDED_LOSS`
(docs/DESIGN.md §3 has the ablation behind each).

Algorithm 2 for any N (docs/DESIGN.md §3). The discriminator gives one logit per
image. A *group* is one real image and one fake from each generator; the
softmax over its N+1 logits (index 0 = real, index k = generator k's fake)
says which image D believes is real, and D's classification is the image
with the largest logit. Ties go against D: D is right only when the real
logit is strictly the largest; otherwise it picked the first fake with the
largest logit. Per group:

* D is updated, with cross-entropy towards index 0, only where it was wrong;
* generator k is updated, with ``-log softmax(logits)[k]`` (minus the log of
  the probability that its fake is the real one), only where D did not pick
  generator k's fake; the generators' losses are averaged.

For N = 2 these are exactly the paper's three cases: D picks Gen1's fake ->
D and Gen2 learn; D picks Gen2's fake -> D and Gen1 learn; D picks x -> Gen1
and Gen2 learn (averaged). For N = 1: D learns from its mistakes, G from its
failures.

Normalisation. Every masked per-group loss is summed and divided by the
*whole* batch size B (not by the number of groups in the case), so a
group's weight is 1/B whatever the case mix: the loss magnitude does not
jump when only a few groups fall in a case, and a batch where D is always
right gives D exactly zero gradient.

Gradient routing. The losses are pure functions of the logits. Inside
generator k's loss the logits of the real image and of the other
generators' fakes are detached, so generator k's loss can reach only its own
fake (through D) - without that, ``-log p_k`` would also push every other
generator's fake towards "fake". D's loss needs gradient to D's parameters
only. The recipe runs ONE forward of D over ``cat(real, fake_1..fake_N)``
with the fakes not detached (as Algorithm 2 reads: one classification
decides every update) and `LossOutput.backward` then runs two backward
passes restricted with ``inputs=``: D's loss into D's parameters, the
averaged generator loss into the generators' parameters. Both use D as it
was before this step's update (a simultaneous update); the optimiser steps
come after both backward passes. This saves the second forward of D over the
N*B fakes that the usual alternating D-then-G step needs.

`GradRoute` / `routed_backward` (`psgan_fast.routed`, with D's routed
layers; re-exported here) give the same two gradients with ONE backward
pass through D (the recipe's default): D scores each image alone, so both
losses' gradients at any layer of D are the same per-image "unit" gradient
times a per-image scalar (dL/dlogit_i); D's routed layers weight their
parameter gradients by d_loss's scalars and the fakes' gradients by g_loss's.

Optimisers see zero gradient, not a skipped step, for a network that no
group selects in a batch; Adam's momentum therefore still moves it a little
(by a step that halves every step with beta1 = 0.5). Skipping the step
would need a device sync to read the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.nn.functional as F

# The registry of update rules lives in the torch-free psgan_fast.registry
# (each spec names its function here); re-exported for the loss's users.
from psgan_fast.registry import LOSSES, MODE_SEEK_DISTS, MODE_SEEK_IMAGE_DISTS, LossSpec, get_spec  # noqa: F401
# D's routed single backward (psgan_fast.routed), re-exported: the recipe's
# way to run what LossOutput.backward's two passes compute.
from psgan_fast.routed import GradRoute, routed_backward  # noqa: F401


@dataclass
class LossOutput:
    """d_loss, g_loss: scalars to back-propagate (g_loss = g_losses.mean());
    g_losses: [N] each generator's loss (attached); shares: [N+1] detached,
    the fraction of groups in which D picked index j as real (0 = the real
    image, k = generator k's fake)."""

    d_loss: torch.Tensor
    g_loss: torch.Tensor
    g_losses: torch.Tensor
    shares: torch.Tensor

    def backward(self, d_params: Iterable[torch.Tensor], g_params: Iterable[torch.Tensor]) -> None:
        """Accumulate D's loss into `d_params` only and the averaged
        generator loss into `g_params` only (two backward passes over one
        graph; see the module docstring)."""
        d_params = [p for p in d_params if p.requires_grad]
        g_params = [p for p in g_params if p.requires_grad]
        self.d_loss.backward(inputs=d_params, retain_graph=True)
        self.g_loss.backward(inputs=g_params)


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    if logits.dim() != 2 or logits.shape[0] < 2:
        raise ValueError(f"logits must be [N+1, B] with N >= 1 generators, got {tuple(logits.shape)}")
    return logits.float()


def d_choice(logits: torch.Tensor) -> torch.Tensor:
    """Index [B] of the image D classifies as real in each group (0 = real);
    ties go against the real image (see the module docstring)."""
    fake_best = logits[1:].argmax(0)
    real_wins = logits[0] > logits[1:].amax(0)
    return torch.where(real_wins, torch.zeros_like(fake_best), fake_best + 1)


def _shares(choice: torch.Tensor, n_plus_1: int) -> torch.Tensor:
    return F.one_hot(choice, n_plus_1).float().mean(0).detach()


def ps_loss(logits: torch.Tensor) -> LossOutput:
    """Algorithm 2 on D's logits [N+1, B] (row 0 real, row k generator k):
    `group_loss` with both of the paper's gates (D learns only where it was
    wrong, generator k only where D did not pick its fake)."""
    return group_loss(logits, d_gate=0.0, g_gate=True)


def bce_loss(logits: torch.Tensor) -> LossOutput:
    """Standard non-saturating GAN loss on the same [N+1, B] logits: D's loss
    is BCE(real -> 1) + the mean over generators of BCE(fake_k -> 0);
    generator k's loss is BCE(fake_k -> 1) = softplus(-logit); averaged over
    generators. Every group counts (no masking). `shares` is computed as for
    `ps_loss`, so the logs are comparable."""
    logits = _check_logits(logits)
    n_plus_1 = logits.shape[0]
    d_loss = F.softplus(-logits[0]).mean() + F.softplus(logits[1:]).mean()
    g_losses = F.softplus(-logits[1:]).mean(1)
    return LossOutput(d_loss, g_losses.mean(), g_losses, _shares(d_choice(logits.detach()), n_plus_1))


def group_loss(logits: torch.Tensor, *, d_gate: float = 0.0, g_gate: bool = True) -> LossOutput:
    """Algorithm 2's N+1-way softmax with soft gates (`ps_loss` is this with
    d_gate = 0, g_gate = True; `ps-soft` and `rps` set them otherwise).

    D:  sum_i w_i * CE_i / B,   CE_i = logsumexp_j(l_ji) - l_0i,
        w_i = 1 where D was wrong in group i, `d_gate` (lambda) where right.
    G_k: sum_i v_ki * (logsumexp_j(l_ji) - l_ki) / B with only row k live,
        v_ki = 0 where D picked generator k's fake if `g_gate`, else 1.

    lambda = 1 with g_gate off is the plain N+1-way relativistic softmax
    loss; at N = 1 it is softplus(l_fake - l_real) for D and
    softplus(l_real - l_fake) for G, the relativistic pairing loss RpGAN
    (Jolicoeur-Martineau 2019) that R3GAN (Huang et al. 2024) regularises
    with R1 and R2."""
    logits = _check_logits(logits)
    n_plus_1, batch = logits.shape
    choice = d_choice(logits.detach())
    d_wrong = (choice != 0).float()
    d_w = d_wrong + float(d_gate) * (1.0 - d_wrong)
    d_loss = (d_w * (torch.logsumexp(logits, 0) - logits[0])).sum() / batch
    frozen = logits.detach()
    g_losses = []
    for k in range(1, n_plus_1):
        live = torch.cat([frozen[:k], logits[k:k + 1], frozen[k + 1:]])
        nll = torch.logsumexp(live, 0) - logits[k]
        w = (choice != k).float() if g_gate else torch.ones_like(nll)
        g_losses.append((w * nll).sum() / batch)
    g_losses_t = torch.stack(g_losses)
    return LossOutput(d_loss, g_losses_t.mean(), g_losses_t, _shares(choice, n_plus_1))


def gradient_sq_norms(disc, images: torch.Tensor, *, chain: bool = False,
                      pre: Optional[dict] = None) -> torch.Tensor:
    """||grad_x D(x)||^2 for each image of the batch `images` ([B] float32),
    differentiable in D's parameters (double backward). D scores each image
    alone (no normalisation), so one pass over a concatenated batch gives
    each part's norms exactly as separate passes would: the recipe runs R1's
    real images and R2's fakes as ONE pass. Runs its own pass of D without
    autocast (plain fp32; the routed single backward does not cover input
    gradients of gradients).

    chain=False (the reference): autograd's gradient with create_graph.
    chain=True: D's own written-out backward, ``disc.input_gradient(x)``
    (`psgan_fast.stages.Discriminator`): the same values, about half the
    cost of the double backward on the CPU (docs/results/cost.md); `pre`,
    the pre-activations a forward of D over `images` kept (D.forward's
    `keep`), spares it its own forward."""
    dtype = next(disc.parameters()).dtype  # fakes made under bf16 autocast come back to D's dtype
    x = images.detach().to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        if chain:
            grad = disc.input_gradient(x) if pre is None else disc.input_gradient(x, pre)
        else:
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(disc(x).sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1)


def gradient_penalty(disc, images: torch.Tensor) -> torch.Tensor:
    """E_x ||grad_x D(x)||^2 over the batch `images` (R1 on real images, R2
    on fakes; Mescheder et al. 2018, R3GAN). Differentiable in D's
    parameters: the caller adds gamma/2 times it to D's loss."""
    return gradient_sq_norms(disc, images).mean()


MODE_SEEK_EPS = 1e-5  # MSGAN's: keeps the term finite for a generator that ignores its noise


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor, dist: str = MODE_SEEK_IMAGE_DISTS[0]) -> torch.Tensor:
    """The mode-seeking term of MSGAN (Mao et al., CVPR 2019, eq. 3) for one
    generator's batch: ``1 / (d(G(z1), G(z2)) / mean|z1 - z2| + eps)``,
    the pairs being rows i and i + B/2 of `fake` [B, ...] and of its noise
    `z` [B, ...] (B even; an odd last row is left out). Minimising it moves
    a generator's images apart as far as their noise inputs are apart, so a
    generator that draws one digit for every z pays for it however well that
    digit fools D; it is a function of the generator's outputs alone (no D,
    no other generator). Computed in fp32.

    `dist` (registry.MODE_SEEK_IMAGE_DISTS): "l1" is MSGAN's d = mean|G(z1) -
    G(z2)|. That distance is bounded by the pair's ink (two images with
    disjoint strokes are as far apart as they have ink), so it rewards
    ink-heavy digits and draws fewer thin ones. "l1-ink" divides it by the
    pair's ink, mean(G(z1) + G(z2) + 2) for images in [-1, 1] (ink (x + 1) /
    2): d is then 1 for disjoint strokes and 0 for equal images whatever
    their ink, a Dice-like distance over the batch. (A model picks one by
    its number of generators: registry.mode_seek_image_dist.)"""
    if dist not in MODE_SEEK_IMAGE_DISTS:
        raise ValueError(f"the mode-seeking image distance must be one of {', '.join(MODE_SEEK_IMAGE_DISTS)}, "
                         f"got {dist!r}")
    h = fake.shape[0] // 2
    if h < 1 or z.shape[0] != fake.shape[0]:
        raise ValueError(f"the mode-seeking term needs a batch of 2 or more images and one noise row per "
                         f"image, got {fake.shape[0]} images and {z.shape[0]} noise rows")
    a, b = fake[:h].float(), fake[h:2 * h].float()
    d_img = (a - b).abs().mean()
    if dist == "l1-ink":
        d_img = d_img / ((a + b).mean() + 2.0 + MODE_SEEK_EPS)
    d_z = (z[:h] - z[h:2 * h]).float().abs().mean()
    return 1.0 / (d_img / d_z + MODE_SEEK_EPS)


def get_loss(name: str):
    """The loss function of `name` with its spec's own knobs."""
    return get_spec(name).loss_fn()
