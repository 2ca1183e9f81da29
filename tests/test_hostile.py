"""Hostile input, degenerate data and the user's files (issue 12): one table per class of failure.

Sizes are estimated before anything is allocated; `--overwrite` keeps the
user's files in every folder; every listed traceback is now one line and exit
code 2; degenerate data is refused; a half-created run resumes from step 0;
a run finds its data file from any directory. tests/test_fuzz.py runs the
whole bad-input table (tests/fuzz.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, assert_clean_failure, metrics_without_timing, snapshot
import divgen
from divgen import catalog, cli, config, data, data_files, demo, estimators, families, jsonout, limits, recipes, runs, train, two_sample
from divgen.config import Config
from divgen.results import load_run

SMALL = [*TINY, "--n-samples", "1000", "--no-figures"]
GB = 10**9


def env1() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def machine(monkeypatch):
    """A machine with 8 GB of memory and 50 GB of disk free, whatever this one has."""
    monkeypatch.setattr(limits, "memory_available", lambda device=None: 8 * GB)
    monkeypatch.setattr(limits, "disk_free", lambda path: 50 * GB)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", rng.normal(size=(300, 2)) + 0.5)
    np.save(tmp_path / "const.npy", np.ones((300, 2)))
    np.save(tmp_path / "dup.npy", np.concatenate([x[:150], x[:150]]))
    return tmp_path


def _run(divgen, out: Path, *extra, data="mog1d", steps=10):
    result = divgen("train", "--data", data, "--steps", steps, *SMALL, *extra, "--out", out)
    assert result.code == 0, result.err
    return out


# ------------------------------------------ memory bombs: sized before allocation ---
NETWORKS, TOY, MMD, DRAW = (families, "networks"), (data, "sample_toy"), (two_sample, "mmd_test"), (families, "draw_chunks")
# argv, the flag the refusal names, memory or disk, what must not have run when it is refused
BOMBS = {
    "batch size": (["train", "--data", "mog1d", "--batch-size", "100000000"], "--batch-size 100000000", "memory", NETWORKS),
    "width": (["train", "--data", "mog1d", "--width", "10000000"], "--width 10000000", "memory", NETWORKS),
    "depth": (["train", "--data", "mog1d", "--depth", "1000000"], "--depth 1000000", "memory", NETWORKS),
    "noise dim": (["train", "--data", "mog1d", "--noise-dim", "1000000000"], "--noise-dim 1000000000", "memory", NETWORKS),
    "n data": (["train", "--data", "mog1d", "--n-data", "1000000000"], "--n-data 1000000000", "memory", TOY),
    "n samples": (["train", "--data", "mog1d", "--n-samples", "100000000000"], "--n-samples 100000000000", "disk", NETWORKS),
    "permutations": (["test", "{a}", "{b}", "--method", "mmd", "--permutations", "1000000000"], "--permutations 1000000000",
                     "memory", MMD),
    "sample -n": (["sample", "{run}", "-n", "100000000000", "-o", "{out}/s.npy"], "-n 100000000000", "disk", DRAW),
}


@pytest.mark.parametrize("case", BOMBS)
def test_requests_too_large_are_refused_before_any_allocation(divgen, files, trained_run, machine, monkeypatch, case):
    argv, flag, what, (owner, name) = BOMBS[case]
    argv = [a.format(a=files / "a.npy", b=files / "b.npy", run=trained_run, out=files) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(files / "new")]
    monkeypatch.setattr(owner, name, lambda *a, **k: pytest.fail(f"{name} ran before the size check"))
    before = snapshot(files)
    t0 = time.perf_counter()
    result = divgen(*argv)
    assert time.perf_counter() - t0 < 5
    assert_clean_failure(result)
    message = result.err_lines[0]
    assert flag in message.split(": needs about")[0] and "needs about" in message, message
    assert ("8 GB is available" if what == "memory" else "50 GB is available") in message, message
    assert snapshot(files) == before


def _measured(family: str, spec, width: int):
    """(estimated, built) parameters and (estimated, measured) activation values per sample of a family."""
    kind = "kl" if catalog.FAMILIES[family].own_loss == "elbo" else None
    cfg = config.resolve(Config(data="mog1d", model=family, width=width, divergence=kind))
    if cfg.likelihood == "auto":
        cfg = dataclasses.replace(cfg, likelihood="bernoulli")
    x = torch.rand(64, spec.dim)
    y = torch.arange(64) % spec.n_classes if spec.n_classes else None
    recipe = recipes.build(cfg, x)
    nets = families.networks(cfg, spec, x, y, recipe, 0)
    count = families.network_count(cfg, recipe)
    assert count == len(nets)
    built = sum(p.numel() for p in nets.parameters())
    values = []  # every leaf layer's output: what a training step keeps for its backward pass
    for m in nets.modules():
        if not list(m.children()):
            m.register_forward_hook(lambda m, i, o: values.append(o.numel() if torch.is_tensor(o) else 0))
    b = 16
    y_b = None if y is None else y[:b]
    with torch.no_grad():  # the forward passes of a training step: the generator side's loss, the critic on both sides
        batch, z = data.Batch(x[:b], y_b), torch.randn(b, nets["generator"].noise_dim)
        view = families.view(cfg)
        pair = None if view is None else view.pair(nets, batch, z)
        train._generator_loss(recipe, view, nets, train.Draw(batch, z, pair))
        if "critic" in nets and not view.real_moves:
            nets["critic"](*pair.real)
    estimate = sum(limits.network_sizes(cfg, spec.event_shape, count, families.label_count(cfg, spec)).values())
    units = sum(limits.activation_units(cfg, spec.event_shape, count).values())
    return estimate / built, units / (sum(values) / b)


SHAPES = {"vector": ((5,), ["mlp", "gaussian", "cgan", "bigan", "vae", "cvae", "aae"]),
          "8x8": ((8, 8), ["conv", "cgan", "bigan", "vae", "cvae"]),
          "1x28x28": ((1, 28, 28), ["conv", "cgan", "bigan", "vae", "cvae"]),
          "3x32x32": ((3, 32, 32), ["conv", "cgan", "bigan", "vae"])}


@pytest.mark.parametrize("case", [f"{fam} {shape}" for shape, (_, fams) in SHAPES.items() for fam in fams])
def test_the_estimate_follows_the_networks_each_family_builds(case):
    """limits.py sizes the networks of every family (parameters, and the activations of a forward pass
    measured layer by layer) within a factor of 2.5, from the flags alone, before they are built."""
    family, shape = case.split()
    event_shape, _ = SHAPES[shape]
    spec = data.Spec(event_shape, 3 if family in ("cgan", "cvae") else 0)
    params, activations = _measured(family, spec, width=32 if shape == "vector" else 128)
    assert 0.6 < params < 2.5, params
    assert 0.6 < activations < 2.5, activations


@pytest.mark.parametrize("family, event_shape, n_classes", [
    ("gaussian", (300,), 0),  # the d × d scale matrix dominates
    ("cgan", (5,), 2000), ("cvae", (5,), 2000), ("cgan", (8, 8), 2000),  # so do the labels' inputs
])
def test_the_estimate_counts_what_grows_with_the_data(family, event_shape, n_classes):
    params, _ = _measured(family, data.Spec(event_shape, n_classes), width=32)
    assert 0.6 < params < 2.5, params


@pytest.mark.slow
def test_the_memory_estimate_is_above_and_near_what_a_run_uses(tmp_path):
    """The peak memory a training run adds for a larger batch, measured in a real process, lies below the
    estimate for it, and not far below: a request is refused only when it would not fit."""
    code = ("import resource, sys\nfrom divgen import cli\nassert cli.main(sys.argv[1:]) == 0\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")

    def peak(batch: int, i: int) -> int:  # bytes
        argv = ["train", "--data", "ring8", "--divergence", "wasserstein", "--steps", "1", "--batch-size", str(batch),
                "--n-data", "1000", "--n-samples", "100", "--no-figures", "--checkpoint-every", "1",
                "--out", str(tmp_path / f"b{batch}-{i}"), "--json"]
        proc = subprocess.run([sys.executable, "-c", code, *argv], env=env1(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.splitlines()[-1]) * 1024  # ru_maxrss is in KiB on Linux

    def estimate(batch: int) -> float:
        cfg = config.resolve(Config(data="ring8", divergence="wasserstein", batch_size=batch, n_data=1000))
        return sum(b for _, b in limits.training_memory(cfg, (2,), 1200, 2))

    # the measured difference depends on the allocator's history: 0.76–0.82 GB alone, and once 0.16 GB inside
    # the full suite on a loaded machine, so the larger of two measurements; against an estimate of 1.1 GB,
    # 4× still catches an estimate off by an order of magnitude
    used = max(peak(60_000, i) - peak(1_000, i) for i in range(2))
    estimated = estimate(60_000) - estimate(1_000)
    assert used < estimated < 4 * used, (used, estimated)


def test_the_estimate_grows_with_each_flag_and_refuses_only_above_what_is_available():
    base = config.resolve(Config(data="mog1d"))
    total = sum(b for _, b in limits.training_memory(base, (2,), 10_000))
    assert 1e6 < total < 1e9  # a default run: megabytes, not gigabytes
    for flag, factor in (("batch_size", 1.5), ("width", 1.5), ("depth", 1.5), ("noise_dim", 1.01)):
        bigger = config.resolve(Config(data="mog1d", **{flag: 10 * getattr(base, flag)}))
        assert sum(b for _, b in limits.training_memory(bigger, (2,), 10_000)) > factor * total, flag
    limits.require([("--x 1", 100)], have=100)  # exactly enough: accepted
    with pytest.raises(limits.InputError, match="--x 1: needs about 101 B of memory"):
        limits.require([("--x 1", 100), ("--y 2", 1)], have=100)


def test_real_process_refuses_absurd_sizes_quickly(tmp_path, trained_run):
    """Without any patching, on this machine: refused in seconds, one line, nothing written."""
    for argv in (["train", "--data", "mog1d", "--batch-size", str(10**13), "--out", "x"],
                 ["sample", str(trained_run), "-n", str(10**18), "-o", "s.npy"]):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "divgen", *argv], cwd=tmp_path, env=env1(),
                              capture_output=True, text=True, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "needs about" in lines[0], proc.stderr
        assert time.perf_counter() - t0 < 60
        assert not list(tmp_path.iterdir())


# --------------------------------------- --overwrite keeps the user's files ---
def _train_twice(divgen, tmp_path, overwrite: bool):
    out = tmp_path / "u"
    _run(divgen, out, "--tensorboard", "--checkpoint-every", "10", steps=20)
    return out, lambda: divgen("train", "--data", "mog1d", "--steps", "10", *SMALL, "--checkpoint-every", "10",
                               "--out", out, *(["--overwrite"] if overwrite else []))


def _compare_twice(divgen, tmp_path, overwrite: bool):
    out, rows = tmp_path / "cmp", tmp_path / "rows.npy"
    np.save(rows, np.random.default_rng(0).normal(size=(300, 1)).astype(np.float32))
    # adversarial:mmd: its two starts are told apart by an MMD statistic, not by training critics; a file of 300
    # rows keeps that statistic's permutations short
    argv = ["compare", "--data", rows, "--methods", "mle,adversarial:mmd", "--steps", "10", "--out", out]
    assert divgen(*argv).code == 0
    return out, lambda: divgen(*argv, *(["--overwrite"] if overwrite else []))


def _demo_twice(divgen, tmp_path, overwrite: bool, monkeypatch=None):
    out = tmp_path / "demo"
    assert divgen("demo", "--out", out).code == 0
    return out, lambda: divgen("demo", "--out", out, *(["--overwrite"] if overwrite else []))


# every folder each command writes in
FOLDERS = {
    "train": (_train_twice, [".", "checkpoints", "tensorboard"]),
    "compare": (_compare_twice, [".", "adversarial-mmd", "adversarial-mmd/init-std-1", "adversarial-mmd/init-std-1/checkpoints"]),
    "demo": (_demo_twice, [".", "kl", "kl/checkpoints", "ring8-js"]),
}


@pytest.fixture
def tiny_demo(monkeypatch):
    tiny = dict(steps=10, width=16, n_data=500, batch_size=64, log_every=5, n_samples=1000, figures=False)
    monkeypatch.setattr(demo, "RUNS", {name: Config(**{**cfg.__dict__, **tiny}) for name, cfg in demo.RUNS.items()})


@pytest.mark.parametrize("command", FOLDERS)
def test_overwrite_keeps_user_files_in_every_folder(divgen, tmp_path, tiny_demo, command):
    twice, folders = FOLDERS[command]
    out, again = twice(divgen, tmp_path, overwrite=True)
    mine = {}
    for i, folder in enumerate(folders):
        path = out / folder / "mine.txt"
        path.write_text(f"the user's file {i}")
        mine[path] = path.read_text()
    (out / "checkpoints-of-mine").mkdir()  # a folder of the user's beside divgen's
    (out / "checkpoints-of-mine" / "step-00000005.pt").write_text("not divgen's: another folder")
    result = again()
    assert result.code == 0, result.err
    for path, text in mine.items():
        assert path.read_text() == text, f"{path} was deleted or changed"
    assert (out / "checkpoints-of-mine" / "step-00000005.pt").is_file()
    if command == "train":  # divgen's own old files are gone: the second run is shorter
        assert sorted(p.name for p in (out / "checkpoints").glob("step-*.pt")) == ["step-00000000.pt", "step-00000010.pt"]
        assert [r["step"] for r in runs.read_metrics(out)] == [5, 10]
        assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 0  # the new run has no --tensorboard


@pytest.mark.parametrize("command", FOLDERS)
def test_without_overwrite_nothing_is_touched_and_resume_is_offered_only_by_train(divgen, tmp_path, tiny_demo, command):
    twice, _ = FOLDERS[command]
    out, again = twice(divgen, tmp_path, overwrite=False)
    before = snapshot(out)
    result = again()
    assert_clean_failure(result)
    assert ("--resume" in result.err) == (command == "train"), result.err
    assert "--overwrite" in result.err
    assert snapshot(out) == before


def test_the_issue_example(divgen, tmp_path):
    """mkdir -p u/checkpoints u/tensorboard; echo x > ...; divgen train --out u --overwrite --steps 50"""
    for folder, text in (("checkpoints", "x"), ("tensorboard", "y")):
        (tmp_path / "u" / folder).mkdir(parents=True)
        (tmp_path / "u" / folder / "mine.txt").write_text(text)
    assert divgen("train", "--data", "mog1d", *SMALL, "--out", tmp_path / "u", "--overwrite", "--steps", 50).code == 0
    assert (tmp_path / "u/checkpoints/mine.txt").read_text() == "x"
    assert (tmp_path / "u/tensorboard/mine.txt").read_text() == "y"


# ------------------------------------- tracebacks and misleading messages ---
def _edited_run(trained_run, tmp_path, name, edit):
    import shutil

    run = tmp_path / name
    shutil.copytree(trained_run, run)
    edit(run)
    return run


def _wrong_types(run):
    (run / "config.json").write_text(json.dumps({"data": 5, "divergence": ["x"], "steps": "many"}))


def _other_width(run):
    import shutil

    other = run.parent / "wide"
    cli.main(["train", "--data", "mog2d", "--divergence", "js", "--steps", "20", *TINY, "--width", "32",
              "--checkpoint-every", "10", "--n-samples", "100", "--no-figures", "--out", str(other), "--json"])
    for p in runs.checkpoints(run):
        p.unlink()
    shutil.copy(runs.checkpoints(other)[-1], run / "checkpoints")


SEEDS = [["train", "--data", "mog1d", "--out", "{tmp}/x"], ["sample", "{run}", "-o", "{tmp}/s.npy"],
         ["test", "{a}", "{b}"], ["estimate", "{a}", "{b}", "--divergence", "kl"], ["evaluate", "{run}"],
         ["compare", "--data", "mog1d", "--methods", "mle", "--out", "{tmp}/c"]]
TRACEBACKS = {
    **{f"{argv[0]} --seed 99999999999999999999": ([*argv, "--seed", "99999999999999999999"], "--seed") for argv in SEEDS},
    "sample -o missing/dir": (["sample", "{run}", "-n", "10", "-o", "{tmp}/missing/dir/s.npy"], "does not exist"),
    "resume, config.json of wrong types": (["train", "--resume", "{types}"], "config.json: data must be str, got 5"),
    "resume, checkpoint of another width": (["train", "--resume", "{width}", "--steps", "30"], "copied from another run?"),
    "sample, checkpoint of another width": (["sample", "{width}", "-o", "{tmp}/s.npy"], "copied from another run?"),
    "compare on constant data": (["compare", "--data", "{const}", "--methods", "mle", "--out", "{tmp}/c"], "constant"),
    "--lr-critic inf": (["train", "--data", "mog1d", "--lr-critic", "inf", "--out", "{tmp}/x"], "--lr-critic"),
    "--clip nan": (["train", "--data", "mog1d", "--lipschitz", "clip", "--divergence", "wasserstein", "--clip", "nan",
                    "--out", "{tmp}/x"], "--clip"),
    "--clip -0.01": (["train", "--data", "mog1d", "--clip=-0.01", "--out", "{tmp}/x"], "--clip"),
    "--penalty-weight -1": (["train", "--data", "mog1d", "--penalty-weight=-1", "--out", "{tmp}/x"], "--penalty-weight"),
    "--lr-generator 0": (["train", "--data", "mog1d", "--lr-generator", "0", "--out", "{tmp}/x"], "--lr-generator"),
    "--critic-steps x": (["train", "--data", "mog1d", "--critic-steps", "x", "--out", "{tmp}/x"], "--critic-steps"),
    "a directory as --data": (["train", "--data", "{tmp}", "--out", "{tmp}/x"], "is a directory"),
    "a .npy directory as --data": (["train", "--data", "{folder}", "--out", "{tmp}/x"], "is a directory"),
}


@pytest.mark.parametrize("case", TRACEBACKS)
def test_every_listed_traceback_is_one_line_and_exit_code_2(divgen, files, trained_run, case):
    (files / "folder.npy").mkdir()
    paths = dict(tmp=files, run=trained_run, a=files / "a.npy", b=files / "b.npy", const=files / "const.npy",
                 folder=files / "folder.npy", types="", width="")
    argv, words = TRACEBACKS[case]
    if "{types}" in argv:
        paths["types"] = _edited_run(trained_run, files, "types", _wrong_types)
    if "{width}" in argv:
        paths["width"] = _edited_run(trained_run, files, "width", _other_width)
    argv = [a.format(**paths) for a in argv]
    before = snapshot(files)
    result = divgen(*argv)
    assert_clean_failure(result)
    assert words in result.err, result.err
    assert snapshot(files) == before, "a refused request left something behind"


def test_a_damaged_checkpoint_warning_is_whole_words(divgen, trained_run, tmp_path, monkeypatch):
    """A long load error is shortened between words, never in the middle of one."""
    words = [f"word{i}" for i in range(200)]
    original = torch.load

    def load(path, *args, **kwargs):
        if Path(path).name == "step-00000020.pt":
            raise RuntimeError(" ".join(words))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    result = divgen("sample", trained_run, "-n", 10, "-o", tmp_path / "s.npy")
    assert result.code == 0, result.err
    (warning,) = [line for line in result.err_lines if "warning" in line]
    reason = warning.split("corrupt or unsafe: ")[1].split(" …")[0]
    assert reason.split() == words[: len(reason.split())] and len(reason.split()) > 5, warning
    assert warning.endswith("using step-00000010.pt instead")


def test_csv_comment_lines_and_line_numbers(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("# exported by hand\nx,y\n\n1,2\n# a note\n3,4\n5,6\n")
    x, _ = data_files.read_array(path)
    np.testing.assert_array_equal(x, [[1, 2], [3, 4], [5, 6]])
    path.write_text("# exported by hand\nx,y\n1,2\n\n# a note\n3,four\n")
    with pytest.raises(data.InputError, match="line 6: non-numeric value 'four'"):
        data_files.read_array(path)


def test_huge_values_are_refused_without_a_warning(tmp_path):
    np.save(tmp_path / "big.npy", np.full((5, 2), 1e300))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked RuntimeWarning fails here
        with pytest.raises(data.InputError, match="too large for float32"):
            data_files.read_array(tmp_path / "big.npy")


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_ctrl_c_while_importing_is_one_line(tmp_path, delay):
    """SIGINT while torch is still importing (or just after): one line, no traceback, no abort; any run
    directory left behind can be resumed. The exit status is 130, or death by SIGINT after that line
    (which a shell also reports as 130): CPython ends so when a KeyboardInterrupt passed through code that
    torch runs from C++, even though divgen caught it."""
    # a suite run as a background job ignores SIGINT, and the child would inherit that (divgen honours an
    # ignored SIGINT): with a handler here instead, the child starts with the default, as from a terminal
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "divgen", "train", "--data", "mog1d", *SMALL, "--steps", "100000",
                                 "--out", "run"], cwd=tmp_path, env=env1(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode in (130, -signal.SIGINT) and len(lines) == 1 and "Traceback" not in err, (proc.returncode, err)
    assert lines[0] == "divgen: interrupted" or "--resume" in lines[0], err
    if (tmp_path / "run").exists():
        assert cli.main(["train", "--resume", str(tmp_path / "run"), "--steps", "10", "--json"]) in (0, 2)


# ------------------------------------------------------------ degenerate data ---
DEGENERATE = {
    "mmd test of constant data": (["test", "{const}", "{const}", "--method", "mmd", "--json"], "constant"),
    "c2st of constant data": (["test", "{const}", "{a}"], "constant"),
    "k-NN KL of a file with itself": (["estimate", "{a}", "{a}", "--divergence", "kl", "--method", "knn"], "independent"),
    "k-NN KL with every row twice": (["estimate", "{dup}", "{dup}", "--divergence", "kl", "--method", "knn"], "repeat 150"),
    "k-NN reverse KL, B duplicated": (["estimate", "{a}", "{dup}", "--divergence", "reverse-kl", "--method", "knn"],
                                      "repeat 150"),
    "critic estimate of constant data": (["estimate", "{const}", "{a}", "--divergence", "js"], "constant"),
    "training on constant data": (["train", "--data", "{const}", "--out", "{tmp}/x"], "constant"),
    "compare with a constant column": (["compare", "--data", "{constcol}", "--methods", "mle", "--out", "{tmp}/c"],
                                       "column 2 (of 2) is constant"),
}


@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_inputs_are_refused(divgen, files, case):
    np.save(files / "constcol.npy", np.c_[np.load(files / "a.npy")[:, :1], np.ones(300)])
    argv, words = DEGENERATE[case]
    argv = [x.format(tmp=files, a=files / "a.npy", const=files / "const.npy", dup=files / "dup.npy",
                     constcol=files / "constcol.npy") for x in argv]
    before = snapshot(files)
    result = divgen(*argv)
    assert_clean_failure(result)
    assert words in result.err, result.err
    assert snapshot(files) == before


def test_knn_still_estimates_distinct_independent_samples(files):
    e = estimators.estimate(np.load(files / "a.npy"), np.load(files / "b.npy"), "kl", method="knn")
    assert 0.05 < e.estimate < 0.3  # KL of a shift by (0.5, 0.5): 0.25


def test_evaluating_a_run_whose_data_is_now_constant_is_refused(divgen, tmp_path):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(300, 2)))
    run = _run(divgen, tmp_path / "run", data=str(tmp_path / "d.npy"))
    np.save(tmp_path / "d.npy", np.ones((300, 2)))
    result = divgen("evaluate", run)  # the data are read, and refused, before their digest is compared
    assert_clean_failure(result)
    assert "constant" in result.err and not (run / "eval.json").exists()


def test_pandas_index_column_is_dropped_with_a_warning(divgen, tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 2))
    text = ",a,b\n" + "".join(f"{i},{p:.6f},{q:.6f}\n" for i, (p, q) in enumerate(x))  # DataFrame.to_csv()
    (tmp_path / "p.csv").write_text(text)
    got, _ = data_files.read_array(tmp_path / "p.csv")
    np.testing.assert_allclose(got, x, atol=1e-6)
    (tmp_path / "u.csv").write_text(text.replace(",a,b", "Unnamed: 0,a,b", 1))  # read_csv().to_csv(index=False)
    assert data_files.read_array(tmp_path / "u.csv")[0].shape == (200, 2)
    run = _run(divgen, tmp_path / "run", data=str(tmp_path / "p.csv"))
    assert np.load(run / "samples.npy").shape[1] == 2
    (tmp_path / "named.csv").write_text(text.replace(",a,b", "i,a,b", 1))  # a named first column is data
    assert data_files.read_array(tmp_path / "named.csv")[0].shape == (200, 3)


def _strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_strict_json_helper():
    obj = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float32(2.5), "d": torch.tensor(3.0), "e": (1, 2)}
    assert _strict_loads(jsonout.dumps(obj)) == {"a": None, "b": [None, None, 1.5], "c": 2.5, "d": 3.0, "e": [1, 2]}


def test_every_json_divgen_writes_is_strict(divgen, tmp_path, monkeypatch):
    """With non-finite estimates forced, eval.json, --json output and metrics.jsonl hold null, never NaN."""
    run = _run(divgen, tmp_path / "run", data="mog2d")
    for path in (run / "config.json", run / "metrics.jsonl"):
        for line in path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]:
            _strict_loads(line)

    def non_finite(name, folds, confidence, n_a, n_b):  # what a degenerate estimate would give
        return estimators.Estimate(name, -math.inf, math.nan, math.nan, "critic", n_a, n_b)

    monkeypatch.setattr(estimators, "pooled", non_finite)
    result = divgen("evaluate", run, "--json")
    assert result.code == 0, result.err
    printed, saved = _strict_loads(result.out), _strict_loads((run / "eval.json").read_text())
    assert printed == saved and saved["critic"][0]["estimate"] is None and saved["critic"][0]["ci_low"] is None


# ------------------------------------------------------ a half-created run ---
@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_a_run_stopped_before_its_first_checkpoint_resumes_from_step_0(divgen, tmp_path, monkeypatch, failure):
    run, straight = tmp_path / "run", tmp_path / "straight"
    flags = ["--data", "mog1d", "--steps", "20", *SMALL]
    original = runs.CheckpointState.save

    def fail_first(self, out, step, keep):
        raise failure("stopped at the worst moment")

    monkeypatch.setattr(runs.CheckpointState, "save", fail_first)
    if failure is KeyboardInterrupt:
        assert divgen("train", *flags, "--out", run).code == 130
    else:
        with pytest.raises(OSError):
            cli.main(["train", *flags, "--out", str(run)])
    monkeypatch.setattr(runs.CheckpointState, "save", original)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]  # the half-created run of the issue

    for argv in (["train", *flags, "--out", run], ["sample", run, "-o", tmp_path / "s.npy"], ["evaluate", run]):
        result = divgen(*argv)
        assert_clean_failure(result)
        assert "--resume" in result.err, result.err
    result = divgen("train", "--resume", run)
    assert result.code == 0, result.err
    assert divgen("train", *flags, "--out", straight).code == 0
    assert metrics_without_timing(run) == metrics_without_timing(straight)
    assert (run / "samples.npy").read_bytes() == (straight / "samples.npy").read_bytes()


# ------------------------------------------------- resume, and its surprises ---
def test_resume_steps_at_or_below_the_run_are_refused(divgen, tmp_path):
    run = _run(divgen, tmp_path / "run", steps=20)
    before = snapshot(tmp_path)
    for steps in (10, 20):
        result = divgen("train", "--resume", run, "--steps", steps)
        assert_clean_failure(result)
        assert "already at step 20" in result.err
    result = divgen("train", "--resume", run, "--steps", 30, "--overwrite")
    assert_clean_failure(result)
    assert snapshot(tmp_path) == before
    # a run stopped after its last checkpoint but before its results: --steps equal to it finishes it
    (run / "samples.npy").unlink()
    assert divgen("train", "--resume", run, "--steps", 20).code == 0
    assert (run / "samples.npy").is_file()


def test_resume_removes_the_results_that_no_longer_describe_the_run(divgen, tmp_path):
    run = _run(divgen, tmp_path / "run", "--model", "gaussian", steps=10)
    (run / "eval.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    old = (run / "params.json").read_text()
    assert divgen("train", "--resume", run, "--steps", 20).code == 0
    assert not (run / "eval.json").exists() and (run / "notes.txt").read_text() == "mine"
    assert (run / "params.json").read_text() != old


# ------------------------------------------- a data file from any directory ---
def test_relative_data_path_from_another_directory(divgen, tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    x = np.random.default_rng(1).normal(size=(300, 2))
    (home / "my.csv").write_text("a,b\n" + "".join(f"{p:.6f},{q:.6f}\n" for p, q in x))
    monkeypatch.chdir(home)
    assert divgen("train", "--data", "my.csv", "--steps", 10, *SMALL, "--out", "run").code == 0
    run = home / "run"
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"] == str(home / "my.csv")
    assert saved["data_sha256"] == hashlib.sha256((home / "my.csv").read_bytes()).hexdigest()

    monkeypatch.chdir(elsewhere)
    result = divgen("evaluate", run)
    assert result.code == 0, result.err
    progress = [line for line in result.err_lines if line.startswith("evaluate: ")]  # not a terminal: plain lines
    assert len(progress) >= 3 and progress == result.err_lines, result.err
    assert divgen("train", "--resume", run, "--steps", 20).code == 0
    assert divgen("sample", run, "-n", 10, "-o", "s.csv").code == 0

    # the file changes: resuming and evaluating refuse, and write nothing
    assert not (run / "eval.json").exists()  # removed by the resume: it described step 10
    (home / "my.csv").write_text("a,b\n" + "".join(f"{p:.6f},{q:.6f}\n" for p, q in x[::-1][:200]))
    before = snapshot(tmp_path)
    for argv in (["evaluate", run], ["train", "--resume", run, "--steps", 30]):
        result = divgen(*argv)
        assert_clean_failure(result)
        assert "has changed since the run was trained" in result.err
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ sample ---
@pytest.mark.parametrize("ext", [".npy", ".npz", ".csv"])
def test_sample_formats_hold_the_same_numbers_streamed(divgen, trained_run, tmp_path, monkeypatch, ext):
    expected = families.draw(load_run(trained_run).nets, 20_000, 3).numpy()  # 3 chunks of 8192
    monkeypatch.setattr(families, "draw", lambda *a, **k: pytest.fail("sample must stream, not draw all at once"))
    out = tmp_path / f"s{ext}"
    result = divgen("sample", trained_run, "-n", 20_000, "--seed", 3, "-o", out, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["format"] == ext[1:]
    got = {".npy": lambda: np.load(out), ".npz": lambda: np.load(out)["x"],
           ".csv": lambda: np.loadtxt(out, delimiter=",", dtype=np.float32)}[ext]()
    np.testing.assert_array_equal(got, expected)
    assert data_files.read_array(out)[0].shape == (20_000, 2)  # divgen reads its own output back


def test_an_interrupted_sample_leaves_the_old_file_and_no_partial_one(divgen, trained_run, tmp_path, monkeypatch):
    out = tmp_path / "s.npy"
    np.save(out, np.arange(6.0))
    before = snapshot(tmp_path)

    def chunks(*args, **kwargs):
        yield torch.zeros(8192, 2), None
        raise KeyboardInterrupt

    monkeypatch.setattr(families, "draw_chunks", chunks)
    assert divgen("sample", trained_run, "-n", 20_000, "-o", out, "--overwrite").code == 130
    assert snapshot(tmp_path) == before


def test_sample_png_grid_for_image_data(divgen, tmp_path):
    run = _run(divgen, tmp_path / "digits", data="digits", steps=5)
    out = tmp_path / "grid.png"
    assert divgen("sample", run, "-n", 30, "-o", out).code == 0
    from matplotlib.image import imread

    image = imread(out)
    assert image.shape[:2] == (5 * 10, 6 * 10)  # 30 images of 8×8 with a 1-pixel border, 5 rows of 6


# ------------------------------------------------------------ the command line ---
def test_help_and_version_import_nothing_heavy(tmp_path):
    """`divgen --help` and every command's --help but train's (whose defaults come from the model families)
    run without importing torch, numpy or matplotlib."""
    code = """
