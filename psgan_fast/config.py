"""Training configuration: one dataclass, the same fields as the CLI.

A run's defaults live here and nowhere else: each TrainConfig field's
default, and in its metadata the CLI flag's help text, choices and bounds,
from which `psgan_fast.train` builds its argparse parser (a field without
"help" has no flag) and `validate` checks a config. A field left None takes
the chosen model's default (lr, betas, generators, network sizes: the
per-model table `psgan_fast.models.RECIPES`) or the --loss spec's
(`psgan_fast.registry.LOSSES`). The choice lists are derived from those
registries. `config.json` in a run directory holds `to_json()` of the
resolved config; `from_json` also reads the files of older versions, whose
model options were an untyped `extra` dict.

Nothing here imports torch (the CLI's --help stays fast).
"""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from dataclasses import InitVar, dataclass, field
from typing import Any, Optional, Sequence

from psgan_fast import registry
from psgan_fast.models import RECIPES, defaults_of
from psgan_fast.registry import get_spec

MAX_SEED = 2**63 - 1
# Choice lists, derived from the registries that define them (both torch-free).
MODELS = tuple(RECIPES)                 # psgan_fast.models.RECIPES
LOSSES = tuple(registry.LOSSES)         # the update rules' specs (psgan_fast.loss re-exports them)
UPDATES = registry.UPDATES
D_ARCHS = registry.D_ARCHS
PARALLEL = registry.PARALLEL_MODES      # psgan_fast.parallel.MODES
# What `--model psgan` trains by default: the winner of the ablation in
# docs/DESIGN.md. `--loss ps` is the paper's Algorithm 2 read literally.
RECOMMENDED_LOSS = "rps-r1r2-gskips-s118-r8-ms0.3-ink1"
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def _flag(default: Any, help: str, **cli: Any) -> Any:
    """A field with a CLI flag. `cli`: choices, min / max (integers: the
    parser and `validate` both enforce them), flag (when not --<name>),
    metavar. The flag's kind follows the field's type: bool flags are
    --x/--no-x when the default is None, else store_true / store_false."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class ModelOptions:
    """Model options without a CLI flag (tests, benchmarks, experiments).
    None takes the model's default: its row of `psgan_fast.models.RECIPES`
    for the network sizes and layout, the model's module for the rest."""

    width: Optional[int] = None          # every model: feature channels at the lowest resolution
    latent_dim: Optional[int] = None     # every model: size of the noise vector z
    channels_last: Optional[bool] = None  # every model: NHWC networks (default: on where measured faster)
    d_backward: Optional[str] = None     # psgan: "routed" | "two-pass" (default: routed; two-pass when compiling)
    penalty_grad: Optional[str] = None   # psgan: R1/R2's input gradient, "chain" | "autograd" (default chain)
    sn_impl: Optional[str] = None        # sngan: spectral norm kernel "auto" | "triton" | "ref" (default auto)
    sngan_loss: Optional[str] = None     # sngan: "hinge" | "bce" (default hinge)
    mbstd_group: Optional[int] = None    # progan: minibatch-std group size (default 4)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelOptions":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown model option(s): {', '.join(unknown)}")
        return cls(**d)


