"""The training loop through the library API: configuration, one training per recipe family,
every divergence's losses, the Gaussian family's defaults, reproducibility, resume, no side effects."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import metrics_without_timing
from divgen import config, data, densities, families, fit, models, objectives, recipes, runs, train
from divgen.config import Config
from divgen.errors import InputError
from divgen.models import GaussianModel, MLPCritic, mlp_generator, Standardize, critic_pair
from divgen.results import TrainResult, load_run


def tiny(**kw) -> Config:
    base = dict(data="mog1d", steps=10, width=16, n_data=500, batch_size=64, log_every=5, n_samples=1000, figures=False,
                lr_schedule="constant")  # runs extended by a resume stay bit-identical to straight ones
    return Config(**{**base, **kw})


def _finite_run(result: TrainResult):
    cfg = result.config
    rows = runs.read_metrics(result.run)
    assert rows and rows[-1]["step"] == cfg.steps and rows[-1] == result.metrics
    for row in rows:
        for key in ("critic_loss", "generator_loss", "estimate"):
            assert math.isfinite(row[key]), row
    samples = np.load(result.run / "samples.npy")
    assert samples.shape == (cfg.n_samples, data.load(cfg.data, n=20).dim)
    assert np.isfinite(samples).all()
    return rows, samples


# ------------------------------------------------- one training per recipe ---
@pytest.mark.parametrize("name, extra", [("js", {}), ("wasserstein", {"lipschitz": "gp"}), ("mmd", {})])
def test_one_training_per_recipe_family(name, extra, tmp_path):
    cfg = tiny(data="mog2d", divergence=name, steps=15, **extra)
    result = train.train(cfg, tmp_path / "run", quiet=True)
    rows, _ = _finite_run(result)
    assert result.config == config.resolve(cfg)
    assert json.loads((result.run / "config.json").read_text()) == result.config.to_dict()
    assert not (result.run / "samples.png").exists(), "figures are off"
    recipe = recipes.build(result.config, torch.zeros(2, 2))
    if recipe.uses_critic and recipe.adversarial.penalty is not None:  # the critic's loss is minus its estimate plus a penalty ≥ 0
        assert all(r["critic_loss"] >= -r["estimate"] - 1e-6 for r in rows)
    elif recipe.uses_critic:
        assert rows[-1]["estimate"] == pytest.approx(-rows[-1]["critic_loss"])
    else:
        assert rows[-1]["critic_loss"] == 0 and rows[-1]["estimate"] == rows[-1]["generator_loss"]
    # the networks returned are those of the newest checkpoint, and training moved them from their start
    loaded = load_run(result.run)
    assert loaded.config == result.config
    for key, value in result.nets.state_dict().items():
        assert torch.equal(value, loaded.nets.state_dict()[key]), key
    ds = data.load(cfg.data, n=cfg.n_data, seed=cfg.seed)
    fresh = families.networks(result.config, ds.spec, ds.train, None, recipe, cfg.seed)
    assert any(not torch.equal(a, b) for a, b in zip(result.nets.state_dict().values(), fresh.state_dict().values()))


def test_gaussian_model_run_writes_params_of_its_checkpoint(tmp_path):
    result = train.train(tiny(data="mog2d", model="gaussian", divergence="hellinger"), tmp_path / "run", quiet=True)
    _finite_run(result)
    params = json.loads((result.run / "params.json").read_text())
    mean, cov = np.array(params["mean"]), np.array(params["cov"])
    assert mean.shape == (2,) and np.allclose(cov, cov.T) and (np.linalg.eigvalsh(cov) > 0).all()
    np.testing.assert_allclose(families.density_model(load_run(result.run).nets).params()["mean"], mean, rtol=1e-6)
    # samples.npy came from that Gaussian (sample mean within 5 standard errors)
    samples = np.load(result.run / "samples.npy")
    assert (np.abs(samples.mean(0) - mean) < 5 * np.sqrt(np.diag(cov) / len(samples))).all()


def test_gaussian_model_starts_on_the_data_with_its_spread():
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 0.5]) + 3
    cfg = config.resolve(Config(model="gaussian", init_std=0.5))
    nets = families.networks(cfg, data.Spec((3,)), x, None, recipes.build(cfg, x), seed=0)
    gen = nets["generator"]
    assert isinstance(gen, GaussianModel)
    assert (x == gen.mean.detach()).all(dim=1).any(), "the initial mean is one of the data points"
    torch.testing.assert_close(torch.diagonal(gen.scale_tril).detach(), 0.5 * x.std(0))
    assert torch.equal(torch.tril(gen.scale_tril, -1), torch.zeros(3, 3))
    # building draws from `seed`, not from the global RNG
    before = torch.get_rng_state()
    again = families.networks(cfg, data.Spec((3,)), x, None, recipes.build(cfg, x), seed=0)
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(again["generator"].mean, gen.mean)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kl", "reverse-kl"])
def test_gaussian_defaults_land_on_the_exact_minimizer(name, tmp_path):
    """Every default: kl gives the moment-matching Gaussian, reverse-kl the exact reverse-KL fit (mog1d)."""
    result = train.train(Config(data="mog1d", model="gaussian", divergence=name, figures=False), tmp_path / "run", quiet=True)
    assert result.config.generator_loss == {"kl": "ratio", "reverse-kl": "minimax"}[name]
    got = families.density_model(result.nets).params()
    mu, sd = got["mean"][0], math.sqrt(got["cov"][0][0])
    p = data.toy_density("mog1d")
    if name == "kl":  # KL(P‖Q) over Gaussians is minimized by P's own mean and variance
        w, m = p.mixture_distribution.probs.double(), p.component_distribution.loc[:, 0].double()
        s = p.component_distribution.scale_tril[:, 0, 0].double()
        best_mu = float((w * m).sum())
        best_sd = math.sqrt(float((w * (s**2 + m**2)).sum()) - best_mu**2)
    else:  # computed from the density by gradient descent on the exact reverse KL, best of several starts
        exact = fit.fit_exact(p, name, data.load("mog1d").train)
        best_mu, best_sd = exact.mean[0], exact.std[0]
    assert abs(mu - best_mu) < 0.1 and abs(sd - best_sd) < 0.1, (mu, sd, best_mu, best_sd)
    at = lambda a, b: densities.exact_divergence(p, torch.distributions.Normal(a, b), name).value  # noqa: E731
    assert at(mu, sd) - at(best_mu, best_sd) < 0.01


def test_a_densest_start_is_in_the_mode_with_the_most_points():
    """600 points near 2 and 400 near −2 (sd 0.1), and a wide cloud of 1,000: a narrow start at the densest
    point lies in the 600, whichever seed draws the sample; a random start falls in the 400 for some seed."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([2 + 0.1 * torch.randn(600, 1, generator=g), -2 + 0.1 * torch.randn(400, 1, generator=g),
                   8 * torch.randn(1000, 1, generator=g)])
    starts = {}
    for at in ("densest", "random"):
        cfg = config.resolve(Config(model="gaussian", data="mog1d", init_std=0.25, init_at=at))
        starts[at] = [float(families.networks(cfg, data.Spec((1,)), x, None, recipes.build(cfg, x), seed=s)["generator"].mean.detach())
                      for s in range(12)]
    assert all(1.7 < m < 2.3 for m in starts["densest"]), starts["densest"]
    assert any(-2.3 < m < -1.7 for m in starts["random"])
    assert any((x[:, 0] == m).any() for m in starts["densest"])  # a data point


