"""The ablation harness (psgan_fast.ablate): variants inherit from their
parents, the collapse verdict, and the whole pipeline in smoke mode."""

import json
from pathlib import Path

import pytest

from psgan_fast import ablate
from psgan_fast.config import TrainConfig


def test_variants_inherit_their_parents_and_build_valid_configs(tmp_path):
    assert ablate.resolve_variant("rps-r1r2-skips") == {"loss": "rps", "r1": 0.1, "r2": 0.1, "skips": True}
    assert ablate.resolve_variant("paper") == {"loss": "ps"}
    for name in ablate.VARIANTS:  # every registered variant is a valid training config
        cfg = ablate.train_config(name, generators=2, seed=0, epochs=6, batches=3, run_dir=tmp_path / name)
        assert isinstance(cfg, TrainConfig) and sum(cfg.stage_epochs) == 6
    cfg = ablate.train_config("rps-r1r2-nostages", generators=2, seed=0, epochs=6, batches=3, run_dir=tmp_path)
    assert cfg.stage_epochs == (0, 0, 6) and cfg.loss == "rps" and cfg.r1 == 0.1
    assert ablate.train_config("sngan", generators=2, seed=0, epochs=6, batches=3,
                               run_dir=tmp_path).model == "sngan"
    with pytest.raises(ValueError, match="unknown variant"):
        ablate.resolve_variant("nope")


def test_the_mode_seeking_variants_name_the_spec_they_train_and_the_default():
    from psgan_fast.config import RECOMMENDED_LOSS
    from psgan_fast.registry import get_spec

    desc = {lam: ablate.VARIANTS[f"recommended-split118-every8-ms{lam}"][1] for lam in ("0.1", "0.02", "0.3", "1")}
    assert desc["0.1"].endswith("lambda 0.1 (= rps-r1r2-gskips-s118-r8-ms)")
    assert desc["0.02"].endswith("lambda 0.02") and desc["1"].endswith("lambda 1")
    assert desc["0.3"].endswith("lambda 0.3 (= rps-r1r2-gskips-s118-r8-ms0.3)")
    # ... and the variant trains what that spec does (resolved knobs against the spec's)
    knobs = ablate.resolve_variant("recommended-split118-every8-ms0.3")
    spec = get_spec("rps-r1r2-gskips-s118-r8-ms0.3")
    assert knobs["mode_seek"] == spec.mode_seek and knobs["reg_every"] == spec.reg_every
    assert knobs["stages"] == spec.stage_split and knobs["betas"] == spec.betas
    # ... so its figures are titled with that spec's name, not the parent's --loss
    cfg = ablate.train_config("recommended-split118-every8-ms0.3", generators=2, seed=0, epochs=10, batches=2,
                              run_dir=Path("unused"))
    assert cfg.loss != "rps-r1r2-gskips-s118-r8-ms0.3" and cfg.loss_label() == "rps-r1r2-gskips-s118-r8-ms0.3"
    # the default is that variant with the ink-divided distance for one generator, named as such
    ink1 = ablate.resolve_variant("recommended-split118-every8-ms0.3-ink1")
    assert ink1 == {**knobs, "mode_seek_dist": "l1-ink-n1"} == {**knobs, "mode_seek_dist": get_spec(
        RECOMMENDED_LOSS).mode_seek_dist}
    assert ablate.VARIANTS["recommended-split118-every8-ms0.3-ink1"][1].endswith(f"(= {RECOMMENDED_LOSS}, the default)")
    cfg = ablate.train_config("recommended-split118-every8-ms0.3-ink1", generators=1, seed=0, epochs=10, batches=2,
                              run_dir=Path("unused"))
    assert cfg.loss_label() == RECOMMENDED_LOSS
    cfg = ablate.train_config("recommended-split118-every8-ms1", generators=2, seed=0, epochs=10, batches=2,
                              run_dir=Path("unused"))
    # (a knob no spec has: the nearest spec, first in the registry on a tie, and that knob)
    assert cfg.loss_label() == "rps-r1r2-gskips-s118-r8 with mode_seek=1.0"
    # the ink-normalised distance changes that one knob of the default's variant
    ink = ablate.resolve_variant("recommended-split118-every8-ms0.3-ink")
    assert ink == {**knobs, "mode_seek_dist": "l1-ink"} and spec.mode_seek_dist == "l1"
    cfg = ablate.train_config("recommended-split118-every8-ms0.3-ink", generators=1, seed=0, epochs=10, batches=2,
                              run_dir=Path("unused"))
    assert cfg.loss_label() == "rps-r1r2-gskips-s118-r8-ms0.3 with mode_seek_dist=l1-ink"