def plain_type(hint: Any) -> Any:
    """The type an Optional annotation allows besides None (int for Optional[int])."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


# The untyped `extra` dict of older versions held the ModelOptions under the
# same names, and "eval_samples" (now a TrainConfig field); each value is
# read as the old code read it (int(...), bool(...), str(...)).
_EXTRA_KEYS = {name: plain_type(hint) for name, hint in typing.get_type_hints(ModelOptions).items()}
_EXTRA_TRAINER_KEYS = {"eval_samples": int}


# Share of the epochs each stage gets by default (7 / 14 / 28 px for MNIST).
STAGE_SPLIT = (0.2, 0.3, 0.5)


def stage_split(model: str, loss: str) -> tuple[float, ...]:
    """The shares of the epochs per stage when --stage-epochs is unset: a
    PS-GAN --loss's own (`LossSpec.stage_split`) where it names one, else
    STAGE_SPLIT (ProGAN's phases, the paper's PS-GAN)."""
    own = get_spec(loss).stage_split if model == "psgan" and loss in LOSSES else None
    return tuple(own) if own is not None else STAGE_SPLIT


def format_split(shares: Sequence[float]) -> str:
    """"20/30/50%": shares of the epochs per stage, as the docs write them."""
    return "/".join(f"{round(100 * w)}" for w in shares) + "%"


@dataclass
class TrainConfig:
    """Every setting of a training run.

    `lr`, `betas` and `generators` left as None take the chosen model's
    defaults (`psgan_fast.models.RECIPES`). `stage_epochs` splits `epochs`
    over the three stages (7x7, 14x14, 28x28 on MNIST); when None the split
    is `resolved_stage_epochs()`'s (the --loss's shares, `stage_split`). `options` holds the model options
    that have no flag (`ModelOptions`); the keyword `extra` still takes the
    old untyped dict of them (and "eval_samples"), as older code and
    config.json files pass it.
    """

    model: str = _flag("psgan", "training method", choices=MODELS)
    generators: Optional[int] = _flag(  # None: the model's (2 for psgan, the paper's main model; 1 for baselines)
        None, f"number of parallel generators N (psgan; default {defaults_of('psgan').generators})", min=1)
    epochs: int = _flag(10, "total epochs over all stages", min=1)
    stage_epochs: Optional[tuple[int, ...]] = _flag(
        None, "epochs per stage, e.g. 2,3,5 for 7x7,14x14,28x28 (default: the --loss's shares of --epochs, "
        f"{format_split(stage_split('psgan', RECOMMENDED_LOSS))} for {RECOMMENDED_LOSS}; "
        f"{format_split(STAGE_SPLIT)} for the other losses and ProGAN)".replace("%", "%%"))
    alpha: float = _flag(0.1, "Algorithm 1 mixing weight at stage switches")
    batch_size: int = _flag(64, "images per batch (the paper: 64)", min=2)
    lr: Optional[float] = _flag(None, "learning rate (default: the model's published value)")
    betas: Optional[tuple[float, float]] = _flag(None, "Adam betas, e.g. 0.5,0.999 (default: the model's; "
                                                 "PS-GAN: the --loss's own where it names them)")
    loss: str = _flag(RECOMMENDED_LOSS, f"PS-GAN's update rule (default {RECOMMENDED_LOSS}, the recommended one; "
                      "ps: the paper's Algorithm 2 read literally; the others are ablation variants, see "
                      "psgan_fast.loss.LOSSES)", choices=LOSSES)
    # PS-GAN's update-rule knobs. None takes the value of the chosen --loss's
    # spec (psgan_fast.registry.LOSSES), so `--loss ps` alone is Algorithm 2.
    d_gate: Optional[float] = _flag(None, "lambda: D's weight on the groups it got right (default: the loss's)")
    g_gate: Optional[bool] = _flag(None, "generator k skips the groups where D picked its fake (default: the loss's)")
    r1: Optional[float] = _flag(None, "gamma of the R1 penalty on real images (default: the loss's)")
    r2: Optional[float] = _flag(None, "gamma of the R2 penalty on fakes (default: the loss's)")
    reg_every: Optional[int] = _flag(None, "R1/R2 every K steps (lazy), weighted by K (default: the loss's)", min=1)
    reg_batch: Optional[int] = _flag(None, "R1 on K real images and R2 on K fakes, taken evenly from the "
                                     "generators, per penalty step (default: the loss's; unset: the whole group)",
                                     min=1)
    mode_seek: Optional[float] = _flag(None, "lambda of each generator's mode-seeking term (MSGAN): it also "
                                       "minimises 1 / (mean|G(z1) - G(z2)| / mean|z1 - z2|) over pairs of its "
                                       "batch (default: the loss's; 0: none)")
    mode_seek_dist: Optional[str] = _flag(None, "the mode-seeking term's image distance: l1 (MSGAN's mean|G(z1) - "
                                          "G(z2)|), l1-ink (that divided by the pair's mean ink, so that "
                                          "thin strokes move apart as thick ones do) or l1-ink-n1 (l1-ink for "
                                          "one generator, l1 for more; default: the loss's)",
                                          choices=registry.MODE_SEEK_DISTS)
    update: Optional[str] = _flag(None, "simultaneous (the paper's) or alternating D/G steps (default: the loss's)",
                                  choices=UPDATES)
    d_arch: Optional[str] = _flag(None, "PS-GAN's discriminator (default: the loss's)", choices=D_ARCHS)
    skips: Optional[bool] = _flag(None, "skip stage networks: an image output/input at every level "
                                  "(default: the loss's)")
    d_skips: Optional[bool] = _flag(None, "the discriminator's half of --skips: an image input at every level "
                                    "(default: the loss's, else as --skips)")
    g_ema: float = _flag(0.0, "every model: sample, evaluate and save each generator's exponential moving "
                         "average too, half-life in thousands of images (StyleGAN2's 10: beta 0.9956 at "
                         "batch 64); training is unchanged (0: off)", metavar="KIMG")
    parallel: str = _flag("auto", "how the N generators run", choices=PARALLEL)
    precision: str = _flag("fp32", "bf16 autocast or plain fp32", choices=PRECISIONS)
    compile: Optional[bool] = _flag(  # None: on for CUDA, off for CPU (measured slower there)
        None, "torch.compile the networks (default: on for CUDA, off for CPU)")
    device: str = _flag("auto", "auto: CUDA when available, else the CPU", choices=DEVICES)
    seed: int = _flag(0, "seeds the networks, the noise and the data order", min=0, max=MAX_SEED)
    dataset: str = _flag("mnist", "mnist, fashion-mnist, or a folder with an IDX image/label pair")
    data_dir: Optional[str] = _flag(None, "folder holding the data set's files")
    out: Optional[str] = _flag(None, "run directory (default: runs/<model>-g<N>-<time>)")
    resume: Optional[str] = _flag(None, "continue a run from its latest checkpoint", metavar="RUN_DIR")
    overwrite: bool = _flag(False, "replace the run already in --out (refused otherwise)")
    max_steps: Optional[int] = _flag(None, "stop after this many steps in total", min=1)
    limit_batches: Optional[int] = _flag(None, "batches per epoch (smoke runs)", min=1)
    sample_every: int = _flag(1, "epochs between sample grids (0: off)", min=0)
    checkpoint_every: int = _flag(1, "epochs between checkpoints", min=0)
    checkpoint_steps: int = _flag(0, "also checkpoint every K steps inside an epoch (0: off)", min=0)
    log_every: int = _flag(50, "steps between metrics.jsonl lines", min=1)
    eval_every: int = _flag(0, "epochs between FID/IS evaluations (0: off)", min=0)
    deterministic: bool = _flag(False, "torch deterministic algorithms (exact resume on CPU)")
    progress: bool = _flag(True, "no progress bar", flag="--no-progress")
    eval_samples: int = 2000  # images per generator set in each --eval-every evaluation (no flag)
    options: ModelOptions = field(default_factory=ModelOptions)
    extra: InitVar[Optional[dict[str, Any]]] = None

    def __post_init__(self, extra: Optional[dict[str, Any]]) -> None:
        if isinstance(self.options, dict):
            self.options = ModelOptions.from_json(self.options)
        if extra:
            self._apply_extra(extra)

    def _apply_extra(self, extra: dict[str, Any]) -> None:
        """Fold the old untyped `extra` dict into `options` and
        `eval_samples`, each value read as the old code read it."""
        unknown = sorted(set(extra) - set(_EXTRA_KEYS) - set(_EXTRA_TRAINER_KEYS))
        if unknown:
            warnings.warn(f"TrainConfig: ignoring unknown extra option(s) {', '.join(unknown)} "
                          f"(known: {', '.join([*_EXTRA_KEYS, *_EXTRA_TRAINER_KEYS])})", stacklevel=4)
        if not isinstance(self.options, ModelOptions):
            return  # validate() names the field
        opts = {k: read(extra[k]) for k, read in _EXTRA_KEYS.items() if k in extra}
        self.options = dataclasses.replace(self.options, **opts)
        for k, read in _EXTRA_TRAINER_KEYS.items():
            if k in extra:
                setattr(self, k, read(extra[k]))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("stage_epochs", "betas"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        """A config from `to_json()`'s dict, or from an older version's (with
        `extra` instead of `options` and `eval_samples`)."""
        names = {f.name for f in dataclasses.fields(cls)} | {"extra"}
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
        return defaults_of(self.model).generators if self.model in RECIPES else 1

    def loss_label(self) -> str:
        """The update rule this config trains, by name: `loss` when the knobs
        it sets leave that spec as it is; else the registered spec nearest
        to these knobs (fewest knobs differ; on a tie `loss`, then the spec
        whose stage shares give these stage epochs) and the knobs that
        differ from it."""
        def fields(spec: registry.LossSpec) -> dict[str, Any]:
            d = dataclasses.asdict(spec.settled())
            for k in ("summary", "stage_split"):
                d.pop(k)
            d["betas"] = None if d["betas"] is None else tuple(d["betas"])
            return d

        spec = get_spec(self.loss)
        trained = spec.resolved(self)
        if trained.gated:
            trained = dataclasses.replace(trained, d_gate=trained.d_gate if self.d_gate is None else self.d_gate,
                                          g_gate=trained.g_gate if self.g_gate is None else self.g_gate)
        mine = fields(trained)
        diffs = {name: [k for k, v in fields(other).items() if v != mine[k]] for name, other in registry.LOSSES.items()}
        if not diffs[self.loss]:
            return self.loss
        fewest = min(len(d) for d in diffs.values())
        nearest = [name for name, d in diffs.items() if len(d) == fewest]
        stages = self.resolved_stage_epochs()

        def splits_match(name: str) -> bool:
            split = stage_split(self.model, name)
            return len(split) == len(stages) and default_stage_epochs(self.epochs, len(stages), split) == stages

        # ties: the config's own --loss, then the spec whose stage split gives these stage epochs
        name = min(nearest, key=lambda n: (n != self.loss, not splits_match(n)))
        return name + "".join(f"{' with ' if i == 0 else ', '}{k}={mine[k]}" for i, k in enumerate(diffs[name]))

    def resolved_stage_epochs(self, num_stages: int = 3) -> tuple[int, ...]:
        """Epochs per stage: `stage_epochs` when set, else `epochs` split by
        `stage_split(model, loss)`; the last stage absorbs any rounding."""
        if self.stage_epochs is not None:
            return tuple(self.stage_epochs)
        weights = stage_split(self.model, self.loss)
        return default_stage_epochs(self.epochs, num_stages, weights if len(weights) == num_stages else None)


def default_stage_epochs(epochs: int, num_stages: int = 3,
                         weights: Optional[Sequence[float]] = None) -> tuple[int, ...]:
    """Split `epochs` over stages as `weights` (default STAGE_SPLIT, 20% / 30% /
    50%; at least one epoch per stage while there are enough epochs; the
    final resolution gets the rest, since it is what is evaluated)."""
    if epochs < num_stages:
        # Too few epochs for every stage: spend them on the last stages.
        return tuple([0] * (num_stages - epochs) + [1] * epochs)
    if num_stages == 1:
        return (epochs,)
    if weights is None:
        weights = STAGE_SPLIT if num_stages == 3 else [1.0 / num_stages] * num_stages
    if len(weights) != num_stages:
        raise ValueError(f"{len(weights)} stage weights for {num_stages} stages")
    split = [max(1, int(round(epochs * w))) for w in weights[:-1]]
    last = epochs - sum(split)
    while last < 1:
        i = max(range(len(split)), key=lambda j: split[j])
        split[i] -= 1
        last += 1
    return tuple(split + [last])


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

class ConfigError(ValueError):
    """A setting is invalid; `flag` names the CLI flag responsible."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


