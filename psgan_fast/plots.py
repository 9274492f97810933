"""Files a person opens: sample grids and loss curves (PNG, via matplotlib)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """[B, C, H, W] in [-1, 1] -> an HxWx3 (or HxW) uint8 mosaic."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    b, c, h, w = x.shape
    ncol = nrow
    nrows = (b + ncol - 1) // ncol
    grid = torch.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(b):
        r, q = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if c == 1 else arr


def fitted_title(title: str, width_in: float, fontsize: float) -> str:
    """`title` broken into lines (at spaces) that fit a figure `width_in`
    inches wide at `fontsize` points: long update-rule names must not run
    off a one-panel grid."""
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return textwrap.fill(title, width=chars, break_on_hyphens=False)


def save_sample_grids(path: Path, per_generator: Sequence[torch.Tensor], title: str = "") -> None:
    """One panel per generator, side by side, in one PNG."""
    n = len(per_generator)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for k, (ax, imgs) in enumerate(zip(axes[0], per_generator)):
        ax.imshow(image_grid(imgs), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"G{k + 1}" if n > 1 else "G", fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(fitted_title(title, fig.get_figwidth(), 10), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_loss_plot(path: Path, epochs: Sequence[dict], title: str = "") -> None:
    """Average D and G loss per epoch, one G curve per generator, stage
    switches marked (the paper's Figures 4-6)."""
    if not epochs:
        return
    xs = [e["epoch"] + 1 for e in epochs]
    d = [e["d_loss"] for e in epochs]
    g = np.array([e["g_loss"] for e in epochs], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, d, "k-o", ms=3, label="D")
    for k in range(g.shape[1]):
        ax.plot(xs, g[:, k], "-o", ms=3, label=f"G{k + 1}" if g.shape[1] > 1 else "G")
    prev = epochs[0].get("stage")
    for e in epochs[1:]:
        if e.get("stage") != prev:
            ax.axvline(e["epoch"] + 0.5, color="grey", ls="--", lw=1)
            ax.text(e["epoch"] + 0.55, ax.get_ylim()[1], f"{e.get('resolution')}px", va="top",
                    fontsize=8, color="grey")
            prev = e.get("stage")
    ax.set_xlabel("epoch")
    ax.set_ylabel("average loss")
    if title:
        ax.set_title(fitted_title(title, fig.get_figwidth() * 0.85, 12), fontsize=12)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
