"""Two-sample tests, the independent critic, the k-NN estimator, mode statistics, `divgen evaluate`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import MultivariateNormal

from divgen import divergences, evaluate, objectives
from divgen.cli import main
from divgen.densities import exact_divergence
from divgen.errors import InputError


def gaussian_pair(n, d=1, shift=1.0, var_b=1.5, seed=0):
    """A ~ N(0, I), B ~ N(shift·e1, var_b·I), and both densities."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(d)
    mu[0] = shift
    p = MultivariateNormal(torch.zeros(d), torch.eye(d))
    q = MultivariateNormal(mu, var_b * torch.eye(d))
    a = torch.randn(n, d, generator=g)
    b = mu + math.sqrt(var_b) * torch.randn(n, d, generator=g)
    return a, b, p, q


# ------------------------------------------------------------------ inputs ---
@pytest.mark.parametrize("a, b, message", [
    (np.zeros((50, 2)), np.zeros((50, 3)), "dimension"),
    (np.zeros((50, 2)), np.zeros((19, 2)), "at least 20"),
    (np.full((50, 2), np.nan), np.zeros((50, 2)), "NaN"),
    (np.zeros((50, 2)), np.full((50, 2), np.inf), "NaN"),
])
def test_bad_samples_are_rejected(a, b, message):
    for call in (lambda: evaluate.two_sample_test(a, b, "mmd"), lambda: evaluate.estimate(a, b, "kl", method="knn")):
        with pytest.raises(InputError, match=message):
            call()


def test_unknown_names_are_rejected():
    a = np.zeros((50, 2))
    with pytest.raises(InputError, match="unknown test"):
        evaluate.two_sample_test(a, a, "ks")
    with pytest.raises(InputError, match="unknown divergence"):
        evaluate.estimate(a, a, "klx")
    with pytest.raises(InputError, match="unknown estimation method"):
        evaluate.estimate(a, a, "kl", method="histogram")
    with pytest.raises(InputError, match="knn"):
        evaluate.estimate(a, a, "js", method="knn")


# -------------------------------------------------------- two-sample tests ---
@pytest.mark.parametrize("method", evaluate.TESTS)
def test_p_values_under_the_null_are_not_small(method):
    """20 pairs from one distribution: few rejections, p-values spread over (0, 1]."""
    p_values = []
    for seed in range(20):
        a, b, _, _ = gaussian_pair(200, d=2, shift=0.0, var_b=1.0, seed=seed)
        result = evaluate.two_sample_test(a, b, method, seed=seed, permutations=200)
        assert result.method == method and (result.n_a, result.n_b) == (200, 200)
        assert 0 < result.p_value <= 1
        p_values.append(result.p_value)
    p_values = np.array(p_values)
    assert (p_values < 0.05).sum() <= 4
    assert 0.3 < p_values.mean() < 0.75


@pytest.mark.parametrize("method", evaluate.TESTS)
def test_a_large_shift_is_detected(method):
    a, b, _, _ = gaussian_pair(200, d=2, shift=1.0, var_b=1.0, seed=3)
    result = evaluate.two_sample_test(a, b, method, seed=0)
    assert result.p_value < 1e-2
    if method == "c2st":
        assert result.statistic > 0.6  # held-out accuracy


def test_mmd_statistic_is_the_unbiased_mmd2_and_the_p_value_counts_permutations():
    a, b, _, _ = gaussian_pair(150, d=3, shift=0.3, seed=1)
    result = evaluate.mmd_test(a, b, permutations=99, seed=5)
    # the same pooled subsample the test takes for its bandwidth
    z = torch.cat([a, b])
    sub = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(5))[:1000]]
    h = objectives.median_bandwidth(sub, sub[:0])
    torch.testing.assert_close(result.statistic, float(objectives.mmd2_unbiased(a.double(), b.double(), h.double())),
                               rtol=1e-4, atol=1e-6)
    assert result.p_value * 100 == pytest.approx(round(result.p_value * 100))  # (1 + count) / (1 + 99)


