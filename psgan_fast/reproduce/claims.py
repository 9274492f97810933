"""What the numbers say: the paper's claims checked, and the recommended PS-GAN beside the paper's."""

from __future__ import annotations

import math
from typing import Optional

from psgan_fast import paper
from psgan_fast.ablate import verdict  # the "no wasted generator" rule
from psgan_fast.runlog import UNION_SHARE_RANGE, class_shares
from psgan_fast.reproduce.common import (LABELS, PAPER_ROW_IDS, REC_ROW_IDS, ROW_IDS, ROWS, _agg, _fmt, _mean_sd, _pct,
                                        stage_split)
from psgan_fast.reproduce.state import Plan


# The paper's numbers as the prose quotes them (psgan_fast.paper).
PAPER_FID = {row: fid for row, (fid, _) in paper.TABLE2.items()}
PAPER_IS_ORDER = sorted(paper.TABLE2, key=lambda row: -paper.TABLE2[row][1])  # Table 2's IS, best first


def _paper_is_ranking() -> str:
    """"ProGAN (12.7) > PS-GAN (12.2) > SNGAN (11.6)"."""
    return " > ".join(f"{LABELS[r].split(' (')[0]} ({paper.TABLE2[r][1]})" for r in PAPER_IS_ORDER)


def _paper_table4(what: str) -> str:
    """Table 4 for 1, 2, 3 generators: the mean "fid" or "is" ("7.15 → 6.87 →
    6.68"), or the time "ratio" to 2 generators ("78% / 100% / 128%")."""
    if what == "ratio":
        return " / ".join(_pct(paper.TABLE4[n]["ratio"], 0) for n in (1, 2, 3))
    return " → ".join(str(paper.TABLE4[n][what][0]) for n in (1, 2, 3))


def _paper_ratio(row: str) -> str:
    """Table 3's time ratio of `row` to SNGAN, as a percentage."""
    return _pct(ROWS[row]["paper_ratio"])


# Relative gap below which two single-seed numbers are called a tie.
TIE = 0.02


def _within_tie(ma: float, mb: float) -> bool:
    """Two means closer than TIE of their size."""
    return abs(ma - mb) <= TIE * max(abs(ma), abs(mb))


def _compare(a: tuple, b: tuple, k: int) -> str:
    """'<', '>' or '≈' for (mean, sd) pairs: a tie when the gap is under TIE
    of their size, or (several seeds) under twice the combined seed spread."""
    (ma, sa), (mb, sb) = a, b
    gap = ma - mb
    if _within_tie(ma, mb):
        return "≈"
    if k > 1 and sa is not None and sb is not None and abs(gap) <= 2 * math.sqrt(sa ** 2 + sb ** 2):
        return "≈"
    return "<" if gap < 0 else ">"


