"""psgan_fast.runlog: a run's timeline (stage, D's picks, FID, each
generator's most frequent class per epoch) read back from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from psgan_fast import runlog


def _log(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def _epoch(e: int, stage: int, res: int, case: float) -> dict:
    return {"kind": "epoch", "epoch": e, "step": 10 * (e + 1), "stage": stage, "resolution": res, "d_loss": 1.0,
            "case_real": case, "train_seconds": float(e)}


def _eval(e: int, fid: float, *hists: list[int]) -> dict:
    return {"kind": "eval", "epoch": e, "fid": fid, **{f"classes_g{k}": h for k, h in enumerate(hists)}}


SPREAD = [10] * 10
ONES = [5, 60, 5, 5, 5, 5, 5, 5, 5, 0]  # 60% "1": collapsed


def test_timeline_follows_a_generator_into_a_collapse_and_out(tmp_path, capsys):
    run = _log(tmp_path / "run", [
        _epoch(0, 0, 7, 0.6), _eval(0, 50.0, SPREAD, [0, 0, 40, 0, 0, 0, 0, 0, 60, 0]),
        _epoch(1, 2, 28, 0.9), _eval(1, 30.0, SPREAD, [90, 10] + [0] * 8),  # overwritten below
        _eval(1, 20.0, SPREAD, ONES),  # an epoch evaluated twice counts once: its last record
        {"kind": "step", "epoch": 2, "step": 25, "d_loss": 1.0},
        _epoch(2, 2, 28, 0.7),  # no eval this epoch
        _epoch(3, 2, 28, 0.65), _eval(3, 9.5, SPREAD, [12, 12, 12, 12, 12, 12, 10, 6, 6, 6]),
    ])
    tops = runlog.top_classes(runlog.read_jsonl(run / "metrics.jsonl"))
    assert sorted(tops) == [0, 1, 3]
    assert tops[1] == [(0, 0.1), (1, 0.6)] and tops[0][1] == (8, 0.6)
    assert runlog.top_class_share_per_epoch(runlog.read_log(run)) == [0.6, 0.6, None, 0.12]
    rows = runlog.timeline(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and rows[2]["fid"] is None and rows[2]["top_classes"] is None
    assert rows[1]["fid"] == 20.0 and rows[1]["d_picks_real"] == 0.9 and rows[1]["resolution"] == 28
    md = runlog.timeline_markdown(run).splitlines()
    assert md[0].startswith("| epoch | stage (px) |")
    assert md[0].endswith("| G1: top class | G2: top class | union: rarest – commonest class |")
    # the union of 10% everywhere and 60% "1"s: 5.0% "9" to 35.0% "1", outside the band
    assert md[3] == ("| 2 | 2 (28) | 90% | 20.00 | 10% '0' | 60% '1' **collapsed** "
                     "| 5.0% '9' – 35.0% '1' **outside 4%–18%** |")
    assert md[4] == "| 3 | 2 (28) | 70% | — | — | — | — |"
    assert "collapsed" not in md[5] and md[5].endswith("| 8.0% '7' – 11.0% '0' |")  # ties go to the lower class
    assert rows[1]["union_rarest"] == (9, 0.05) and rows[1]["union_commonest"] == (1, 0.35)
    assert rows[2]["union_rarest"] is None
    assert runlog.main([str(run)]) == 0 and "60% '1' **collapsed**" in capsys.readouterr().out
    assert runlog.main([str(run), "--json"]) == 0
    last = json.loads(capsys.readouterr().out)[3]
    assert last["top_classes"][1] == [0, 0.12] and last["union_rarest"] == [7, 0.08]


def test_logs_without_histograms_and_missing_logs(tmp_path, capsys):
    old = _log(tmp_path / "old", [_epoch(0, 0, 7, 0.5), {"kind": "eval", "epoch": 0, "fid": 40.0}])
    assert runlog.top_class_share_per_epoch(runlog.read_log(old)) == [None]
    assert runlog.timeline_markdown(old).splitlines()[2] == "| 1 | 0 (7) | 50% | 40.00 |"
    thin = [3, 11, 11, 11, 11, 11, 11, 11, 10, 10]  # "0" under-drawn by both generators, nothing over 18%
    low = _log(tmp_path / "low", [_epoch(0, 2, 28, 0.5), _eval(0, 3.0, thin, thin)])
    assert runlog.union_extremes(runlog.read_log(low)) == {0: ((0, 0.03), (1, 0.11))}
    assert runlog.timeline_markdown(low).splitlines()[2].endswith("| 3.0% '0' – 11.0% '1' **outside 4%–18%** |")
    assert runlog.main([str(tmp_path / "nothing")]) == 1
    assert "has no metrics.jsonl" in capsys.readouterr().err
    bad = _log(tmp_path / "bad", [_epoch(0, 0, 7, 0.5), _eval(0, 1.0, ["x"] * 10)])
    assert runlog.main([str(bad)]) == 1
    assert "not a training log this version reads" in capsys.readouterr().err
