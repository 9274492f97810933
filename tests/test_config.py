"""One home per configuration fact: the CLI parser is the TrainConfig fields,
validation uses the same bounds and choices, the choice lists come from the
registries, each model's defaults from one table, Algorithm 1's alpha rule
from one function; and configs written by older versions (model options in
an untyped `extra` dict) still load."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from psgan_fast import config, registry
from psgan_fast.config import ConfigError, ModelOptions, TrainConfig, cli_fields, flag_of, validate
from psgan_fast.models import RECIPES, defaults_of, net_settings
from psgan_fast.train import build_parser

REPO = Path(__file__).resolve().parents[1]


def test_choice_lists_come_from_the_registries():
    import psgan_fast.loss as loss
    import psgan_fast.parallel as parallel

    assert config.MODELS == tuple(RECIPES)
    assert config.LOSSES == tuple(registry.LOSSES)
    assert loss.LOSSES is registry.LOSSES and loss.get_spec is registry.get_spec
    assert parallel.MODES is config.PARALLEL is registry.PARALLEL_MODES
    assert config.D_ARCHS is registry.D_ARCHS and config.UPDATES is registry.UPDATES
    for spec in registry.LOSSES.values():  # each spec names a loss function of psgan_fast.loss
        assert spec.function() is getattr(loss, spec.fn) and callable(spec.function())
        assert spec.update in registry.UPDATES and spec.d_arch in registry.D_ARCHS
        assert spec.mode_seek_dist in registry.MODE_SEEK_DISTS
    assert [name for name, s in registry.LOSSES.items() if s.gated] == ["ps-soft", "rps", "rps-r1r2-skips", "rps-r1r2-gskips",
                                                                              "rps-r1r2-gskips-s118", "rps-r1r2-gskips-s118-r8",
                                                                              "rps-r1r2-gskips-s118-r8-ms",
                                                                              "rps-r1r2-gskips-s118-r8-ms0.3",
                                                                              "rps-r1r2-gskips-s118-r8-ms0.3-ink1"]
    assert config.TrainConfig.__dataclass_fields__["mode_seek_dist"].metadata["choices"] is registry.MODE_SEEK_DISTS
    for spec in registry.LOSSES.values():  # a spec's own stage split has a share for every stage
        assert spec.stage_split is None or (len(spec.stage_split) == 3 and sum(spec.stage_split) == 1.0)


def test_the_stage_split_is_the_losss_own_else_the_default():
    """Without --stage-epochs a PS-GAN run splits its epochs by its loss's
    shares (the recommended: 10/10/80%), every other rule and ProGAN by
    STAGE_SPLIT (20/30/50%); --stage-epochs always wins."""
    rec = registry.get_spec(config.RECOMMENDED_LOSS).stage_split
    assert rec is not None and rec != config.STAGE_SPLIT
    assert TrainConfig(epochs=10).resolved_stage_epochs() == (1, 1, 8)
    assert TrainConfig(epochs=20).resolved_stage_epochs() == (2, 2, 16)
    for kw in ({"loss": "ps"}, {"loss": "rps-r1r2-gskips"}, {"model": "progan"},
               {"model": "progan", "loss": config.RECOMMENDED_LOSS}):
        assert TrainConfig(epochs=10, **kw).resolved_stage_epochs() == (2, 3, 5), kw
    assert TrainConfig(epochs=10, stage_epochs=(3, 3, 4)).resolved_stage_epochs() == (3, 3, 4)
    assert TrainConfig(epochs=2).resolved_stage_epochs() == (0, 1, 1)  # too few epochs: the last stages
    assert "10/10/80% for " + config.RECOMMENDED_LOSS in " ".join(build_parser().format_help().split())


def test_the_loss_label_names_what_the_config_trains():
    """Figure titles name the update rule by `loss_label()`: the --loss when
    no knob changes it, the registered spec whose knobs a config's overrides
    reproduce (the stage split settling a tie), else the nearest registered
    spec (the --loss on a tie) and the knobs that differ from it."""
    rec = config.RECOMMENDED_LOSS
    assert TrainConfig().loss_label() == rec
    assert TrainConfig(loss="ps").loss_label() == "ps"
    assert TrainConfig(mode_seek=registry.get_spec(rec).mode_seek).loss_label() == rec  # set, but unchanged
    ms03 = "rps-r1r2-gskips-s118-r8-ms0.3"
    assert TrainConfig(loss=ms03, mode_seek=0.1).loss_label() == "rps-r1r2-gskips-s118-r8-ms"
    assert TrainConfig(mode_seek=0.1).loss_label() == f"{rec} with mode_seek=0.1"  # one knob from ms too: a tie
    assert TrainConfig(r1=0.5).loss_label() == f"{rec} with r1=0.5"
    assert TrainConfig(mode_seek_dist="l1-ink").loss_label() == f"{rec} with mode_seek_dist=l1-ink"
    assert TrainConfig(loss="rps", mode_seek_dist="l1-ink").loss_label() == "rps with mode_seek_dist=l1-ink"
    assert TrainConfig(loss="rps", g_gate=True).loss_label() == "ps-soft"  # the gates count as knobs
    assert TrainConfig(loss="rps", d_gate=0.5, g_gate=True).loss_label() == "ps-soft with d_gate=0.5"
    assert TrainConfig(loss="rps", d_gate=0.5).loss_label() == "rps with d_gate=0.5"  # a tie: the --loss
    # the default's knobs set one by one on the old default: the default's name
    old = TrainConfig(loss="rps-r1r2-skips", d_skips=False, betas=(0.0, 0.99), reg_every=8, mode_seek=0.3,
                      mode_seek_dist="l1-ink-n1", epochs=10, stage_epochs=(1, 1, 8))
    assert old.loss_label() == rec
    assert dataclasses.replace(old, mode_seek_dist="l1").loss_label() == "rps-r1r2-gskips-s118-r8-ms0.3"
    # one knob more than any spec: the nearest spec (first in the registry on a tie) and that knob, not the
    # --loss and seven
    assert dataclasses.replace(old, mode_seek_dist="l1-ink").loss_label() == f"{ms03} with mode_seek_dist=l1-ink"
    # two specs differ only in their stage split: the one whose split gives the run's stage epochs
    gskips = {"loss": "rps-r1r2-skips", "d_skips": False, "betas": (0.0, 0.99), "epochs": 10}
    assert TrainConfig(**gskips, stage_epochs=(1, 1, 8)).loss_label() == "rps-r1r2-gskips-s118"
    assert TrainConfig(**gskips, stage_epochs=(2, 3, 5)).loss_label() == "rps-r1r2-gskips"


def test_the_parser_is_built_from_the_fields():
    actions = {a.dest: a for a in build_parser()._actions if a.dest != "help"}
    assert list(actions) == [f.name for f in cli_fields()]
    for f in cli_fields():
        a = actions[f.name]
        assert a.option_strings[0] == flag_of(f.name) and a.help == f.metadata["help"]
        assert a.default == f.default
        assert tuple(a.choices or ()) == tuple(f.metadata.get("choices", ()))
    assert {f.name for f in dataclasses.fields(TrainConfig)} - set(actions) == {"eval_samples", "options"}
    assert flag_of("progress") == "--no-progress" and flag_of("options") == "options"


def test_parser_and_validate_enforce_the_same_integer_bounds(capsys):
    checked = 0
    for f in cli_fields():
        low, high = f.metadata.get("min"), f.metadata.get("max")
        for bad in ([] if low is None else [low - 1]) + ([] if high is None else [high + 1]):
            with pytest.raises(SystemExit):
                build_parser().parse_args([flag_of(f.name), str(bad)])
            assert flag_of(f.name) in capsys.readouterr().err
            with pytest.raises(ConfigError, match=flag_of(f.name)):
                validate(dataclasses.replace(TrainConfig(), **{f.name: bad}))
            checked += 1
        if low is not None:
            build_parser().parse_args([flag_of(f.name), str(low)])
    assert checked >= 12


def test_choices_are_validated_naming_the_flag():
    for f in cli_fields():
        if "choices" in f.metadata:
            with pytest.raises(ConfigError, match=flag_of(f.name)):
                validate(dataclasses.replace(TrainConfig(), **{f.name: "nope"}))


def test_old_configs_with_an_extra_dict_still_load():
    old = TrainConfig(epochs=3).to_json()
    del old["options"], old["eval_samples"]
    old["extra"] = {"width": 8, "latent_dim": "16", "channels_last": 0, "d_backward": "two-pass", "sn_impl": "ref",
                    "sngan_loss": "bce", "mbstd_group": 2, "eval_samples": 100}
    cfg = TrainConfig.from_json(old)
    assert cfg.options == ModelOptions(width=8, latent_dim=16, channels_last=False, d_backward="two-pass",
                                       sn_impl="ref", sngan_loss="bce", mbstd_group=2)
    assert cfg.eval_samples == 100 and cfg.epochs == 3
    assert validate(cfg).options == cfg.options
    assert "extra" not in cfg.to_json() and TrainConfig.from_json(cfg.to_json()) == cfg
    assert (TrainConfig(extra={"width": 8}) == TrainConfig(options=ModelOptions(width=8))
            == TrainConfig(options={"width": 8}) == dataclasses.replace(TrainConfig(extra={"width": 8})))
    assert TrainConfig(extra={"eval_samples": 7}).eval_samples == 7


def test_unknown_options_are_named():
    with pytest.warns(UserWarning, match="widht"):
        assert TrainConfig(extra={"widht": 8}).options == ModelOptions()
    with pytest.raises(ValueError, match="widht"):
        TrainConfig.from_json({**TrainConfig().to_json(), "options": {"widht": 8}})
    with pytest.raises(ConfigError, match="options.width"):
        validate(TrainConfig(options=ModelOptions(width="8")))
    with pytest.raises(ConfigError, match="eval_samples"):
        validate(TrainConfig(eval_samples=1.5))


def test_each_model_default_has_one_home():
    from psgan_fast import stages
    from psgan_fast.models import progan, sngan

    for module, model in ((stages, "psgan"), (sngan, "sngan"), (progan, "progan")):
        d = defaults_of(model)
        assert (module.LATENT_DIM, module.WIDTH, module.MIN_WIDTH) == (d.latent_dim, d.width, d.min_width)
    assert TrainConfig().num_generators() == defaults_of("psgan").generators == 2
    assert TrainConfig(model="sngan").num_generators() == 1
    s = net_settings(TrainConfig(model="progan"), "cpu")
    assert (s.lr, s.betas, s.latent_dim, s.width, s.channels_last) == (1e-3, (0.0, 0.99), 128, 64, True)
    s = net_settings(TrainConfig(lr=0.5, betas=(0.1, 0.2), options=ModelOptions(width=8, channels_last=False)), "cpu")
    assert (s.lr, s.betas, s.width, s.latent_dim, s.channels_last) == (0.5, (0.1, 0.2), 8, 128, False)
    assert not net_settings(TrainConfig(), "mps").channels_last
    assert f"(psgan; default {defaults_of('psgan').generators})" in " ".join(build_parser().format_help().split())


def test_the_alpha_rule_is_stated_once():
    from psgan_fast import transfer
    from psgan_fast.kernels import mix_weights

    for bad in (-0.1, 1.5):
        assert transfer.alpha_problem(bad) == f"must be in [0, 1], got {bad}"
        for mix in (transfer.mix_weights, mix_weights):
            with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
                mix(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), bad)
        with pytest.raises(ConfigError, match=r"--alpha: must be in \[0, 1\]"):
            validate(TrainConfig(alpha=bad))
    assert transfer.alpha_problem(0.0) is None and transfer.alpha_problem(1.0) is None


def test_the_config_and_the_cli_parser_need_no_torch():
    code = ("import sys; import psgan_fast.train as t; t.build_parser().format_help(); "
            "from psgan_fast.config import TrainConfig; TrainConfig(extra={'width': 8}).to_json(); "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not bad, bad[:5]")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO, timeout=120)
