"""Evaluation of generators: per generator, their union, class histograms,
the training hook and the `python -m psgan_fast.evaluate` command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from psgan_fast.data import read_idx
from psgan_fast.metrics import evaluation as ev
from psgan_fast.metrics import extractors as ex


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    # The data sets stay where `make setup` put them (tests never touch the
    # network): their folders are pinned before the cache is moved away.
    from psgan_fast.data import fashion_mnist, mnist

    for env, find in (("PSGAN_FAST_DATA", mnist), ("PSGAN_FAST_FASHION_DATA", fashion_mnist)):
        try:
            monkeypatch.setenv(env, str(find(split="test", download=False)[0].parent))
        except (OSError, ValueError):
            pass  # not set up here: a test that needs it fails with the data module's message
    monkeypatch.setenv("PSGAN_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ex.INCEPTION_ENV, raising=False)
    monkeypatch.setattr(ev, "_REAL", {})
    return tmp_path


@pytest.fixture(scope="module")
def digits(mnist_test):
    return read_idx(mnist_test[0]), read_idx(mnist_test[1]).astype(np.int64)


@pytest.fixture(scope="module")
def real_train(mnist_train):
    return read_idx(mnist_train[0])[:3000]


class Replay(nn.Module):
    """A "generator" that returns real digits, picked by the noise: a
    perfect generator of `bank`'s distribution. Records its mode in forward."""

    latent_dim = 8

    def __init__(self, bank: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("bank", torch.from_numpy(bank).float().unsqueeze(1) * (2 / 255) - 1)
        self.lin = nn.Linear(1, 1)  # a parameter, so the device can be read off it
        self.modes: list[bool] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        idx = (z[:, 0].abs() * 1e6).long() % len(self.bank)
        return self.bank[idx]


def test_perfect_and_collapsed_generators(digits, real_train):
    images, labels = digits
    good = Replay(images[:2000])
    ones = Replay(images[labels == 1][:50])  # mode collapse onto the digit 1
    good.train()
    ones.eval()
    res = ev.evaluate_generators([good, ones], num_samples=600, real=real_train, kid_subset_size=300,
                                 kid_subsets=10)
    g0, g1 = res["generators"]
    assert g0["fid"] < 2.0 < 10.0 < g1["fid"]  # 600 samples: small-sample bias ~0.8
    assert g0["is_mean"] > 8.5 and g1["is_mean"] < 1.5
    assert g0["kid_mean"] < g1["kid_mean"]
    assert sum(g0["class_histogram"]) == 600 and max(g0["class_histogram"]) < 0.2 * 600
    assert g1["class_histogram"][1] >= 0.95 * 600
    # Union: 600 images, half from each, so about half of them are 1s.
    u = res["union"]
    assert u["num_samples"] == 600 and 270 <= u["class_histogram"][1] <= 400
    assert g0["fid"] < u["fid"] < g1["fid"]
    assert res["feature_extractor"]["name"] == "mnist-lenet" and res["num_samples"] == 600
    # Sampling happens in eval mode; each module gets its mode back.
    assert good.modes and not any(good.modes) and good.training and not ones.training


def test_same_seed_same_result_and_generators_draw_different_noise(digits, real_train):
    g = Replay(digits[0][:2000])
    a = ev.evaluate_generators([g, g], num_samples=300, real=real_train, kid=False, seed=3)
    b = ev.evaluate_generators([g, g], num_samples=300, real=real_train, kid=False, seed=3)
    assert a["generators"][0]["fid"] == b["generators"][0]["fid"]
    assert a["generators"][0]["fid"] != a["generators"][1]["fid"]  # seed + k per generator


def test_union_takes_image_i_from_generator_i_mod_n():
    idx = ev.union_indices([10, 10, 10], 10)
    assert [len(i) for i in idx] == [4, 3, 3]
    with pytest.raises(ValueError, match="needs 4"):
        ev.union_indices([3, 10, 10], 10)


def test_images_are_quantised_like_the_data_pipeline():
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    as_float = u8.float() * (2 / 255) - 1  # psgan_fast.data.to_float
    assert torch.equal(ev.to_uint8_images(as_float), u8)
    assert ev.to_uint8_images(torch.full((1, 1, 2, 2), 3.0)).max() == 255
    with pytest.raises(ValueError, match="non-finite"):
        ev.to_uint8_images(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match=r"\[N, H, W\] or \[N, C, H, W\]"):
        ev.to_uint8_images(torch.zeros(4))


def test_latent_dim_is_required_for_plain_callables(real_train):
    with pytest.raises(ValueError, match="latent_dim"):
        ev.evaluate_generators([lambda z: torch.zeros(len(z), 1, 28, 28)], num_samples=10, real=real_train)
    res = ev.evaluate_generators([lambda z: torch.tanh(z[:, :784].reshape(-1, 1, 28, 28))], num_samples=50,
                                 latent_dim=784, real=real_train, kid=False)
    assert res["generators"][0]["num_samples"] == 50


def test_training_hook_returns_a_flat_record(digits, real_train):
    ones = digits[0][digits[1] == 1][:500]  # a generator collapsed onto "1"s, beside one of every class
    gens = [Replay(ones), Replay(digits[0][1000:2000])]
    rec = ev.evaluate_for_training(gens, num_samples=200, real=real_train)
    assert set(rec) >= {"fid", "is", "is_std", "fid_g0", "fid_g1", "is_g0", "is_g1", "classes_g0", "classes_g1",
                        "eval_extractor", "eval_num_samples", "eval_seconds"}
    assert rec["eval_extractor"] == "mnist-lenet" and rec["eval_num_samples"] == 200
    assert sum(rec["classes_g0"]) == sum(rec["classes_g1"]) == 200 and len(rec["classes_g0"]) == 10
    assert rec["classes_g0"][1] >= 190  # mnist-lenet classifies real digits almost without error
    assert max(rec["classes_g1"]) < 60 and sum(c >= 10 for c in rec["classes_g1"]) >= 8
    assert json.loads(json.dumps(rec)) == rec  # one metrics.jsonl line


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "psgan_fast.evaluate", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_on_data_sets(isolated_cache):
    out = isolated_cache / "data.json"
    r = run_cli("--images", "mnist:test", "--images", "fashion-mnist:test", "--real", "mnist:train",
                "--num-real", "2000", "--num-samples", "500", "--kid-subset-size", "200", "--kid-subsets", "10",
                "--json", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    mnist_set, fashion = res["generators"]
    assert (mnist_set["name"], fashion["name"]) == ("mnist:test", "fashion-mnist:test")
    assert mnist_set["fid"] < 1.0 < 10.0 < fashion["fid"]
    assert res["union"] is None and res["real"]["count"] == 2000
    assert "Inception weights not found" in r.stderr  # auto fell back to mnist-lenet, and said so
    assert res["feature_extractor"]["name"] == "mnist-lenet"
    assert "mnist:test" in r.stdout and "FID" in r.stdout
    # The real statistics are now cached, keyed by data hash and extractor.
    assert len(list((isolated_cache / "cache" / "fid_stats").glob("*mnist-lenet*.npz"))) == 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "psgan"
    subprocess.run([sys.executable, "-m", "psgan_fast.train", "--generators", "2", "--epochs", "1",
                    "--limit-batches", "2", "--out", str(run), "--no-progress", "--sample-every", "0"],
                   check=True, capture_output=True, timeout=300)
    return run


def test_cli_on_a_training_run(tiny_run, isolated_cache):
    out = isolated_cache / "run.json"
    r = run_cli(str(tiny_run), "--num-samples", "300", "--num-real", "1000", "--kid-subset-size", "200",
                "--kid-subsets", "5", "--feature-extractor", "mnist-lenet", "--json", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert [g["name"] for g in res["generators"]] == ["G0", "G1"]
    for g in res["generators"] + [res["union"]]:
        assert g["num_samples"] == 300 and np.isfinite(g["fid"]) and 1.0 <= g["is_mean"] <= 10.0
        assert sum(g["class_histogram"]) == 300 and "kid_mean" in g
    assert res["run_dir"] == str(tiny_run) and res["feature_extractor"]["weights_sha256"]
    assert "union" in r.stdout
    ckpt = sorted((tiny_run / "checkpoints").glob("ckpt-*"))[-1]
    r2 = run_cli(str(tiny_run), "--checkpoint", str(ckpt), "--num-samples", "100", "--num-real", "1000",
                 "--no-kid", "--feature-extractor", "mnist-lenet")
    assert r2.returncode == 0, r2.stderr


def test_cli_errors_are_readable(isolated_cache):
    r = run_cli("--images", "mnist:test", "--feature-extractor", "inception-v3-compat",
                "--inception-weights", str(isolated_cache / "missing.pth"))
    assert r.returncode == 1 and "error:" in r.stderr and "missing.pth does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli()
    assert r.returncode == 2 and "RUN_DIR" in r.stderr
