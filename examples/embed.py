"""Embed psgan_fast in a pipeline: train a few steps on MNIST, evaluate, save
a sample grid. MNIST is found the usual way ($PSGAN_FAST_DATA, the cache, or
a verified download).

    python examples/embed.py [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psgan_fast
from psgan_fast import TrainConfig
from psgan_fast.metrics import evaluate_generators
from psgan_fast.plots import save_sample_grids


class PrintEpochs(psgan_fast.Callback):
    def on_epoch_end(self, record, recipe):
        print(f"epoch {record['epoch'] + 1}: {record['resolution']}px  D {record['d_loss']:.3f}  "
              f"G {', '.join(f'{g:.3f}' for g in record['g_loss'])}")


def main(out: Path) -> dict:
    cfg = TrainConfig(model="psgan", generators=2, epochs=3, stage_epochs=(1, 1, 1), limit_batches=20,
                      out=str(out / "run"), overwrite=True, progress=False, log_every=10)  # rerunnable
    run = psgan_fast.train(cfg, callbacks=[PrintEpochs()])
    gens = psgan_fast.load_generators(run)
    metrics = evaluate_generators(gens, num_samples=500)
    images = psgan_fast.sample(gens, 64, seed=0)
    save_sample_grids(out / "samples.png", [images[k::len(gens)] for k in range(len(gens))], "embed.py")
    summary = {"run": str(run), "fid_union": metrics["union"]["fid"], "is_union": metrics["union"]["is_mean"],
               "extractor": metrics.get("feature_extractor"), "samples": str(out / "samples.png")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/embed"))
