"""Run by tests/test_distributed.py under torchrun: trains a few steps with
the Python API and checks, after every step, that every rank holds the same
parameters (all-gather of a flat copy). Exits non-zero on a mismatch."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

import psgan_fast
from psgan_fast.trainer import Callback


class SyncCheck(Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step(self, info) -> None:
        flat = torch.cat([p.detach().reshape(-1) for m in info.recipe.modules().values() for p in m.parameters()])
        got = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(got, flat)
        for r, other in enumerate(got):
            if not torch.equal(other, got[0]):
                raise SystemExit(f"step {info.step}: rank {r} parameters differ from rank 0")
        self.steps += 1


def main() -> None:
    torch.set_num_threads(1)
    cfg = psgan_fast.TrainConfig.from_json(json.loads(sys.argv[1]))
    check = SyncCheck()
    psgan_fast.train(cfg, callbacks=[check])
    if dist.get_rank() == 0:
        print(f"sync-checked steps: {check.steps}")


if __name__ == "__main__":
    main()
