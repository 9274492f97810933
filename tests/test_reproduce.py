"""`python -m psgan_fast.reproduce`: the planner, and the whole pipeline in
--smoke mode on real MNIST — killed part-way, resumed, resumed again with a
lost evaluation cache, and refused with conflicting flags."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from psgan_fast import reproduce as rp
from psgan_fast.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# The planner (pure functions, synthetic calibration)


def _cal(step=0.1, eval_per_image=1e-4, overhead=0.5):
    return {"step_seconds": {r: [step / 4, step / 2, step] for r in rp.ROW_IDS},
            "eval_seconds_per_image": eval_per_image, "epoch_overhead_seconds": overhead}


def test_schedule_fits_the_budget_and_prefers_ten_epochs():
    cal = _cal()
    sch = rp.choose_schedule(cal, budget_seconds=3600, spent_seconds=120, seeds=1, full_batches=938,
                             eval_samples=500, final_samples=5000)
    assert sch["epochs"] == rp.PREFERRED_EPOCHS and sch["stage_epochs"] == [2, 3, 5]
    assert rp.MIN_BATCHES <= sch["limit_batches"] < 938
    total = sch["prediction"]["total_seconds"]
    assert total <= rp.TARGET_FRACTION * 3600 - 120
    # one more batch per epoch would not fit
    more = rp.predict(cal, rp.ROW_IDS, sch["epochs"], sch["limit_batches"] + 1, seeds=1, eval_samples=500,
                      final_samples=5000)["total_seconds"]
    assert more > rp.TARGET_FRACTION * 3600 - 120
    # seeds multiply the cost
    sch2 = rp.choose_schedule(cal, budget_seconds=3600, spent_seconds=120, seeds=2, full_batches=938,
                              eval_samples=500, final_samples=5000)
    assert sch2["epochs"] * sch2["limit_batches"] < sch["epochs"] * sch["limit_batches"]


def test_schedule_trades_epochs_for_batches_and_caps_at_full_epochs():
    slow = rp.choose_schedule(_cal(step=2.0), budget_seconds=1800, spent_seconds=0, seeds=1, full_batches=938,
                              eval_samples=500, final_samples=5000)
    assert rp.MIN_EPOCHS <= slow["epochs"] < rp.PREFERRED_EPOCHS
    fast = rp.choose_schedule(_cal(step=1e-4, overhead=0.01, eval_per_image=1e-7), budget_seconds=3600,
                              spent_seconds=0, seeds=1, full_batches=938, eval_samples=500, final_samples=5000)
    assert fast["full_epoch"] and fast["limit_batches"] == 938 and fast["epochs"] > rp.PREFERRED_EPOCHS


def test_schedule_refuses_a_budget_too_small():
    with pytest.raises(rp.ReproError, match="too small"):
        rp.choose_schedule(_cal(step=5.0), budget_seconds=60, spent_seconds=30, seeds=1, full_batches=938,
                           eval_samples=500, final_samples=5000)


def test_sngan_spends_every_epoch_at_full_resolution():
    cal = {"step_seconds": {"sngan": [9.0, 9.0, 1.0], "psgan-g1": [0.0, 0.0, 1.0]},
           "eval_seconds_per_image": 0.0, "epoch_overhead_seconds": 0.0}
    p = rp.predict(cal, ["sngan", "psgan-g1"], 10, 1, seeds=1, eval_samples=0, final_samples=0)
    assert p["runs"]["sngan"]["train"] == pytest.approx(10.0)  # 10 epochs at the 28 px cost
    assert p["runs"]["psgan-g1"]["train"] == pytest.approx(5.0)  # only its 5 final-stage epochs cost


def test_each_staged_row_trains_and_is_planned_with_its_own_split(tmp_path):
    """The recommended rows split the epochs as their loss does (10/10/80%),
    the paper's PS-GAN and ProGAN as the plan's schedule says (20/30/50%):
    in the runs' configs and in the planner's prediction."""
    plan = _fake_plan(seeds=[0], epochs=10, stage_epochs=rp.stage_split(10))
    assert plan.schedule.stage_epochs == [2, 3, 5]
    for row, want in (("psgan-g2", (2, 3, 5)), ("progan", (2, 3, 5)), ("psgan-rec-g2", (1, 1, 8))):
        cfg = rp.train_config(plan, row, 0, tmp_path / row)
        assert cfg.stage_epochs == want == rp.stage_split(10, row), row
        assert TrainConfig(model=cfg.model, loss=cfg.loss, epochs=10).resolved_stage_epochs() == want
    assert rp.train_config(plan, "sngan", 0, tmp_path / "s").stage_epochs is None
    cal = {"step_seconds": {r: [1.0, 0.0, 0.0] for r in rp.ROW_IDS},  # only the 7 px stage costs
           "eval_seconds_per_image": 0.0, "epoch_overhead_seconds": 0.0}
    p = rp.predict(cal, ["psgan-g2", "psgan-rec-g2", "progan"], 10, 1, seeds=1, eval_samples=0, final_samples=0)
    assert [p["runs"][r]["per_batch"] for r in ("psgan-g2", "psgan-rec-g2", "progan")] == [2.0, 1.0, 2.0]


def test_ties_and_orderings():
    assert rp._compare((1.0, None), (1.01, None), 1) == "≈"
    assert rp._compare((1.0, None), (1.5, None), 1) == "<"
    assert rp._compare((2.0, 0.4), (1.5, 0.4), 3) == "≈"  # within twice the seed spread
    assert rp._compare((2.0, 0.01), (1.5, 0.01), 3) == ">"


# --------------------------------------------------------------------------
# Flags


def test_bad_flags_exit_2(tmp_path):
    for argv in (["--out", str(tmp_path / "r"), "--budget-minutes", "-1"],
                 ["--out", str(tmp_path / "r"), "--seeds", "0"],
                 ["--budget-minutes", "5"]):
        with pytest.raises(SystemExit) as e:
            rp.main(argv)
        assert e.value.code == 2


def test_new_reproduction_needs_a_budget(tmp_path, capsys):
    assert rp.main(["--out", str(tmp_path / "r")]) == 1
    assert "--budget-minutes is required" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert rp.main(["--out", str(tmp_path / "r"), "--smoke", "--data-dir", str(empty)]) == 1
    assert "MNIST is not available" in capsys.readouterr().err


def test_module_runs_as_a_command():
    r = subprocess.run([sys.executable, "-m", "psgan_fast.reproduce", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--budget-minutes" in r.stdout and "--smoke" in r.stdout


# --------------------------------------------------------------------------
# The smoke pipeline


@pytest.fixture
def lenet_weights(tmp_path, monkeypatch):
    """The shipped mnist-lenet weights; if they are not built yet, a fixed
    random-init file, so the pipeline (not the extractor's quality) is tested."""
    from psgan_fast.metrics import extractors as ex

    if not ex.LENET_WEIGHTS.is_file():
        from safetensors.torch import save_file

        from psgan_fast.metrics.lenet import MNISTLeNet

        path = tmp_path / "lenet.safetensors"
        with torch.random.fork_rng():
            torch.manual_seed(0)
            save_file(MNISTLeNet().state_dict(), str(path))
        monkeypatch.setattr(ex, "LENET_WEIGHTS", path)
    yield


def _snapshot(out: Path) -> dict:
    """What training writes, per run: the latest checkpoint's name and
    state, and metrics.jsonl (evaluation caches excluded)."""
    snap = {}
    for rd in sorted((out / "runs").iterdir()):
        latest = (rd / "checkpoints" / "LATEST").read_text().strip()
        state = rd / "checkpoints" / latest / "state.json"
        snap[rd.name] = (latest, state.stat().st_mtime_ns, state.read_text(), (rd / "metrics.jsonl").read_text())
    return snap


def test_smoke_reproduction_kill_resume_and_report(tmp_path, lenet_weights, capsys, mnist_train):
    out = tmp_path / "repro"
    t0 = time.perf_counter()

    # 1. Killed part-way: after 9 training steps (run 1 complete, run 2 stopped mid-epoch).
    assert rp.main(["--out", str(out), "--smoke", "--stop-after-steps", "9"]) == 130
    assert "resume with" in capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["smoke"] and plan["schedule"]["epochs"] == 3 and plan["schedule"]["limit_batches"] == 2
    assert plan["schedule"]["stage_epochs"] == [1, 1, 1] and plan["flags"]["threads"] == 1
    assert plan["feature_extractor"] == "mnist-lenet" and plan["seeds"] == [0]
    assert rp.run_status(out / "runs" / "sngan-s0") == ("complete", 6)
    assert rp.run_status(out / "runs" / "sngan-nosn-s0") == ("partial", 3)
    assert not (out / "runs" / "progan-s0").exists()
    first = _snapshot(out)

    # 2. Resumed: the finished run is not retrained, the partial one continues, the rest train.
    assert rp.main(["--out", str(out), "--smoke"]) == 0
    log = capsys.readouterr().out
    assert "resuming the reproduction" in log and "sngan-nosn seed 0: resuming at step 3" in log
    done = _snapshot(out)
    assert done["sngan-s0"] == first["sngan-s0"]
    assert sorted(done) == sorted(rp.run_name(r, 0) for r in rp.ROW_IDS)
    for name in done:
        rd = out / "runs" / name
        assert rp.run_status(rd) == ("complete", 6)
        epochs = [r for r in rp.read_jsonl(rd / "metrics.jsonl") if r["kind"] == "epoch"]
        assert [e["epoch"] for e in epochs] == [0, 1, 2]
        evals = [r for r in rp.read_jsonl(rd / "metrics.jsonl") if r["kind"] == "eval"]
        assert len(evals) == 3 and all(math.isfinite(e["fid"]) for e in evals)
        res = json.loads((rd / "final_eval.json").read_text())["result"]
        assert math.isfinite(res["fid"]) and res["num_samples"] == 200
        assert res["train_seconds"] == pytest.approx(epochs[-1]["train_seconds"])
    g3 = json.loads((out / "runs" / "psgan-g3-s0" / "final_eval.json").read_text())["result"]
    assert len(g3["generators"]) == 3

    report = (out / "REPORT.md").read_text()
    for heading in ("## Table 2", "## Table 3", "## Table 4", "## Figures", "## What the numbers say"):
        assert heading in report
    # the paper's numbers beside ours
    for paper in ("8.34", "7.29", "6.87", "11.6", "12.7", "12.2", "100.0%", "89.4%", "134.6%", "96.5%", "123.7%",
                  "158.5%", "3920", "5277", "7.15 ± 0.03", "6.68 ± 0.03", "11.9 ± 0.04", "78%", "128%"):
        assert paper in report, paper
    table3 = report.split("## Table 3")[1].split("## Table 4")[0]
    assert len([l for l in table3.splitlines() if l.startswith("| ") and "%" in l]) == len(rp.ROW_IDS)
    rec = report.split("## The paper's PS-GAN and the recommended one")[1].split("## Every run")[0]
    for row in ("sngan",) + rp.REC_ROW_IDS:
        assert f"| {rp.LABELS[row]} |" in rec
    assert "No wasted generator (recommended PS-GAN)" in rec and "Cost of the recommended update" in rec
    doc = json.loads((out / "results.json").read_text())
    assert doc["command"].startswith("python -m psgan_fast.reproduce") and doc["budget_minutes"] == 5.0
    assert set(doc["rows"]) == set(rp.ROW_IDS) and doc["rows"]["psgan-g2"]["loss"] == "ps"
    g3 = doc["rows"]["psgan-rec-g3"]["runs"][0]
    assert len(g3["generators"]) == 3 and all(sum(g["class_histogram"]) == 200 for g in g3["generators"])
    # the per-epoch evaluation's class histograms: each generator's top class, epoch by epoch
    assert len(g3["top_class_share_per_epoch"]) == 3 and all(0.1 <= t <= 1 for t in g3["top_class_share_per_epoch"])
    tops = rp.read_jsonl(out / "runs" / "psgan-rec-g3-s0" / "metrics.jsonl")
    assert all(sum(r["classes_g2"]) == 200 for r in tops if r["kind"] == "eval")
    # what produced it
    assert "mnist-lenet" in report and "at most 10" in report and "torch " + torch.__version__ in report
    assert "Budget:" in report and "smoke" in report
    # every figure exists and is linked
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", report)
    expected = {f"figures/{stem}.png" for stem, _, _ in rp.LOSS_FIGURES + rp.SAMPLE_FIGURES}
    expected.add("figures/fid_vs_time.png")
    assert expected <= set(links)
    for link in links:
        assert (out / link).stat().st_size > 1000, link
    for fig in range(4, 10):
        assert f"**Figure {fig}**" in report
    # D's share of right calls under Algorithm 2, from each PS-GAN run's log
    d_para = report.split("**The discriminator under Algorithm 2.**")[1].split("\n")[0]
    assert "(chance 50%)" in d_para and "(chance 33%)" in d_para and "(chance 25%)" in d_para
    g2_log = [json.loads(l) for l in (out / "runs" / "psgan-g2-s0" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in g2_log if r["kind"] == "epoch"][-1]["case_real"]
    assert f"PS-GAN (2 gens) {100 * last:.1f}% (chance 33%)" in d_para

    # 3. A lost evaluation cache is recomputed; nothing is retrained.
    before = json.loads((out / "runs" / "psgan-g2-s0" / "final_eval.json").read_text())["result"]
    (out / "runs" / "psgan-g2-s0" / "final_eval.json").unlink()
    assert rp.main(["--out", str(out)]) == 0
    assert _snapshot(out) == done
    after = json.loads((out / "runs" / "psgan-g2-s0" / "final_eval.json").read_text())["result"]
    assert after["fid"] == pytest.approx(before["fid"], rel=1e-6)
    # ... and so is one made under an older extractor definition (same weights).
    for cache in (out / "runs" / "psgan-g2-s0" / "final_eval.json", out / "reference_eval.json"):
        doc = json.loads(cache.read_text())
        assert doc["key"]["extractor_version"] >= 2
        doc["key"]["extractor_version"] = 1
        doc["result"]["fid"] = 12345.678
        cache.write_text(json.dumps(doc))
    assert rp.main(["--out", str(out)]) == 0
    again = json.loads((out / "runs" / "psgan-g2-s0" / "final_eval.json").read_text())["result"]
    assert again["fid"] == pytest.approx(before["fid"], rel=1e-6)
    assert json.loads((out / "reference_eval.json").read_text())["result"]["fid"] != 12345.678
    assert "12345.6" not in (out / "REPORT.md").read_text()
    progress = json.loads((out / "progress.json").read_text())
    assert [i["status"] for i in progress["invocations"]] == ["stopped", "done", "done", "done"]

    # 4. Flags that conflict with the plan are refused.
    capsys.readouterr()
    assert rp.main(["--out", str(out), "--seeds", "2"]) == 1
    err = capsys.readouterr().err
    assert "--seeds 2 (planned: 1)" in err
    assert rp.main(["--out", str(out), "--budget-minutes", "60"]) == 1
    assert _snapshot(out) == done

    # 5. --extend trains a further seed of one row only; nothing finished is retrained.
    assert "add --extend" in err
    assert rp.main(["--out", str(out), "--extend", "--seeds", "2", "--seed-rows", "sngan"]) == 0
    assert "1 more run(s)" in capsys.readouterr().out
    extended = _snapshot(out)
    assert sorted(extended) == sorted(list(done) + ["sngan-s1"])
    assert {k: v for k, v in extended.items() if k in done} == done
    assert rp.run_status(out / "runs" / "sngan-s1") == ("complete", 6)
    doc = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in doc["rows"]["sngan"]["runs"]] == [0, 1]
    assert [r["seed"] for r in doc["rows"]["psgan-rec-g2"]["runs"]] == [0]
    assert doc["extensions"][0]["seeds"] == [0] and doc["extensions"][0]["seed_rows"] is None
    assert "**Extended**" in (out / "REPORT.md").read_text()
    # ... and is resumed like any other reproduction, with or without the flags.
    assert rp.main(["--out", str(out)]) == 0
    assert rp.main(["--out", str(out), "--seeds", "2", "--seed-rows", "sngan"]) == 0
    assert _snapshot(out) == extended
    print(f"smoke reproduction test: {time.perf_counter() - t0:.0f} s")


def test_extend_adds_seeds_and_seed_rows_and_drops_nothing():
    plan = _fake_plan(seeds=(0,))
    plan = rp.extend_plan(plan, 2, ["psgan-rec-g2", "sngan"], command="c1", at="t1", all_rows=rp.ROW_IDS)
    assert plan.seeds == [0, 1] and plan.seed_rows == ["sngan", "psgan-rec-g2"]  # in the rows' order
    assert (plan.flags.seeds, plan.flags.seed_rows) == (2, ["sngan", "psgan-rec-g2"])
    assert [r for r, s in rp.plan_runs(plan) if s == 1] == ["sngan", "psgan-rec-g2"]
    # More rows at the same seed count; then more seeds for the same rows.
    plan = rp.extend_plan(plan, None, ["sngan", "psgan-rec-g2", "psgan-rec-g3"], command="c2", at="t2",
                          all_rows=rp.ROW_IDS)
    assert [r for r, s in rp.plan_runs(plan) if s == 1] == ["sngan", "psgan-rec-g2", "psgan-rec-g3"]
    plan = rp.extend_plan(plan, 3, None, command="c3", at="t3", all_rows=rp.ROW_IDS)
    assert [r for r, s in rp.plan_runs(plan) if s == 2] == ["sngan", "psgan-rec-g2", "psgan-rec-g3"]
    assert [e["command"] for e in plan.extensions] == ["c1", "c2", "c3"]
    assert plan.extensions[0] == {"at": "t1", "command": "c1", "seeds": [0], "seed_rows": None}
    assert plan.extensions[2]["seed_rows"] == ["sngan", "psgan-rec-g2", "psgan-rec-g3"]
    back = rp.Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert back.extensions == plan.extensions and rp.plan_runs(back) == rp.plan_runs(plan)
    assert plan.schedule == _fake_plan().schedule
    # Every row listed: seed_rows goes back to None (all rows).
    assert rp.extend_plan(plan, None, list(rp.ROW_IDS), command="c", at="t", all_rows=rp.ROW_IDS).seed_rows is None
    # Refused: fewer seeds, a seed row left out, nothing new.
    with pytest.raises(rp.ReproError, match="--seeds 2 is fewer than the 3 planned"):
        rp.extend_plan(plan, 2, None, command="c", at="t", all_rows=rp.ROW_IDS)
    with pytest.raises(rp.ReproError, match="leaves out psgan-rec-g3"):
        rp.extend_plan(plan, 4, ["sngan", "psgan-rec-g2"], command="c", at="t", all_rows=rp.ROW_IDS)
    with pytest.raises(rp.ReproError, match="give more --seeds or more --seed-rows"):
        rp.extend_plan(plan, 3, ["psgan-rec-g3", "sngan", "psgan-rec-g2"], command="c", at="t",
                       all_rows=rp.ROW_IDS)
    # A plan.json from before --extend existed reads with no extensions.
    doc = _fake_plan().to_json()
    del doc["extensions"]
    assert rp.Plan.from_json(doc).extensions == []


def test_extend_needs_a_started_reproduction_and_keeps_the_other_flags(tmp_path, capsys):
    out = tmp_path / "r"
    assert rp.main(["--out", str(out), "--extend", "--seeds", "2"]) == 1
    assert "has no plan.json" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    plan = _fake_plan(seeds=(0,))
    (out / "plan.json").write_text(json.dumps(plan.to_json()))
    before = (out / "plan.json").read_text()
    assert rp.main(["--out", str(out), "--extend", "--seeds", "2", "--budget-minutes", "60"]) == 1
    assert "--budget-minutes 60.0 (planned: 5.0)" in capsys.readouterr().err
    assert rp.main(["--out", str(out), "--extend", "--seeds", "1"]) == 1
    assert "give more --seeds" in capsys.readouterr().err
    assert (out / "plan.json").read_text() == before


def test_seed_rows_and_jobs_plan_only_the_asked_runs():
    plan = {"seeds": [0, 1], "seed_rows": ["sngan", "psgan-rec-g2"], "rows": list(rp.ROW_IDS)}
    runs = rp.plan_runs(plan)
    assert [r for r, s in runs if s == 1] == ["sngan", "psgan-rec-g2"]
    assert sorted(r for r, s in runs if s == 0) == sorted(rp.ROW_IDS)
    assert rp.ROWS["psgan-g2"]["loss"] == "ps" and rp.ROWS["psgan-rec-g2"]["loss"] == TrainConfig().loss
    cal = _cal()
    one = rp.predict(cal, rp.ROW_IDS, 10, 20, seeds=1, eval_samples=500, final_samples=500)["total_seconds"]
    per_row = {r: len(rp.seeds_of(plan, r)) for r in rp.ROW_IDS}
    two = rp.predict(cal, rp.ROW_IDS, 10, 20, seeds=per_row, eval_samples=500, final_samples=500)
    extra = sum(two["runs"][r]["total"] for r in ("sngan", "psgan-rec-g2"))
    assert two["total_seconds"] == pytest.approx(one + extra)
    # Two jobs: about twice the work fits the same budget.
    kw = dict(budget_seconds=3600, spent_seconds=0, seeds=1, full_batches=937, eval_samples=500, final_samples=500)
    assert rp.choose_schedule(cal, jobs=2, **kw)["limit_batches"] > 1.5 * rp.choose_schedule(cal, **kw)["limit_batches"]


# --------------------------------------------------------------------------
# D's share per epoch and the recommended PS-GAN's targets (made-up runs)


def _fake_plan(seeds=(0, 1), epochs=3, stage_epochs=(1, 1, 1)) -> rp.Plan:
    return rp.Plan(version=rp.PLAN_VERSION, created="", command="python -m psgan_fast.reproduce",
                   flags=rp.Flags(budget_minutes=5.0), budget_minutes=5.0, smoke=False, seeds=list(seeds),
                   seed_rows=None, rows=list(rp.ROW_IDS), device="cpu", device_name="cpu", cpu_count=2,
                   torch_threads=1, data_dir=None, feature_extractor="mnist-lenet", extractor_at_plan=None,
                   schedule=rp.Schedule(epochs=epochs, stage_epochs=list(stage_epochs), limit_batches=4,
                                        full_epoch=False), calibration=None, prediction=None)


def _write_log(run_dir: Path, epochs: list[list[tuple[int, float]]], unfinished=(), case=True) -> None:
    """metrics.jsonl of a run: per finished epoch its step windows (steps,
    case_real) and an epoch record with their steps-weighted mean, as the
    trainer writes them; then the windows of an unfinished epoch."""
    run_dir.mkdir(parents=True)
    recs, step = [{"kind": "message", "step": 0, "text": "stage 0"}], 0
    for e, windows in enumerate(epochs + [list(unfinished)]):
        for n, share in windows:
            step += n
            recs.append({"kind": "step", "epoch": e, "step": step, "steps": n, "d_loss": 1.0,
                         **({"case_real": share} if case else {})})
        if e < len(epochs):
            mean = sum(n * s for n, s in windows) / sum(n for n, _ in windows)
            recs.append({"kind": "epoch", "epoch": e, "step": step, "steps": sum(n for n, _ in windows),
                         "d_loss": 1.0, "train_seconds": 1.0 + e, **({"case_real": mean} if case else {})})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_d_picks_real_per_epoch_from_the_log(tmp_path):
    out = tmp_path / "repro"
    # windows of unequal size: the epoch's share is their steps-weighted mean, not their plain mean
    _write_log(out / "runs" / "psgan-g2-s0", [[(3, 0.8), (1, 1.0)], [(2, 0.5), (2, 0.7)]], unfinished=[(1, 0.1)])
    _write_log(out / "runs" / "sngan-s0", [[(4, 0.0)], [(4, 0.0)]], case=False)
    shares = rp.d_picks_real_per_epoch(out / "runs" / "psgan-g2-s0")
    assert shares == pytest.approx([0.85, 0.6])  # the unfinished epoch is left out
    assert rp.d_right_share(out / "runs" / "psgan-g2-s0") == pytest.approx(0.6)
    assert rp.d_picks_real_per_epoch(out / "runs" / "sngan-s0") == []
    assert rp.d_right_share(out / "runs" / "sngan-s0") is None
    assert rp.d_picks_real_per_epoch(out / "runs" / "missing") == []
    # collect() carries the sequence and results.json writes it per run
    plan = _fake_plan(seeds=[0])
    table = rp.collect(out, plan)
    g2 = table["psgan-g2"][0]
    assert g2["status"] == "new" and g2["d_right_per_epoch"] == pytest.approx([0.85, 0.6])
    assert g2["d_right"] == pytest.approx(0.6)
    doc = rp.results_doc(plan, table, None, {})
    run = doc["rows"]["psgan-g2"]["runs"][0]
    assert run["d_picks_real_per_epoch"] == pytest.approx([0.85, 0.6]) and run["d_picks_real"] == pytest.approx(0.6)
    assert doc["rows"]["sngan"]["runs"][0]["d_picks_real_per_epoch"] is None
    assert run["top_class_share_per_epoch"] is None  # the log has no evaluation records
    json.dumps(doc)


def _entry(seed, fid, d=None, n=1):
    hist = [20] * 10
    return {"seed": seed, "status": "complete", "steps": 12, "train_seconds": 10.0 + n, "d_right": d[-1] if d else None,
            "d_right_per_epoch": d or [],
            "eval": {"fid": fid, "is_mean": 5.0, "class_histogram": hist,
                     "generators": [{"fid": fid, "class_histogram": hist}] * n}}


def _fake_table(sngan=(2.37, 2.77), rec2=(1.47, 3.85), rec3=(1.95,)):
    """Every row; FIDs of the committed 2026-12-02 report by default
    (SNGAN 2.57 ± 0.28, recommended 2 gens 2.66 ± 1.68, 3 gens 1.95)."""
    table = {r: [_entry(0, 10.0, n=rp.ROWS[r]["generators"])] for r in rp.ROW_IDS}
    table["sngan"] = [_entry(s, f) for s, f in enumerate(sngan)]
    table["psgan-g2"] = [_entry(0, 10.8, [0.96, 0.90, 0.84], n=2)]
    table["psgan-rec-g2"] = [_entry(s, f, d, n=2) for s, (f, d) in
                             enumerate(zip(rec2, ([0.8, 0.7], [0.6, 0.5, 0.4])))]
    table["psgan-rec-g3"] = [_entry(s, f, [0.5, 0.3, 0.25], n=3) for s, f in enumerate(rec3)]
    return table


def _cells(section: list[str], row: str) -> list[str]:
    line = next(l for l in section if l.startswith(f"| {rp.LABELS[row]} |"))
    return [c.strip() for c in line.split("|")[1:-1]]


def test_recommended_section_shows_d_per_epoch_beside_chance():
    table = _fake_table()
    # the largest top-class share per epoch: the worst seed's (epochs without histograms: "?")
    table["psgan-rec-g2"][0]["top_share_per_epoch"] = [0.3, 0.68, None]
    table["psgan-rec-g2"][1]["top_share_per_epoch"] = [0.4, 0.2, None]
    sec = rp.recommended_section(table, _fake_plan())
    header = next(l for l in sec if l.startswith("| model |"))
    assert header.rstrip(" |").endswith("D picks the real image per epoch (chance) | largest top-class share per epoch")
    assert _cells(sec, "psgan-g2")[-2] == "96 → 90 → 84% (33%)"
    assert _cells(sec, "psgan-rec-g2")[-2] == "70 → 60 → 40% (33%)"  # mean over the seeds that reached the epoch
    assert _cells(sec, "psgan-rec-g3")[-2] == "50 → 30 → 25% (25%)"
    assert _cells(sec, "sngan")[-2] == "—"
    assert _cells(sec, "psgan-rec-g2")[-1] == "40 → 68 → ?%" and _cells(sec, "psgan-rec-g3")[-1] == "—"
    assert all(len(_cells(sec, r)) == len(header.split("|")) - 2 for r in ("sngan",) + rp.REC_ROW_IDS)
    note = next(l for l in sec if l.startswith("*D picks the real image*"))
    assert "(mean over seeds)" in note and "1/(N+1)" in note and "(of any seed)" in note
    assert "epoch 1 at 7 px, epoch 2 at 14 px and epoch 3 at 28 px" in note and "left out" not in note
    # a long run: the first and last epochs, the middle left out
    table = _fake_table()
    table["psgan-g1"] = [_entry(0, 18.0, [i / 100 for i in range(1, 13)])]
    sec = rp.recommended_section(table, _fake_plan(seeds=[0], epochs=12, stage_epochs=(2, 4, 6)))
    assert _cells(sec, "psgan-g1")[-2] == "1 → 2 → 3 → 4 → 5 → … → 8 → 9 → 10 → 11 → 12% (50%)"
    note = next(l for l in sec if l.startswith("*D picks the real image*"))
    assert "epochs 1–2 at 7 px, epochs 3–6 at 14 px and epochs 7–12 at 28 px; the recommended one epoch 1 at 7 px, " \
           "epoch 2 at 14 px and epochs 3–12 at 28 px" in note
    assert "results.json has every epoch" in note
    assert "(mean over seeds)" not in note


def _bullet(sec: list[str], start: str) -> str:
    return next(l for l in sec if l.startswith(start))


def test_cost_compares_steps_at_the_final_stage():
    """The recommended update's cost is its step at the final stage against
    the paper's (its split over the stages differs), not the whole run."""
    from psgan_fast.runlog import final_stage_step_seconds

    recs = [{"epoch": 0, "stage": 0, "steps": 10, "seconds": 1.0}, {"epoch": 1, "stage": 2, "steps": 10, "seconds": 4.0},
            {"epoch": 1, "stage": 2, "steps": 10, "seconds": 5.0},  # epoch 1 logged again (resumed): the last counts
            {"epoch": 2, "stage": 2, "steps": 20, "seconds": 6.0}]
    assert final_stage_step_seconds(recs) == pytest.approx(11.0 / 30)
    assert final_stage_step_seconds([{"epoch": 0, "steps": 4, "seconds": 2.0}]) == pytest.approx(0.5)  # no stages
    assert final_stage_step_seconds([]) is None
    table = _fake_table()
    for n in (1, 2, 3):
        for e in table[f"psgan-g{n}"]:
            e.update(final_step_seconds=0.2, train_seconds=100.0)
        for e in table[f"psgan-rec-g{n}"]:
            e.update(final_step_seconds=0.2 * (1.1 + 0.05 * n), train_seconds=150.0)
    line = _bullet(rp.recommended_section(table, _fake_plan()), "- Cost of the recommended update")
    assert "a step at 28 px takes 115%, 120%, 125% of the paper's" in line and "missed" in line
    assert "Whole runs, which also differ in how the epochs are split over the stages: 150%, 150%, 150%." in line
    for n in (1, 2, 3):
        for e in table[f"psgan-rec-g{n}"]:
            e["final_step_seconds"] = 0.2 * 1.15
    assert "): met" in _bullet(rp.recommended_section(table, _fake_plan()), "- Cost of the recommended update")


def test_targets_are_met_only_at_or_below_the_reference_mean():
    vs_sngan, vs_two = "- Recommended PS-GAN (2 gens) FID", "- 3 generators vs 2"
    # The committed report: 2.66 ± 1.68 vs 2.57 ± 0.28 is a tie by seed spread, but the mean is above.
    sec = rp.recommended_section(_fake_table(), _fake_plan())
    assert rp._compare((2.66, 1.68), (2.57, 0.28), 2) == "≈"
    assert _bullet(sec, vs_sngan).endswith(
        "2.66 ± 1.68 vs SNGAN 2.57 ± 0.28: tied with SNGAN within seed noise, mean above — target not met.")
    assert _bullet(sec, vs_two).endswith("1.95 vs 2.66 ± 1.68: below 2 generators — Table 4 order held.")
    # A tie with the mean at or below meets the target; a tie within 2% says so.
    sec = rp.recommended_section(_fake_table(rec2=(2.50, 2.56), rec3=(2.55,)), _fake_plan())
    assert _bullet(sec, vs_sngan).endswith("tied with SNGAN within 2%, mean below — target met.")
    assert _bullet(sec, vs_two).endswith("tied with 2 generators within 2%, mean above — Table 4 order not held.")
    # Clearly below / clearly above.
    sec = rp.recommended_section(_fake_table(sngan=(2.56, 2.58), rec2=(1.50, 1.52), rec3=(2.5,)), _fake_plan())
    assert _bullet(sec, vs_sngan).endswith("below SNGAN — target met.")
    assert _bullet(sec, vs_two).endswith("above 2 generators — Table 4 order not held.")
    sec = rp.recommended_section(_fake_table(sngan=(2.56, 2.58), rec2=(3.50, 3.52)), _fake_plan())
    assert _bullet(sec, vs_sngan).endswith("above SNGAN — target not met.")
