"""Shared fixtures: single-threaded torch, tiny training flags, a CLI runner."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from divgen import cli, divergences

# xdist runs one process per core; more threads per process only contend.
torch.set_num_threads(1)

# Every name in the table, plus a few more parameters that are cheap to add.
ALL_F = divergences.EXAMPLES + ("alpha:1.5", "alpha:-2", "js-weighted:0.7")

# Flags that keep a training run well under a second.
# a constant learning rate: runs that a test extends by resuming with more --steps stay bit-identical to a
# straight run (a linear schedule is planned over --steps: test_train's linear-schedule resume test)
TINY = ["--width", "16", "--n-data", "500", "--batch-size", "64", "--log-every", "5", "--lr-schedule", "constant"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def divgen(capsys):
    """Run `divgen ARGS` in-process; returns exit code, stdout and stderr."""

    def run(*args) -> Result:
        capsys.readouterr()  # drop anything printed before
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def train_tiny(run, out: Path, *extra, steps: int = 10, data: str = "mog1d") -> Result:
    """Train a tiny run into `out` and require success."""
    result = run("train", "--data", data, "--steps", steps, *TINY, "--out", out, *extra)
    assert result.code == 0, result.err
    return result


def metrics_without_timing(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock column, the only part that may differ between equal runs."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k != "steps_per_s"} for row in rows]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One finished tiny run on mog2d, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("shared") / "run"
    code = cli.main(["train", "--data", "mog2d", "--divergence", "js", "--steps", "20", *TINY,
                     "--checkpoint-every", "10", "--out", str(out), "--json"])
    assert code == 0
    return out


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders): to show nothing changed."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(Path(root).rglob("*"))}


def assert_clean_failure(result):
    """Exit code 2, exactly one non-empty line on stderr, no traceback."""
    assert result.code == 2, (result.code, result.err)
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith("divgen: error:")
    assert "Traceback" not in result.err and "Traceback" not in result.out
