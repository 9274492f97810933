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
import typing
from typing import Any, Mapping, Optional, Sequence

from psgan_fast.config import MAX_SEED, TrainConfig, cli_fields, flag_of, plain_type  # noqa: F401 (MAX_SEED: evaluate's)


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


def _parse_kind(hint: Any, meta: Mapping[str, Any]):
    """The argparse `type` of a field's annotation (None for str)."""
    base = plain_type(hint)
    if base is int:
        return _int_at_least(meta["min"], meta.get("max"))
    if base is float:
        return _float
    if base == tuple[int, ...]:
        return _int_list
    if base == tuple[float, float]:
        return _betas
    if base is str:
        return None
    raise TypeError(f"no CLI parser for a field of type {hint}")


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one flag per TrainConfig field that has help text in its
    metadata (`psgan_fast.config`), in field order, with the field's
    default; the flag's kind follows the field's type."""
    p = argparse.ArgumentParser(
        prog="python -m psgan_fast.train",
        description="Train PS-GAN (N parallel generators, stepwise stages) or a baseline.",
        formatter_class=_HelpFormatter,
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in cli_fields():
        meta, hint = f.metadata, hints[f.name]
        kw: dict[str, Any] = {"help": meta["help"]}
        if hint is bool:  # a switch: store_true (default False) or --no-x (default True)
            kw["action"] = "store_false" if f.default else "store_true"
            if f.default:
                kw["dest"] = f.name
        elif hint == Optional[bool]:
            kw.update(action=argparse.BooleanOptionalAction, default=f.default)
        elif "choices" in meta:
            kw.update(default=f.default, choices=meta["choices"])
        else:
            kw["default"] = f.default
            parse = _parse_kind(hint, meta)
            if parse is not None:
                kw["type"] = parse
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        p.add_argument(flag_of(f.name), **kw)
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
    from psgan_fast.config import ConfigError
    from psgan_fast.trainer import Trainer, TrainingDiverged

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
