"""The PNGs a person opens: a long title (a spec name with its knobs) stays
inside a one-panel sample grid and a loss plot instead of running off it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from psgan_fast import plots

LONG = "psgan N=1, rps-r1r2-skips with d_skips=False, reg_every=8, mode_seek=1.0, betas=(0.0, 0.99) loss, epoch 10, 28px"


def _title_extents(monkeypatch, save, *args):
    """Draw through `save`; {"fig_w": figure width in px, "spans": [(x0, x1)] of each title text it drew}."""
    seen = {}
    close = plt.close

    def keep(fig):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        texts = [t for t in fig.findobj(plt.Text) if t.get_text() and "rps-r1r2" in t.get_text()]
        seen["fig_w"] = fig.bbox.width
        seen["spans"] = [(t.get_window_extent(r).x0, t.get_window_extent(r).x1) for t in texts]
        close(fig)

    monkeypatch.setattr(plots.plt, "close", keep)
    save(*args)
    return seen


def test_long_titles_fit_a_one_panel_grid_and_a_loss_plot(tmp_path, monkeypatch):
    seen = _title_extents(monkeypatch, plots.save_sample_grids, tmp_path / "g.png",
                          [torch.zeros(64, 1, 28, 28)], LONG)
    assert seen["spans"], "the title was not drawn"
    for x0, x1 in seen["spans"]:
        assert 0 <= x0 and x1 <= seen["fig_w"], (x0, x1, seen["fig_w"])
    epochs = [{"epoch": i, "d_loss": 1.0, "g_loss": [1.0], "stage": 2, "resolution": 28} for i in range(3)]
    seen = _title_extents(monkeypatch, plots.save_loss_plot, tmp_path / "l.png", epochs, LONG + LONG)
    for x0, x1 in seen["spans"]:
        assert 0 <= x0 and x1 <= seen["fig_w"], (x0, x1, seen["fig_w"])


def test_fitted_title_breaks_only_at_spaces_and_keeps_every_word():
    out = plots.fitted_title(LONG, 3.2, 10)
    assert out.replace("\n", " ") == LONG and out.count("\n") >= 2
    assert "rps-r1r2-skips" in out.split("\n")[0] + out.split("\n")[1]  # a name is not broken at its hyphens
    short = "psgan N=3, ps loss, epoch 10, 28px"
    assert plots.fitted_title(short, 3.2 * 3, 10) == short
