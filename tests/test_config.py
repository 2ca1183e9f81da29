"""The run configuration: validation, per-family defaults, the objective recorded once, the flag groups."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from divgen import catalog, config, data, train
from divgen.config import Config
from divgen.errors import InputError


def tiny(**kw) -> Config:
    base = dict(data="mog1d", steps=10, width=16, n_data=500, batch_size=64, log_every=5, n_samples=1000, figures=False)
    return Config(**{**base, **kw})


# ------------------------------------------------------------------ config ---
@pytest.mark.parametrize("bad", [
    dict(divergence="nope"), dict(divergence="alpha:1"), dict(model="flow"), dict(generator_loss="saturating"),
    dict(lipschitz="none"), dict(steps=0), dict(batch_size=0), dict(width=0), dict(n_samples=0),
    dict(critic_steps=-1), dict(lr_critic=0.0), dict(lr_generator=-1e-3), dict(holdout=1.0), dict(device="tpu"),
    dict(lr_critic=math.inf), dict(clip=math.nan), dict(clip=-0.01), dict(penalty_weight=-1.0), dict(steps="many"),
    dict(pack=0), dict(pack=3), dict(ema=1.0), dict(ema=-0.1), dict(critic_penalty="l2"),
])
def test_config_rejects_bad_values(bad, tmp_path):
    with pytest.raises(InputError):
        config.resolve(Config(**bad))
    # and train() refuses before creating anything
    with pytest.raises(InputError):
        train.train(tiny(**bad), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family", catalog.FAMILIES)
def test_unset_fields_take_the_family_defaults(family):
    row = catalog.FAMILIES[family]
    cfg = config.resolve(Config(model=family))
    for name, value in row.defaults.items():
        assert getattr(cfg, name) == value, name
    for name, value in catalog.GLOBAL.items():
        if name not in row.defaults:
            expected = catalog.PENALTY_WEIGHTS[cfg.critic_penalty] if name == "penalty_weight" else value
            assert getattr(cfg, name) == expected, name
    # a value the user sets wins over the family's
    assert config.resolve(Config(model=family, lr_generator=0.123, steps=7)).lr_generator == 0.123
    # resolving is idempotent and leaves nothing unset
    assert config.resolve(cfg) == cfg
    assert all(v is not None for v in cfg.to_dict().values())


def test_r1_weighs_more_on_images_and_an_explicit_weight_wins():
    """The default R1 weight is per standard deviation (recipes.Penalty): small on vectors, larger on images,
    the same for the GP on both; a --penalty-weight the user sets is kept on either."""
    digits, ring = data.load("digits", seed=0), data.load("ring8", n=64, seed=0)
    for family, ds, expected in (("mlp", ring, catalog.PENALTY_WEIGHTS["r1"]), ("conv", digits, catalog.IMAGE_PENALTY_WEIGHTS["r1"]),
                                 ("cgan", digits, catalog.IMAGE_PENALTY_WEIGHTS["r1"])):
        assert config.resolve(Config(data=ds.name, model=family), ds).penalty_weight == expected
        assert config.resolve(Config(data=ds.name, model=family, penalty_weight=0.3), ds).penalty_weight == 0.3
        assert config.resolve(Config(data=ds.name, model=family, critic_penalty="gp"), ds).penalty_weight == 10.0
    assert catalog.IMAGE_PENALTY_WEIGHTS["r1"] > catalog.PENALTY_WEIGHTS["r1"]


def test_small_images_take_the_small_image_learning_rates_and_28x28_does_not(tmp_path):
    """conv, cgan and bigan train 8×8 digits at 1.6e-3 and 28×28 images at 2e-4 (catalog.GAN_ON_SMALL_IMAGES); 16×16
    is the largest small image; a learning rate the user sets wins on either."""
    digits = data.load("digits", seed=0)
    files = {}
    for side in (16, 17, 28):
        files[side] = tmp_path / f"x{side}.npz"
        np.savez(files[side], x=np.random.default_rng(0).random((40, side, side), dtype=np.float32),
                 y=np.arange(40) % 2)
    big = data.load(str(files[28]), seed=0)
    for family in ("conv", "cgan", "bigan"):
        cfg = config.resolve(Config(data=digits.name, model=family), digits)
        assert (cfg.lr_generator, cfg.lr_critic) == (1.6e-3, 1.6e-3), family
        cfg = config.resolve(Config(data=big.name, model=family), big)
        assert (cfg.lr_generator, cfg.lr_critic) == (2e-4, 2e-4), family
        assert config.resolve(Config(data=digits.name, model=family, lr_critic=3e-4), digits).lr_critic == 3e-4
    for side, expected in ((16, 1.6e-3), (17, 2e-4)):
        ds = data.load(str(files[side]), seed=0)
        assert config.resolve(Config(data=ds.name, model="conv"), ds).lr_generator == expected, side
    assert "0.0016 for conv on images up to 16×16" in config.default_text("lr_generator")


def test_auto_generator_loss_is_minimax_or_ratio_for_density_models_only():
    assert config.resolve(Config(model="gaussian")).generator_loss == "minimax"
    for name, loss in (("kl", "ratio"), ("jeffrey", "ratio"), ("pearson", "ratio"), ("alpha:2", "ratio"),
                       ("reverse-kl", "minimax"), ("hellinger", "minimax"), ("tv", "minimax"), ("alpha:0.5", "minimax")):
        assert config.resolve(Config(model="gaussian", divergence=name)).generator_loss == loss, name
    assert config.resolve(Config(model="mlp", divergence="kl")).generator_loss == "nonsaturating"
    assert config.resolve(Config(model="mlp")).generator_loss == "nonsaturating"
    assert config.resolve(Config(model="gaussian", generator_loss="nonsaturating")).generator_loss == "nonsaturating"
    assert [f.name for f in catalog.FAMILIES.values() if f.parametric] == ["gaussian"]


def test_config_from_dict_refuses_wrong_types():
    with pytest.raises(InputError, match="steps"):
        Config.from_dict({"data": "ring8", "steps": "many"})
    with pytest.raises(InputError, match="data"):
        Config.from_dict({"data": 5})
    with pytest.raises(InputError, match="object"):
        Config.from_dict(["not", "a", "dict"])
    assert Config.from_dict({"steps": 5, "unknown": 1}).steps == 5




def test_the_objective_is_recorded_once_and_an_edited_one_is_refused():
    """resolve records the objective of the family and divergence; a config.json whose objective disagrees with
    them (edited by hand) is refused, naming both."""
    cfg = config.resolve(Config(model="aae", divergence="mmd"))
    assert cfg.objective == "reconstruction + mmd" and config.resolve(cfg) == cfg
    assert config.resolve(Config(model="vae")).objective == "elbo"
    with pytest.raises(InputError, match="'elbo'.*'f-gan'|'f-gan'.*'elbo'"):
        config.resolve(Config(model="mlp", objective="elbo"))


def test_a_bigan_recorded_before_the_cycle_loss_existed_resolves_as_it_trained():
    """A config.json written before --cycle-weight existed records a BiGAN's objective as f-gan and no weight: it
    loads with weight 0, which resolves to the same objective, where the current default would be refused as an
    edited objective."""
    old = config.resolve(Config(data="ring8", model="bigan", cycle_weight=0.0)).to_dict()
    del old["cycle_weight"]
    loaded = config.resolve(Config.from_dict(old))
    assert loaded.cycle_weight == 0.0 and loaded.objective == "f-gan"
    assert config.resolve(Config(data="ring8", model="bigan", cycle_weight=0.2)).objective == "cycle + f-gan"


# ------------------------------------------------ flags that cannot work ---
@pytest.mark.parametrize("kwargs, flag", [
    (dict(model="cgan", divergence="mmd"), "--divergence mmd"),
    (dict(model="bigan", divergence="mmd"), "--divergence mmd"),
    (dict(model="vae", spectral_norm=True), "--spectral-norm"),
    (dict(model="vae", critic_penalty="gp"), "--critic-penalty"),
    (dict(model="vae", pack=4), "--pack"),
    (dict(model="cvae", critic_steps=5), "--critic-steps"),
    (dict(model="mlp", divergence="mmd", critic_penalty="r1"), "--critic-penalty"),
    (dict(model="mlp", divergence="mmd", lr_critic=3e-3), "--lr-critic"),
    (dict(model="vae", penalty_every=2), "--penalty-every"),
    (dict(model="mlp", critic_penalty="none", penalty_every=4), "--penalty-every"),
    (dict(model="mlp", divergence="js", lipschitz="sn"), "--lipschitz"),
    (dict(model="mlp", divergence="wasserstein", lipschitz="gp", clip=0.05), "--clip"),
    (dict(model="mlp", divergence="kl", clip=0.05), "--clip"),
    (dict(model="mlp", divergence="js", critic_penalty="none", penalty_weight=5.0), "--penalty-weight"),
    (dict(model="mlp", likelihood="gaussian"), "--likelihood"),
    (dict(model="cgan", init_std=2.0), "--init-std"),
    (dict(model="aae", cycle_weight=0.1), "--cycle-weight"),
    (dict(model="mlp", init_at="densest"), "--init-at densest"),
    (dict(model="mlp", divergence="wasserstein", generator_loss="minimax"), "--generator-loss"),
    (dict(model="vae", generator_loss="minimax"), "--generator-loss"),
    (dict(model="gaussian", divergence="tv", generator_loss="ratio"), "--generator-loss ratio with --divergence tv"),
])
def test_a_flag_that_does_nothing_or_cannot_work_is_refused_by_name(kwargs, flag):
    with pytest.raises(InputError, match=flag):
        config.resolve(Config(**kwargs))


@pytest.mark.parametrize("kwargs", [
    dict(model="aae", divergence="mmd"),  # a latent critic's space: the kernel compares codes with prior draws
    dict(model="mlp", divergence="wasserstein", lipschitz="clip", clip=0.05),
    dict(model="mlp", divergence="wasserstein", lipschitz="sn"),
    dict(model="mlp", divergence="js", critic_penalty="gp", penalty_weight=5.0),
    dict(model="vae", likelihood="gaussian"),
    dict(model="gaussian", init_std=2.0),
    dict(model="gaussian", init_std=0.25, init_at="densest"),
    dict(model="mlp", divergence="kl", generator_loss="minimax"),
    dict(model="mlp", pack=4, critic_steps=2, lr_critic=1e-3),
])
def test_flags_that_work_are_kept(kwargs):
    cfg = config.resolve(Config(**kwargs))
    assert all(getattr(cfg, k) == v for k, v in kwargs.items())
    assert config.resolve(cfg) == cfg  # and the recorded config passes again


def test_a_run_without_a_critic_records_no_critic_settings():
    """mlp's defaults carry R1; an MMD run has no critic, and its config.json says so."""
    cfg = config.resolve(Config(model="mlp", divergence="mmd"))
    assert (cfg.critic_penalty, cfg.penalty_weight, cfg.spectral_norm) == ("none", 0.0, False)


