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
