"""The bad-input table of tests/fuzz.py under pytest: one test per case, each must meet the contract
(exit code 2, one `divgen: error:` line, nothing on stdout, no warning, nothing written)."""

from __future__ import annotations

import pytest

import fuzz

CASES = fuzz.all_cases()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "workspace"
    fuzz.build(root)
    return root


def test_the_table_covers_every_command_with_at_least_200_inputs():
    from divgen import cli

    assert len(CASES) >= 200
    assert {argv[0] for _, argv in CASES if argv} >= set(cli.COMMANDS)


@pytest.mark.parametrize("argv", [argv for _, argv in CASES], ids=[name for name, _ in CASES])
def test_bad_input_meets_the_contract(workspace, argv):
    assert fuzz.check(workspace, argv) == []


def test_the_check_can_fail(workspace):
    """A good command breaks the contract (exit code 0, output, a file written), and check says so."""
    problems = fuzz.check(workspace, ["sample", "run", "-n", "10", "-o", "written.npy"])
    assert any("exit code 0" in p for p in problems) and any("files created" in p for p in problems), problems
    assert not (workspace / "written.npy").exists()  # and the workspace is put back