@pytest.mark.parametrize("name", ["alpha:1e300", "alpha:1e-300", "alpha:-101", "alpha:0.9995", "alpha:1.0005",
                                  "js-weighted:1e-300", "js-weighted:0.9999"])
def test_divergence_parameters_outside_float32s_reach_are_refused(name):
    with pytest.raises(InputError, match="must lie in"):
        catalog.parse_divergence(name)


@pytest.mark.parametrize("name", ["alpha:100", "alpha:-100", "alpha:0.001", "alpha:1.001", "js-weighted:0.001"])
def test_divergence_parameters_at_the_edges_are_accepted(name):
    assert catalog.parse_divergence(name)[1] == float(name.split(":")[1])


# --------------------------------------- config.json against the checkpoint ---
def test_a_config_edited_after_training_is_caught_by_the_checkpoints_record():
    recorded = config.recorded(config.resolve(Config(data="mog1d")))
    assert "steps" not in recorded and "holdout" in recorded
    config.check_recorded(recorded, dict(recorded), "config.json")  # the same: accepted
    config.check_recorded(None, dict(recorded, holdout=0.9), "config.json")  # nothing recorded: nothing to compare
    moved = dict(recorded, data="/elsewhere/mog.npy", steps=9000, log_every=7)  # moved data; resumable settings
    config.check_recorded(dict(recorded, data_sha256="ab"), dict(recorded, data_sha256="cd"), "c")  # data's own check
    with pytest.raises(InputError, match="data_sha256"):  # but a digest edited away is caught
        config.check_recorded(dict(recorded, data_sha256="ab"), dict(recorded, data_sha256=""), "config.json")
    config.check_recorded(recorded, moved, "config.json")
    for key, value in (("holdout", 0.9), ("model", "cgan"), ("seed", 3)):
        with pytest.raises(InputError, match=rf"^config.json differs from the run's checkpoint in {key} "):
            config.check_recorded(recorded, dict(recorded, **{key: value}), "config.json")


@pytest.mark.parametrize("key, value", [("holdout", 0.9), ("model", "cgan")])
def test_evaluate_and_resume_refuse_an_edited_config_json(divgen, tmp_path, key, value):
    from conftest import TINY

    run = tmp_path / "run"
    assert divgen("train", "--data", "mog1d", *TINY, "--steps", "10", "--no-figures",
                  "--n-samples", "100", "--out", str(run)).code == 0
    raw = json.loads((run / "config.json").read_text())
    raw[key] = value
    (run / "config.json").write_text(json.dumps(raw))
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for argv in (("evaluate", str(run)), ("train", "--resume", str(run), "--steps", "20")):
        r = divgen(*argv)
        assert r.code == 2 and len(r.err_lines) == 1, r.err
        assert "was it edited" in r.err or "needs labelled data" in r.err, r.err
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
