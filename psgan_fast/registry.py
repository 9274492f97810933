"""PS-GAN's named choices, torch-free: the update rules (`--loss`) with
their default knobs, and the choice lists of `--update`, `--d-arch` and
`--parallel`.

Each name is defined here and nowhere else. `psgan_fast.config` derives the
CLI's choice lists from this module (and the model names from
`psgan_fast.models.RECIPES`); the modules that implement the choices import
them from here: `psgan_fast.loss` (the loss functions a spec names,
re-exporting LOSSES and get_spec), `psgan_fast.stages` (D_ARCHS),
`psgan_fast.parallel` (PARALLEL_MODES as its MODES). Nothing here imports
torch, so `python -m psgan_fast.train --help` lists the choices without it;
a spec names its loss function, which `LossSpec.loss_fn` looks up in
`psgan_fast.loss` when a recipe asks for it (as `psgan_fast.models.RECIPES`
names its recipe classes).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

UPDATES = ("simultaneous", "alternating")  # D and G from one forward of D | D steps, then G against the new D
D_ARCHS = ("paper", "deep")  # PS-GAN's discriminator (psgan_fast.stages.Discriminator)
# The image distance of the mode-seeking term (psgan_fast.loss.mode_seeking_loss):
# MSGAN's mean L1 | that divided by the pair's mean ink (thin strokes count as much as thick ones)
MODE_SEEK_IMAGE_DISTS = ("l1", "l1-ink")
# ... and the choice of one by the number of generators (mode_seek_image_dist): "l1-ink-n1" is
# l1-ink for one generator, l1 for two or more (docs/results/2026-12-04-ink-mode-seeking/: with
# one generator l1-ink keeps the "1"s in the 4-18% band at the same FID, with two it costs FID).
MODE_SEEK_INK_IF_ONE = "l1-ink-n1"
MODE_SEEK_DISTS = MODE_SEEK_IMAGE_DISTS + (MODE_SEEK_INK_IF_ONE,)
PARALLEL_MODES = ("auto", "fused", "streams", "sequential")  # how N generators run (psgan_fast.parallel)

LOSS_MODULE = "psgan_fast.loss"
GROUP_LOSS = "group_loss"  # the N+1-way softmax with soft gates; the specs built on it take the gate knobs


@dataclass(frozen=True)
class LossSpec:
    """One registered PS-GAN update rule and its default knobs (each knob
    can be overridden from the config; None there means "the spec's")."""

    fn: str               # the loss function's name in psgan_fast.loss: logits [N+1, B], **knobs -> LossOutput
    d_gate: float = 0.0   # lambda: D's weight on groups it got right
    g_gate: bool = True   # generator k skips groups where D picked its fake
    r1: float = 0.0       # gamma of the R1 penalty (real images)
    r2: float = 0.0       # gamma of the R2 penalty (fakes)
    update: str = UPDATES[0]  # or "alternating": D steps, then G against the new D
    d_arch: str = D_ARCHS[0]  # D_ARCHS
    skips: bool = False    # stage networks with an image output/input at every level (stages.py)
    d_skips: Optional[bool] = None  # D's image inputs at every level (None: as `skips`)
    reg_every: int = 4     # lazy R1/R2: every K steps, weighted by K
    reg_batch: Optional[int] = None  # R1 on this many real images, R2 on this many fakes (None: all)
    mode_seek: float = 0.0  # lambda of each generator's mode-seeking term (loss.mode_seeking_loss; 0: none)
    mode_seek_dist: str = MODE_SEEK_DISTS[0]  # its image distance (MODE_SEEK_DISTS)
    betas: Optional[tuple[float, float]] = None  # Adam's betas for every network (None: the model's, models.RECIPES)
    # Share of the epochs each stage (7 / 14 / 28 px) gets when --stage-epochs
    # is unset (None: config.STAGE_SPLIT); TrainConfig.resolved_stage_epochs.
    stage_split: Optional[tuple[float, ...]] = None
    summary: str = ""

    @property
    def gated(self) -> bool:
        """Do the gate knobs (d_gate, g_gate) apply? Only to the specs built
        on `group_loss`; `ps` is the paper's rule as written."""
        return self.fn == GROUP_LOSS

    def function(self):
        """The loss function this spec names (imports psgan_fast.loss)."""
        return getattr(importlib.import_module(LOSS_MODULE), self.fn)

    def loss_fn(self, d_gate: Optional[float] = None, g_gate: Optional[bool] = None):
        """The loss as a function of the logits alone, knobs bound."""
        if self.gated:
            return partial(self.function(), d_gate=self.d_gate if d_gate is None else d_gate,
                           g_gate=self.g_gate if g_gate is None else g_gate)
        if d_gate is not None or g_gate is not None:
            raise ValueError("the gates (d_gate, g_gate) apply only to the group-softmax losses")
        return self.function()

    def resolved(self, cfg: Any) -> "LossSpec":
        """This spec with each knob the config sets (a TrainConfig field of
        the same name that is not None) in place of the spec's own value, and
        `d_skips` settled (as `skips` unless set). The gates stay the spec's:
        `loss_fn(cfg.d_gate, cfg.g_gate)` binds them and checks they apply."""
        over = {k: getattr(cfg, k) for k in CONFIG_KNOBS if getattr(cfg, k) is not None}
        return dataclasses.replace(self, **over).settled()

    def settled(self) -> "LossSpec":
        """This spec with `d_skips` settled: as `skips` unless set."""
        return self if self.d_skips is not None else dataclasses.replace(self, d_skips=self.skips)


