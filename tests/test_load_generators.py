"""`psgan_fast.load_generators` builds only the generators (no
discriminator, no optimisers) and gives exactly the images of the way it
worked before - building the whole training recipe for the checkpoint - for
every model, at the end of a run and part-way (an earlier PS-GAN stage, a
ProGAN checkpoint in the middle of a fade-in)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import psgan_fast
from psgan_fast import checkpoint as ckpt_mod
from psgan_fast.config import TrainConfig, validate
from psgan_fast.models import build_recipe
from psgan_fast.seeding import derived_seed, forked
from psgan_fast.trained_generator import TrainedGenerator

TINY = {"width": 8, "latent_dim": 8}


def load_the_old_way(path: Path) -> list[TrainedGenerator]:
    """The whole recipe for the checkpoint (D and optimisers included), its
    epoch begun and its state and every network's weights loaded."""
    ckpt = ckpt_mod.resolve(path)
    doc = json.loads((ckpt.parent.parent / "config.json").read_text())
    cfg = validate(TrainConfig.from_json(doc["config"]))
    resolved, state, device = doc["resolved"], ckpt_mod.read_state(ckpt), torch.device("cpu")
    cfg.device = device.type
    with forked(derived_seed(cfg.seed, -1), device):
        recipe = build_recipe(cfg, image_size=resolved["image_size"], channels=resolved["channels"],
                              steps_per_epoch=resolved["steps_per_epoch"], device=device)
        recipe.begin_epoch(int(state["epoch"]))
    recipe.load_state(state.get("recipe", {}))
    ckpt_mod.load_modules(ckpt, recipe.modules())
    return [TrainedGenerator(recipe, k).eval() for k in range(recipe.num_generators)]


RUNS = {
    "psgan": dict(generators=2, epochs=3, stage_epochs=(1, 1, 1), limit_batches=2),
    "psgan-ps-bf16-nchw": dict(generators=3, epochs=2, stage_epochs=(0, 1, 1), limit_batches=2, loss="ps",
                               precision="bf16", extra={**TINY, "channels_last": False}),
    "sngan": dict(model="sngan", epochs=1, limit_batches=2),
    # stopped 1 step into phase 1's 4-step fade-in: alpha 0.25
    "progan": dict(model="progan", epochs=4, stage_epochs=(1, 2, 1), limit_batches=4, max_steps=5),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_train):
    root = tmp_path_factory.mktemp("load")
    out = {}
    for name, kw in RUNS.items():
        kw = {"extra": dict(TINY), "seed": 4, "log_every": 1, "progress": False, **kw}
        out[name] = psgan_fast.train(TrainConfig(out=str(root / name), **kw))
    return out


def checkpoints(run: Path) -> list[Path]:
    return sorted(ckpt_mod.all_checkpoints(run))


@pytest.mark.parametrize("name", list(RUNS))
def test_generators_alone_sample_what_the_whole_recipe_samples(runs, name):
    for ckpt in checkpoints(runs[name]):
        before = torch.get_rng_state()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            new = psgan_fast.load_generators(ckpt)
        assert torch.equal(torch.get_rng_state(), before)  # the global RNG is not moved
        old = load_the_old_way(ckpt)
        assert len(new) == len(old) and all(not g.training for g in new)
        assert [g.resolution for g in new] == [g.resolution for g in old]
        assert [g.latent_dim for g in new] == [g.latent_dim for g in old] == [TINY["latent_dim"]] * len(new)
        early = old[0].resolution != 28
        assert any("has not reached its last stage" in str(w.message) for w in caught) == early
        assert set(new[0].recipe.modules()) == {f"G{k}" for k in range(len(new))}  # nothing but generators
        for a, b in zip(new, old):
            assert a.net.state_dict().keys() == b.net.state_dict().keys()
            assert all(torch.equal(x, y) for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()))
            assert [p.stride() for p in a.net.parameters()] == [p.stride() for p in b.net.parameters()]
        assert torch.equal(psgan_fast.sample(new, 12, seed=3), psgan_fast.sample(old, 12, seed=3))


def test_the_runs_cover_earlier_stages_and_a_fade_in(runs):
    psgan = [ckpt_mod.read_state(c)["recipe"]["stage"] for c in checkpoints(runs["psgan"])]
    assert psgan == [0, 1, 2]
    (last,) = [ckpt_mod.read_state(c)["recipe"] for c in checkpoints(runs["progan"])][-1:]
    assert last["phase"] == 1 and 0 < last["alpha"] < 1