def test_unequal_sample_sizes_keep_c2st_calibrated():
    """A classifier that learns only the class sizes must not beat ½ on the balanced test set."""
    rejections = 0
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(100, 2, generator=g), torch.randn(400, 2, generator=g)
        rejections += evaluate.c2st(a, b, seed=seed).p_value < 0.05
    assert rejections <= 2


# ---------------------------------------------------------------- estimators ---
@pytest.mark.parametrize("name", divergences.EXAMPLES)
def test_fgan_terms_at_the_true_ratio_give_the_divergence(name):
    """E_P[f'(r)] − E_Q[f*(f'(r))] with r = p/q is D_f(P‖Q) (Monte Carlo on 200,000 points)."""
    a, b, p, q = gaussian_pair(200_000, d=1, shift=0.5, var_b=1.0, seed=2)
    log_ratio = lambda x: (p.log_prob(x) - q.log_prob(x)).double()  # noqa: E731
    t_a, t_b = evaluate.fgan_terms(divergences.get(name), log_ratio(a), log_ratio(b))
    value = float(t_a.mean() - t_b.mean())
    se = math.sqrt(float(t_a.var()) / len(t_a) + float(t_b.var()) / len(t_b))
    exact = exact_divergence(p, q, name).value
    assert abs(value - exact) < 4 * se + 1e-3


def test_critic_estimates_are_close_to_the_truth_in_1d():
    a, b, p, q = gaussian_pair(3000, d=1, shift=1.0, var_b=1.5, seed=0)
    found = {e.divergence: e for e in evaluate.critic_estimates(a, b, ["kl", "js", "hellinger", "wasserstein"], seed=0)}
    for name, tol in (("kl", 0.06), ("js", 0.015), ("hellinger", 0.03)):
        e = found[name]
        assert e.method == "critic" and (e.n_a, e.n_b) == (3000, 3000)
        assert e.ci_low < e.estimate < e.ci_high
        assert abs(e.estimate - exact_divergence(p, q, name).value) < tol, name
    w1 = stats.wasserstein_distance(a[:, 0].numpy(), b[:, 0].numpy())
    assert abs(found["wasserstein"].estimate - w1) < 0.1


def test_identical_samples_give_a_divergence_near_zero():
    a, b, _, _ = gaussian_pair(1000, d=2, shift=0.0, var_b=1.0, seed=4)
    e = evaluate.critic_estimate(a, b, "js", seed=0)
    assert -0.01 < e.estimate < 0.01
    assert e.lower_bound <= 0.0  # the certified bound does not claim a difference


@pytest.mark.parametrize("d", [1, 2])
def test_knn_kl_is_close_to_the_closed_form(d):
    a, b, p, q = gaussian_pair(3000, d=d, shift=1.0, var_b=1.5, seed=d)
    truth = float(torch.distributions.kl_divergence(p, q))
    e = evaluate.knn_estimate(a, b, "kl")
    assert abs(e.estimate - truth) < 0.05
    assert e.ci_low < e.estimate < e.ci_high
    reverse = evaluate.knn_estimate(a, b, "reverse-kl")
    assert abs(reverse.estimate - float(torch.distributions.kl_divergence(q, p))) < 0.08


# ----------------------------------------------------------- mode statistics ---
def test_mode_statistics_on_hand_built_samples():
    angles = torch.arange(8) * (2 * math.pi / 8)
    modes = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    std = 0.05
    samples = torch.cat([
        modes[0].repeat(10, 1),  # 10 exactly on mode 0
        (modes[1] + torch.tensor([2.9 * std, 0.0])).repeat(5, 1),  # 5 just inside 3σ of mode 1
        modes[2:3] + torch.tensor([0.0, 3.1 * std]),  # just outside 3σ of mode 2: not high quality
        torch.zeros(4, 2),  # the centre: far from every mode
    ])
    s = evaluate.mode_stats(samples, modes, std)
    assert (s.modes_captured, s.n_modes, s.n) == (2, 8, 20)
    assert s.high_quality == pytest.approx(15 / 20)
    q = np.array([10, 5]) / 15
    assert s.reverse_kl == pytest.approx(float((q * np.log(q * 8)).sum()))
    even = evaluate.mode_stats(modes.repeat(3, 1), modes, std)
    assert (even.modes_captured, even.high_quality, even.reverse_kl) == (8, 1.0, pytest.approx(0.0, abs=1e-12))
    assert math.isnan(evaluate.mode_stats(torch.zeros(3, 2), modes, std).reverse_kl)