# The LossSpec knobs a TrainConfig field of the same name overrides (`LossSpec.resolved`).
CONFIG_KNOBS = ("r1", "r2", "reg_every", "reg_batch", "mode_seek", "mode_seek_dist", "update", "d_arch", "skips",
                "d_skips", "betas")


# "rps-r1r2-gskips" (below), which the recommended spec extends.
_GSKIPS = LossSpec(GROUP_LOSS, d_gate=1.0, g_gate=False, r1=0.1, r2=0.1, skips=True, d_skips=False,
                   betas=(0.0, 0.99),
                   summary="rps + R1/R2 (gamma 0.1, lazy) + skip networks in G + Adam betas (0, 0.99)")

# "rps-r1r2-gskips-s118" (below): 10 / 10 / 80% of the epochs at 7 / 14 / 28 px.
_S118 = dataclasses.replace(
    _GSKIPS, stage_split=(0.1, 0.1, 0.8),
    summary="rps-r1r2-gskips with 10 / 10 / 80% of the epochs at 7 / 14 / 28 px")

LOSSES = {
    "ps": LossSpec("ps_loss", summary="the paper's Algorithm 2, literally: D learns only where it was "
                   "wrong, generator k only where D did not pick its fake; one simultaneous update"),
    "bce": LossSpec("bce_loss", g_gate=False, summary="non-saturating BCE, averaged generators (ablation)"),
    "ps-soft": LossSpec(GROUP_LOSS, d_gate=1.0, summary="Algorithm 2 with D also learning from the "
                        "groups it got right (weight d_gate); generators gated as in the paper"),
    "rps": LossSpec(GROUP_LOSS, d_gate=1.0, g_gate=False, summary="the ungated N+1-way relativistic "
                    "softmax (RpGAN at N = 1)"),
    # rps, R1 + R2 as R3GAN regularises RpGAN, and skip stage networks so that
    # a stage switch continues instead of restarting: the default until
    # 2026-12-02 (its runs resume as they were).
    "rps-r1r2-skips": LossSpec(GROUP_LOSS, d_gate=1.0, g_gate=False, r1=0.1, r2=0.1, skips=True,
                               summary="rps + R1/R2 (gamma 0.1, lazy) + skip stage networks in G and D"),
    # The spec above with R3GAN's Adam betas (0, 0.99) and the skip networks
    # in G only (D's half cost 7–10% of a step for no FID): the default from
    # 2026-12-02 to 2026-12-03.
    "rps-r1r2-gskips": _GSKIPS,
    # The spec above with 10 / 10 / 80% of the epochs at 7 / 14 / 28 px
    # instead of 20 / 30 / 50%: stage switches no longer cost anything (skip
    # networks), and the final resolution is what is evaluated. The default
    # from 2026-12-03 until R1/R2 went to every 8 steps (below).
    "rps-r1r2-gskips-s118": _S118,
    # The spec above with the lazy R1/R2 every 8 steps instead of 4 (weighted
    # by 8), half the penalty's share of a step (docs/results/cost.md) for the
    # same FID (docs/results/2026-12-03-reg-every8/). The default from then
    # until the mode-seeking term joined it (below).
    "rps-r1r2-gskips-s118-r8": dataclasses.replace(
        _S118, reg_every=8,
        summary="rps-r1r2-gskips-s118 with R1/R2 every 8 steps instead of 4 (a previous default)"),
    # The spec above plus each generator's mode-seeking term (MSGAN,
    # loss.mode_seeking_loss) at lambda 0.1: the default from 2026-12-03
    # until lambda went to 0.3 (below). Without the term one of three
    # generators can fall onto thin strokes in the first epochs at 28 px and
    # stay there (docs/results/2026-12-03-mode-seeking/).
    "rps-r1r2-gskips-s118-r8-ms": dataclasses.replace(
        _S118, reg_every=8, mode_seek=0.1,
        summary="rps-r1r2-gskips-s118-r8 + each generator's mode-seeking term, lambda 0.1"),
    # The spec above with the mode-seeking term at lambda 0.3
    # (docs/results/2026-12-03-ms-strength/): the default from the eighth
    # reproduction until the ink-divided distance for one generator (below).
    "rps-r1r2-gskips-s118-r8-ms0.3": dataclasses.replace(
        _S118, reg_every=8, mode_seek=0.3,
        summary="rps-r1r2-gskips-s118-r8 + each generator's mode-seeking term, lambda 0.3 (a previous default)"),
    # The recommended PS-GAN (TrainConfig's default; docs/DESIGN.md §3 has the
    # ablation that chose it): the spec above, except that a single
    # generator's mode-seeking distance is divided by the ink (l1-ink-n1).
    # With two or more generators it trains exactly what the spec above does.
    "rps-r1r2-gskips-s118-r8-ms0.3-ink1": dataclasses.replace(
        _S118, reg_every=8, mode_seek=0.3, mode_seek_dist=MODE_SEEK_INK_IF_ONE,
        summary="rps-r1r2-gskips-s118-r8-ms0.3 with the ink-divided mode-seeking distance for one generator "
        "(recommended)"),
}


def mode_seek_image_dist(dist: str, generators: int) -> str:
    """The image distance (MODE_SEEK_IMAGE_DISTS) that the mode-seeking
    distance `dist` (MODE_SEEK_DISTS) names for a model of `generators`."""
    if dist == MODE_SEEK_INK_IF_ONE:
        l1, l1_ink = MODE_SEEK_IMAGE_DISTS
        return l1_ink if generators == 1 else l1
    if dist not in MODE_SEEK_IMAGE_DISTS:
        raise ValueError(f"the mode-seeking distance must be one of {', '.join(MODE_SEEK_DISTS)}, got {dist!r}")
    return dist


def get_spec(name: str) -> LossSpec:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}") from None