def test_a_mean_start_is_at_the_data_mean_with_the_data_spread():
    """Points 0, 2, 10: the mean starts at 4 whatever the seed, and the sd at init_std times the data's."""
    x = torch.tensor([[0.0], [2.0], [10.0]])
    cfg = config.resolve(Config(model="gaussian", data="mog1d", init_std=0.5, init_at="mean"))
    for seed in range(3):
        g = families.networks(cfg, data.Spec((1,)), x, None, recipes.build(cfg, x), seed=seed)["generator"]
        assert float(g.mean.detach()) == pytest.approx(4.0)
        assert float(g.scale_tril.detach()) == pytest.approx(0.5 * float(x.std()), rel=1e-5)


# --------------------------------------------------------------- reproducibility ---
def test_same_seed_same_numbers(tmp_path):
    cfg = tiny(data="ring8", steps=30, seed=3, n_samples=10_000)
    a = train.train(cfg, tmp_path / "a", quiet=True).run
    b = train.train(cfg, tmp_path / "b", quiet=True).run
    c = train.train(tiny(data="ring8", steps=30, seed=4, n_samples=10_000), tmp_path / "c", quiet=True).run
    assert metrics_without_timing(a) == metrics_without_timing(b)
    assert np.array_equal(np.load(a / "samples.npy"), np.load(b / "samples.npy"))
    sa, sb = runs.latest_checkpoint(a), runs.latest_checkpoint(b)
    for key in sa["nets"]:
        assert torch.equal(sa["nets"][key], sb["nets"][key])
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()
    # a different seed differs
    assert metrics_without_timing(a) != metrics_without_timing(c)
    assert not np.array_equal(np.load(a / "samples.npy"), np.load(c / "samples.npy"))


