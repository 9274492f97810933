"""Figures 4-9, extra sample grids and FID against training time."""

from __future__ import annotations

import shutil
from pathlib import Path

from psgan_fast.fsutil import read_jsonl
from psgan_fast.runlog import epoch_records
from psgan_fast.reproduce.common import EXTRA_SAMPLE_FIGURES, LABELS, LOSS_FIGURES, ROW_IDS, SAMPLE_FIGURES, run_name
from psgan_fast.reproduce.state import Plan


def _seed0_run(out: Path, plan: Plan, row: str) -> Path:
    return out / "runs" / run_name(row, plan.seeds[0])


def make_figures(out: Path, plan: Plan) -> dict[str, str]:
    """Figures 4-9, extra sample grids and FID vs training time; returns
    {figure stem: path relative to out} for those that could be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from psgan_fast.plots import save_loss_plot

    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    epochs = int(plan.schedule.epochs)
    for stem, fig, row in LOSS_FIGURES:
        recs = epoch_records(_seed0_run(out, plan, row))
        if recs:
            save_loss_plot(figdir / f"{stem}.png", recs, f"Fig. {fig}: {LABELS[row]}, average loss per epoch")
            made[stem] = f"figures/{stem}.png"
    for stem, _, row in SAMPLE_FIGURES + EXTRA_SAMPLE_FIGURES:
        src = _seed0_run(out, plan, row) / "samples" / f"epoch_{epochs:04d}.png"
        if src.is_file():
            shutil.copyfile(src, figdir / f"{stem}.png")
            made[stem] = f"figures/{stem}.png"
    # FID (per-epoch, mnist-lenet, small sample) against cumulative training seconds.
    fig, ax = plt.subplots(figsize=(8, 5))
    any_curve = False
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(ROW_IDS):
        for j, seed in enumerate(plan.seeds):
            ev = [r for r in read_jsonl(out / "runs" / run_name(row, seed) / "metrics.jsonl")
                  if r.get("kind") == "eval" and r.get("fid") is not None]
            if not ev:
                continue
            any_curve = True
            ax.plot([r["train_seconds"] for r in ev], [r["fid"] for r in ev], "-o" if j == 0 else "--",
                    ms=3, lw=1.5 if j == 0 else 0.8, color=colors[i % len(colors)],
                    label=LABELS[row] if j == 0 else None)
    if any_curve:
        ax.set_yscale("log")
        ax.set_xlabel("cumulative training time (s, excludes evaluation)")
        ax.set_ylabel(f"FID (mnist-lenet, {plan.schedule.eval_samples} samples/generator)")
        ax.set_title("FID against wall-clock training time" + (" (dashed: further seeds)" if len(plan.seeds) > 1
                                                               else ""))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(figdir / "fid_vs_time.png", dpi=100)
        made["fid_vs_time"] = "figures/fid_vs_time.png"
    plt.close(fig)
    return made
