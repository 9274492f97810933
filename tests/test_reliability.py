"""Issue #18: bad inputs and faults against the training and evaluation
CLIs and the API. Each test names the defect it covers; tiny networks
(width 8) on a few real MNIST batches."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import psgan_fast
from psgan_fast import checkpoint as ckpt_mod
from psgan_fast import evaluate as evaluate_cli
from psgan_fast.config import TrainConfig
from psgan_fast.fsutil import DirLock, LockHeld
from psgan_fast.metrics import evaluation as ev
from psgan_fast.metrics import extractors as ex
from psgan_fast.train import main as train_cli
from psgan_fast.trainer import Callback, Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = {"width": 8, "latent_dim": 8}


def tiny(out: Path, **kw) -> TrainConfig:
    """3 epochs (one per stage) of 2 batches of 16, a checkpoint every step."""
    base = dict(generators=2, epochs=3, stage_epochs=(1, 1, 1), limit_batches=2, batch_size=16, log_every=1,
                sample_every=0, checkpoint_steps=1, deterministic=True, progress=False, out=str(out),
                extra=dict(TINY))
    base.update(kw)
    return TrainConfig(**base)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in lines(run / "metrics.jsonl") if r["kind"] == kind]


def weights(run_or_ckpt: Path) -> dict[str, torch.Tensor]:
    ck = run_or_ckpt if (run_or_ckpt / "state.json").is_file() else ckpt_mod.latest(run_or_ckpt)
    return load_file(str(ck / "weights.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of a run directory (but its lock) and its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != DirLock.NAME}


class Steps(Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_step(self, info) -> None:
        self.seen.append(info.step)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_train) -> Path:
    """An uninterrupted tiny run: 6 steps, checkpoints 4, 5, 6 kept."""
    return psgan_fast.train(tiny(tmp_path_factory.mktemp("ref") / "run"))


def partial(tmp_path: Path, steps: int, name: str = "run") -> Path:
    return psgan_fast.train(tiny(tmp_path / name, max_steps=steps))


@pytest.fixture(autouse=True)
def no_inception(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ex.INCEPTION_ENV, raising=False)


def cli_fails(argv, capsys, code: int = 2) -> str:
    """Run the training CLI, expect it to stop with `code`; its stderr."""
    try:
        rc = train_cli(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------
# 1. Code execution from an Inception weights file


class _Plant:
    """Unpickling this creates the marker file (a stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_1_inception_weights_are_never_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "EXECUTED"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2), "x": _Plant(marker)}, evil)
    hub = Path(torch.hub.get_dir()) / "checkpoints" / ex._inception_file_name()
    hub.parent.mkdir(parents=True)
    hub.write_bytes(evil.read_bytes())

    def refused(**kw):
        with pytest.raises(ValueError, match="not a plain tensor archive"):
            ev.Extractor("inception-v3-compat", **kw)
        assert not marker.exists(), "the pickle ran"

    refused()  # planted in the torch hub cache under the expected name
    hub.unlink()
    refused(inception_weights=evil)  # --inception-weights
    monkeypatch.setenv(ex.INCEPTION_ENV, str(evil))
    refused()  # $PSGAN_FAST_INCEPTION_WEIGHTS


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage" * 50, b"PK\x03\x04 not a zip"])
def test_1_garbage_or_empty_weights_get_a_one_line_error(tmp_path, capsys, content):
    bad = tmp_path / "inception.pth"
    bad.write_bytes(content)
    rc = evaluate_cli.main(["--images", "mnist:test", "--num-samples", "10", "--num-real", "10",
                            "--feature-extractor", "inception-v3-compat", "--inception-weights", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("error:") and "inception.pth is not an inception-v3-compat weights file" in err
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------
# 2. A resume that destroys the run


def _dangle(run: Path, how: str) -> None:
    ckdir = run / "checkpoints"
    if how == "deleted":
        (ckdir / "LATEST").unlink()
    elif how == "dangling":
        (ckdir / "LATEST").write_text("ckpt-000000999\n")
    else:  # LATEST names a directory that was deleted
        target = ckdir / (ckdir / "LATEST").read_text().strip()
        for f in target.iterdir():
            f.unlink()
        target.rmdir()


@pytest.mark.parametrize("how", ["deleted", "dangling", "dir-deleted"])
def test_2_resume_without_a_valid_latest_falls_back(tmp_path, reference, how):
    run = partial(tmp_path, 5)  # checkpoints 3, 4, 5
    before = [r for r in lines(run / "metrics.jsonl") if r["kind"] != "message"]
    _dangle(run, how)
    back_to = 4 if how == "dir-deleted" else 5
    steps = Steps()
    psgan_fast.train(TrainConfig(resume=str(run), progress=False), callbacks=[steps])
    assert steps.seen == list(range(back_to + 1, 7))  # continued, not restarted
    after = [r for r in lines(run / "metrics.jsonl") if r["kind"] != "message"]
    kept = [r for r in before if r["step"] <= back_to]
    assert after[:len(kept)] == kept
    assert [r["epoch"] for r in records(run, "epoch")] == [0, 1, 2]
    assert any("LATEST" in r["text"] for r in records(run, "message"))
    assert same_weights(run, reference)


@pytest.mark.parametrize("how", ["no-checkpoints", "all-torn"])
def test_2_resume_with_no_usable_checkpoint_refuses_and_changes_nothing(tmp_path, capsys, how):
    run = partial(tmp_path, 3)
    for ck in sorted((run / "checkpoints").glob("ckpt-*")):
        if how == "all-torn":
            (ck / "state.json").write_text("{torn")
        else:
            for f in ck.iterdir():
                f.unlink()
            ck.rmdir()
    before = snapshot(run)
    err = cli_fails(["--resume", str(run), "--no-progress"], capsys, code=1)
    assert "no complete checkpoint" in err and "--overwrite" in err
    assert snapshot(run) == before


# --------------------------------------------------------------------------
# 3. A fresh run over an existing run directory


def test_3_fresh_run_refuses_a_used_directory_unless_overwrite(tmp_path, capsys, mnist_train):
    run = partial(tmp_path, 2)
    before = snapshot(run)
    argv = ["--model", "sngan", "--epochs", "1", "--limit-batches", "1", "--batch-size", "16",
            "--sample-every", "0", "--out", str(run), "--no-progress"]
    err = cli_fails(argv, capsys)
    assert "--out" in err and "not empty" in err and "--overwrite" in err
    assert snapshot(run) == before
    assert train_cli([*argv, "--overwrite"]) == 0
    assert json.loads((run / "config.json").read_text())["config"]["model"] == "sngan"
    assert [r["step"] for r in records(run, "step")] == [1]  # only the new run's records
    assert [ck.name for ck in ckpt_mod.all_checkpoints(run)] == ["ckpt-000000001"]
    empty = tmp_path / "empty"
    empty.mkdir()
    psgan_fast.train(tiny(empty, max_steps=1))  # an empty directory is fine


def test_3_overwrite_and_resume_do_not_combine(tmp_path, capsys):
    err = cli_fails(["--resume", str(tmp_path), "--overwrite"], capsys)
    assert "--overwrite" in err


# --------------------------------------------------------------------------
# 4. Two processes on one run directory


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_4_a_second_process_is_refused_and_a_dead_holder_is_taken_over(tmp_path, capsys, mnist_train):
    run = partial(tmp_path, 6)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen([sys.executable, "-m", "psgan_fast.train", "--resume", str(run), "--epochs", "400",
                              "--no-progress"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while str(first.pid) not in _read(run / DirLock.NAME):
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.time() - t0 < 120, "the first process never took the lock"
            time.sleep(0.05)
        err = cli_fails(["--resume", str(run), "--max-steps", "7", "--no-progress"], capsys, code=1)
        assert f"pid {first.pid}" in err and "in use" in err
        with pytest.raises(LockHeld):
            Trainer(tiny(tmp_path / "run", overwrite=True))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    step = ckpt_mod.read_state(ckpt_mod.latest(run))["step"]
    assert train_cli(["--resume", str(run), "--max-steps", str(step + 1), "--no-progress"]) == 0
    assert any(f"pid {first.pid}" in r["text"] and "took over" in r["text"] for r in records(run, "message"))


def test_4_two_fresh_processes_on_one_directory_one_wins(tmp_path, mnist_train):
    run = tmp_path / "run"
    args = ["--generators", "1", "--epochs", "1", "--limit-batches", "2", "--batch-size", "16",
            "--sample-every", "0", "--log-every", "1", "--no-progress", "--out", str(run)]
    procs = [subprocess.Popen([sys.executable, "-m", "psgan_fast.train", *args, "--seed", str(s)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for s in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    assert sorted(rc for rc, _ in results)[0] == 0 and sorted(rc for rc, _ in results)[1] in (1, 2), results
    loser = next(err for rc, err in results if rc)
    assert "Traceback" not in loser and ("in use" in loser or "not empty" in loser)
    seed = json.loads((run / "config.json").read_text())["config"]["seed"]
    assert [r["step"] for r in records(run, "step")] == [1, 2]
    assert seed == (1 if results[0][0] == 0 else 2)


# --------------------------------------------------------------------------
# 5. Resume flags silently ignored


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist_train) -> Path:
    return psgan_fast.train(tiny(tmp_path_factory.mktemp("finished") / "run", checkpoint_steps=0))


@pytest.mark.parametrize("flags", [["--generators", "3"], ["--model", "sngan"], ["--batch-size", "32"],
                                   ["--lr", "0.001"], ["--alpha", "0.5"], ["--seed", "7"],
                                   ["--lr", "0.001", "--alpha", "0.5"]])
def test_5_resume_refuses_settings_fixed_for_the_run(finished, capsys, flags):
    before = snapshot(finished)
    err = cli_fails(["--resume", str(finished), *flags, "--no-progress"], capsys)
    for flag in flags[::2]:
        assert flag in err
    assert "cannot change" in err
    assert snapshot(finished) == before


def test_5_resume_refuses_another_out(finished, capsys, tmp_path):
    err = cli_fails(["--resume", str(finished), "--out", str(tmp_path / "elsewhere"), "--no-progress"], capsys)
    assert "--out" in err and not (tmp_path / "elsewhere").exists()


def test_5_resume_applies_epochs_equal_to_the_default_and_records_them(tmp_path, capsys):
    run = psgan_fast.train(tiny(tmp_path / "run", epochs=3, checkpoint_steps=0, limit_batches=1))
    same = ["--model", "psgan", "--generators", "2"]  # equal to the run's: accepted
    assert train_cli(["--resume", str(run), "--epochs", "10", "--log-every", "2", *same, "--no-progress"]) == 0
    doc = json.loads((run / "config.json").read_text())
    assert doc["config"]["epochs"] == 10 and doc["config"]["stage_epochs"] == [1, 1, 8]
    assert doc["config"]["log_every"] == 2
    assert [h["event"] for h in doc["history"]] == ["start", "resume"]
    assert doc["history"][1]["changes"] == {"epochs": [3, 10], "log_every": [1, 2],
                                            "stage_epochs": [[1, 1, 1], [1, 1, 8]]}
    assert [r["epoch"] for r in records(run, "epoch")] == list(range(10))
    err = cli_fails(["--resume", str(run), "--epochs", "5", "--no-progress"], capsys)
    assert "--epochs" in err and "already trained" in err


# --------------------------------------------------------------------------
# 9. Checkpoint integrity


def _flip_a_weight_bit(path: Path) -> None:
    """Flip the top mantissa bit of the first float32 weight of G0."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    key = next(k for k, v in sorted(header.items()) if k.startswith("G0.") and isinstance(v, dict)
               and v.get("dtype") == "F32")
    start = 8 + n + header[key]["data_offsets"][0]
    data[start + 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_9_a_flipped_bit_falls_back_to_the_previous_checkpoint(tmp_path, reference):
    run = partial(tmp_path, 5)
    last = ckpt_mod.latest(run)
    _flip_a_weight_bit(last / "weights.safetensors")
    with pytest.raises(ckpt_mod.CheckpointError, match="checksum mismatch"):
        psgan_fast.load_generators(last)
    steps = Steps()
    psgan_fast.train(TrainConfig(resume=str(run), progress=False), callbacks=[steps])
    assert steps.seen == [5, 6]  # from ckpt-4
    warned = [r["text"] for r in records(run, "message") if "checksum" in r["text"]]
    assert warned and "ckpt-000000005" in warned[0] and "ckpt-000000004" in warned[0]
    assert same_weights(run, reference)


# --------------------------------------------------------------------------
# 10. Tracebacks instead of messages


@pytest.mark.parametrize("seed", [str(2**64), str(2**64 - 1), str(2**63)])
def test_10_huge_seed_names_the_flag(tmp_path, capsys, seed):
    err = cli_fails(["--seed", seed, "--epochs", "1", "--limit-batches", "1", "--batch-size", "16",
                     "--out", str(tmp_path / "x"), "--no-progress"], capsys)
    assert "--seed" in err and not (tmp_path / "x").exists()


def test_10_damaged_state_and_config_get_messages(tmp_path, capsys):
    run = psgan_fast.train(tiny(tmp_path / "run", epochs=1, stage_epochs=(0, 0, 1), checkpoint_steps=0))
    ck = ckpt_mod.latest(run)
    state = json.loads((ck / "state.json").read_text())
    (ck / "state.json").write_text(json.dumps({**state, "epoch": -5}))
    before = snapshot(run)
    err = cli_fails(["--resume", str(run), "--no-progress"], capsys, code=1)
    assert "epoch" in err and "-5" in err
    assert snapshot(run) == before
    cfg_path = run / "config.json"
    doc = json.loads(cfg_path.read_text())
    for bad, name in (({"epochs": "ten"}, "epochs"), ({"stage_epochs": [1, "x", None]}, "stage-epochs")):
        cfg_path.write_text(json.dumps({**doc, "config": {**doc["config"], **bad}}))
        err = cli_fails(["--resume", str(run), "--no-progress"], capsys)
        assert "--resume" in err and "config.json" in err and name in err


def test_10_unusable_out_directories_name_the_flag(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, a_file / "run", Path("/proc/psgan-fast-run")):
        err = cli_fails(["--out", str(out), "--limit-batches", "1", "--epochs", "1", "--no-progress"], capsys)
        assert "--out" in err
    if os.geteuid() != 0:  # root writes through permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        err = cli_fails(["--out", str(ro / "run"), "--epochs", "1", "--no-progress"], capsys)
        assert "--out" in err


def test_10_a_full_disk_is_a_message(tmp_path, capsys, monkeypatch, mnist_train):
    import psgan_fast.trainer as trainer_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "losses.png"))

    monkeypatch.setattr(trainer_mod, "save_loss_plot", full)
    err = cli_fails(["--generators", "1", "--epochs", "1", "--limit-batches", "1", "--batch-size", "16",
                     "--out", str(tmp_path / "run"), "--no-progress"], capsys, code=1)
    assert "No space left on device" in err


def test_10_evaluate_num_real_zero_and_unwritable_json(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        evaluate_cli.main(["--images", "mnist:test", "--num-real", "0"])
    assert e.value.code == 2 and "--num-real" in capsys.readouterr().err
    ran = []
    monkeypatch.setattr(ev, "real_reference", lambda *a, **k: ran.append(1) or pytest.fail("evaluated"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for target in (a_file / "out.json", tmp_path, Path("/proc/psgan-fast.json")):
        rc = evaluate_cli.main(["--images", "mnist:test", "--num-samples", "10", "--json", str(target)])
        err = capsys.readouterr().err
        assert rc == 2 and "--json" in err and "Traceback" not in err
    assert not ran


# --------------------------------------------------------------------------
# 11. Silent NaN, unnamed flags in evaluate


@pytest.mark.parametrize("flags, name", [(["--kid-subsets", "0"], "--kid-subsets"),
                                         (["--batch-size", "0"], "--batch-size"),
                                         (["--batch-size", "-1"], "--batch-size"),
                                         (["--kid-subset-size", "-1"], "--kid-subset-size")])
def test_11_evaluate_refuses_values_that_give_nan_or_crash(capsys, flags, name):
    try:
        rc = evaluate_cli.main(["--images", "mnist:test", "--num-samples", "60", "--num-real", "100",
                                "--kid-subset-size", "20", "--feature-extractor", "mnist-lenet", *flags])
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    assert rc == 2 and name in captured.err
    assert "nan" not in captured.out


# --------------------------------------------------------------------------
# 12. Leftovers of killed runs


def test_12_leftovers_of_killed_runs_are_removed_on_resume_and_start(tmp_path):
    run = partial(tmp_path, 2)
    ckdir = run / "checkpoints"
    for i in range(3):
        (ckdir / f".tmp-ckpt-{i}abc").mkdir()
        (ckdir / f".tmp-ckpt-{i}abc" / "weights.safetensors").write_bytes(b"x" * 1000)
    (run / ".metrics.jsonl.k2j3h").write_text("half")
    (ckdir / ".LATEST.a8s7d").write_text("ckpt")
    psgan_fast.train(TrainConfig(resume=str(run), progress=False, max_steps=3))
    assert not list(ckdir.glob(".tmp-ckpt-*")) and not list(run.glob(".metrics.jsonl.*"))
    assert not list(ckdir.glob(".LATEST.*"))
    (ckdir / ".tmp-ckpt-zz").mkdir()
    psgan_fast.train(tiny(run, overwrite=True, max_steps=1))
    assert not list(ckdir.glob(".tmp-ckpt-*"))


def test_a_resume_whose_checkpoint_stage_lags_the_schedule_switches_before_training(tmp_path, monkeypatch):
    # A checkpoint of stage 0 filed under epoch 1 (stage 1 in the schedule): load_state
    # defers the switch until the weights are in; the trainer settles it at once
    # (Recipe.settle) and prepares the new optimisers (gradient sync under torchrun),
    # instead of PSGANRecipe.step building them behind its back.
    from psgan_fast.trainer import Trainer

    run = psgan_fast.train(tiny(tmp_path / "run", max_steps=2))  # epoch 0 (stage 0) and no more
    ck = ckpt_mod.latest(run)
    doc = json.loads((ck / "state.json").read_text())
    assert doc["recipe"]["stage"] == 0 and doc["epoch"] == 0
    doc.update(epoch=1, batch=0)  # filed under the next epoch, nothing of it trained
    (ck / "state.json").write_text(json.dumps(doc, indent=1, sort_keys=True))

    prepared = []
    real_prepare = Trainer._prepare_recipe

    def spy(self):
        prepared.append(list(self.recipe.optimizers().values()))
        real_prepare(self)

    settles = []
    from psgan_fast.models.psgan import PSGANRecipe
    real_settle = PSGANRecipe.settle
    monkeypatch.setattr(Trainer, "_prepare_recipe", spy)
    monkeypatch.setattr(PSGANRecipe, "settle", lambda self: settles.append(self.stage()) or real_settle(self))
    trainer = Trainer(TrainConfig(resume=str(run), progress=False, max_steps=4))
    trainer.run()
    assert settles and settles[0] == 0  # settled from the checkpoint's stage ...
    assert trainer.recipe.stage() == 1  # ... into the schedule's
    texts = [r["text"] for r in records(run, "message")]
    assert any("stage switch 0 -> 1" in t for t in texts)
    # the optimisers the switch built were prepared before any step used them
    assert any(all(a is b for a, b in zip(ops, trainer.recipe.optimizers().values())) for ops in prepared)
