"""The command line: every sub-command's --help, the run directory, sampling, and every kind of bad input.

Most tests call `divgen.cli.main` in-process; a few run `python -m divgen` to see
exactly what a user sees (exit code, no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, assert_clean_failure, metrics_without_timing, snapshot, train_tiny
from divgen import catalog, cli, divergences, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(action.choices)


# -------------------------------------------------------------------- --help ---
@pytest.mark.parametrize("command", [None, *_subcommands()])
def test_help_for_every_subcommand(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: divgen" + ("" if command is None else f" {command}"))
    assert "--json" in out or command is None


def test_subcommands_include_the_core():
    assert {"demo", "divergences", "train", "sample"} <= set(_subcommands())


def test_train_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for field in dataclasses.fields(train.Config):
        assert ("--" + field.name.replace("_", "-") in out) == field.metadata["flag"]


# --------------------------------------------------------------- divergences ---
def test_divergences_table_text(divgen):
    result = divgen("divergences")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split("|")[1].strip() == "name" and "f'(1)" in lines[0]
    rows = {line.split("|")[1].strip(): line for line in lines[2:] if line.startswith("|")}
    assert list(rows) == list(divergences.EXAMPLES)
    cells = {name: [c.strip() for c in line.strip(" |").split("|")] for name, line in rows.items()}
    # the last two columns, f'(1) and the maximum, worked out by hand
    assert cells["kl"][-2:] == ["1.0", "∞"]
    assert cells["reverse-kl"][-2:] == ["-1.0", "∞"]
    assert cells["gan"][-2:] == ["-0.693147", "0.0"]
    assert cells["js"][-1] == "0.693147" and cells["tv"][-1] == "1.0" and cells["hellinger"][-1] == "2.0"


def test_divergences_table_json(divgen):
    result = divgen("divergences", "--json")
    assert result.code == 0
    obj = json.loads(result.out)
    assert obj["names"] == list(catalog.DIVERGENCES)
    by_name = {row["name"]: row for row in obj["divergences"]}
    assert list(by_name) == list(divergences.EXAMPLES)
    for name, row in by_name.items():
        assert {"f", "f*", "dom f*", "g_f", "f'(1)"} <= set(row)
        expected = {"kl": 1.0, "reverse-kl": -1.0, "gan": -0.693147}.get(name, 0.0)
        assert row["f'(1)"] == pytest.approx(expected, abs=1e-6)
    assert by_name["kl"]["maximum"] is None and by_name["js"]["maximum"] == pytest.approx(math.log(2), abs=1e-6)
    assert "t ≥ −2" in by_name["pearson"]["f*"]  # the table states the Pearson piecewise conjugate


def test_divergences_named_rows(divgen):
    result = divgen("divergences", "alpha:0.3", "js-weighted:0.9", "--json")
    assert result.code == 0
    assert [r["name"] for r in json.loads(result.out)["divergences"]] == ["alpha:0.3", "js-weighted:0.9"]


# -------------------------------------------------------------------- train ---
def test_train_writes_the_run_directory(divgen, tmp_path):
    out = tmp_path / "run"
    result = divgen("train", "--data", "ring8", "--divergence", "js", "--steps", "20", *TINY, "--out", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert Path(report["run"]) == out and report["final"]["step"] == 20

    config = json.loads((out / "config.json").read_text())
    assert set(config) == set(train.Config.__dataclass_fields__)
    assert config["steps"] == 20 and config["width"] == 16 and config["data"] == "ring8" and config["seed"] == 0

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert all({"step", "critic_loss", "generator_loss", "estimate"} <= set(r) for r in rows)

    assert list((out / "checkpoints").glob("step-*.pt"))
    samples = np.load(out / "samples.npy")
    assert samples.shape[0] >= 10_000 and samples.shape[1] == 2 and np.isfinite(samples).all()
    for png in ("samples.png", "losses.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert not (out / "params.json").exists()  # only the Gaussian model writes it

    # config.json is enough to reproduce the run
    again = train.train(train.Config.from_dict(config), tmp_path / "again", quiet=True).run
    assert metrics_without_timing(again) == metrics_without_timing(out)
    assert np.array_equal(np.load(again / "samples.npy"), samples)


def test_train_names_only_the_figures_it_drew(divgen, tmp_path):
    out = train_tiny(divgen, tmp_path / "run", "--no-figures").out
    assert "run directory:" in out and ".png" not in out
    out = train_tiny(divgen, tmp_path / "drawn").out
    assert f"samples: {tmp_path / 'drawn' / 'samples.png'}" in out and "losses.png" in out


def test_train_gaussian_writes_params(divgen, tmp_path):
    out = tmp_path / "run"
    train_tiny(divgen, out, "--model", "gaussian", "--divergence", "kl", "--n-samples", "2000", data="mog2d")
    params = json.loads((out / "params.json").read_text())
    assert np.array(params["mean"]).shape == (2,) and np.array(params["cov"]).shape == (2, 2)


def test_same_seed_same_files(divgen, tmp_path):
    flags = ["--divergence", "gan", "--steps", "30", "--seed", "7", "--n-samples", "10000"]
    train_tiny(divgen, tmp_path / "a", *flags, steps=30, data="moons")
    train_tiny(divgen, tmp_path / "b", *flags, steps=30, data="moons")
    assert metrics_without_timing(tmp_path / "a") == metrics_without_timing(tmp_path / "b")
    assert (tmp_path / "a" / "samples.npy").read_bytes() == (tmp_path / "b" / "samples.npy").read_bytes()


def _user_files(tmp_path: Path) -> dict[str, int]:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "one.npy", rng.normal(size=300))  # 1-D: N×1
    np.save(tmp_path / "three.npy", rng.normal(size=(300, 3)))
    np.savez(tmp_path / "five.npz", x=rng.normal(size=(300, 5)), y=rng.integers(0, 3, 300))
    np.savez(tmp_path / "only.npz", data=rng.normal(size=(300, 2)))
    head = rng.normal(size=(300, 2))
    (tmp_path / "head.csv").write_text("a,b\n" + "\n".join(f"{p:.6f},{q:.6f}" for p, q in head) + "\n")
    plain = rng.normal(size=(300, 4))
    (tmp_path / "plain.csv").write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in plain) + "\n")
    return {"one.npy": 1, "three.npy": 3, "five.npz": 5, "only.npz": 2, "head.csv": 2, "plain.csv": 4}


@pytest.mark.parametrize("name", ["one.npy", "three.npy", "five.npz", "only.npz", "head.csv", "plain.csv"])
def test_user_files_of_any_dimension_train(divgen, tmp_path, name):
    dims = _user_files(tmp_path)
    out = tmp_path / "run"
    train_tiny(divgen, out, "--divergence", "kl", "--n-samples", "2000", data=str(tmp_path / name))
    samples = np.load(out / "samples.npy")
    assert samples.shape == (2000, dims[name]) and np.isfinite(samples).all()
    assert (out / "samples.png").read_bytes()[:8] == PNG_MAGIC


def test_resume_continues_a_run(divgen, tmp_path):
    out = tmp_path / "run"
    train_tiny(divgen, out, "--n-samples", "1000")
    result = divgen("train", "--resume", out, "--steps", "20")
    assert result.code == 0, result.err
    assert [r["step"] for r in metrics_without_timing(out)] == [5, 10, 15, 20]
    assert json.loads((out / "config.json").read_text())["steps"] == 20


def test_overwrite_keeps_user_files(divgen, tmp_path):
    out = tmp_path / "run"
    train_tiny(divgen, out, "--n-samples", "1000")
    (out / "notes.txt").write_text("mine")
    train_tiny(divgen, out, "--divergence", "kl", "--n-samples", "1000", "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["divergence"] == "kl"


# ------------------------------------------------------------------- sample ---
def test_sample_from_checkpoint(divgen, trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    final = np.load(run / "samples.npy")
    (run / "samples.npy").unlink()  # sampling needs only the checkpoint

    result = divgen("sample", run, "-n", "5000", "-o", tmp_path / "s.npy")
    assert result.code == 0, result.err
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (5000, 2) and s.dtype == np.float32 and np.isfinite(s).all()

    # the generator in the checkpoint is the one that wrote samples.npy (noise seed = run seed + 1)
    assert divgen("sample", run, "-n", len(final), "--seed", "1", "-o", tmp_path / "t.npy").code == 0
    assert np.array_equal(np.load(tmp_path / "t.npy"), final)

    # seeded: same seed, same samples; another seed, other samples
    assert divgen("sample", run, "-n", "5000", "-o", tmp_path / "u.npy").code == 0
    assert divgen("sample", run, "-n", "5000", "--seed", "9", "-o", tmp_path / "v.npy").code == 0
    assert np.array_equal(np.load(tmp_path / "u.npy"), s)
    assert not np.array_equal(np.load(tmp_path / "v.npy"), s)


def test_sample_overwrite(divgen, trained_run, tmp_path):
    target = tmp_path / "s.npy"
    np.save(target, np.zeros(3))
    before = target.read_bytes()
    assert_clean_failure(divgen("sample", trained_run, "-n", "10", "-o", target))
    assert target.read_bytes() == before
    assert divgen("sample", trained_run, "-n", "10", "-o", target, "--overwrite").code == 0
    assert np.load(target).shape == (10, 2)


# ----------------------------------------------------------------- bad input ---
def _bad_data(tmp_path: Path) -> None:
    np.save(tmp_path / "nan.npy", np.array([[1.0, 2.0], [np.nan, 1.0], [0.0, 0.0]]))
    np.save(tmp_path / "inf.npy", np.array([[1.0, np.inf], [2.0, 1.0], [0.0, 0.0]]))
    (tmp_path / "inf.csv").write_text("a,b\n1,2\n3,inf\n4,5\n")
    (tmp_path / "words.csv").write_text("a,b\n1,2\n3,four\n")
    (tmp_path / "empty.csv").write_text("")
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    np.save(tmp_path / "onerow.npy", np.zeros((1, 2)))
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "folder.npy").mkdir()
    (tmp_path / "data.txt").write_text("1,2\n3,4\n")


def _train(*flags, data="mog1d", out="new-run"):
    return ["train", "--data", data, "--steps", "5", *TINY, "--out", out, *flags]


BAD_TRAIN = {
    "unknown divergence": _train("--divergence", "nope"),
    "alpha:1": _train("--divergence", "alpha:1"),
    "alpha:0": _train("--divergence", "alpha:0"),
    "alpha not a number": _train("--divergence", "alpha:abc"),
    "alpha inf": _train("--divergence", "alpha:inf"),
    "js-weighted out of range": _train("--divergence", "js-weighted:1.5"),
    "js-weighted not a number": _train("--divergence", "js-weighted:half"),
    "steps not a number": _train("--steps", "ten"),
    "steps not an integer": _train("--steps", "1.5"),
    "learning rate not a number": _train("--lr-critic", "fast"),
    "holdout not a number": _train("--holdout", "x"),
    "steps zero": _train("--steps", "0"),
    "bad model": _train("--model", "flow"),
    "bad generator loss": _train("--generator-loss", "saturating"),
    "unknown flag": _train("--colour", "red"),
    "no --out": ["train", "--data", "mog1d"],
    "missing data file": _train(data="missing.npy"),
    "unknown data name": _train(data="data.txt"),
    "data file is a folder": _train(data="folder.npy"),
    "corrupt npy": _train(data="corrupt.npy"),
    "corrupt npz": _train(data="corrupt.npz"),
    "NaN in npy": _train(data="nan.npy"),
    "inf in npy": _train(data="inf.npy"),
    "inf in csv": _train(data="inf.csv"),
    "non-numeric csv": _train(data="words.csv"),
    "empty csv": _train(data="empty.csv"),
    "empty npy": _train(data="empty.npy"),
    "one row": _train(data="onerow.npy"),
}


@pytest.mark.parametrize("case", BAD_TRAIN)
def test_bad_train_input(divgen, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    _bad_data(tmp_path)
    before = snapshot(tmp_path)
    result = divgen(*BAD_TRAIN[case])
    assert_clean_failure(result)
    assert snapshot(tmp_path) == before, "a failed command created, changed or deleted files"


def test_unknown_divergence_lists_valid_names(divgen, tmp_path):
    result = divgen(*_train("--divergence", "nope", out=tmp_path / "run"))
    assert_clean_failure(result)
    for name in catalog.DIVERGENCES:
        assert name in result.err
    result = divgen("divergences", "nope")
    assert_clean_failure(result)
    assert "alpha:A" in result.err and "js-weighted:PI" in result.err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_data_file(divgen, tmp_path):
    path = tmp_path / "secret.npy"
    np.save(path, np.ones((5, 2)))
    path.chmod(0)
    try:
        assert_clean_failure(divgen(*_train(data=path, out=tmp_path / "run")))
    finally:
        path.chmod(0o600)


def test_existing_out_is_left_alone(divgen, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("do not touch")
    (out / "samples.npy").write_bytes(b"the user's own file")
    before = snapshot(tmp_path)
    result = divgen(*_train(out=out))
    assert_clean_failure(result)
    # not a run: the message offers --overwrite (which keeps notes.txt) and another --out, not --resume
    assert "--overwrite" in result.err and "--out" in result.err and "--resume" not in result.err
    assert snapshot(tmp_path) == before


def test_existing_run_is_left_alone(divgen, trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = snapshot(tmp_path)
    assert_clean_failure(divgen(*_train(out=run)))
    assert_clean_failure(divgen("train", "--resume", run, "--divergence", "kl"))  # conflicts with the run's config
    assert_clean_failure(divgen("train", "--resume", run, "--out", tmp_path / "elsewhere"))
    assert_clean_failure(divgen(*_train(data="mog1d", out=run)))
    assert snapshot(tmp_path) == before


def test_out_is_a_file(divgen, tmp_path):
    (tmp_path / "out").write_text("a file")
    before = snapshot(tmp_path)
    assert_clean_failure(divgen(*_train(out=tmp_path / "out")))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["empty folder", "folder of other files", "missing folder", "config but no checkpoint", "resume a non-run"])
def test_not_a_run(divgen, tmp_path, case):
    target = tmp_path / "target"
    if case != "missing folder":
        target.mkdir()
    if case == "folder of other files":
        (target / "notes.txt").write_text("hello")
        np.save(target / "samples.npy", np.zeros((3, 2)))
    if case == "config but no checkpoint":
        (target / "config.json").write_text(json.dumps({"data": "mog2d"}))
    before = snapshot(tmp_path)
    if case == "resume a non-run":
        result = divgen("train", "--resume", target)
    else:
        result = divgen("sample", target, "-n", "10", "-o", tmp_path / "s.npy")
    assert_clean_failure(result)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args", [["-n", "0"], ["-n", "ten"], ["-o", "s.txt"]], ids=["n zero", "n not a number", "not npy"])
def test_bad_sample_arguments(divgen, trained_run, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    argv = ["sample", trained_run, *args] + ([] if "-o" in args else ["-o", "s.npy"])
    assert_clean_failure(divgen(*argv))
    assert not list(tmp_path.iterdir())


def test_unknown_command(divgen):
    assert_clean_failure(divgen("fly"))
    assert_clean_failure(divgen())


# ---------------------------------------------------------- as a user sees it ---
def _python_m_divgen(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "divgen", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("case", ["unknown divergence", "NaN in data"])
def test_bad_input_in_a_real_process(tmp_path, case):
    np.save(tmp_path / "nan.npy", np.array([[1.0, 2.0], [np.nan, 1.0], [0.0, 0.0]]))
    args = _train("--divergence", "nope") if case == "unknown divergence" else _train(data="nan.npy")
    proc = _python_m_divgen(*args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("divgen: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "new-run").exists()


def test_help_in_a_real_process(tmp_path):
    proc = _python_m_divgen("--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: divgen")
    for command in ("train", "sample", "divergences", "demo"):
        assert command in proc.stdout
