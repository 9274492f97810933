"""`python -m psgan_fast.compare`: pairing by seed, the statistics, the flags and bad input."""

import json

import numpy as np
import pytest
from scipy import stats

from psgan_fast import compare as C

SCHED = {"generators": 2, "epochs": 10, "batches": 266, "samples": 10000}
EVEN = [1000] * 10                    # a generator drawing every class equally
ONE_CLASS = [6000] + [444] * 9        # 6000 / 9996 of one class: collapsed


def _result(seed, fid, variant="v", shares=None, hists=(EVEN, EVEN)):
    return {"variant": variant, "seed": seed, "generators": len(hists), "fid": fid, "is": 6.0,
            "union_class_shares": shares or [0.1] * 10,
            "per_generator": [{"class_histogram": list(h)} for h in hists]}


def _table(path, results, **sched):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"setup": {}, "options": {**SCHED, **sched}, "results": results}))
    return str(path)


def test_pairs_by_seed_and_matches_scipys_paired_tests(tmp_path):
    fa = [2.9, 2.85, 2.66, 2.67, 3.74, 2.42]
    fb = [2.67, 3.03, 1.99, 2.25, 2.83, 2.80]
    a = _table(tmp_path / "a/ablation.json", [_result(s, f) for s, f in enumerate(fa)] + [_result(9, 5.0)])
    b = _table(tmp_path / "b/ablation.json", [_result(s, f) for s, f in reversed(list(enumerate(fb)))])
    res = C.compare(C.load_side([a])[0], C.load_side([str(tmp_path / "b")])[0])  # a directory works too
    assert res["seeds"] == list(range(6)) and res["unpaired_a"] == [9] and res["unpaired_b"] == []
    diffs = np.array(fb) - np.array(fa)
    assert [r["diff"] for r in res["rows"]] == pytest.approx(diffs)
    ref = stats.ttest_rel(fb, fa)
    assert res["t"] == pytest.approx(ref.statistic) and res["p_t"] == pytest.approx(ref.pvalue)
    assert res["p_wilcoxon"] == pytest.approx(stats.wilcoxon(diffs).pvalue)
    assert res["diff"]["mean"] == pytest.approx(diffs.mean()) and res["diff"]["sd"] == pytest.approx(diffs.std(ddof=1))
    assert res["b_lower"] == int((diffs < 0).sum()) == 4
    assert res["verdict"].startswith("not established")


@pytest.mark.parametrize("shift, word", [(-0.5, "below"), (0.5, "above")])
def test_verdict_when_the_difference_is_clear(tmp_path, shift, word):
    rng = np.random.default_rng(0)
    fa = 3 + rng.normal(0, 0.3, 8)
    fb = fa + shift + rng.normal(0, 0.05, 8)
    a = _table(tmp_path / "a.json", [_result(s, float(f)) for s, f in enumerate(fa)])
    b = _table(tmp_path / "b.json", [_result(s, float(f)) for s, f in enumerate(fb)])
    res = C.compare(C.load_side([a])[0], C.load_side([b])[0])
    assert res["p_t"] < C.ALPHA and res["verdict"].startswith(f"B {word} A")


def test_flags_union_out_of_band_and_collapsed_generators(tmp_path):
    low = [0.03] + [0.97 / 9] * 9
    a = _table(tmp_path / "a.json", [_result(0, 3.0, shares=low), _result(1, 3.0)])
    b = _table(tmp_path / "b.json", [_result(0, 2.0, hists=(EVEN, ONE_CLASS, EVEN)), _result(1, 2.5)])
    res = C.compare(C.load_side([a])[0], C.load_side([b])[0])
    r0 = res["rows"][0]
    assert (r0["a"]["union_in_band"], r0["b"]["union_in_band"]) == (False, True)
    assert (r0["a"]["collapsed"], r0["b"]["collapsed"], r0["b"]["generators"]) == (0, 1, 3)
    md = C.render(res, ("two", "three"), SCHED)
    assert "3.0%–10.8% (out)" in md and "out of band in 1 of 2 runs" in md and "| 0 / 1 |" in md


def test_several_tables_and_a_runs_own_cache_make_one_side(tmp_path):
    t = _table(tmp_path / "t.json", [_result(0, 3.0), _result(1, 2.0)])
    run = tmp_path / "out/runs/v-s2/ablation.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"key": {**SCHED, "variant": "v", "seed": 2}, "result": _result(2, 4.0)}))
    side, sched = C.load_side([t, str(run), t])  # the same run twice is one run
    assert sorted(side) == [0, 1, 2] and sched == {k: SCHED[k] for k in C.SCHEDULE_KEYS}


def test_bad_input_is_named(tmp_path):
    with pytest.raises(C.CompareError, match="no such file"):
        C.load_side([str(tmp_path / "nope.json")])
    (tmp_path / "bad.json").write_text('{"results": [')
    with pytest.raises(C.CompareError, match="bad.json: not a readable JSON"):
        C.load_side([str(tmp_path / "bad.json")])
    (tmp_path / "other.json").write_text('{"results": [{"seed": 0}], "options": {}}')
    with pytest.raises(C.CompareError, match="other.json: not an ablation table"):
        C.load_side([str(tmp_path / "other.json")])
    x = _table(tmp_path / "x.json", [_result(0, 3.0)])
    y = _table(tmp_path / "y.json", [_result(0, 3.5)])
    with pytest.raises(C.CompareError, match="seed 0 of v has two different results"):
        C.load_side([x, y])
    z = _table(tmp_path / "z.json", [_result(1, 3.0)], batches=100)
    with pytest.raises(C.CompareError, match="schedule .* differs"):
        C.load_side([x, z])
    two = _table(tmp_path / "two.json", [_result(0, 3.0, "v"), _result(0, 2.0, "w")])
    with pytest.raises(C.CompareError, match="several variants on one side \\(v, w\\)"):
        C.load_side([two])
    assert C.load_side([two], "w")[0][0]["fid"] == 2.0
    with pytest.raises(C.CompareError, match="no runs of variant 'u'"):
        C.load_side([two], "u")
    with pytest.raises(C.CompareError, match="no seed in common"):
        C.compare(C.load_side([x])[0], C.load_side([z])[0])


def test_cli_writes_the_report_and_refuses_different_schedules(tmp_path, capsys):
    a = _table(tmp_path / "a.json", [_result(s, 3.0 + 0.1 * s) for s in range(3)])
    b = _table(tmp_path / "b.json", [_result(s, 2.9 + 0.12 * s) for s in range(3)])
    out = tmp_path / "cmp"
    assert C.main(["--a", a, "--b", b, "--label-a", "2 gens", "--label-b", "3 gens", "--out", str(out)]) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert doc["seeds"] == [0, 1, 2] and doc["labels"] == ["2 gens", "3 gens"]
    assert "--label-a '2 gens'" in doc["setup"]["command"]
    assert "# 3 gens (B) against 2 gens (A), paired by seed" in (out / "COMPARE.md").read_text()
    c = _table(tmp_path / "c.json", [_result(0, 3.0)], epochs=6)
    assert C.main(["--a", a, "--b", c]) == 2
    assert "different schedules" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
