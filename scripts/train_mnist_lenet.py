#!/usr/bin/env python
"""Train the `mnist-lenet` feature extractor and write its weights.

    .venv/bin/python scripts/train_mnist_lenet.py            # writes psgan_fast/weights/mnist_lenet.safetensors

Deterministic: fixed seeds for the initialisation, the data order and the
augmentation, `torch.use_deterministic_algorithms(True)` and a fixed number
of CPU threads, so the same torch build on the same kind of CPU reproduces
the file bit for bit (the script prints its SHA-256). Another CPU or torch
version may differ in the last bits of the weights, not in the accuracy.

Recipe: MNIST train (60,000), random ±2 px translations, Adam (lr 1e-3,
halved at epochs 3 and 4), batch 128, 5 epochs. The script refuses to write
weights below 99% test accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from psgan_fast.data import mnist, read_idx  # noqa: E402
from psgan_fast.metrics.lenet import MNISTLeNet  # noqa: E402

DEFAULT_OUT = REPO / "psgan_fast" / "weights" / "mnist_lenet.safetensors"
MIN_ACCURACY = 0.99


def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_path, labels_path = mnist(split=split)
    x = torch.from_numpy(read_idx(images_path)).unsqueeze(1)  # uint8 [N, 1, 28, 28]
    y = torch.from_numpy(read_idx(labels_path).astype(np.int64))
    return x, y


def translate(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by a random (dy, dx) in [-max_shift, max_shift], zero fill."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, 1, h, w + 2 * max_shift)
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, 1, h, w)
    return cropped.gather(3, cols)


@torch.no_grad()
def accuracy(model: MNISTLeNet, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(x), 1000):
        logits = model(x[s:s + 1000].float() / 255.0)
        correct += int((logits.argmax(1) == y[s:s + 1000]).sum())
    return correct / len(x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (part of the determinism)")
    ap.add_argument("--limit", type=int, help="train on the first N training images only (for tests)")
    ap.add_argument("--min-accuracy", type=float, default=MIN_ACCURACY,
                    help=f"refuse to write weights below this test accuracy (default {MIN_ACCURACY})")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    x_train, y_train = load("train")
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_test, y_test = load("test")

    model = MNISTLeNet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 4], gamma=0.5)
    gen = torch.Generator().manual_seed(args.seed + 1)
    n = len(x_train)
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for s in range(0, n, args.batch_size):
            idx = order[s:s + args.batch_size]
            xb = translate(x_train[idx], gen).float() / 255.0
            loss = F.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        sched.step()
        acc = accuracy(model, x_test, y_test)
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total / seen:.4f}, "
              f"test accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    acc = accuracy(model, x_test, y_test)
    if acc < args.min_accuracy:
        print(f"test accuracy {acc:.4f} is below {args.min_accuracy}: not writing weights", file=sys.stderr)
        return 1

    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    info = {
        "architecture": "psgan_fast.metrics.lenet.MNISTLeNet",
        "test_accuracy": round(acc, 4),
        "epochs": args.epochs,
        "seed": args.seed,
        "torch": torch.__version__,
    }
    # One metadata key: safetensors writes its metadata map in arbitrary
    # order, which would make identical weights differ byte for byte.
    save_file(state, str(args.out), metadata={"psgan_fast": json.dumps(info, sort_keys=True)})
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), test accuracy {acc:.4f}, sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
