"""The run configuration: validation, per-family defaults, the objective recorded once, the flag groups."""

from __future__ import annotations

import math

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
    assert config.resolve(Config(model=family, lr_critic=0.123, steps=7)).lr_critic == 0.123
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


def test_auto_generator_loss_is_minimax_for_density_models_only():
    assert config.resolve(Config(model="gaussian")).generator_loss == "minimax"
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
