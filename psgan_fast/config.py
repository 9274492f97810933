"""Training configuration: one dataclass, the same fields as the CLI.

Defaults live here and nowhere else; `psgan_fast.train` builds its argparse
parser from these fields' metadata, and `config.json` in a run directory is
`dataclasses.asdict` of the resolved config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

MODELS = ("psgan", "sngan", "sngan-nosn", "progan")
LOSSES = ("ps", "bce", "ps-soft", "rps", "rps-r1r2-skips")  # psgan_fast.loss.LOSSES: the specs
# What `--model psgan` trains by default: the winner of the ablation in
# docs/DESIGN.md. `--loss ps` is the paper's Algorithm 2 read literally.
RECOMMENDED_LOSS = "rps-r1r2-skips"
UPDATES = ("simultaneous", "alternating")
D_ARCHS = ("paper", "deep")
PARALLEL = ("auto", "fused", "streams", "sequential")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Every setting of a training run.

    `lr` and `betas` left as None take the chosen model's published
    defaults (PS-GAN and SNGAN: Adam 2e-4, (0.5, 0.999); ProGAN: Adam 1e-3,
    (0.0, 0.99)). `stage_epochs` splits `epochs` over the three stages
    (7x7, 14x14, 28x28 on MNIST); when None the split is
    `default_stage_epochs(epochs)`.
    """

    model: str = "psgan"
    generators: Optional[int] = None  # None: 2 for psgan (the paper's main model), 1 for baselines
    epochs: int = 10
    stage_epochs: Optional[tuple[int, ...]] = None
    alpha: float = 0.1
    batch_size: int = 64
    lr: Optional[float] = None
    betas: Optional[tuple[float, float]] = None
    loss: str = RECOMMENDED_LOSS
    # PS-GAN's update-rule knobs. None takes the value of the chosen --loss's
    # spec (psgan_fast.loss.LOSSES), so `--loss ps` alone is Algorithm 2.
    d_gate: Optional[float] = None   # lambda: D's weight on groups it got right
    g_gate: Optional[bool] = None    # generator k skips groups where D picked its fake
    r1: Optional[float] = None       # gamma of the R1 penalty (real images)
    r2: Optional[float] = None       # gamma of the R2 penalty (fakes)
    reg_every: int = 4               # lazy R1/R2: every K steps, weighted by K
    update: Optional[str] = None     # simultaneous | alternating
    d_arch: Optional[str] = None     # paper | deep (psgan_fast.stages.D_ARCHS)
    skips: Optional[bool] = None     # image outputs/inputs at every level of the stage networks
    parallel: str = "auto"
    precision: str = "fp32"
    compile: Optional[bool] = None  # None: on for CUDA, off for CPU (measured slower there)
    device: str = "auto"
    seed: int = 0
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    out: Optional[str] = None
    resume: Optional[str] = None
    overwrite: bool = False  # a fresh run may replace the run already in `out`
    max_steps: Optional[int] = None
    limit_batches: Optional[int] = None
    sample_every: int = 1
    checkpoint_every: int = 1
    checkpoint_steps: int = 0  # also checkpoint every K steps inside an epoch (0: epoch ends only)
    log_every: int = 50
    eval_every: int = 0
    deterministic: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("stage_epochs", "betas"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) in config: {', '.join(unknown)}")
        d = dict(d)
        for k in ("stage_epochs", "betas"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def num_generators(self) -> int:
        if self.generators is not None:
            return self.generators
        return 2 if self.model == "psgan" else 1

    def resolved_stage_epochs(self, num_stages: int = 3) -> tuple[int, ...]:
        """Epochs per stage; the last stage absorbs any rounding."""
        if self.stage_epochs is not None:
            return tuple(self.stage_epochs)
        return default_stage_epochs(self.epochs, num_stages)


def default_stage_epochs(epochs: int, num_stages: int = 3) -> tuple[int, ...]:
    """Split `epochs` over stages as 20% / 30% / 50% (at least one epoch per
    stage while there are enough epochs; the final resolution gets the
    most time, since it is what is evaluated)."""
    if epochs < num_stages:
        # Too few epochs for every stage: spend them on the last stages.
        return tuple([0] * (num_stages - epochs) + [1] * epochs)
    if num_stages == 1:
        return (epochs,)
    weights = [0.2, 0.3, 0.5] if num_stages == 3 else [1.0 / num_stages] * num_stages
    split = [max(1, int(round(epochs * w))) for w in weights[:-1]]
    last = epochs - sum(split)
    while last < 1:
        i = max(range(len(split)), key=lambda j: split[j])
        split[i] -= 1
        last += 1
    return tuple(split + [last])
