"""The training loop, CLI, run directory, checkpoints and Python API, on
real MNIST with a few batches per epoch."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import psgan_fast
from psgan_fast import checkpoint as ckpt_mod
from psgan_fast.config import TrainConfig
from psgan_fast.recipe import StepOutput
from psgan_fast.train import main as cli_main
from psgan_fast.trainer import Callback, Trainer, TrainingDiverged

REPO = Path(__file__).resolve().parents[1]


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_cli_smoke_run_on_real_mnist(tmp_path, mnist_train, n):
    out = tmp_path / f"run{n}"
    rc = cli_main(["--generators", str(n), "--epochs", "3", "--limit-batches", "4", "--log-every", "2",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["generators"] == n
    assert cfg["resolved"]["stage_epochs"] == [1, 1, 1]
    assert cfg["resolved"]["image_size"] == 28 and cfg["versions"]["torch"] == torch.__version__
    epochs = records(out, "epoch")
    assert [e["resolution"] for e in epochs] == [7, 14, 28]
    assert [e["stage"] for e in epochs] == [0, 1, 2]
    for e in epochs:
        assert len(e["g_loss"]) == n and math.isfinite(e["d_loss"])
        assert e["steps"] == 4
    steps = records(out, "step")
    assert [s["step"] for s in steps] == [2, 4, 6, 8, 10, 12]
    if n == 2:
        shares = [s["case_real"] + s["case_fake1"] + s["case_fake2"] for s in steps]
        assert all(abs(x - 1) < 1e-6 for x in shares)
    assert sorted(p.name for p in (out / "samples").iterdir()) == [f"epoch_{i:04d}.png" for i in (1, 2, 3)]
    assert (out / "losses.png").stat().st_size > 1000
    assert ckpt_mod.latest(out).name == "ckpt-000000012"


@pytest.mark.parametrize("model", ["sngan", "sngan-nosn", "progan"])
def test_cli_smoke_run_of_each_baseline_on_real_mnist(tmp_path, mnist_train, model):
    out = tmp_path / model
    rc = cli_main(["--model", model, "--epochs", "3", "--limit-batches", "3", "--log-every", "3",
                   "--out", str(out), "--no-progress"])
    assert rc == 0
    epochs = records(out, "epoch")
    assert len(epochs) == 3 and all(len(e["g_loss"]) == 1 and math.isfinite(e["d_loss"]) for e in epochs)
    want = [28, 28, 28] if model.startswith("sngan") else [7, 14, 28]
    assert [e["resolution"] for e in epochs] == want
    assert (out / "samples" / "epoch_0003.png").is_file() and (out / "losses.png").is_file()
    gens = psgan_fast.load_generators(out)
    img = psgan_fast.sample(gens, 4, seed=0)
    assert img.shape == (4, 1, 28, 28) and float(img.abs().max()) <= 1


@pytest.mark.parametrize("argv, flag", [
    (["--generators", "0"], "--generators"),
    (["--stage-epochs", "1,1"], "--stage-epochs"),
    (["--epochs", "4", "--stage-epochs", "1,1,1"], "--stage-epochs"),
    (["--alpha", "1.5"], "--alpha"),
    (["--model", "nope"], "--model"),
    (["--model", "sngan", "--generators", "2"], "--generators"),
    (["--betas", "0.5"], "--betas"),
    (["--lr", "-1"], "--lr"),
    (["--precision", "fp8"], "--precision"),
])
def test_bad_flags_exit_2_naming_the_flag(argv, flag, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        cli_main([*argv, "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def small(tmp_path, **kw) -> TrainConfig:
    base = dict(generators=2, epochs=3, stage_epochs=(1, 1, 1), limit_batches=3, log_every=1,
                out=str(tmp_path / "run"), progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_python_api_train_load_sample_and_callbacks(tmp_path, mnist_train):
    class Count(Callback):
        steps, epochs = 0, []

        def on_step(self, info):
            Count.steps += 1
            assert info.output.g_loss.shape == (2,)

        def on_epoch_end(self, record, recipe):
            Count.epochs.append(record["epoch"])

    run = psgan_fast.train(small(tmp_path), callbacks=[Count()])
    assert Count.steps == 9 and Count.epochs == [0, 1, 2]
    gens = psgan_fast.load_generators(run)
    assert len(gens) == 2 and all(not g.training for g in gens)
    a = psgan_fast.sample(gens, 10, seed=1)
    b = psgan_fast.sample(gens, 10, seed=1)
    c = psgan_fast.sample(gens, 10, seed=2)
    assert a.shape == (10, 1, 28, 28)
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # image i comes from generator i mod 2
    z = torch.randn(10, gens[0].latent_dim, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a[1], gens[1](z[1:2])[0])


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, mnist_train):
    cfg = small(tmp_path, epochs=3, limit_batches=3)
    trainer = Trainer(cfg)
    real_step = trainer.recipe.step
    calls = {"n": 0}

    def poisoned(x):
        calls["n"] += 1
        out = real_step(x)
        if calls["n"] == 5:  # in the second epoch
            return StepOutput(out.d_loss * float("nan"), out.g_loss, out.extras)
        return out

    trainer.recipe.step = poisoned
    with pytest.raises(TrainingDiverged, match="non-finite loss at epoch 2") as info:
        trainer.run()
    assert "ckpt-000000003" in str(info.value)
    last = ckpt_mod.latest(tmp_path / "run")
    assert last.name == "ckpt-000000003"
    gens = psgan_fast.load_generators(last)  # still loads: intact
    assert all(torch.isfinite(p).all() for g in gens for p in g.parameters())


def test_resume_continues_where_it_stopped(tmp_path, mnist_train):
    full = psgan_fast.train(small(tmp_path, out=str(tmp_path / "full"), deterministic=True))
    part = psgan_fast.train(small(tmp_path, out=str(tmp_path / "part"), max_steps=4, deterministic=True))
    assert ckpt_mod.read_state(ckpt_mod.latest(part))["step"] == 4
    resumed = psgan_fast.train(TrainConfig(resume=str(part), progress=False))
    a = load_file(str(ckpt_mod.latest(full) / "weights.safetensors"))
    b = load_file(str(ckpt_mod.latest(resumed) / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in records(resumed, "step")]
    assert steps == sorted(set(steps)) == list(range(1, 10))


def test_foreign_or_torn_checkpoints_are_refused_clearly(tmp_path, mnist_train):
    run = psgan_fast.train(small(tmp_path, epochs=1, stage_epochs=(0, 0, 1), limit_batches=2))
    last = ckpt_mod.latest(run)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "state.json").write_text('{"format": "something-else"}')
    with pytest.raises(ckpt_mod.CheckpointError, match="not a psgan_fast checkpoint"):
        ckpt_mod.read_state(bad)
    weights = last / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ckpt_mod.CheckpointError, match="weights.safetensors"):
        psgan_fast.load_generators(last)
    with pytest.raises(ckpt_mod.CheckpointError, match="neither a checkpoint"):
        psgan_fast.load_generators(tmp_path)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


def test_sigkill_at_a_random_moment_then_resume_is_bitwise_exact(tmp_path, mnist_train):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["--generators", "2", "--epochs", "3", "--stage-epochs", "1,1,1", "--limit-batches", "12",
            "--checkpoint-steps", "3", "--deterministic", "--no-progress", "--log-every", "2", "--seed", "3"]
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "psgan_fast.train", *args, "--out", str(ref)], check=True,
                   env=env, cwd=REPO, capture_output=True, timeout=600)
    rnd = random.Random()
    killed = tmp_path / "killed"
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "psgan_fast.train", *args, "--out", str(killed)],
                                env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for(killed / "checkpoints" / "LATEST", proc)
        time.sleep(rnd.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = ckpt_mod.read_state(ckpt_mod.latest(killed))
        if proc.returncode == -signal.SIGKILL and state["step"] < 36:
            break
        import shutil
        shutil.rmtree(killed)
    else:
        pytest.fail("could not kill the run before it finished")
    subprocess.run([sys.executable, "-m", "psgan_fast.train", "--resume", str(killed), "--no-progress"],
                   check=True, env=env, cwd=REPO, capture_output=True, timeout=600)
    a = load_file(str(ckpt_mod.latest(ref) / "weights.safetensors"))
    b = load_file(str(ckpt_mod.latest(killed) / "weights.safetensors"))
    assert ckpt_mod.read_state(ckpt_mod.latest(killed))["step"] == 36
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"resumed weights differ in {diff[:5]}"


def test_eval_every_scores_against_the_runs_own_training_images(tmp_path, monkeypatch):
    """--eval-every uses the run's training split as the real reference (a
    Fashion-MNIST or custom run is not scored against MNIST)."""
    import struct

    import numpy as np

    import psgan_fast.metrics as metrics_mod
    from psgan_fast.metrics.evaluation import images_sha256, to_uint8_images

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(256, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=256, dtype=np.uint8)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 256, 28, 28) + imgs.tobytes())
    (data / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 256) + labels.tobytes())
    seen = []

    def fake_eval(gens, n, *, real=None, seed=0, device="cpu", **kw):
        seen.append(real)
        return {"fid": 1.0, "is": 1.0, "is_std": 0.0}

    monkeypatch.setattr(metrics_mod, "evaluate_for_training", fake_eval)
    monkeypatch.setenv("PSGAN_FAST_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(dataset=str(data), epochs=2, stage_epochs=(1, 0, 1), limit_batches=2, eval_every=1,
                      out=str(tmp_path / "run"), progress=False)
    psgan_fast.train(cfg)
    assert len(seen) == 2
    expected = images_sha256(to_uint8_images(imgs))
    assert all(r is not None and r.data_sha256 == expected for r in seen)
    assert seen[0] is seen[1]  # computed once per run
    assert [r["fid"] for r in records(tmp_path / "run", "eval")] == [1.0, 1.0]


def test_eval_every_does_not_change_the_training(tmp_path, monkeypatch):
    """The per-epoch evaluation builds the feature extractor (a network
    initialised from the global RNG) and scores samples: a run with
    --eval-every must still train exactly as one without it."""
    import struct

    import numpy as np

    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(256, 28, 28), dtype=np.uint8)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 256, 28, 28) + imgs.tobytes())
    (data / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 256)
                                                   + rng.integers(0, 10, 256, dtype=np.uint8).tobytes())
    monkeypatch.setenv("PSGAN_FAST_CACHE", str(tmp_path / "cache"))
    runs = {}
    for every in (0, 1):
        cfg = TrainConfig(dataset=str(data), generators=2, epochs=3, stage_epochs=(1, 1, 1), limit_batches=2,
                          eval_every=every, seed=3, out=str(tmp_path / f"run{every}"), progress=False,
                          extra={"eval_samples": 32})
        psgan_fast.train(cfg)
        runs[every] = tmp_path / f"run{every}"
    assert len(records(runs[1], "eval")) == 3 and not records(runs[0], "eval")
    assert [r["d_loss"] for r in records(runs[0], "epoch")] == [r["d_loss"] for r in records(runs[1], "epoch")]
    a, b = (psgan_fast.load_generators(runs[k]) for k in (0, 1))
    assert len(a) == len(b) == 2
    for ga, gb in zip(a, b):
        sa, sb = ga.state_dict(), gb.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)


def test_cli_help_states_each_default_once():
    from psgan_fast.train import build_parser

    text = build_parser().format_help()
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: True)" not in text
    assert "(default: 64)" in text and "(default: psgan)" in text
    flat = " ".join(text.split())
    assert flat.count("default 2") == 1 and "(the paper: 64) (default: 64)" in flat
