"""`divgen evaluate` (the report of a run) and the commands `divgen test` and `divgen estimate`."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict

import numpy as np
import pytest
from pairs import gaussian_pair

from divgen import catalog, estimators, evaluate, threads, two_sample
from divgen.cli import main


# -------------------------------------------------------------- the run ---
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
    table = evaluate.report(result)
    assert "exact divergence" in table
    kl = result["exact"]["kl"]
    assert re.search(rf"\| kl +\| +{kl['value']:.4f} \| {re.escape(kl['method'])} +\|", table)  # the number, in its row


def test_evaluate_gives_the_numbers_of_estimate_and_test(monkeypatch):
    """evaluate runs the critics and the kernel tests concurrently, reuses the first fold's classifier
    for c2st-logit and takes energy from mmd-agg's pass: each number is still the one its own
    function gives with the seed, and none depends on the number of cores."""
    a, b, _, _ = gaussian_pair(150, d=2, shift=0.4, var_b=1.3, seed=4)
    names = ["kl", "js", "wasserstein"]
    by_cores = []
    for cores in (1, 2):
        monkeypatch.setattr(threads, "cores", lambda cores=cores: cores)
        by_cores.append(evaluate._critics_and_tests(a, b, names, seed=3, quiet=True))
    assert by_cores[0] == by_cores[1]
    estimates, tests, _ = by_cores[0]
    assert estimates == [asdict(e) for e in estimators.critic_estimates(a, b, names, seed=3)]
    alone = [two_sample.mmd_agg_test(a, b, permutations=evaluate.EVALUATE_PERMUTATIONS, seed=3),
             two_sample.energy_test(a, b, permutations=evaluate.EVALUATE_PERMUTATIONS, seed=3),
             two_sample.c2st_logit(a, b, seed=3, permutations=evaluate.EVALUATE_PERMUTATIONS)]
    assert [t["method"] for t in tests] == list(evaluate.EVALUATE_TESTS) == [t.method for t in alone]
    for got, want in zip(tests, alone):
        assert got["p_value"] == want.p_value and got["statistic"] == pytest.approx(want.statistic, rel=1e-12)


# ------------------------------------------------------------------ CLI ---
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
    ["test", "{a}", "{b}", "--permutations", "0"],
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
    assert set(out) == {"divergence", "estimate", "ci_low", "ci_high", "lower_bound", "extrapolated", "method", "n_a", "n_b"}
    assert out["lower_bound"] is None  # knn certifies nothing
    assert 0.2 < out["estimate"] < 0.9  # KL of a unit mean shift is 0.5


def test_cli_test_methods_are_the_library_tests(files, capsys):
    assert catalog.DEFAULT_TEST == "mmd-agg" and catalog.DEFAULT_TEST in catalog.TEST_METHODS
    for method in ("mmd-agg", "energy"):
        assert main(["test", files["a"], files["b"], "--method", method, "--permutations", "99", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["method"] == method and out["reject"] is True


def test_cli_estimate_prints_strict_json_with_the_bound(files, capsys):
    assert main(["estimate", files["a"], files["b"], "--divergence", "js", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lower_bound"] <= out["estimate"] and out["method"] == "critic"
    assert main(["estimate", files["a"], files["b"], "--divergence", "wasserstein"]) == 0
    assert "no certified lower bound" in capsys.readouterr().out


def test_an_infinite_estimate_is_printed_without_a_nan_interval(files, capsys, monkeypatch):
    inf = estimators.Estimate("kl", math.inf, math.nan, math.nan, "critic", 10, 10, 3.0, True)
    monkeypatch.setattr(estimators, "estimate", lambda *a, **k: inf)
    assert main(["estimate", files["a"], files["b"], "--divergence", "kl"]) == 0
    out = capsys.readouterr().out
    assert "kl(A‖B) ≈ inf" in out and "no confidence interval" in out and "nan" not in out
