"""Shared fixtures. Tests never touch the network: real MNIST is found
through $PSGAN_FAST_DATA or the cache that `make setup` fills."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mnist_train():
    from psgan_fast.data import mnist

    return mnist(split="train", download=False)


@pytest.fixture(scope="session")
def mnist_test():
    from psgan_fast.data import mnist

    return mnist(split="test", download=False)


def pytest_configure(config):
    """Torch single-threaded in tests (and in the subprocesses they start):
    on a shared 2-core machine two OpenMP threads per process make small
    ops 2-100x slower, and results do not depend on the thread count."""
    import os

    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


# Triton's CPU interpreter must be on before Triton is first imported (by any
# test module): without CUDA, kernel tests run interpreted against their
# PyTorch references.
import triton_support  # noqa: E402,F401  (sets TRITON_INTERPRET=1 without CUDA)