def claims(table: dict, plan: Plan, reference: Optional[dict]) -> list[str]:
    """Paragraphs, generated from the numbers, on which of the paper's claims
    they support. Two numbers count as different only when they differ by
    more than TIE (relative) and, with several seeds, by more than twice the
    combined standard deviation over seeds."""
    k = len(plan.seeds)
    fid = {r: _agg(table[r], "fid") for r in ROW_IDS}
    isc = {r: _agg(table[r], "is_mean") for r in ROW_IDS}
    tim = {r: _agg(table[r], "time") for r in ROW_IDS}
    out: list[str] = []
    noise = (f"two numbers count as different only when they differ by more than {int(TIE * 100)}%"
             + (" and by more than twice their combined standard deviation over seeds" if k > 1 else "")
             + "; otherwise they are called a tie (≈)")
    if plan.smoke:
        out.append("*This is a smoke run: a few steps per model test the pipeline; its numbers say nothing "
                   "about the paper.*")
    out.append(f"Rule used below: {noise}.")

    def word(c: str) -> str:
        return {"<": "lower than", ">": "higher than", "≈": "tied with"}[c]

    have2 = all(fid[r][0] is not None for r in ("sngan", "progan", "psgan-g2"))
    if not have2:
        out.append("**Table 2 (PS-GAN (2 gens) has the lowest FID):** not all of SNGAN, ProGAN and PS-GAN (2 gens) "
                   "have been evaluated yet, so this claim is not tested.")
    else:
        vs_sn, vs_pro = _compare(fid["psgan-g2"], fid["sngan"], k), _compare(fid["psgan-g2"], fid["progan"], k)
        verdict = ("supported" if vs_sn == vs_pro == "<" else
                   "partly supported" if "<" in (vs_sn, vs_pro) else "not supported")
        pro_sn = _compare(fid["progan"], fid["sngan"], k)
        out.append(
            f"**Table 2 — PS-GAN (2 gens) has a lower FID than SNGAN and ProGAN ({PAPER_FID['psgan-g2']} vs "
            f"{PAPER_FID['sngan']} and {PAPER_FID['progan']}): "
            f"{verdict}.** "
            f"Ours: PS-GAN (2 gens) {_fmt(*fid['psgan-g2'])}, SNGAN {_fmt(*fid['sngan'])}, ProGAN "
            f"{_fmt(*fid['progan'])}: PS-GAN is {word(vs_sn)} SNGAN and {word(vs_pro)} ProGAN. The paper also puts "
            f"ProGAN ahead of SNGAN ({PAPER_FID['progan']} < {PAPER_FID['sngan']}); here ProGAN's FID is "
            f"{word(pro_sn)} SNGAN's.")
        if all(isc[r][0] is not None for r in ("sngan", "progan", "psgan-g2")):
            order = sorted(("sngan", "progan", "psgan-g2"), key=lambda r: -isc[r][0])
            rel = [_compare(isc[order[i]], isc[order[i + 1]], k) for i in range(2)]
            shown = f"{LABELS[order[0]]} {'≈' if rel[0] == '≈' else '>'} {LABELS[order[1]]} " \
                    f"{'≈' if rel[1] == '≈' else '>'} {LABELS[order[2]]}"
            same = order == PAPER_IS_ORDER
            same_text = ("the same order" if same and "≈" not in rel else
                         "the same order, but with ties" if same else "not the same order")
            out.append(f"IS ranks them {shown} ({', '.join(_fmt(*isc[r]) for r in order)}); the paper's IS ranks "
                       f"{_paper_is_ranking()} — {same_text}.")
    f = [fid[f"psgan-g{n}"] for n in (1, 2, 3)]
    s = [isc[f"psgan-g{n}"] for n in (1, 2, 3)]
    if any(x[0] is None for x in f):
        out.append("**Table 4 — more generators, lower FID:** not all PS-GAN runs are evaluated yet.")
    else:
        c12, c23, c13 = _compare(f[0], f[1], k), _compare(f[1], f[2], k), _compare(f[0], f[2], k)
        verdict = ("supported" if c12 == c23 == ">" else
                   "partly supported" if c13 == ">" or ">" in (c12, c23) else "not supported")
        sc = [_compare(s[0], s[1], k), _compare(s[1], s[2], k)]
        is_trend = ("rises" if sc == ["<", "<"] else "falls" if sc == [">", ">"] else
                    "is flat (ties)" if sc == ["≈", "≈"] else "is not monotone")
        out.append(
            f"**Table 4 — FID falls as generators are added ({_paper_table4('fid')}): {verdict}.** "
            "Ours, 1 → 2 → 3 "
            f"generators: {' → '.join(_fmt(*x) for x in f)}, i.e. FID(1) {c12} FID(2) {c23} FID(3). "
            f"IS {is_trend}: {' → '.join(_fmt(*x) for x in s)}; the paper's rises {_paper_table4('is')}.")
    base = tim["sngan"][0]
    if base is None or any(tim[r][0] is None for r in PAPER_ROW_IDS):
        out.append("**Table 3 — training time:** not every run has finished, so the time ratios are incomplete.")
    else:
        ratio = {r: tim[r][0] / base for r in PAPER_ROW_IDS}
        ours = sorted(PAPER_ROW_IDS, key=lambda r: ratio[r])
        paper_order = sorted(PAPER_ROW_IDS, key=lambda r: ROWS[r]["paper_ratio"])
        pairs = [(x, y) for i, x in enumerate(PAPER_ROW_IDS) for y in PAPER_ROW_IDS[i + 1:]]
        agree = sum((ratio[x] < ratio[y]) == (ROWS[x]["paper_ratio"] < ROWS[y]["paper_ratio"]) for x, y in pairs)
        g = [tim[f"psgan-g{n}"] for n in (1, 2, 3)]
        grows = _compare(g[0], g[1], k) == "<" and _compare(g[1], g[2], k) == "<"
        nosn = _compare(tim["sngan-nosn"], tim["sngan"], k)
        g1 = _compare(tim["psgan-g1"], tim["sngan"], k)
        vs_paper = ", ".join(f"{name} {_pct(ratio[r])} (paper {_paper_ratio(r)})" for r, name in (
            ("psgan-g2", "PS-GAN (2 gens)"), ("psgan-g3", "PS-GAN (3 gens)"), ("psgan-g1", "PS-GAN (1 gen)"),
            ("progan", "ProGAN"), ("sngan-nosn", "SNGAN without spectral norm")))
        out.append(
            f"**Table 3 — training time.** Our order, cheapest first: {', '.join(LABELS[r] for r in ours)}; the "
            f"paper's: {', '.join(LABELS[r] for r in paper_order)} ({agree} of {len(pairs)} pairwise orderings agree). "
            f"Relative to SNGAN: {vs_paper}. That removing spectral norm saves time is "
            f"{'supported' if nosn == '<' else 'not supported'}; that PS-GAN with one generator is cheaper than SNGAN "
            f"is {'supported' if g1 == '<' else 'not supported'}; that each extra generator adds time is "
            f"{'supported' if grows else 'not supported'} (1 / 2 / 3 generators: "
            f"{_pct(g[0][0] / g[1][0], 0)} / 100% / {_pct(g[2][0] / g[1][0], 0)} of 2 generators; paper "
            f"{_paper_table4('ratio')}).")
        st = plan.calibration.step_seconds.get("psgan-g2") if plan.calibration else None
        if st and st[-1] > 0:
            out.append(f"Where the stepwise models' time goes: in the calibration a PS-GAN (2 gens) step at 7×7 took "
                       f"{_pct(st[0] / st[-1], 0)} and at 14×14 {_pct(st[1] / st[-1], 0)} of a 28×28 step on this "
                       f"{plan.device}; the paper does not report per-stage costs on its GPU, so differences in "
                       "the ratios may come from how cheap the early stages are on each device.")
    steps = plan.schedule.epochs * plan.schedule.limit_batches
    cav = [f"Each run saw {steps:,} batches of 64 ({steps * 64:,} images, {steps * 64 / 60000:.2f} passes over "
           "MNIST's 60,000 training images), a small fraction of the paper's training, so every model is early on "
           "its learning curve: the quality comparison is one of early training, not of converged models."]
    if reference is not None:
        best = min((v[0] for v in fid.values() if v[0] is not None), default=None)
        if best is not None:
            cav.append(f"For scale, real held-out MNIST test images score FID {reference['fid']:.2f} (IS "
                       f"{reference['is_mean']:.2f}) under the same extractor and sample size; our best model "
                       f"scores FID {best:.2f}.")
    cav.append(f"FID/IS use the {plan.feature_extractor} extractor, so absolute values are not comparable with "
               "the paper's Inception numbers; only orderings and ratios are.")
    if plan.feature_extractor == "mnist-lenet":
        cav.append("mnist-lenet's IS is bounded by 10 (ten classes); the paper's Inception IS exceeds 10.")
    cav.append("One seed gives no estimate of run-to-run spread, so small gaps in FID or time may be noise."
               if k == 1 else f"Means and standard deviations are over {k} seeds.")
    cav.append("Times come from a shared machine whose load varied while the runs trained (load averages in the "
               "setup), so the time ratios carry that noise; Table 3's calibration column is an independent short "
               "measurement of the same ratios.")
    out.append("**Caveats.** " + " ".join(cav))
    shares = []
    for r in ("psgan-g1", "psgan-g2", "psgan-g3"):
        m, _ = _mean_sd([e["d_right"] for e in table[r] if e.get("d_right") is not None])
        if m is not None:
            n = ROWS[r]["generators"]
            shares.append(f"{LABELS[r]} {_pct(m)} (chance {_pct(1 / (n + 1), 0)})")
    if shares:
        out.append("**The discriminator under Algorithm 2.** The paper claims that N+1-way classification restrains D "
                   "indirectly, so that it no longer outruns the generators. In the last epoch D picked the real "
                   "image in " + ", ".join(shares) + " of the groups. Algorithm 2 updates D only in the groups it "
                   "gets wrong, so D stops learning wherever it is right: a share near 100% means D still wins almost "
                   "every group (and receives almost no gradient), a share near chance means the generators keep "
                   "up. The loss curves are in Figures 4–6.")
    else:
        out.append("The paper's qualitative claim that the discriminator no longer outruns the generators is visible "
                   "only in the loss curves (Figures 4–6).")
    return out


