"""One shuffled MNIST epoch of 64-image batches converted to float in
[-1, 1]: psgan_fast's Rust BatchStream vs torchvision MNIST + DataLoader.

Target (issue: Foundation): >= 1,000,000 images/s and >= 50x torchvision.
"""

from __future__ import annotations

import gzip
import shutil
import time

import pytest
import torch

from psgan_fast.data import BatchStream, mnist, read_idx, to_float

from conftest import report

BATCH = 64


@pytest.fixture(scope="module")
def train_paths():
    return mnist(split="train", download=False)


def _epoch_stream(stream, epoch):
    stream.set_epoch(epoch)
    n = 0
    for x, _ in stream:
        f = to_float(x)
        n += f.shape[0]
    return n


def test_loader_psgan_fast(benchmark, train_paths):
    stream = BatchStream(*train_paths, batch_size=BATCH, seed=0)
    epochs = iter(range(1_000_000))
    n = benchmark.pedantic(lambda: _epoch_stream(stream, next(epochs)), rounds=5, iterations=1,
                           warmup_rounds=1)
    rate = n / benchmark.stats.stats.median
    benchmark.extra_info["images_per_s"] = rate
    report("loader: one epoch, batch 64, float [-1,1]", "psgan_fast BatchStream (Rust)", rate, "img/s")


def test_loader_torchvision(benchmark, train_paths, tmp_path_factory):
    tv = pytest.importorskip("torchvision")
    from torchvision import transforms

    root = tmp_path_factory.mktemp("tv")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for p in train_paths:
        name = p.name.removesuffix(".gz")
        with (gzip.open(p) if p.suffix == ".gz" else open(p, "rb")) as src, open(raw / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    # torchvision also wants the test split present; reuse train files' headers
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        test = mnist(split="test", download=False)
        src = test[0] if "images" in name else test[1]
        with (gzip.open(src) if src.suffix == ".gz" else open(src, "rb")) as s, open(raw / name, "wb") as d:
            shutil.copyfileobj(s, d)
    ds = tv.datasets.MNIST(str(root), train=True, download=False,
                           transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=0)

    def epoch():
        n = 0
        for x, _ in loader:
            n += x.shape[0]
        return n

    n = benchmark.pedantic(epoch, rounds=1, iterations=1)
    rate = n / benchmark.stats.stats.median
    benchmark.extra_info["images_per_s"] = rate
    report("loader: one epoch, batch 64, float [-1,1]", "torchvision MNIST + DataLoader", rate, "img/s",
           baseline=True)
