"""`python -m psgan_fast.reproduce`: see psgan_fast.reproduce."""

from psgan_fast.reproduce.cli import main

raise SystemExit(main())