# The recommended step may cost at most this much more than the paper's.
MAX_COST_RATIO = 1.15


def _classes(entries: list[dict]) -> tuple[Optional[float], Optional[int], Optional[tuple[float, float]]]:
    """Over a row's evaluated seeds: the largest top-class share of any
    generator, the number of collapsed generators, and the union's class
    share range (min, max)."""
    tops, collapsed, lo, hi = [], 0, [], []
    for e in entries:
        ev = e.get("eval") or {}
        for g in ev.get("generators", []):
            if g.get("class_histogram"):
                v = verdict(g["class_histogram"])
                tops.append(v["top_share"])
                collapsed += v["collapsed"]
        h = ev.get("class_histogram")
        if h:
            shares = class_shares(h)
            lo.append(min(shares))
            hi.append(max(shares))
    if not tops:
        return None, None, None
    return max(tops), collapsed, (min(lo), max(hi)) if lo else None


# Epochs shown of D's per-epoch share; longer sequences keep their first and
# last few (results.json has them all).
MAX_EPOCHS_SHOWN = 10


def _per_epoch(seqs: list[list], how) -> Optional[str]:
    """"96 → 90 → 84": one value per epoch, first to last, `how` of the
    seeds' values that epoch (None values left out; "?" where none is
    left); None when no seed has an epoch."""
    length = max(map(len, seqs), default=0)
    if not length:
        return None
    vals = [[s[i] for s in seqs if len(s) > i and s[i] is not None] for i in range(length)]
    shown = [f"{100 * how(v):.0f}" if v else "?" for v in vals]
    if length > MAX_EPOCHS_SHOWN:
        keep = MAX_EPOCHS_SHOWN // 2
        shown = shown[:keep] + ["…"] + shown[-keep:]
    return " → ".join(shown)