import sys
from divgen import cli
for argv in (["--help"], ["--version"], *([c, "--help"] for c in cli.COMMANDS if c != "train")):
    try:
        cli.main(argv)
    except SystemExit as e:
        assert e.code == 0, argv
heavy = sorted(m for m in ("torch", "numpy", "matplotlib", "scipy") if m in sys.modules)
print("HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env1(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout and f"divgen {divgen.__version__}" in proc.stdout


def test_generator_loss_help_follows_the_order_of_its_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    start = text.index("--generator-loss {")
    choices = text[start:].split("{")[1].split("}")[0].split(",")
    helptext = text[text.index("f-GAN generator loss:", start):]
    says = {"auto": "auto is", "nonsaturating": "nonsaturating maximizes", "minimax": "minimax minimizes",
            "ratio": "ratio trains"}
    positions = [helptext.index(says[c]) for c in choices]
    assert choices == ["auto", "nonsaturating", "minimax", "ratio"] and positions == sorted(positions)


@pytest.mark.slow
def test_compare_says_which_fit_its_progress_lines_belong_to(divgen, tmp_path):
    result = divgen("compare", "--data", "mog1d", "--methods", "mle,exact:kl", "--out", tmp_path / "c")
    assert result.code == 0, result.err
    assert [line for line in result.err_lines if line.startswith("compare:")] == \
        ["compare: fit 1/2: mle", "compare: fit 2/2: exact:kl"]