def test_resume_continues_exactly(tmp_path):
    full = train.train(tiny(steps=30, checkpoint_every=10), tmp_path / "full", quiet=True).run
    part = train.train(tiny(steps=15, checkpoint_every=10), tmp_path / "part", quiet=True).run
    resumed = train.train(tiny(steps=30, checkpoint_every=10), part, resume=True, quiet=True).run
    # the resumed run restarts from its step-15 checkpoint and ends where the uninterrupted run ends
    assert metrics_without_timing(resumed) == metrics_without_timing(full)
    assert np.array_equal(np.load(resumed / "samples.npy"), np.load(full / "samples.npy"))


def test_a_linear_schedule_resumes_bit_for_bit_with_the_same_steps(tmp_path):
    """The fall of --lr-schedule linear is planned over --steps: a run stopped at step 20 of 30 (its later
    checkpoints and results gone) and resumed ends exactly where the uninterrupted run ends."""
    import shutil

    cfg = tiny(steps=30, checkpoint_every=10, lr_schedule="linear", keep_checkpoints=10)
    full = train.train(cfg, tmp_path / "full", quiet=True).run
    part = tmp_path / "part"
    shutil.copytree(full, part)
    for name in ("step-00000030.pt",):
        (part / runs.CHECKPOINTS / name).unlink()
    for name in runs.RESULTS:
        (part / name).unlink(missing_ok=True)
    rows = [line for line in (part / runs.METRICS).read_text().splitlines() if json.loads(line).get("step", 0) <= 20]
    (part / runs.METRICS).write_text("\n".join(rows) + "\n")
    train.train(cfg, part, resume=True, quiet=True)
    assert metrics_without_timing(part) == metrics_without_timing(full)
    assert np.array_equal(np.load(part / "samples.npy"), np.load(full / "samples.npy"))


def test_a_run_whose_figures_failed_is_finished_by_resume(tmp_path, monkeypatch):
    """samples.npy marks a finished run: it is written last, so a run that died drawing its figures is not
    taken for finished, and --resume draws them and writes the samples the run would have written."""
    from divgen import plots

    whole = train.train(tiny(steps=10, figures=True), tmp_path / "whole", quiet=True).run

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib failed")

    with monkeypatch.context() as m:
        m.setattr(plots, "samples_figure", broken)
        with pytest.raises(RuntimeError):
            train.train(tiny(steps=10, figures=True), tmp_path / "part", quiet=True)
    assert not (tmp_path / "part" / "samples.npy").exists()
    train.train(tiny(steps=10, figures=True), tmp_path / "part", resume=True, quiet=True)
    assert (tmp_path / "part" / "samples.png").is_file()
    assert np.array_equal(np.load(tmp_path / "part" / "samples.npy"), np.load(whole / "samples.npy"))


def test_compiled_run_is_finite_keeps_the_checkpoint_format_and_resumes_exactly(tmp_path):
    compiled = dict(data="ring8", compile=True, critic_penalty="none", checkpoint_every=10)  # r1 needs a double backward
    eager = train.train(tiny(data="ring8", steps=20, checkpoint_every=10), tmp_path / "eager", quiet=True)
    full = train.train(tiny(steps=20, **compiled), tmp_path / "full", quiet=True)
    _finite_run(full)
    a, b = runs.latest_checkpoint(eager.run), runs.latest_checkpoint(full.run)
    assert a.keys() == b.keys() and a["nets"].keys() == b["nets"].keys()  # the same format: no wrapper prefixes
    # compiled kernels round differently from eager ones, so the two runs differ in their last digits only
    assert abs(full.metrics["critic_loss"] - eager.metrics["critic_loss"]) < 1e-3
    part = train.train(tiny(steps=15, **compiled), tmp_path / "part", quiet=True).run
    resumed = train.train(tiny(steps=20, **compiled), part, resume=True, quiet=True).run
    assert metrics_without_timing(resumed) == metrics_without_timing(full.run)
    assert np.array_equal(np.load(resumed / "samples.npy"), np.load(full.run / "samples.npy"))


def test_compile_without_a_compiler_warns_once_and_trains_eagerly(monkeypatch, capsys):
    import torch._inductor.cpp_builder as cpp_builder

    def missing():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    nets = torch.nn.ModuleDict({"generator": torch.nn.Linear(2, 2)})
    assert train.compiled(nets, torch.device("cpu")) is nets
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("divgen: warning: --compile:") and "no C++ compiler" in err[0]