def cli_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields that have a CLI flag, in the parser's order."""
    return [f for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]


def flag_of(field_name: str) -> str:
    """The CLI flag of a TrainConfig field (its name if it has none)."""
    f = TrainConfig.__dataclass_fields__.get(field_name)
    if f is None or "help" not in f.metadata:
        return field_name
    return f.metadata.get("flag") or "--" + field_name.replace("_", "-")


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON-ish value fits a TrainConfig annotation (no bool for
    int or float, lists accepted for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is typing.Union:
        return any(_conforms(value, a) for a in args)
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float)
    if hint in (bool, str):
        return type(value) is hint
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return "a list of " + (_describe(args[0]).split(" ", 1)[1] + "s" if args[-1] is Ellipsis
                               else f"{len(args)} values")
    return _KINDS.get(hint, "an object")


def _check_types(obj: Any, need, prefix: str = "") -> None:
    """Every field of a config dataclass against its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        flag = f"{prefix}{f.name}" if prefix else flag_of(f.name)
        need(_conforms(value, hint), flag, f"must be {_describe(hint)}, got {value!r} ({type(value).__name__})")
        if dataclasses.is_dataclass(hint):
            _check_types(value, need, f"{f.name}.")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every setting; return the config with `generators` resolved."""
    from psgan_fast.transfer import alpha_problem  # Algorithm 1's rule for alpha

    def need(cond: bool, flag: str, msg: str) -> None:
        if not cond:
            raise ConfigError(flag, msg)

    _check_types(cfg, need)
    for f in cli_fields():  # the choices and integer bounds in the fields' metadata
        value, meta, flag = getattr(cfg, f.name), f.metadata, flag_of(f.name)
        if value is None:
            continue
        if "choices" in meta:
            need(value in meta["choices"], flag,
                 f"unknown {f.name.replace('_', ' ')} {value!r}; choose from {', '.join(meta['choices'])}")
        if "min" in meta:
            low, high = meta["min"], meta.get("max")
            need(low <= value and (high is None or value <= high), flag,
                 f"must be >= {low}, got {value}" if high is None else f"must be in [{low}, {high}], got {value}")
    n = cfg.num_generators()
    need(cfg.model == "psgan" or n == 1, "--generators", f"{cfg.model} trains one generator; only psgan takes N > 1")
    if cfg.stage_epochs is not None:
        se = tuple(cfg.stage_epochs)
        need(len(se) == 3, "--stage-epochs", f"needs 3 values (7x7, 14x14, 28x28 stages), got {len(se)}")
        need(all(e >= 0 for e in se), "--stage-epochs", f"values must be >= 0, got {se}")
        need(sum(se) == cfg.epochs, "--stage-epochs",
             f"sums to {sum(se)} but --epochs is {cfg.epochs}")
        need(se[-1] >= 1, "--stage-epochs", "the final stage needs at least one epoch")
    problem = alpha_problem(cfg.alpha)
    need(problem is None, "--alpha", problem)
    need(cfg.lr is None or (cfg.lr > 0 and math.isfinite(cfg.lr)), "--lr", f"must be > 0, got {cfg.lr}")
    if cfg.betas is not None:
        need(len(cfg.betas) == 2 and all(0.0 <= b < 1.0 for b in cfg.betas), "--betas",
             f"needs two values in [0, 1), got {cfg.betas}")
    _validate_psgan_knobs(cfg, need)
    need(math.isfinite(cfg.g_ema) and cfg.g_ema >= 0.0, "--g-ema",
         f"must be a half-life >= 0 in thousands of images (0: off), got {cfg.g_ema}")
    need(cfg.device != "cuda" or _cuda_available(), "--device", "cuda requested but no CUDA device is available")
    return dataclasses.replace(cfg, generators=n)


def _validate_psgan_knobs(cfg: TrainConfig, need) -> None:
    """PS-GAN's update-rule knobs (None: the --loss spec's own value)."""
    need(cfg.d_gate is None or (math.isfinite(cfg.d_gate) and 0.0 <= cfg.d_gate <= 1.0), "--d-gate",
         f"must be in [0, 1], got {cfg.d_gate}")
    need(get_spec(cfg.loss).gated or (cfg.d_gate is None and cfg.g_gate is None),
         "--d-gate" if cfg.d_gate is not None else "--g-gate",
         f"the gates apply to the group-softmax losses (ps-soft, rps, ...), not to --loss {cfg.loss}")
    for flag, v in (("--r1", cfg.r1), ("--r2", cfg.r2), ("--mode-seek", cfg.mode_seek)):
        need(v is None or (math.isfinite(v) and v >= 0.0), flag, f"must be a number >= 0, got {v}")


def _cuda_available() -> bool:
    import torch  # only here: the rest of this module (and the CLI parser) needs no torch

    return torch.cuda.is_available()
