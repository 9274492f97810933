"""Run by tests/test_distributed.py under torchrun: rank 0 enters an
all-reduce that rank 1 never issues (ranks out of step). With
$PSGAN_FAST_DIST_TIMEOUT set small, rank 0 must fail with gloo's timeout
error instead of waiting forever."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from psgan_fast import distributed


def main() -> None:
    info = distributed.setup("cpu")
    if info.rank == 0:
        dist.all_reduce(torch.ones(3))
        print("all_reduce returned")  # must not happen
    else:
        time.sleep(600)  # torchrun ends it once rank 0 has failed


if __name__ == "__main__":
    main()