def test_compile_refuses_a_penalty_it_cannot_differentiate(tmp_path):
    with pytest.raises(InputError, match="--compile: the gp penalty"):
        train.train(tiny(divergence="wasserstein", compile=True), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_resume_from_python_refuses_other_settings(tmp_path):
    run = train.train(tiny(steps=10), tmp_path / "run", quiet=True).run
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(InputError, match=r"divergence.*width"):
        train.train(tiny(steps=20, divergence="kl", width=32), run, resume=True, quiet=True)
    assert sorted(p.name for p in run.rglob("*")) == before


def test_resume_rejects_other_dimension(tmp_path):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(100, 2)))
    np.save(tmp_path / "b.npy", np.random.default_rng(0).normal(size=(100, 3)))
    cfg = tiny(data=str(tmp_path / "a.npy"))
    run = train.train(cfg, tmp_path / "run", quiet=True).run
    # the same path now holds 3-D data
    np.save(tmp_path / "a.npy", np.load(tmp_path / "b.npy"))
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    # config.json holds the file's SHA-256: the change itself is refused
    with pytest.raises(InputError, match="changed since the run was trained"):
        train.train(tiny(data=str(tmp_path / "a.npy"), steps=20), run, resume=True, quiet=True)
    # a run without one (written before divgen recorded it) meets the checkpoint's dimension check
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "data_sha256": ""}))
    with pytest.raises(InputError, match="dimension"):
        train.train(tiny(data=str(tmp_path / "a.npy"), steps=20), run, resume=True, quiet=True)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


# --------------------------------------------------------------- run directory ---
def test_checkpoints_are_kept_and_pruned(tmp_path):
    out = train.train(tiny(steps=40, checkpoint_every=5, keep_checkpoints=2), tmp_path / "run", quiet=True).run
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-00000035.pt", "step-00000040.pt"]
    # no temporary files are left behind by the atomic writes
    assert not [p for p in out.rglob(".*")]
    state = runs.latest_checkpoint(out)
    assert state["step"] == 40 and state["data"] == {"event_shape": [1], "n_classes": 0}
    assert set(state["optimizers"]) == {"generator", "critic"}


def test_draw_is_seeded():
    nets = torch.nn.ModuleDict({"generator": mlp_generator(4, Standardize(torch.zeros(2), torch.ones(2)), 8, 1)})
    a, b, c = families.draw(nets, 10_000, 1, chunk=3000), families.draw(nets, 10_000, 1), families.draw(nets, 10_000, 2)
    assert a.shape == (10_000, 2)
    assert torch.equal(a, b)  # chunking does not change the numbers
    assert not torch.equal(a, c)


def test_load_run_falls_back_past_a_corrupt_checkpoint(tmp_path, capsys):
    out = train.train(tiny(steps=20, checkpoint_every=10), tmp_path / "run", quiet=True).run
    newest = runs.checkpoints(out)[-1]
    newest.write_bytes(b"garbage")
    nets = load_run(out).nets
    assert "warning" in capsys.readouterr().err
    good = runs.load_checkpoint(runs.checkpoints(out)[-2])
    for key, value in nets.state_dict().items():
        assert torch.equal(value, good["nets"][key])
    assert newest.read_bytes() == b"garbage"  # reported and left in place


# -------------------------------------------------------------- side effects ---
def test_training_leaves_process_settings_and_the_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    torch.set_flush_denormal(False)
    train.train(tiny(steps=5), tmp_path / "run", quiet=True)
    assert torch.equal(torch.get_rng_state(), rng)
    assert float(torch.tensor([1e-40]) * 1.0) != 0, "flushing of denormals was left on"


