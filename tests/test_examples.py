"""examples/embed.py runs end to end (trains, evaluates, saves a grid)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_embed_example_trains_evaluates_and_saves(tmp_path, mnist_train):
    res = subprocess.run([sys.executable, str(REPO / "examples" / "embed.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert math.isfinite(summary["fid_union"]) and summary["fid_union"] > 0
    assert 1.0 <= summary["is_union"] <= 10.0
    png = tmp_path / "samples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    assert "epoch 3: 28px" in res.stdout
