"""`python -m psgan_fast.train`: train PS-GAN or a baseline on MNIST-like data.

Examples:
  python -m psgan_fast.train --generators 3
  python -m psgan_fast.train --model sngan --epochs 5 --out runs/sngan
  python -m psgan_fast.train --resume runs/sngan --epochs 8
  python -m psgan_fast.train --generators 2 --limit-batches 20 --epochs 3   # smoke run

Exit status: 0 done, 1 an error (missing data, bad checkpoint), 2 a bad
flag, 3 training diverged (NaN/Inf loss; the last good checkpoint is kept),
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from psgan_fast.config import D_ARCHS, DEVICES, LOSSES, MODELS, PARALLEL, PRECISIONS, UPDATES, TrainConfig


def _int_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 2,3,5, got {text!r}") from None
    return vals


def _betas(text: str) -> tuple[float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated floats like 0.5,0.999, got {text!r}") from None
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"expected two values, got {len(vals)}")
    return vals  # type: ignore[return-value]


def _int_at_least(low: int, high: Optional[int] = None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {v}")
        return v

    return parse


MAX_SEED = 2**63 - 1
_positive_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)
_seed = _int_at_least(0, MAX_SEED)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where the help does not already say what
    the default is and the default is a value (not None or a store_true's
    False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is argparse.SUPPRESS
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m psgan_fast.train",
        description="Train PS-GAN (N parallel generators, stepwise stages) or a baseline.",
        formatter_class=_HelpFormatter,
    )
    a = p.add_argument
    a("--model", choices=MODELS, default=d.model, help="training method")
    a("--generators", type=_positive_int, default=None, help="number of parallel generators N (psgan; default 2)")
    a("--epochs", type=_positive_int, default=d.epochs, help="total epochs over all stages")
    a("--stage-epochs", type=_int_list, default=None,
      help="epochs per stage, e.g. 2,3,5 for 7x7,14x14,28x28 (default: 20%%/30%%/50%% of --epochs)")
    a("--alpha", type=_float, default=d.alpha, help="Algorithm 1 mixing weight at stage switches")
    a("--batch-size", type=_positive_int, default=d.batch_size, help="images per batch (the paper: 64)")
    a("--lr", type=_float, default=None, help="learning rate (default: the model's published value)")
    a("--betas", type=_betas, default=None, help="Adam betas, e.g. 0.5,0.999 (default: the model's)")
    a("--loss", choices=LOSSES, default=d.loss,
      help=f"PS-GAN's update rule (default {d.loss}, the recommended one; ps: the paper's Algorithm 2 read "
           "literally; the others are ablation variants, see psgan_fast.loss.LOSSES)")
    a("--d-gate", type=_float, default=None, help="lambda: D's weight on the groups it got right (default: the loss's)")
    a("--g-gate", action=argparse.BooleanOptionalAction, default=None,
      help="generator k skips the groups where D picked its fake (default: the loss's)")
    a("--r1", type=_float, default=None, help="gamma of the R1 penalty on real images (default: the loss's)")
    a("--r2", type=_float, default=None, help="gamma of the R2 penalty on fakes (default: the loss's)")
    a("--reg-every", type=_positive_int, default=d.reg_every, help="R1/R2 every K steps (lazy), weighted by K")
    a("--update", choices=UPDATES, default=None, help="simultaneous (the paper's) or alternating D/G steps "
      "(default: the loss's)")
    a("--d-arch", choices=D_ARCHS, default=None, help="PS-GAN's discriminator (default: the loss's)")
    a("--skips", action=argparse.BooleanOptionalAction, default=None,
      help="skip stage networks: an image output/input at every level (default: the loss's)")
    a("--parallel", choices=PARALLEL, default=d.parallel, help="how the N generators run")
    a("--precision", choices=PRECISIONS, default=d.precision, help="bf16 autocast or plain fp32")
    a("--compile", action=argparse.BooleanOptionalAction, default=None,
      help="torch.compile the networks (default: on for CUDA, off for CPU)")
    a("--device", choices=DEVICES, default=d.device, help="auto: CUDA when available, else the CPU")
    a("--seed", type=_seed, default=d.seed, help="seeds the networks, the noise and the data order")
    a("--dataset", default=d.dataset, help="mnist, fashion-mnist, or a folder with an IDX image/label pair")
    a("--data-dir", default=None, help="folder holding the data set's files")
    a("--out", default=None, help="run directory (default: runs/<model>-g<N>-<time>)")
    a("--resume", default=None, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    a("--overwrite", action="store_true", help="replace the run already in --out (refused otherwise)")
    a("--max-steps", type=_positive_int, default=None, help="stop after this many steps in total")
    a("--limit-batches", type=_positive_int, default=None, help="batches per epoch (smoke runs)")
    a("--sample-every", type=_nonneg_int, default=d.sample_every, help="epochs between sample grids (0: off)")
    a("--checkpoint-every", type=_nonneg_int, default=d.checkpoint_every, help="epochs between checkpoints")
    a("--checkpoint-steps", type=_nonneg_int, default=d.checkpoint_steps,
      help="also checkpoint every K steps inside an epoch (0: off)")
    a("--log-every", type=_positive_int, default=d.log_every, help="steps between metrics.jsonl lines")
    a("--eval-every", type=_nonneg_int, default=d.eval_every, help="epochs between FID/IS evaluations (0: off)")
    a("--deterministic", action="store_true", help="torch deterministic algorithms (exact resume on CPU)")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = vars(args).copy()
    return TrainConfig(**fields)


def given_fields(argv: Optional[Sequence[str]] = None) -> set[str]:
    """The config fields set on the command line (a flag given with its
    default value counts: `--resume RUN --epochs 10`)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from psgan_fast.checkpoint import CheckpointError
    from psgan_fast.trainer import ConfigError, Trainer, TrainingDiverged

    try:
        trainer = Trainer(cfg, given=given_fields(argv))
    except ConfigError as e:
        parser.error(str(e))  # exits 2, naming the flag
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"run directory: {trainer.run_dir}", file=sys.stderr)
    try:
        run_dir = trainer.run()
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (CheckpointError, OSError) as e:  # OSError: a full disk, a vanished directory
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: python -m psgan_fast.train --resume {trainer.run_dir}", file=sys.stderr)
        return 130
    print(f"done: {run_dir}  (samples/, losses.png, metrics.jsonl, checkpoints/)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# `psgan_fast.train` is both this CLI module (`python -m psgan_fast.train`)
# and the API function `psgan_fast.train(config, callbacks=())`: importing a
# submodule rebinds the package attribute of the same name, so the module
# itself is made callable and forwards to `psgan_fast.trainer.train`.
class _CallableModule(type(sys)):
    def __call__(self, config: TrainConfig, callbacks=()):  # type: ignore[no-untyped-def]
        from psgan_fast.trainer import train as _train

        return _train(config, callbacks)


sys.modules[__name__].__class__ = _CallableModule