def test_importing_divgen_does_not_touch_matplotlib():
    code = ("import matplotlib; b = matplotlib.get_backend(); import divgen, divgen.train, divgen.plots, divgen.evaluate, "
            "divgen.fit, divgen.demo; import sys; assert matplotlib.get_backend() == b; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={"MPLBACKEND": "svg", "PATH": ""})


@pytest.mark.parametrize("flags, contours", [(dict(model="mlp"), True), (dict(model="cgan"), False),
                                             (dict(model="bigan"), False), (dict(model="aae"), False),
                                             (dict(pack=2), False)])
def test_a_critic_of_more_than_one_point_draws_its_figures_without_contours(tmp_path, monkeypatch, flags, contours):
    """Found on a user's 2-D table: the figure drew T(x) contours by calling the critic on grid points alone,
    which a conditional critic (labels), a BiGAN critic (codes), a latent critic (AAE: it judges codes) or a
    PacGAN critic (packs) cannot take, and the run died at its last step. Only a critic of one data point
    gets contours, and T(x) on the grid is what the recipe's critic_t gives for the critic's output."""
    from divgen import plots

    drawn = {}
    original = plots.samples_figure

    def spy(path, data_x, samples, **kw):
        drawn["critic"] = kw.get("critic")
        return original(path, data_x, samples, **kw)

    monkeypatch.setattr(plots, "samples_figure", spy)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    np.savez(tmp_path / "table.npz", x=(np.stack([y, -y], 1) + 0.3 * rng.normal(size=(400, 2))).astype("f4"), y=y)
    result = train.train(tiny(data=str(tmp_path / "table.npz"), steps=4, figures=True, **flags), tmp_path / "run", quiet=True)
    assert (drawn["critic"] is not None) == contours
    if contours:
        grid = torch.randn(7, 2)
        with torch.no_grad():
            expected = recipes.build(result.config, grid).adversarial.critic_t(result.nets["critic"](grid))
        torch.testing.assert_close(drawn["critic"](grid), expected)
    import matplotlib.image

    for name in ("samples.png", "losses.png"):  # whole PNGs with something drawn on them
        pixels = matplotlib.image.imread(result.run / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 0.05, name


def test_a_run_without_figures_never_loads_matplotlib(tmp_path):
    # matplotlib costs a third of a second at start-up; samples.npy needs none of it
    code = ("import sys; from divgen import train; from divgen.config import Config; "
            f"train.train(Config(data='mog1d', steps=2, width=16, n_data=200, n_samples=50, figures=False), "
            f"{str(tmp_path / 'run')!r}, quiet=True); "
            "assert 'matplotlib' not in sys.modules, 'matplotlib loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------- stabilizers ---
def test_a_lipschitz_penalty_is_weighed_in_the_datas_units():
    """A wasserstein critic's E_P[V] − E_Q[V] is in the data's units (its out_scale, the data's spread), so its
    penalty's weight is multiplied by that scale; an f-GAN critic's penalty is not: it measures slopes per sd."""
    x = torch.randn(10, 2) * torch.tensor([2.0, 0.5])
    critic = MLPCritic(Standardize.of(x), 8, 1, lipschitz=True)
    spread = math.sqrt((float(x[:, 0].var()) + float(x[:, 1].var())) / 2)
    assert critic.out_scale == pytest.approx(spread, rel=1e-6)
    gp = objectives.gradient_penalty(critic, x, x + 1, torch.Generator().manual_seed(0))
    lipschitz, plain = recipes.Penalty("gp", 10.0, lipschitz=True), recipes.Penalty("gp", 10.0)
    assert float(lipschitz(critic, x, x + 1, torch.Generator().manual_seed(0))) == pytest.approx(10 * spread * float(gp))
    per_sd = objectives.gradient_penalty(critic, x, x + 1, torch.Generator().manual_seed(0), unit=critic.scaler.std)
    assert float(plain(critic, x, x + 1, torch.Generator().manual_seed(0))) == pytest.approx(10 * float(per_sd))
    assert float(lipschitz(lambda v: v.sum(1), x, x + 1, None)) == pytest.approx(10 * (math.sqrt(2) - 1) ** 2)


def test_the_scaler_keeps_data_in_tiny_units_and_the_gaussian_starts_at_any_spread():
    """A coordinate is constant only relative to its own size: data with sd 1e-7 keep it (an absolute floor of
    1e-6 once standardized them by 1). The Gaussian model's softplus⁻¹ of its starting sd once overflowed to
    inf above sd 88, so every run on data with a larger spread died at its first step."""
    x = torch.randn(200, 4, dtype=torch.float64) * torch.tensor([1e-7, 1.0, 1e-9, 0.0], dtype=torch.float64)
    x = x + torch.tensor([1e-7, 5.0, 5.0, 5.0], dtype=torch.float64)
    sd = Standardize.of(x).std
    assert sd[0] == pytest.approx(float(x[:, 0].std()), rel=1e-9) and sd[1] == pytest.approx(float(x[:, 1].std()))
    assert sd[2] == 1.0 and sd[3] == 1.0  # constant up to float32 rounding of 5, and constant
    for s in (1e-6, 1.0, 100.0, 1e6):
        model = GaussianModel(torch.zeros(1), torch.tensor([s]))
        assert float(torch.nn.functional.softplus(model.raw_diag)) == pytest.approx(s, rel=1e-5)


UNITS = {  # what steps in the data's units unless divgen measures it in the data's spread
    "wasserstein": dict(divergence="wasserstein"),  # the gradient penalty against E_P[V] − E_Q[V]
    "r1": dict(critic_penalty="r1"),  # the slope of a log-ratio critic: a mlp run's default penalty
    "gp": dict(critic_penalty="gp"),
}


@pytest.mark.parametrize("case", UNITS)
def test_training_is_the_same_in_any_units(case, tmp_path):
    """Found on users' data in other units: at sd 10⁴ the gradient penalty, weighed against E_P[V] − E_Q[V]
    in the data's units, was 10⁴ times too weak; R1 on an f-GAN critic 10⁸ times too weak, 10⁸ times too
    strong at sd 10⁻⁴. The same data in units 10⁴ times larger give the same run, up to rounding; 10⁴ times
    smaller, nearly."""
    u = np.random.default_rng(0).normal(size=(500, 2)).astype("f4") + 3
    samples = []
    for scale in (1e-4, 1.0, 1e4):
        np.save(tmp_path / f"x{scale}.npy", u * scale)
        # the learning rates of the release that found it: at 1e-3 Adam's ε moves the 10⁻⁴ run a little further
        cfg = tiny(data=str(tmp_path / f"x{scale}.npy"), steps=30, n_samples=200, lr_generator=5e-4, lr_critic=5e-4,
                   **UNITS[case])
        run = train.train(cfg, tmp_path / f"r{scale}", quiet=True).run
        samples.append(np.load(run / "samples.npy") / scale)
    assert np.abs(samples[2] - samples[1]).max() < 1e-3
    assert np.abs(samples[0] - samples[1]).max() < 0.1  # Adam's ε (1e-8) is no longer negligible at 10⁻⁴


def test_a_penalty_measures_an_f_gan_critics_slope_per_standard_deviation():
    """R1 and the gradient penalty of a log-ratio critic see the same critic of standardized data whatever its
    units (a Lipschitz critic's stays in the data's units: test_a_lipschitz_penalty_is_weighed_in_the_datas_units)."""
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 3.0])
    values = {}
    for scale in (1e-3, 1.0, 1e3):
        torch.manual_seed(0)
        critic = MLPCritic(Standardize.of(x * scale), 16, 2)
        rng = torch.Generator().manual_seed(1)
        values[scale] = [float(recipes.Penalty(name, 1.0)(critic, x * scale, x.flip(0) * scale, rng))
                         for name in ("r1", "gp")]
    for scale in (1e-3, 1e3):
        assert values[scale] == pytest.approx(values[1.0], rel=1e-4)
    # by hand: V = a·h with h the standardized input has slope a per standard deviation, R1 = ½‖a‖²
    linear = MLPCritic(Standardize.of(x * 100), 16, 2)
    a = torch.tensor([0.5, -2.0])
    linear.net = torch.nn.Linear(2, 1, bias=False)
    linear.net.weight.data = a[None]
    assert float(recipes.Penalty("r1", 1.0)(linear, x * 100, x * 100, None)) == pytest.approx(0.5 * float(a @ a), rel=1e-5)


def test_gradient_penalty_draws_one_mixing_weight_per_example():
    seen = {}

    def critic(x):
        seen["x"] = x.detach().clone()
        return x.sum(1)

    real, fake = torch.zeros(6, 3), torch.ones(6, 3)
    objectives.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    x = seen["x"]  # x̂ = ε·real + (1 − ε)·fake = 1 − ε, one ε per row
    assert torch.equal(x, x[:, :1].expand_as(x)), "one weight per example, shared by its coordinates"
    assert len(torch.unique(x[:, 0])) == 6 and bool(((x > 0) & (x < 1)).all())
    # a critic of slope 1 in every coordinate: ‖∇V‖ = √3, penalty (√3 − 1)²
    value = objectives.gradient_penalty(lambda x: x.sum(1), real, fake)
    assert float(value) == pytest.approx((math.sqrt(3) - 1) ** 2)


def test_r1_penalty_of_a_linear_critic_is_half_its_squared_slope():
    w = torch.tensor([3.0, -4.0, 12.0])
    x = torch.randn(10, 3)
    assert float(objectives.r1_penalty(lambda x: x @ w, x)) == pytest.approx(0.5 * 169.0)
    # labels are held fixed: only the float inputs are differentiated
    critic = lambda x, y: x @ w + y.float()  # noqa: E731
    assert float(objectives.r1_penalty(critic, (x, torch.arange(10)))) == pytest.approx(0.5 * 169.0)
    recipe = recipes.build(config.resolve(Config(critic_penalty="r1", penalty_weight=0.2)), x)
    assert float(recipe.adversarial.penalty(critic, (x, torch.arange(10)), None, None)) == pytest.approx(0.2 * 0.5 * 169.0)


def test_ratio_trains_a_logistic_critic_whatever_the_divergence():
    """--generator-loss ratio: the critic's loss is the gan discriminator's cross-entropy, softplus(−V) on real
    and softplus(V) on generated samples, for jeffrey as for gan."""
    x = torch.randn(10, 2)
    v_real, v_fake = torch.tensor([0.5, -2.0, 3.0]), torch.tensor([1.0, -1.0, 0.0])
    expected = float(torch.nn.functional.softplus(-v_real).mean() + torch.nn.functional.softplus(v_fake).mean())
    for name in ("jeffrey", "pearson", "gan"):
        cfg = config.resolve(Config(model="gaussian", divergence=name, generator_loss="ratio"))
        adversarial = recipes.build(cfg, x).adversarial
        assert float(adversarial.critic_loss(v_real, v_fake)) == pytest.approx(expected)


def test_a_lazy_penalty_is_taken_every_nth_critic_step_at_n_times_its_weight():
    """--penalty-every 4: critic steps 0, 4, 8, … take R1 at 4 × 0.2 = 0.8 × ½‖w‖² (a linear critic's)."""
    w = torch.tensor([3.0, -4.0, 12.0])
    x = torch.randn(10, 3)
    cfg = config.resolve(Config(critic_penalty="r1", penalty_weight=0.2, penalty_every=4))
    penalty = recipes.build(cfg, x).adversarial.penalty
    assert [penalty.due(k) for k in range(9)] == [True, False, False, False, True, False, False, False, True]
    assert float(penalty(lambda x: x @ w, x, None, None)) == pytest.approx(4 * 0.2 * 0.5 * 169.0)
    # no penalty, nothing to take lazily: recorded as every step
    assert config.resolve(Config(critic_penalty="none")).penalty_every == 1
    with pytest.raises(InputError, match="--penalty-every 4: the run has no critic penalty"):
        config.resolve(Config(critic_penalty="none", penalty_every=4))


def test_lazy_penalty_steps_are_counted_over_the_run(tmp_path, monkeypatch):
    """With 2 critic steps per generator step and --penalty-every 3, the critic's steps 0, 3, 6, 9 of 10 take it."""
    taken = []
    real_due = recipes.Penalty.due
    monkeypatch.setattr(recipes.Penalty, "due", lambda self, k: taken.append(k) or real_due(self, k))
    train.train(Config(data="ring8", steps=5, critic_steps=2, critic_penalty="r1", penalty_every=3, batch_size=32, width=8,
                 figures=False, n_samples=10, ema=0.0), tmp_path / "run", quiet=True)
    assert taken == list(range(10))
    assert [k for k in taken if real_due(recipes.Penalty("r1", 1.0, every=3), k)] == [0, 3, 6, 9]


def test_linear_schedule_falls_to_one_step_of_the_rate_at_the_last_step(tmp_path):
    """steps = 4: the rates of steps 1…4 are 1, 3/4, 1/2, 1/4 of the set rates; the checkpoint keeps the last."""
    out = tmp_path / "run"
    train.train(Config(data="ring8", steps=4, lr_generator=1e-3, lr_critic=2e-3, lr_schedule="linear", batch_size=32,
                 width=8, figures=False, n_samples=10, ema=0.0), out, quiet=True)
    state = runs.load_checkpoint(runs.checkpoints(out)[-1])["optimizers"]
    assert state["generator"]["param_groups"][0]["lr"] == pytest.approx(1e-3 / 4)
    assert state["critic"]["param_groups"][0]["lr"] == pytest.approx(2e-3 / 4)


def test_packed_critic_sees_pack_times_d_features_and_never_mixes_real_with_fake():
    from divgen.models import MLPCritic

    critic = MLPCritic(Standardize(torch.zeros(2), torch.ones(2)), 8, 1, pack=4)
    assert critic.in_features == 8 and critic.net[0].in_features == 8
    seen = {}
    critic.net.register_forward_pre_hook(lambda m, args: seen.update(h=args[0].detach().clone()))
    real, fake = torch.arange(16.0).reshape(8, 2), -torch.arange(1.0, 17.0).reshape(8, 2)
    v_real, v_fake = critic_pair(critic, real, fake)
    assert v_real.shape == v_fake.shape == (2,)
    h = seen["h"]  # (4 packs, 4·2 features): the first two packs hold real rows only, the last two fake rows
    assert h.shape == (4, 8)
    torch.testing.assert_close(h[:2], real.reshape(2, 8))
    torch.testing.assert_close(h[2:], fake.reshape(2, 8))


def test_each_process_batch_must_hold_whole_packs(tmp_path, monkeypatch):
    """Under torchrun each of K processes packs its own B/K rows: --batch-size 12 --pack 4 passes the
    single-process check, but 2 processes of 6 rows cannot be packed by 4. Refused before anything is written."""
    from divgen import parallel

    monkeypatch.setattr(parallel, "setup", lambda device: (parallel.World(0, 2), device))
    with pytest.raises(InputError, match="--pack 4: must divide each of the 2 processes' batch of 6") as e:
        train.train(tiny(batch_size=12, pack=4), tmp_path / "run", quiet=True)
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def test_moving_average_of_constant_weights_is_those_weights_and_follows_the_recurrence():
    nets = torch.nn.ModuleDict({"generator": torch.nn.Linear(3, 2)})
    nets[families.EMA] = torch.nn.Linear(3, 2).requires_grad_(False)
    with torch.no_grad():
        nets[families.EMA].load_state_dict(nets["generator"].state_dict())
    avg = train.Average(nets, 0.9)
    before = {k: v.clone() for k, v in nets[families.EMA].state_dict().items()}
    for step in range(1, 20):
        avg.update(step)
    for k, v in nets[families.EMA].state_dict().items():
        torch.testing.assert_close(v, before[k])  # the average of a constant is that constant
    w0 = nets[families.EMA].weight.clone()
    with torch.no_grad():
        nets["generator"].weight.add_(1.0)
    avg.update(100)  # decay min(0.9, 101/110) = 0.9
    torch.testing.assert_close(nets[families.EMA].weight, w0 + 0.1)


def test_ema_run_samples_from_the_average_and_resumes(tmp_path):
    result = train.train(tiny(steps=10, ema=0.9, checkpoint_every=5), tmp_path / "run", quiet=True)
    nets = result.nets
    assert families.EMA in nets and families.sampler(nets) is nets[families.EMA]
    assert not any(p.requires_grad for p in nets[families.EMA].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(nets[families.EMA].parameters(), nets["generator"].parameters()))
    samples = np.load(result.run / "samples.npy")
    np.testing.assert_array_equal(samples, families.draw(nets, len(samples), result.config.seed + 1).numpy())
    assert any(k.startswith(families.EMA + ".") for k in runs.latest_checkpoint(result.run)["nets"])


def test_weight_clipped_critic_stays_in_range(tmp_path):
    result = train.train(tiny(divergence="wasserstein", lipschitz="clip", clip=0.02, steps=10), tmp_path / "run", quiet=True)
    assert result.config.critic_penalty == "none" and not result.config.spectral_norm
    assert max(float(p.detach().abs().max()) for p in result.nets["critic"].parameters()) <= 0.02 + 1e-7


@pytest.mark.parametrize("family, data_name", [("mlp", "mog2d"), ("conv", "digits")])
def test_spectrally_normalized_critic_layers_have_largest_singular_value_one(family, data_name, tmp_path):
    result = train.train(tiny(data=data_name, model=family, spectral_norm=True, steps=20, batch_size=32), tmp_path / "r", quiet=True)
    critic = result.nets["critic"].train()
    with torch.no_grad():
        for _ in range(30):  # power iterations refine u, v; the weights are fixed
            critic(torch.randn(4, data.load(data_name, n=20).dim))
    layers = [m for m in critic.modules() if hasattr(m, "parametrizations")]
    assert layers
    for m in layers:
        norm = m.parametrizations.weight[0]
        if isinstance(norm, models.ConvOperatorNorm):  # the convolution as a dense matrix on its input images
            w, shape = m.weight.detach(), norm.u.shape[1:]
            conv = lambda x: torch.nn.functional.conv2d(x.reshape(1, *shape), w, None, m.stride, m.padding)  # noqa: B023, E731
            matrix = torch.autograd.functional.jacobian(lambda x: conv(x).reshape(-1), torch.zeros(shape.numel()))
        else:
            matrix = m.weight.detach().reshape(m.weight.shape[0], -1)
        assert float(torch.linalg.matrix_norm(matrix, ord=2)) == pytest.approx(1.0, rel=0.05)
    assert family == "mlp" or any(isinstance(m.parametrizations.weight[0], models.ConvOperatorNorm) for m in layers)


@pytest.mark.parametrize("penalty", ["gp", "r1"])
@pytest.mark.parametrize("name", ["js", "kl", "reverse-kl", "hellinger", "wasserstein"])
def test_stabilizers_compose_with_divergences(name, penalty, tmp_path):
    cfg = tiny(divergence=name, critic_penalty=penalty, spectral_norm=True, pack=4, ema=0.99, steps=6)
    result = train.train(cfg, tmp_path / "run", quiet=True)
    _finite_run(result)
    assert result.config.critic_penalty == penalty and result.config.pack == 4


@pytest.mark.parametrize("model, beta1", [("mlp", 0.5), ("vae", 0.9), ("vae", 0.7)])
def test_adams_beta1_is_the_familys_or_the_users(tmp_path, model, beta1):
    """Adversarial families keep DCGAN's β1 = 0.5, the likelihood families Adam's own 0.9; --adam-beta1 sets it."""
    given = {} if beta1 in (0.5, 0.9) else {"adam_beta1": beta1}
    cfg = Config(data="mog1d", model=model, steps=2, width=8, n_data=200, batch_size=32, n_samples=10, figures=False,
                 likelihood="gaussian" if model == "vae" else "auto", **given)
    result = train.train(cfg, tmp_path / "run", quiet=True)
    assert result.config.adam_beta1 == beta1
    state = runs.latest_checkpoint(result.run)
    assert all(g["betas"] == (beta1, 0.999) for opt in state["optimizers"].values() for g in opt["param_groups"])
