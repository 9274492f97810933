"""The union-coverage figures of this record's README, from the runs' logs.

    python docs/results/2026-12-04-union-coverage/analyse.py runs/seeds-g2/runs runs/seeds-g3/runs

Each argument is a folder of ablation runs of one N (each run holds metrics.jsonl, with a class
histogram per generator after every epoch, and ablation.json, with the final 10,000-sample union
shares). Prints, per folder, the union's rarest class share after each epoch (mean and lowest
run), how many runs still gained over the last two epochs, and Spearman's rho between the first
28 px epoch's largest top-class share (the spike) and the end's rarest share, and between the
rarest share after epoch 5 or 7 and the end's.
"""

import json
import sys
from pathlib import Path
from statistics import mean

from scipy.stats import spearmanr

from psgan_fast import runlog


def runs_of(folder: Path) -> list[dict]:
    out = []
    for d in sorted(p for p in folder.iterdir() if (p / "metrics.jsonl").is_file()):
        log = runlog.read_log(d)
        result = json.loads((d / "ablation.json").read_text())["result"]
        rarest = runlog.union_extremes(log)
        tops = runlog.top_classes(log)
        epochs = runlog.epochs_in(log)
        top_res = max(int(r["resolution"]) for r in epochs)
        first28 = min(int(r["epoch"]) for r in epochs if int(r["resolution"]) == top_res)
        out.append({"seed": result["seed"], "end": min(result["union_class_shares"]),
                    "spike": max(s for _, s in tops[first28]),
                    "rarest": [rarest[e][0][1] for e in sorted(rarest)]})
    return out


def main(folders: list[str]) -> None:
    everyone = []
    for folder in folders:
        runs = runs_of(Path(folder))
        everyone += runs
        per_epoch = list(zip(*(r["rarest"] for r in runs)))
        print(f"{folder}: {len(runs)} runs (seeds {', '.join(str(r['seed']) for r in runs)})")
        print("  rarest class, mean:  " + " ".join(f"{100 * mean(c):.1f}" for c in per_epoch))
        print("  rarest class, lowest:" + " ".join(f" {100 * min(c):.1f}" for c in per_epoch))
        gained = [r["rarest"][-1] - r["rarest"][-3] for r in runs]
        print(f"  gained over the last two epochs: {sum(g > 0 for g in gained)} of {len(runs)}, "
              f"mean {100 * mean(gained):+.2f} points")
        rho = spearmanr([r["spike"] for r in runs], [r["end"] for r in runs])
        print(f"  spike vs end: rho {rho.statistic:+.2f} (p {rho.pvalue:.2f})")
    for label, pick in (("spike", lambda r: r["spike"]), ("epoch 5", lambda r: r["rarest"][4]),
                        ("epoch 7", lambda r: r["rarest"][6])):
        rho = spearmanr([pick(r) for r in everyone], [r["end"] for r in everyone])
        print(f"all {len(everyone)} runs, {label} vs end: rho {rho.statistic:+.2f} (p {rho.pvalue:.3g})")


if __name__ == "__main__":
    main(sys.argv[1:])
