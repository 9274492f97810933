"""Seeds derived from a run's seed, and building under them without moving
the training RNG stream.

Building networks (recipe construction and `begin_epoch`) runs under
`forked(derived_seed(seed, epoch), device)`: the global torch RNG is seeded
for the build and restored after it, so a resumed run rebuilds the networks
of its checkpoint's epoch without touching the stream its noise comes from
(`psgan_fast.trainer`'s exact resume).
"""

from __future__ import annotations

import torch

_MODULUS = 2**63 - 1


def derived_seed(seed: int, epoch: int) -> int:
    """The seed that building for `epoch` runs under (-1: the first build)."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % _MODULUS


def fork_rng(device: torch.device):
    """`torch.random.fork_rng` of the global CPU RNG and, when `device` is
    CUDA, of its RNG: whatever runs inside leaves both streams as they were."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


def forked(seed: int, device: torch.device):
    """A context manager: inside, the global CPU RNG (and `device`'s, when
    it is CUDA) is seeded with `seed`; on exit every state is restored."""
    ctx = fork_rng(device)

    class _Ctx:
        def __enter__(self):
            ctx.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc):
            return ctx.__exit__(*exc)

    return _Ctx()