@pytest.mark.parametrize("hist,collapsed", [
    ([100, 0, 0, 0, 0, 0, 0, 0, 0, 0], True),     # one class
    ([51, 49, 0, 0, 0, 0, 0, 0, 0, 0], True),     # top class above 50%
    ([50, 46, 4, 0, 0, 0, 0, 0, 0, 0], True),     # only 2 classes at 5% or more
    ([50, 45, 5, 0, 0, 0, 0, 0, 0, 0], False),    # the boundary: 50% and three classes at 5%
    ([10] * 10, False),
])
def test_collapse_verdict(hist, collapsed):
    assert ablate.verdict(hist)["collapsed"] is collapsed


def test_smoke_ablation_writes_the_table(tmp_path, mnist_train):
    out = tmp_path / "abl"
    assert ablate.main(["--out", str(out), "--smoke", "--variants", "paper,recommended"]) == 0
    doc = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in doc["results"]] == ["paper", "recommended"]
    for r in doc["results"]:
        assert r["generators"] == 2 and len(r["per_generator"]) == 2
        assert len(r["d_accuracy"]) == ablate.SMOKE["epochs"] and r["chance"] == pytest.approx(1 / 3)
        assert sum(r["union_class_shares"]) == pytest.approx(1.0)
        assert all(sum(g["class_histogram"]) == ablate.SMOKE["samples"] for g in r["per_generator"])
        # the collapse timeline: the worst generator's top-class share after each epoch
        tops = r["top_share_per_epoch"]
        assert len(tops) == ablate.SMOKE["epochs"] and all(0.1 <= t <= 1 for t in tops)
    table = (out / "ABLATION.md").read_text()
    assert table.count("\n| paper |") == 1 and table.count("\n| recommended |") == 1
    # Cached: a second call trains nothing and gives the same table.
    before = (out / "runs" / "paper-s0" / "metrics.jsonl").read_text()
    assert ablate.main(["--out", str(out), "--smoke", "--variants", "paper,recommended"]) == 0
    assert (out / "runs" / "paper-s0" / "metrics.jsonl").read_text() == before
    rows = lambda text: [line for line in text.splitlines() if line.startswith("| ")]  # noqa: E731
    assert rows((out / "ABLATION.md").read_text()) == rows(table)
    assert "commit" in table and json.loads((out / "ablation.json").read_text())["setup"]["command"].endswith(
        "--smoke --variants paper,recommended")


def test_bad_flags_name_themselves(capsys):
    with pytest.raises(SystemExit):
        ablate.main(["--out", "x", "--variants", "paper,nope"])
    assert "--variants" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablate.main(["--out", "x", "--epochs", "2"])
    assert "--epochs" in capsys.readouterr().err


def test_table_shows_ds_accuracy_in_every_epoch_beside_chance():
    g = {"fid": 12.0, "top_share": 0.3, "top_class": 1, "collapsed": False}
    r = {"variant": "paper", "seed": 0, "fid": 11.0, "per_generator": [g, g], "union_class_shares": [0.1] * 10,
         "d_accuracy": [0.861, 0.9604, 0.99], "chance": 1 / 3, "ms_per_step": 100.0}
    table = ablate.render([r], {"generators": 2, "epochs": 3, "batches": 4, "samples": 10})
    assert "| 86 → 96 → 99% (33%) | — |" in table  # a result scored before the timeline was logged
    table = ablate.render([dict(r, top_share_per_epoch=[0.25, None, 0.674])], {"generators": 2, "epochs": 3,
                                                                              "batches": 4, "samples": 10})
    assert "| 86 → 96 → 99% (33%) | 25 → ? → 67% | 100 |" in table


def test_the_timeline_evaluation_leaves_the_training_alone(tmp_path):
    """Every epoch is evaluated, and only the evaluation's settings differ
    from a run without it (tests/test_trainer.py: eval-every trains the same)."""
    with_t = ablate.train_config("recommended", generators=2, seed=0, epochs=6, batches=3, run_dir=tmp_path)
    without = ablate.train_config("recommended", generators=2, seed=0, epochs=6, batches=3, run_dir=tmp_path,
                                  timeline_samples=0)
    assert with_t.eval_every == 1 and with_t.eval_samples == ablate.TIMELINE_SAMPLES and without.eval_every == 0
    a, b = with_t.to_json(), without.to_json()
    assert {k for k in a if a[k] != b[k]} == {"eval_every", "eval_samples"}


def test_the_moving_average_variant_trains_as_its_parent_and_keeps_both_scores(tmp_path, mnist_train):
    """The --g-ema variant scores the averages, and its live weights score
    exactly as its parent's run does (same training, same evaluation)."""
    out = tmp_path / "abl"
    parent, ema = "recommended-split118-every8-ms0.3", "recommended-split118-every8-ms0.3-ema10"
    assert ablate.main(["--out", str(out), "--smoke", "--variants", f"{parent},{ema}"]) == 0
    rp, re_ = json.loads((out / "ablation.json").read_text())["results"]
    assert "live" not in rp and re_["live"]["fid"] == rp["fid"]
    assert re_["live"]["union_class_shares"] == rp["union_class_shares"]
    assert re_["fid"] != rp["fid"]  # the averages draw other images
