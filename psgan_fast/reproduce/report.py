"""The report: every run's results collected, REPORT.md rendered, results.json written."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from psgan_fast import paper
from psgan_fast.fsutil import atomic_write_text
from psgan_fast.machine import git_commit
from psgan_fast.runlog import (d_picks_real, d_picks_real_per_epoch, epochs_in, final_stage_step_seconds, read_log,
                               top_class_share_per_epoch)
from psgan_fast.reproduce.claims import claims, recommended_section
from psgan_fast.reproduce.common import (BATCH_SIZE, DESCRIPTIONS, EXTRA_SAMPLE_FIGURES, LABELS, LOSS_FIGURES,
                                        REC_ROW_IDS, ROW_IDS, ROWS, SAMPLE_FIGURES, TARGET_FRACTION,
                                        _agg, _fmt, _pct, _read_json, run_name, stage_split)
from psgan_fast.reproduce.figures import make_figures
from psgan_fast.reproduce.run import run_status, train_seconds
from psgan_fast.reproduce.state import Context, Plan, seeds_of


def d_right_share(run_dir: Path) -> Optional[float]:
    """The last finished epoch's share of d_picks_real_per_epoch (None when
    there is none)."""
    shares = d_picks_real_per_epoch(run_dir)
    return shares[-1] if shares else None


def collect(out: Path, plan: Plan) -> dict[str, list[dict]]:
    """row -> one entry per seed: status, train seconds, evaluation."""
    table: dict[str, list[dict]] = {}
    for row in ROW_IDS:
        for seed in seeds_of(plan, row):
            rd = out / "runs" / run_name(row, seed)
            status, steps = run_status(rd) if rd.exists() else ("new", 0)
            doc = _read_json(rd / "final_eval.json") if status == "complete" else None
            log = read_log(rd)  # read once for the time, D's shares and the top-class shares
            recs = epochs_in(log)
            shares = d_picks_real(recs)
            tops = top_class_share_per_epoch(log)
            entry = {"seed": seed, "status": status, "steps": steps, "train_seconds": train_seconds(rd, recs),
                     "eval": doc["result"] if doc else None, "d_right": shares[-1] if shares else None,
                     "d_right_per_epoch": shares, "final_step_seconds": final_stage_step_seconds(recs),
                     "top_share_per_epoch": tops if any(t is not None for t in tops) else []}
            if status == "failed":
                entry["error"] = (_read_json(rd / "FAILED.json") or {}).get("error")
            table.setdefault(row, []).append(entry)
    return table


def render_report(out: Path, plan: Plan, table: dict, figures: dict[str, str], reference: Optional[dict],
                  ctx: Context, progress: dict) -> str:
    sch = plan.schedule
    k = len(plan.seeds)
    n_done = sum(e["eval"] is not None for v in table.values() for e in v)
    n_all = sum(len(v) for v in table.values())
    L: list[str] = []
    a = L.append
    a("# PS-GAN reproduction: Tables 2–4 and Figures 4–9\n")
    a(f"Planned {plan.created} by `{plan.command}`; this report written {time.strftime('%Y-%m-%d %H:%M:%S')}"
      f" by `{ctx.command or plan.command}`.  ")
    a(f"Status: **{'complete' if n_done == n_all else f'partial — {n_done} of {n_all} runs evaluated'}**.\n")
    # Setup.
    ext = ctx.extractor
    v = plan.versions
    wall = sum(inv.get("wall_seconds", 0.0) for inv in progress.get("invocations", []))
    pred = plan.prediction or {}
    a("## Setup\n")
    a(f"- **Feature extractor:** `{ext['name']}` (weights `{ext.get('weights')}`, SHA-256 "
      f"`{(ext.get('weights_sha256') or 'n/a')[:16]}…`). Final evaluation: {sch.final_samples} samples per "
      "generator; a model's FID/IS is that of the union of its generators (image i from generator i mod N) "
      "against the 60,000 MNIST training images. FID-vs-time curves: mnist-lenet, "
      f"{sch.eval_samples} samples per generator after every epoch.")
    if ext["name"] == "mnist-lenet":
        a("- **IS note:** mnist-lenet has 10 classes, so its IS is at most 10; the paper used the 1000-class "
          "Inception network (IS > 10). Compare orderings, not values.")
    a(f"- **Device:** {plan.device_name} (`{plan.device}`), {plan.cpu_count} CPU cores, "
      f"{plan.torch_threads} torch threads.")
    a(f"- **Versions:** psgan_fast {v.get('psgan_fast')}, torch {v.get('torch')}, torch-fidelity "
      f"{v.get('torch_fidelity')}, numpy {v.get('numpy')}, Python {v.get('python')}, {v.get('platform')}.")
    if plan.smoke:
        planned = "smoke run: a fixed tiny schedule, no calibration"
    else:
        planned = (f"calibration took {(plan.calibration.seconds if plan.calibration else 0) / 60:.1f} min; training "
                   f"and evaluation were predicted to take {plan.wall_minutes():.1f} min of wall clock "
                   f"({pred.get('total_seconds', 0) / 60:.1f} min of work, {plan.jobs} "
                   f"run(s) at a time; the plan aims at {int(TARGET_FRACTION * 100)}% of the budget)")
    a(f"- **Budget:** {plan.budget_minutes:g} min ({planned}). Wall-clock so far: {wall / 60:.1f} min over "
      f"{len(progress.get('invocations', []))} invocation(s).")
    for e in plan.extensions:
        a(f"- **Extended** {e['at']} by `{e['command']}` (the plan had seed(s) {', '.join(map(str, e['seeds']))} "
          f"for {'every row' if e['seed_rows'] is None else ', '.join(e['seed_rows'])}): the schedule is "
          "unchanged, and the budget and prediction above cover the plan before the extension.")
    la = [plan.loadavg_at_plan, progress.get("loadavg_last")]
    if any(la):
        a(f"- **Machine load** (1/5/15-min load averages): {la[0]} when planned, {la[1]} at the last report "
          f"({plan.cpu_count} cores: a load above that means other work shared the CPU and wall-clock "
          "times are noisy).")
    split = " / ".join(map(str, sch.stage_epochs))
    rec = " / ".join(map(str, stage_split(sch.epochs, REC_ROW_IDS[0])))
    stages = (f"PS-GAN stages and ProGAN phases {split}" if rec == split else
              f"the paper's PS-GAN stages and ProGAN phases {split}, the recommended PS-GAN's stages {rec}")
    a(f"- **Schedule (identical for every run):** {sch.epochs} epochs of "
      f"{'full epochs' if sch.full_epoch else str(sch.limit_batches) + ' batches'} of {BATCH_SIZE} "
      f"({sch.limit_batches * BATCH_SIZE:,} images per epoch); {stages} "
      f"epochs at 7 / 14 / 28 px; SNGAN trains all {sch.epochs} epochs at "
      f"28 px. Seeds: {', '.join(map(str, plan.seeds))}. The paper trained on all 60,000 images per epoch on "
      f"an {paper.GPU}.")
    a("- **Training time** is each run's cumulative `train_seconds` (training loop only; evaluation, plots and "
      "checkpoints excluded).\n")
    # Table 2.
    sfx = f" (mean ± sd over {k} seeds)" if k > 1 else ""
    a(f"## Table 2 — quality{sfx}\n")
    a("| model | FID (ours) | FID (paper) | IS (ours) | IS (paper) |")
    a("|---|---:|---:|---:|---:|")
    for row in ("sngan", "progan", "psgan-g2"):
        pf, pi = paper.TABLE2[row]
        a(f"| {LABELS[row]} | {_fmt(*_agg(table[row], 'fid'))} | {pf} | {_fmt(*_agg(table[row], 'is_mean'))} | {pi} |")
    if reference is not None:
        a(f"| *real MNIST test images (reference)* | {reference['fid']:.2f} | — | {reference['is_mean']:.2f} | — |")
    a("")
    # Table 3.
    a(f"## Table 3 — training time relative to SNGAN{sfx}\n")
    a("| model | description | time (s, ours) | ratio (ours) | ratio (calibration) | time (s, paper) | "
      "ratio (paper) |")
    a("|---|---|---:|---:|---:|---:|---:|")
    base = _agg(table["sngan"], "time")[0]
    runs_pred = pred.get("runs", {})
    pbase = runs_pred.get("sngan", {}).get("per_batch")
    for row in ROW_IDS:
        m, sd = _agg(table[row], "time")
        cal_ratio = runs_pred.get(row, {}).get("per_batch")
        cal = _pct(cal_ratio / pbase) if cal_ratio and pbase else "—"
        a(f"| {LABELS[row]} | {DESCRIPTIONS[row]} | {_fmt(m, sd, 1)} | {_pct(m / base) if m and base else '—'} | "
          f"{cal} | {ROWS[row]['paper_seconds'] or '—'} | {_pct(ROWS[row]['paper_ratio'])} |")
    a("\n*ratio (calibration)*: the same ratio predicted from the short timing harness run before training "
      "(`psgan_fast.bench.timing.time_training`, a few steps per stage), an independent measurement.\n")
    # Table 4.
    a(f"## Table 4 — number of generators (ratios relative to 2 generators){sfx}\n")
    a("| generators | time (s) | ratio | FID | IS | time (s, paper) | ratio (paper) | FID (paper) | IS (paper) |")
    a("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base2 = _agg(table["psgan-g2"], "time")[0]
    for n in (1, 2, 3):
        row = f"psgan-g{n}"
        m, sd = _agg(table[row], "time")
        p = paper.TABLE4[n]
        a(f"| {n} | {_fmt(m, sd, 1)} | {_pct(m / base2, 0) if m and base2 else '—'} | "
          f"{_fmt(*_agg(table[row], 'fid'))} | {_fmt(*_agg(table[row], 'is_mean'))} | {p['seconds']} | "
          f"{_pct(p['ratio'], 0)} | {p['fid'][0]} ± {p['fid'][1]} | {p['is'][0]} ± {p['is'][1]} |")
    a("")
    L.extend(recommended_section(table, plan))
    # Every run.
    a("## Every run\n")
    a("| run | status | steps | train (s) | FID | IS | FID per generator | samples per class 0–9 (mnist-lenet) |")
    a("|---|---|---:|---:|---:|---:|---|---|")
    for row in ROW_IDS:
        for e in table[row]:
            ev = e["eval"] or {}
            per = ", ".join(f"{g['fid']:.2f}" for g in ev.get("generators", [])) if ev else "—"
            hist = " ".join(map(str, ev["class_histogram"])) if ev.get("class_histogram") else "—"
            status = e["status"] + (f" ({e['error']})" if e.get("error") else "")
            a(f"| `runs/{run_name(row, e['seed'])}` | {status} | {e['steps']} | "
              f"{_fmt(e['train_seconds'], None, 1)} | {_fmt(ev.get('fid'))} | {_fmt(ev.get('is_mean'))} | "
              f"{per} | {hist} |")
    a("")
    # Figures.
    a("## Figures\n")
    if not figures:
        a("*(Figures are drawn when every run has finished.)*\n")
    for stem, fig, row in LOSS_FIGURES + SAMPLE_FIGURES:
        if stem in figures:
            what = "average D and G loss per epoch (one curve per generator; dashed lines: stage switches)" \
                if "losses" in stem else "samples after the last epoch (fixed noise)"
            a(f"**Figure {fig}** — {LABELS[row]}, {what}.\n\n![Figure {fig}]({figures[stem]})\n")
    for stem, _, row in EXTRA_SAMPLE_FIGURES:
        if stem in figures:
            a(f"**Extra** — {LABELS[row]}, samples after the last epoch.\n\n![{LABELS[row]}]({figures[stem]})\n")
    if "fid_vs_time" in figures:
        a("**FID against training time** — every model, FID after each epoch (mnist-lenet, "
          f"{sch.eval_samples} samples per generator; earlier stages upsampled to 28 px) against cumulative "
          "training seconds.\n\n![FID vs time](figures/fid_vs_time.png)\n")
    # Claims.
    a("## What the numbers say about the paper's claims\n")
    for para in claims(table, plan, reference):
        a(para + "\n")
    return "\n".join(L) + "\n"


def write_report(out: Path, plan: Plan, ctx: Context, progress: dict, *, figures: bool) -> Path:
    table = collect(out, plan)
    figs = make_figures(out, plan) if figures else {}
    ref = ctx.reference
    text = render_report(out, plan, table, figs, ref, ctx, progress)
    atomic_write_text(out / "REPORT.md", text)
    atomic_write_text(out / "results.json", json.dumps(results_doc(plan, table, ref, progress), indent=1))
    return out / "REPORT.md"


def results_doc(plan: Plan, table: dict, reference: Optional[dict], progress: dict) -> dict:
    """The numbers behind REPORT.md in one JSON file (for docs/results/):
    the command, commit, machine, budget and schedule, and per row and seed
    the FID / IS / training time, D's accuracy (last epoch, and per epoch)
    and the class histograms of the union and of each generator."""
    rows = {}
    for row, entries in table.items():
        rows[row] = {"label": LABELS[row], "model": ROWS[row]["model"], "generators": ROWS[row]["generators"],
                     "loss": ROWS[row]["loss"] if ROWS[row]["model"] == "psgan" else None,
                     "runs": [{"seed": e["seed"], "status": e["status"], "steps": e["steps"],
                               "train_seconds": e["train_seconds"],
                               "final_stage_step_seconds": e.get("final_step_seconds"),
                               "d_picks_real": e.get("d_right"),
                               "d_picks_real_per_epoch": e.get("d_right_per_epoch") or None,
                               "top_class_share_per_epoch": e.get("top_share_per_epoch") or None,
                               **({k: e["eval"].get(k) for k in ("fid", "is_mean", "is_std", "class_histogram",
                                                                 "generators", "num_samples")}
                                  if e["eval"] else {})} for e in entries]}
    return {"command": plan.command, "commit": git_commit(), "created": plan.created,
            "machine": {"device": plan.device_name, "cores": plan.cpu_count, "torch_threads": plan.torch_threads,
                        "versions": plan.versions},
            "budget_minutes": plan.budget_minutes, "extensions": plan.extensions, "flags": plan.flags.to_json(),
            "schedule": plan.schedule.to_json(),
            "wall_seconds": sum(inv.get("wall_seconds", 0.0) for inv in progress.get("invocations", [])),
            "feature_extractor": plan.feature_extractor, "reference": reference, "rows": rows}
