"""The training loop, through the library API: every divergence trains, runs reproduce, resume continues."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import ALL_F, metrics_without_timing
from divgen import data, objectives, runs, train
from divgen.errors import InputError
from divgen.models import GaussianModel, MLPGenerator, Standardize


def tiny(**kw) -> train.Config:
    base = dict(data="mog1d", steps=10, width=16, n_data=500, batch_size=64, log_every=5, n_samples=1000)
    return train.Config(**{**base, **kw})


def _finite_run(out, cfg):
    rows = runs.read_metrics(out)
    assert rows and rows[-1]["step"] == cfg.steps
    for row in rows:
        for key in ("critic_loss", "generator_loss", "estimate"):
            assert math.isfinite(row[key]), row
    samples = np.load(out / "samples.npy")
    assert samples.shape == (cfg.n_samples, 1 if cfg.data == "mog1d" else samples.shape[1])
    assert np.isfinite(samples).all()
    return rows, samples


# ------------------------------------------------------------------ config ---
@pytest.mark.parametrize("bad", [
    dict(divergence="nope"), dict(divergence="alpha:1"), dict(model="flow"), dict(generator_loss="saturating"),
    dict(lipschitz="none"), dict(steps=0), dict(batch_size=0), dict(width=0), dict(n_samples=0),
    dict(critic_steps=-1), dict(lr_critic=0.0), dict(lr_generator=-1e-3), dict(holdout=1.0), dict(device="tpu"),
])
def test_config_rejects_bad_values(bad, tmp_path):
    with pytest.raises(InputError):
        train.Config(**bad).validate()
    # and train() refuses before creating anything
    with pytest.raises(InputError):
        train.train(tiny(**bad), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_config_defaults_are_valid():
    assert train.Config().validate() == train.Config()


# ------------------------------------------------------------ every divergence ---
@pytest.mark.parametrize("kind", objectives.GENERATOR_LOSSES)
@pytest.mark.parametrize("name", ALL_F)
def test_every_f_divergence_trains_without_nan(name, kind, tmp_path):
    cfg = tiny(divergence=name, generator_loss=kind, steps=15)
    out = train.train(cfg, tmp_path / "run", quiet=True)
    rows, _ = _finite_run(out, cfg)
    # the critic's loss is the negative of the bound it reports
    assert rows[-1]["estimate"] == pytest.approx(-rows[-1]["critic_loss"])
    # the checkpointed generator is the trained one, and training moved it away from its initialization
    cfg0, gen = train.load_run(out)
    assert cfg0 == cfg and isinstance(gen, MLPGenerator)
    torch.manual_seed(cfg.seed)  # train() initializes the networks right after this
    fresh, _ = train.build_models(cfg, data.load(cfg.data, n=cfg.n_data, seed=cfg.seed).train)
    pairs = list(zip(gen.state_dict().values(), fresh.state_dict().values()))
    # 15 Adam steps of size ~lr move each weight by a few 1e-3 at most: `fresh` is the initialization ...
    assert all(torch.allclose(a, b, atol=0.05) for a, b in pairs)
    # ... and the trained generator is not it
    assert any(not torch.equal(a, b) for a, b in pairs)


GAUSSIAN_CASES = [(name, {}) for name in ALL_F] + [
    ("wasserstein", {"lipschitz": "clip"}), ("wasserstein", {"lipschitz": "gp"}), ("wasserstein", {"lipschitz": "sn"}), ("mmd", {}),
]


@pytest.mark.parametrize("name, extra", GAUSSIAN_CASES, ids=[f"{n}-{e.get('lipschitz', '')}".rstrip("-") for n, e in GAUSSIAN_CASES])
def test_gaussian_model_trains_under_every_divergence(name, extra, tmp_path):
    cfg = tiny(data="mog2d", model="gaussian", divergence=name, steps=10, **extra)
    out = train.train(cfg, tmp_path / "run", quiet=True)
    _finite_run(out, cfg)
    params = json.loads((out / "params.json").read_text())
    mean, cov = np.array(params["mean"]), np.array(params["cov"])
    assert mean.shape == (2,) and cov.shape == (2, 2)
    assert np.allclose(cov, cov.T) and (np.linalg.eigvalsh(cov) > 0).all()
    # params.json describes the checkpointed model
    _, gen = train.load_run(out)
    assert isinstance(gen, GaussianModel)
    np.testing.assert_allclose(gen.params()["mean"], mean, rtol=1e-6)
    # and samples.npy came from that Gaussian (sample mean within 5 standard errors)
    samples = np.load(out / "samples.npy")
    se = np.sqrt(np.diag(cov) / len(samples))
    assert (np.abs(samples.mean(0) - mean) < 5 * se).all()


def test_gaussian_model_starts_on_the_data_with_its_spread():
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 0.5]) + 3
    gen, _ = train.build_models(tiny(model="gaussian"), x)
    assert (x == gen.mean.detach()).all(dim=1).any(), "the initial mean is one of the data points"
    assert torch.allclose(torch.diagonal(gen.scale_tril), x.std(0), rtol=1e-5)
    assert torch.equal(torch.tril(gen.scale_tril, -1), torch.zeros(3, 3))


def test_mmd_has_no_critic_and_wasserstein_gp_penalizes():
    x = torch.randn(600, 2, generator=torch.Generator().manual_seed(0))
    assert train.make_objective(tiny(divergence="mmd"), x).critic_loss is None
    assert train.make_objective(tiny(divergence="wasserstein"), x).critic_loss is not None


# --------------------------------------------------------------- reproducibility ---
def test_same_seed_same_numbers(tmp_path):
    cfg = tiny(data="ring8", steps=30, seed=3, n_samples=10_000)
    a = train.train(cfg, tmp_path / "a", quiet=True)
    b = train.train(cfg, tmp_path / "b", quiet=True)
    c = train.train(tiny(data="ring8", steps=30, seed=4, n_samples=10_000), tmp_path / "c", quiet=True)
    assert metrics_without_timing(a) == metrics_without_timing(b)
    assert np.array_equal(np.load(a / "samples.npy"), np.load(b / "samples.npy"))
    sa, sb = runs.latest_checkpoint(a), runs.latest_checkpoint(b)
    for key in sa["generator"]:
        assert torch.equal(sa["generator"][key], sb["generator"][key])
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()
    # a different seed differs
    assert metrics_without_timing(a) != metrics_without_timing(c)
    assert not np.array_equal(np.load(a / "samples.npy"), np.load(c / "samples.npy"))


def test_resume_continues_exactly(tmp_path):
    full = train.train(tiny(steps=30, checkpoint_every=10), tmp_path / "full", quiet=True)
    part = train.train(tiny(steps=15, checkpoint_every=10), tmp_path / "part", quiet=True)
    cfg = tiny(steps=30, checkpoint_every=10)
    resumed = train.train(cfg, part, resume=True, quiet=True)
    # the resumed run restarts from its step-15 checkpoint and ends where the uninterrupted run ends
    assert metrics_without_timing(resumed) == metrics_without_timing(full)
    assert np.array_equal(np.load(resumed / "samples.npy"), np.load(full / "samples.npy"))


def test_resume_rejects_other_dimension(tmp_path):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(100, 2)))
    np.save(tmp_path / "b.npy", np.random.default_rng(0).normal(size=(100, 3)))
    run = train.train(tiny(data=str(tmp_path / "a.npy")), tmp_path / "run", quiet=True)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(InputError, match="dimension"):
        train.train(tiny(data=str(tmp_path / "b.npy"), steps=20), run, resume=True, quiet=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


# --------------------------------------------------------------- run directory ---
def test_checkpoints_are_kept_and_pruned(tmp_path):
    out = train.train(tiny(steps=40, checkpoint_every=5, keep_checkpoints=2), tmp_path / "run", quiet=True)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-00000035.pt", "step-00000040.pt"]
    # no temporary files are left behind by the atomic writes
    assert not [p for p in out.rglob(".*")]
    state = runs.latest_checkpoint(out)
    assert state["step"] == 40 and state["data_shape"] == [500, 1]


def test_draw_is_seeded(tmp_path):
    gen = MLPGenerator(4, Standardize(torch.zeros(2), torch.ones(2)), 8, 1)
    a, b, c = train.draw(gen, 10_000, 1, chunk=3000), train.draw(gen, 10_000, 1), train.draw(gen, 10_000, 2)
    assert a.shape == (10_000, 2)
    assert torch.equal(a, b)  # chunking does not change the numbers
    assert not torch.equal(a, c)


def test_load_run_falls_back_past_a_corrupt_checkpoint(tmp_path, capsys):
    out = train.train(tiny(steps=20, checkpoint_every=10), tmp_path / "run", quiet=True)
    newest = runs.checkpoints(out)[-1]
    newest.write_bytes(b"garbage")
    _, gen = train.load_run(out)
    assert "warning" in capsys.readouterr().err
    good = runs.load_checkpoint(runs.checkpoints(out)[-2])
    for key, value in gen.state_dict().items():
        assert torch.equal(value, good["generator"][key])
    assert newest.read_bytes() == b"garbage"  # reported and left in place