def _d_per_epoch(entries: list[dict], n: int) -> str:
    """D's share of picking the real image per epoch, first to last (mean
    over the seeds that reached the epoch), beside chance 1/(N+1):
    "96 → 90 → 84% (33%)"; "—" for a row without the share (the baselines)."""
    shown = _per_epoch([e.get("d_right_per_epoch") or [] for e in entries], lambda v: _mean_sd(v)[0])
    return "—" if shown is None else f"{shown}% ({_pct(1 / (n + 1), 0)})"


def _top_per_epoch(entries: list[dict]) -> str:
    """The largest top-class share of any generator of any seed, per epoch
    (the per-epoch evaluation's histograms): "24 → 68 → 35%"; "—" without."""
    seqs = [e.get("top_share_per_epoch") or [] for e in entries]
    shown = _per_epoch(seqs, max) if any(x is not None for s in seqs for x in s) else None
    return "—" if shown is None else f"{shown}%"


def _stage_epochs(split: list[int]) -> str:
    """"epochs 1–2 at 7 px, 3–5 at 14 px and 6–10 at 28 px"."""
    parts, first = [], 1
    for n, px in zip(split, (7, 14, 28)):
        if n:
            last = first + n - 1
            parts.append(f"{'epoch' if n == 1 else 'epochs'} {first}{'' if n == 1 else f'–{last}'} at {px} px")
        first += n
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def _at_or_below(a: tuple, b: tuple, k: int, other: str) -> tuple[bool, str]:
    """Whether mean a is at or below mean b (a target such as "FID at or
    below SNGAN's" is met only then, a tie under _compare or not), and the
    words for it: "below SNGAN", "tied with SNGAN within seed noise, mean
    above", "tied with SNGAN within 2%, mean below", ..."""
    c = _compare(a, b, k)
    met = a[0] <= b[0]
    if c != "≈":
        return met, f"{'below' if c == '<' else 'above'} {other}"
    noise = f"{TIE:.0%}" if _within_tie(a[0], b[0]) else "seed noise"  # else: within twice the seed spread
    side = "below" if a[0] < b[0] else "equal" if a[0] == b[0] else "above"
    return met, f"tied with {other} within {noise}, mean {side}"


