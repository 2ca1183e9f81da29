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
    assert set(out) == {"divergence", "estimate", "ci_low", "ci_high", "lower_bound", "extrapolated", "method", "n_a", "n_b",
                        "note"}
    assert out["lower_bound"] is None  # knn certifies nothing
    assert out["note"] is None  # every row used
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
    assert main(["estimate", files["a"], files["b"], "--divergence", "wasserstein"]) == 0  # 2-D: the transport potential
    assert "(certified lower bound)" in capsys.readouterr().out
    assert main(["estimate", files["a"], files["b"], "--divergence", "kl", "--method", "knn"]) == 0
    assert "no certified lower bound" in capsys.readouterr().out


def test_an_infinite_estimate_is_printed_without_a_nan_interval(files, capsys, monkeypatch):
    inf = estimators.Estimate("kl", math.inf, math.nan, math.nan, "critic", 10, 10, 3.0, True)
    monkeypatch.setattr(estimators, "estimate", lambda *a, **k: inf)
    assert main(["estimate", files["a"], files["b"], "--divergence", "kl"]) == 0
    out = capsys.readouterr().out
    assert "kl(A‖B) ≈ inf" in out and "no interval" in out and "nan" not in out


# ------------------------------------------------------- long work speaks ---
def test_estimate_on_more_rows_than_it_uses_says_so_and_counts_its_steps(tmp_path, divgen, monkeypatch):
    """Above CRITIC_MAX_ROWS per side the critics see a random subset: the JSON's note and n_a, n_b say how many
    rows of how many; without --json the fits' steps are counted in plain lines on stderr (not a terminal)."""
    from divgen import progress

    g = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", g.normal(size=(300, 1)))
    np.save(tmp_path / "b.npy", g.normal(size=(150, 1)) + 1)
    monkeypatch.setattr(estimators, "CRITIC_MAX_ROWS", 100)
    monkeypatch.setattr(progress, "EVERY", 0.0)  # a line at every count, not every 5 s
    result = divgen("estimate", tmp_path / "a.npy", tmp_path / "b.npy", "--divergence", "js", "--json")
    out = json.loads(result.out)
    assert (out["n_a"], out["n_b"]) == (100, 100)
    assert "estimated on 100 of 300 rows of A and 100 of 150 rows of B, drawn at random" in out["note"]
    assert result.err == ""  # --json: quiet
    result = divgen("estimate", tmp_path / "a.npy", tmp_path / "b.npy", "--divergence", "js")
    assert result.code == 0 and "estimated on 100 of 300 rows of A" in result.out
    counted = [line for line in result.err_lines if re.fullmatch(r"estimate: \d+/6000 critic steps \(\d+%, about \d+ s left\)", line)]
    assert counted, result.err  # two folds of at most 3,000 steps each


def test_at_most_keeps_samples_that_fit_whole():
    a, b = np.zeros((5, 2)), np.ones((7, 2))
    import torch

    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    same_a, same_b, note = estimators.at_most(ta, tb, 7, seed=0)
    assert note is None and same_a is ta and same_b is tb
    cut_a, cut_b, note = estimators.at_most(ta, tb, 6, seed=0)
    assert (len(cut_a), len(cut_b)) == (5, 6) and "5 of 5 rows of A and 6 of 7 rows of B" in note
    assert bool((cut_b == 1).all())  # rows of B, not of A


def test_announce_repeats_a_line_for_work_that_cannot_count_itself(capsys):
    import time

    from divgen.progress import announce

    with announce("evaluate: something long …", after=0.01, every=0.05):
        time.sleep(0.4)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "evaluate: something long …"
    assert len(lines) >= 3 and all(re.fullmatch(r"evaluate: something long … \(\d+ s so far\)", x) for x in lines[1:])
    with announce("never printed", after=10, every=0.01):
        pass
    with announce("quiet", quiet=True, after=0.0, every=0.01):
        time.sleep(0.05)
    assert capsys.readouterr().err == ""


def test_model_metrics_say_what_they_run_and_how_big(monkeypatch):
    """The classifier's metrics and a VAE's likelihood bounds count no steps of their own: evaluate names
    each, with its size (rows, classes, importance samples), before it runs."""
    from contextlib import contextmanager
    from types import SimpleNamespace

    import torch

    said = []

    @contextmanager
    def record(text, quiet=False, after=3.0, every=None):
        said.append((text, every))
        yield

    monkeypatch.setattr(evaluate, "announce", record)
    monkeypatch.setattr(evaluate.metrics, "image_metrics", lambda ds, nets, seed, quiet: {"ok": 1})
    seen_k = []
    monkeypatch.setattr(evaluate.metrics, "held_out_likelihood",
                        lambda ds, nets, k, seed: seen_k.append(k) or SimpleNamespace())
    monkeypatch.setattr(evaluate, "asdict", lambda x: {"bounds": 1})
    ds = SimpleNamespace(n_classes=10_000, holdout=torch.zeros(360, 2))
    nets = {"generator": SimpleNamespace(n_classes=10_000)}
    out = evaluate._model_metrics(ds, nets, SimpleNamespace(own_loss="elbo"), seed=0, quiet=False)
    assert out == {"classifier_metrics": {"ok": 1}, "likelihood": {"bounds": 1}} and seen_k == [evaluate.LIKELIHOOD_K]
    assert said == [("evaluate: metrics in the feature space of the data set's classifier, 360 held-out rows, "
                     "10,000 classes and per class …", evaluate.EVERY),
                    ("evaluate: held-out likelihood, ELBO and IWAE bounds with k = 1,000 importance samples on each "
                     "of 360 rows (360,000 decoder passes) …", evaluate.EVERY)]


def test_report_sums_up_the_per_class_counts_of_many_classes():
    assert evaluate._counts([3, 0, 2]) == "held-out rows 3, 0, 2"
    assert evaluate._counts([0] + [2] * 30 + [5]) == "31 of 32 classes, 2–5 held-out rows each"
