"""Fault injection (issue #18): a run SIGKILLed at random moments, with
checkpoints/LATEST randomly deleted, dangling or naming a deleted
checkpoint between the kills, ends with the weights and the metrics of an
uninterrupted run. The short version runs in the default suite; the long
one (20 kills) is marked slow."""

from __future__ import annotations

import json
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

from psgan_fast import checkpoint as ckpt_mod
from psgan_fast.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
CHILD = ("import json, sys; import psgan_fast; from psgan_fast.config import TrainConfig; "
         "psgan_fast.train(TrainConfig.from_json(json.loads(sys.argv[1])))")


def config(out: Path, batches: int, **kw) -> TrainConfig:
    return TrainConfig(generators=2, epochs=3, stage_epochs=(1, 1, 1), limit_batches=batches, batch_size=16,
                       log_every=1, sample_every=0, checkpoint_steps=1, deterministic=True, progress=False,
                       seed=5, out=str(out), extra={"width": 8, "latent_dim": 8}, **kw)


def newest_step(run: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*")] if run.is_dir() else []
    return max(steps, default=0)


def life(run: Path, batches: int) -> subprocess.Popen:
    """One invocation: a resume when a checkpoint directory exists, else a
    fresh start over whatever the killed ones left."""
    if list((run / "checkpoints").glob("ckpt-*")):
        cfg = TrainConfig(resume=str(run), progress=False)
    else:
        cfg = config(run, batches, overwrite=True)
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg.to_json())], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def damage_latest(run: Path, rnd: random.Random) -> str:
    ckdir = run / "checkpoints"
    latest = ckdir / "LATEST"
    r = rnd.random()
    if r < 0.25 and latest.exists():
        latest.unlink()
        return "deleted LATEST"
    if r < 0.4 and ckdir.is_dir():
        latest.write_text("ckpt-000999999\n")
        return "LATEST dangling"
    if r < 0.5 and latest.exists():
        target = ckdir / latest.read_text().strip()
        if target.is_dir():
            for f in target.iterdir():
                f.unlink()
            target.rmdir()
            return f"deleted {target.name}, which LATEST names"
    return "left alone"


def kill_at_random_moments(tmp_path: Path, kills: int, batches: int) -> None:
    seed = int(os.environ.get("PSGAN_FAULT_SEED", time.time_ns() % 2**32))
    rnd = random.Random(seed)
    ref = tmp_path / "ref"  # in a process of its own like the killed ones: no state from other tests
    first = life(ref, batches)
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-3000:]
    run = tmp_path / "killed"
    log = [f"seed {seed}"]
    done = 0
    while done < kills:
        start = newest_step(run)
        proc = life(run, batches)
        if rnd.random() < 0.25:  # anywhere in start-up: import, lock, cleanup, restore, truncation
            time.sleep(rnd.uniform(0.0, 2.5))
        else:  # inside training, around a checkpoint
            t0 = time.time()
            while newest_step(run) <= start and proc.poll() is None and time.time() - t0 < 120:
                time.sleep(0.01)
            time.sleep(rnd.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        err = proc.stderr.read().decode()
        assert proc.returncode in (0, -signal.SIGKILL), f"{log}\n{err[-3000:]}"
        if proc.returncode == 0:
            pytest.fail(f"the run finished after {done} kills; give it more batches ({log})")
        done += 1
        log.append(f"kill {done} at step {newest_step(run)}: {damage_latest(run, rnd)}")
    final = life(run, batches)
    assert final.wait(timeout=600) == 0, f"{log}\n{final.stderr.read().decode()[-3000:]}"

    a = load_file(str(ckpt_mod.latest(ref) / "weights.safetensors"))
    b = load_file(str(ckpt_mod.latest(run) / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == [], log

    def metrics(path: Path, kind: str) -> list[tuple]:
        recs = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
        return [(r["epoch"], r["step"], r["d_loss"], r["g_loss"]) for r in recs if r["kind"] == kind]

    assert [e[0] for e in metrics(run, "epoch")] == [0, 1, 2], log
    assert metrics(run, "epoch") == metrics(ref, "epoch"), log  # every completed epoch, once, exact
    assert metrics(run, "step") == metrics(ref, "step"), log
    assert not list((run / "checkpoints").glob(".tmp-ckpt-*"))


def test_killed_at_random_moments_ends_like_an_uninterrupted_run(tmp_path, mnist_train):
    kill_at_random_moments(tmp_path, kills=5, batches=6)


@pytest.mark.slow
def test_killed_twenty_times_ends_like_an_uninterrupted_run(tmp_path, mnist_train):
    kill_at_random_moments(tmp_path, kills=20, batches=30)