def _vs_paper(table: dict, n: int) -> tuple[Optional[float], Optional[float]]:
    """The recommended PS-GAN with n generators against the paper's (mean
    over seeds): its whole run's training time and its wall-clock step at
    the final stage, each as a ratio (None where a side has no number)."""
    rec, lit = table.get(f"psgan-rec-g{n}", []), table.get(f"psgan-g{n}", [])
    ratios = []
    for what in ("time", "step"):
        a, b = _agg(rec, what)[0], _agg(lit, what)[0]
        ratios.append(a / b if a and b else None)
    return ratios[0], ratios[1]


def recommended_section(table: dict, plan: Plan) -> list[str]:
    """The paper's PS-GAN (Algorithm 2 read literally) and the recommended
    one beside SNGAN, with the targets of issue #15 checked from the numbers."""
    k = len(plan.seeds)
    rows = [r for r in ("sngan",) + tuple(f"psgan-g{n}" for n in (1, 2, 3)) + REC_ROW_IDS if r in table]
    if not any(r in table for r in REC_ROW_IDS):
        return []
    lo_ok, hi_ok = UNION_SHARE_RANGE
    L = ["## The paper's PS-GAN and the recommended one, beside SNGAN\n",
         f"The paper's rows train `--loss ps` (Algorithm 2 read literally); the recommended rows train "
         f"`--loss {ROWS[REC_ROW_IDS[0]]['loss']}`, the default of `--model psgan` (docs/DESIGN.md). A generator is "
         "collapsed when one class holds more than 50% of its samples or fewer than 3 classes hold 5% or more "
         "(mnist-lenet's argmax).\n",
         "| model | loss | seeds | FID | IS | time vs paper's PS-GAN (same N): run / 28 px step "
         "| largest top-class share of a generator "
         "| collapsed generators | union class shares | D picks the real image per epoch (chance) "
         "| largest top-class share per epoch |",
         "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        entries = table[r]
        n = ROWS[r]["generators"]
        run_ratio, step_ratio = _vs_paper(table, n) if r in REC_ROW_IDS else (None, None)
        top, coll, rng = _classes(entries)
        n_eval = sum(e["eval"] is not None for e in entries)
        L.append(f"| {LABELS[r]} | {ROWS[r]['loss'] if ROWS[r]['model'] == 'psgan' else '—'} | {n_eval} "
                 f"| {_fmt(*_agg(entries, 'fid'))} | {_fmt(*_agg(entries, 'is_mean'))} "
                 f"| {_pct(run_ratio, 0) if run_ratio else '—'} / {_pct(step_ratio, 0) if step_ratio else '—'} "
                 f"| {_pct(top, 0)} "
                 f"| {'—' if coll is None else coll} | "
                 f"{'—' if rng is None else f'{rng[0]:.1%}–{rng[1]:.1%}'} "
                 f"| {_d_per_epoch(entries, n)} | {_top_per_epoch(entries)} |")
    L.append("")
    L.append("*D picks the real image*: the share of groups (the real image and one fake per generator) in which "
             "D picked the real image as the real one, per epoch from first to last"
             f"{' (mean over seeds)' if k > 1 else ''}, beside chance 1/(N+1) in brackets; the last value is the last "
             f"epoch. The paper's PS-GAN trains {_stage_epochs(plan.schedule.stage_epochs)}; the recommended one "
             f"{_stage_epochs(stage_split(plan.schedule.epochs, REC_ROW_IDS[0]))}."
             + (f" With more than {MAX_EPOCHS_SHOWN} epochs the middle ones are left out (…); results.json "
                "has every epoch." if plan.schedule.epochs > MAX_EPOCHS_SHOWN else "")
             + " *Largest top-class share per epoch*: the most frequent class's share of the generator that "
             f"draws its class most often{' (of any seed)' if k > 1 else ''}, from the per-epoch evaluation "
             f"({plan.schedule.eval_samples} samples per generator): above 50% the generator is collapsed "
             "that epoch; `python -m psgan_fast.runlog RUN_DIR` shows one run epoch by epoch.\n")
    fid = {r: _agg(table[r], "fid") for r in rows}
    out = []
    if fid.get("psgan-rec-g2", (None,))[0] is not None and fid["sngan"][0] is not None:
        met, how = _at_or_below(fid["psgan-rec-g2"], fid["sngan"], k, "SNGAN")
        out.append(f"- Recommended PS-GAN (2 gens) FID {_fmt(*fid['psgan-rec-g2'])} vs SNGAN {_fmt(*fid['sngan'])}: "
                   f"{how} — target {'met' if met else 'not met'}.")
    if all(fid.get(f"psgan-rec-g{n}", (None,))[0] is not None for n in (2, 3)):
        met, how = _at_or_below(fid["psgan-rec-g3"], fid["psgan-rec-g2"], k, "2 generators")
        out.append(f"- 3 generators vs 2 (recommended): {_fmt(*fid['psgan-rec-g3'])} vs {_fmt(*fid['psgan-rec-g2'])}: "
                   f"{how} — Table 4 order {'held' if met else 'not held'}.")
    for group, label in ((REC_ROW_IDS, "recommended"), (tuple(f"psgan-g{n}" for n in (1, 2, 3)), "paper's")):
        stats = [(r, _classes(table[r])) for r in group if r in table]
        stats = [(r, c) for r, c in stats if c[0] is not None]
        if stats:
            wasted = sum(c[1] for _, c in stats)
            union_ok = all(c[2] is not None and c[2][0] >= lo_ok and c[2][1] <= hi_ok for _, c in stats)
            out.append(f"- No wasted generator ({label} PS-GAN): {wasted} collapsed generator(s) over "
                       f"{len(stats)} model(s); union class shares {'all' if union_ok else 'not all'} within "
                       f"{lo_ok:.0%}–{hi_ok:.0%}.")
    costs, runs = [], []
    for n in (1, 2, 3):
        run_ratio, step_ratio = _vs_paper(table, n)
        if step_ratio:
            costs.append(step_ratio)
            runs.append(_pct(run_ratio, 0) if run_ratio else "—")
    if costs:
        out.append(f"- Cost of the recommended update: a step at 28 px takes {', '.join(_pct(c, 0) for c in costs)} "
                   f"of the paper's for N = 1, 2, 3 (target ≤ {_pct(MAX_COST_RATIO, 0)}): "
                   f"{'met' if max(costs) <= MAX_COST_RATIO else 'missed'} (wall clock, with other runs sharing "
                   f"the machine; the interleaved CPU-time measurement is `python -m psgan_fast.bench.cost`). "
                   f"Whole runs, which also differ in how the epochs are split over the stages: "
                   f"{', '.join(runs)}.")
    return L + out + [""]
