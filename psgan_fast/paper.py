"""The paper's numbers (PS-GAN on MNIST, Tables 2-4), in one place.

Everything that prints or compares against the paper (the benchmark tables
of ``psgan_fast.bench``, ``python -m psgan_fast.reproduce`` and the prose it
generates) reads them from here.
"""

from __future__ import annotations

# The GPU the paper's times were measured on.
GPU = "RTX 3080"

# Table 2: row -> (FID, IS).
TABLE2 = {"sngan": (8.34, 11.6), "progan": (7.29, 12.7), "psgan-g2": (6.87, 12.2)}

# Table 3: (row id, model, generators, seconds, ratio vs SNGAN).
TABLE3 = (
    ("sngan", "sngan", 1, 3920, 1.000),
    ("sngan-nosn", "sngan-nosn", 1, 3506, 0.894),
    ("progan", "progan", 1, 5277, 1.346),
    ("psgan-g1", "psgan", 1, 3784, 0.965),
    ("psgan-g2", "psgan", 2, 4851, 1.237),
    ("psgan-g3", "psgan", 3, 6214, 1.585),
)

# Table 4: generators -> seconds, ratio vs 2 generators, FID (mean, sd), IS (mean, sd).
TABLE4 = {
    1: {"seconds": 3784, "ratio": 0.78, "fid": (7.15, 0.03), "is": (11.9, 0.04)},
    2: {"seconds": 4851, "ratio": 1.00, "fid": (6.87, 0.02), "is": (12.2, 0.05)},
    3: {"seconds": 6214, "ratio": 1.28, "fid": (6.68, 0.03), "is": (12.7, 0.05)},
}
# Table 4 as (generators, ratio vs 2 generators) pairs.
TABLE4_RATIOS = tuple((n, v["ratio"]) for n, v in TABLE4.items())

