"""Smoke tests: `divgen demo` and every benchmark script run end to end with --quick."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from divgen import cli

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


def test_demo_quick(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["figure"]).is_file()
    assert set(result["fits"]) == {"mle", "kl", "reverse-kl"}
    for name in ("kl", "reverse-kl", "ring8-js"):
        assert (tmp_path / "demo" / name / "samples.npy").is_file()


def test_every_benchmark_has_a_quick_mode_and_a_page_that_quotes_it():
    """test_benchmark_quick below runs each script of benchmarks/ with --quick; each must accept that flag, and
    its table must be quoted with its command somewhere a reader looks (the README or docs/)."""
    pages = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    assert len(BENCHMARKS) >= 9
    for script in BENCHMARKS:
        assert '"--quick"' in (ROOT / "benchmarks" / script).read_text(), script
        assert f"benchmarks/{script}" in pages, f"no page quotes benchmarks/{script}"


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_quick(script, tmp_path):
    # TMPDIR: the scripts' temporary run folders (tempfile.mkdtemp, kept for the user to look at) go with tmp_path
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    extra = ["--out", str(tmp_path / "figure.png")] if script == "point_mass.py" else []
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("torch ") for line in lines), "no environment line"
    assert any(line.startswith("| ") for line in lines), "no markdown table"
