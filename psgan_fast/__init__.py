"""psgan_fast: a fast, faithful PS-GAN engine with SNGAN and ProGAN baselines.

Public API (imported lazily so `import psgan_fast.data` stays light):
  TrainConfig, train, Callback, load_generators, sample
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "TrainConfig": ("psgan_fast.config", "TrainConfig"),
    "train": ("psgan_fast.train", None),  # the CLI module, callable as train(config)
    "Trainer": ("psgan_fast.trainer", "Trainer"),
    "Callback": ("psgan_fast.trainer", "Callback"),
    "StepInfo": ("psgan_fast.trainer", "StepInfo"),
    "load_generators": ("psgan_fast.api", "load_generators"),
    "sample": ("psgan_fast.api", "sample"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        module = importlib.import_module(mod)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'psgan_fast' has no attribute {name!r}")