# ---------------------------------------------------------------------- CLI ---
@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = {
        "a": rng.normal(size=(300, 2)),
        "b": rng.normal(size=(300, 2)) + [1.0, 0.0],
        "three": rng.normal(size=(300, 3)),
        "small": rng.normal(size=(10, 2)),
    }
    out = {}
    for name, x in paths.items():
        out[name] = str(tmp_path / f"{name}.npy")
        np.save(out[name], x.astype(np.float32))
    return out


@pytest.mark.parametrize("argv", [
    ["test", "{a}", "{three}"],
    ["test", "{a}", "{small}"],
    ["test", "{a}", "{b}", "--method", "ks"],
    ["test", "{a}", "{b}", "--alpha", "1.5"],
    ["test", "{a}", "missing.npy"],
    ["estimate", "{a}", "{b}", "--divergence", "nope"],
    ["estimate", "{a}", "{three}", "--divergence", "kl"],
    ["estimate", "{a}", "{b}", "--divergence", "js", "--method", "knn"],
    ["evaluate", "no-such-run"],
])
def test_cli_bad_input_is_one_line_and_exit_code_2(argv, files, capsys):
    assert main([arg.format(**files) for arg in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("divgen: error:") and "\n" not in err


def test_cli_nan_file_is_rejected(tmp_path, files, capsys):
    x = np.zeros((50, 2))
    x[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    assert main(["test", files["a"], str(tmp_path / "nan.npy")]) == 2
    assert "NaN" in capsys.readouterr().err


def test_cli_json_fields(files, capsys):
    assert main(["test", files["a"], files["b"], "--method", "mmd", "--permutations", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"method", "statistic", "p_value", "n_a", "n_b"} <= set(out) and out["reject"] is True
    assert main(["estimate", files["a"], files["b"], "--divergence", "kl", "--method", "knn", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"divergence", "estimate", "ci_low", "ci_high", "lower_bound", "method", "n_a", "n_b"}
    assert out["lower_bound"] is None  # knn certifies nothing
    assert 0.2 < out["estimate"] < 0.9  # KL of a unit mean shift is 0.5


# ------------------------------------------------------------------ the run ---
def test_evaluate_a_tiny_trained_run(tmp_path, capsys):
    from divgen.train import Config, train

    run = train(Config(data="ring8", divergence="gan", steps=30, n_data=500, batch_size=64, width=32,
                       log_every=10, checkpoint_every=30, n_samples=200), tmp_path / "run", quiet=True).run
    assert main(["evaluate", str(run), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "eval.json").read_text())
    assert printed == saved
    assert [e["divergence"] for e in saved["critic"]] == ["gan", "js", "wasserstein"]
    assert [t["method"] for t in saved["tests"]] == list(evaluate.EVALUATE_TESTS)
    assert set(saved["prdc"]) >= {"precision", "recall", "density", "coverage"} and saved["prdc"]["k"] == 5
    assert saved["n_real"] == 100  # the held-out split: 20% of 500
    modes = saved["modes"]
    assert modes["n_modes"] == 8 and modes["n"] == 2500 and 0 <= modes["high_quality"] <= 1
    assert saved["exact"] == {}  # an MLP generator has no density


def test_evaluate_a_gaussian_run_reports_exact_divergences(tmp_path):
    from divgen.train import Config, train

    run = train(Config(data="mog1d", model="gaussian", divergence="kl", steps=30, n_data=500, batch_size=64,
                       width=32, log_every=10, checkpoint_every=30, n_samples=200), tmp_path / "run", quiet=True).run
    result = evaluate.evaluate_run(run)
    assert {"kl", "js", "wasserstein"} <= set(result["exact"])
    assert result["exact"]["kl"]["value"] > 0
    assert "exact divergence" in evaluate.report(result)
