"""`python -m psgan_fast.data fetch [--dataset ...] [--data-dir ...]`: find,
fetch and verify data sets (see `psgan_fast.data.datasets.main`)."""

from psgan_fast.data.datasets import main

if __name__ == "__main__":
    raise SystemExit(main())
