"""Reliable runs (issue 5): resume, kills, damaged checkpoints, safe loading, NaN, Ctrl-C, logging, torchrun.

Most tests call `divgen.cli.main` in-process. The ones about signals, terminals
and several processes start real processes (`python -m divgen`, `python -m
torch.distributed.run`); each costs a few seconds of start-up, so there are few.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import TINY, assert_clean_failure, metrics_without_timing, snapshot
from divgen import config, objectives, runs, train
from divgen.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src" / "divgen"
# TINY plus a small samples.npy, so that finishing a run costs nothing
SMALL = [*TINY, "--n-samples", "1000"]


def assert_same_tree(a, b, where="checkpoint"):
    """Two checkpoint objects are equal: tensors bit for bit, everything else with ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_close_params(a: dict, b: dict, tol: float = 1e-5):
    """The networks' parameters of two checkpoints agree within `tol`."""
    assert a["nets"].keys() == b["nets"].keys()
    for key in a["nets"]:
        torch.testing.assert_close(a["nets"][key], b["nets"][key], atol=tol, rtol=tol, msg=key)


def steps_of(run: Path) -> list[int]:
    return [row["step"] for row in runs.read_metrics(run)]


def checkpoint_steps(run: Path) -> list[int]:
    return [int(p.stem.split("-")[1]) for p in runs.checkpoints(run)]


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state["nets"].values() if v.is_floating_point())


def env1() -> dict:
    """Environment of a child process: one thread, so its numbers equal the in-process ones (conftest)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_divgen(*args, cwd) -> subprocess.Popen:
    """`python -m divgen ARGS` with pipes, as CI or a job scheduler starts it (no terminal)."""
    return subprocess.Popen([sys.executable, "-m", "divgen", *map(str, args)], cwd=cwd, env=env1(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, step: int, timeout: float = 90) -> None:
    """Poll until the run has a checkpoint at `step` or later (checkpoints are written atomically)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended early with code {proc.returncode}: {err}")
        if (run / runs.CHECKPOINTS).is_dir() and max(checkpoint_steps(run), default=-1) >= step:
            return
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    pytest.fail(f"no checkpoint at step ≥ {step} after {timeout} s")


# ------------------------------------------------------------------ resume ---
def test_resume_through_the_cli_is_bit_identical(divgen, tmp_path):
    """200 steps straight == 100 steps, then `--resume --steps 200`: parameters, optimizer and RNG states, metrics."""
    flags = ["train", "--data", "mog2d", *SMALL, "--checkpoint-every", "50"]
    assert divgen(*flags, "--steps", 200, "--out", tmp_path / "full").code == 0
    part = tmp_path / "part"
    assert divgen(*flags, "--steps", 100, "--out", part).code == 0
    assert steps_of(part)[-1] == 100
    result = divgen("train", "--resume", part, "--steps", 200)
    assert result.code == 0, result.err
    full = tmp_path / "full"
    assert metrics_without_timing(part) == metrics_without_timing(full)
    assert steps_of(part) == list(range(5, 201, 5))
    assert checkpoint_steps(part) == checkpoint_steps(full) == [100, 150, 200]
    for a, b in zip(runs.checkpoints(part), runs.checkpoints(full)):
        assert_same_tree(runs.load_checkpoint(a), runs.load_checkpoint(b), a.name)
    # the resumed run's config.json now says 200 steps, exactly as the straight run's does
    assert (part / "config.json").read_bytes() == (full / "config.json").read_bytes()
    assert (part / "samples.npy").read_bytes() == (full / "samples.npy").read_bytes()


def test_sigkill_loses_only_the_steps_since_the_last_checkpoint(divgen, tmp_path):
    run = tmp_path / "run"
    proc = start_divgen("train", "--data", "mog1d", *SMALL, "--checkpoint-every", 10, "--steps", 100_000, "--out", run, cwd=tmp_path)
    wait_for_checkpoint(proc, run, 30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # no temporary checkpoint is mistaken for a real one, and the newest real one loads
    last = checkpoint_steps(run)[-1]
    assert last >= 30 and last % 10 == 0
    assert runs.load_checkpoint(runs.checkpoints(run)[-1])["step"] == last
    before_kill = metrics_without_timing(run)
    assert before_kill and before_kill[-1]["step"] >= last  # rows up to the kill, maybe past the last checkpoint

    result = divgen("train", "--resume", run, "--steps", last + 15)
    assert result.code == 0, result.err
    rows = metrics_without_timing(run)
    steps = [row["step"] for row in rows]
    assert steps == list(range(5, last + 16, 5)), "missing, duplicated or extra metric rows"
    # the steps redone after the kill are the very steps the killed process had computed
    assert rows[: len(before_kill)] == before_kill[: len(rows)]
    state = runs.load_checkpoint(runs.checkpoints(run)[-1])
    assert state["step"] == last + 15 and all_finite(state)
    assert (run / "samples.npy").is_file()
    assert json.loads((run / "config.json").read_text())["steps"] == last + 15


# ----------------------------------------------------- damaged checkpoints ---
def _run_with_three_checkpoints(divgen, out: Path) -> Path:
    result = divgen("train", "--data", "mog1d", *SMALL, "--checkpoint-every", 10, "--steps", 20, "--out", out)
    assert result.code == 0, result.err
    assert checkpoint_steps(out) == [0, 10, 20]
    return out


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage header"])
def test_damaged_newest_checkpoint_falls_back_and_is_kept(divgen, tmp_path, damage):
    run = _run_with_three_checkpoints(divgen, tmp_path / "run")
    newest = runs.checkpoints(run)[-1]
    raw = newest.read_bytes()
    bad = {"truncated": raw[: len(raw) // 2], "empty": b"", "garbage header": b"\x00" * 64 + raw[64:]}[damage]
    newest.write_bytes(bad)

    result = divgen("train", "--resume", run, "--steps", 30)
    assert result.code == 0, result.err
    warning = [line for line in result.err_lines if "step-00000020.pt" in line]
    assert warning and "corrupt" in warning[0], result.err  # a clear line that names the file
    # nothing deleted: the damaged file is kept, byte for byte, under a new name
    kept = newest.with_name(newest.name + ".corrupt")
    assert kept.read_bytes() == bad
    # the run went back to step 10 and redid steps 11..30 exactly as a straight run does
    straight = divgen("train", "--data", "mog1d", *SMALL, "--checkpoint-every", 10, "--steps", 30, "--out", tmp_path / "straight")
    assert straight.code == 0
    assert metrics_without_timing(run) == metrics_without_timing(tmp_path / "straight")
    assert_same_tree(runs.load_checkpoint(runs.checkpoints(run)[-1]), runs.load_checkpoint(runs.checkpoints(tmp_path / "straight")[-1]))
    assert kept.exists(), "pruning old checkpoints must not remove the set-aside file"


def test_bit_flipped_checkpoint_is_detected(divgen, tmp_path):
    """Damage inside the tensor data, which torch.load itself does not notice, must not load as good weights."""
    run = _run_with_three_checkpoints(divgen, tmp_path / "run")
    newest = runs.checkpoints(run)[-1]
    good = runs.load_checkpoint(newest)
    # flip 64 bytes inside the largest stored tensor (a zip member archive/data/N)
    with zipfile.ZipFile(newest) as archive:
        member = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
    raw = bytearray(newest.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[member.header_offset + 26: member.header_offset + 30])
    start = member.header_offset + 30 + name_len + extra_len + member.file_size // 2 - 32
    raw[start: start + 64] = bytes(b ^ 0xFF for b in raw[start: start + 64])
    newest.write_bytes(bytes(raw))
    # the premise: the file still unpickles, and some tensor in it changed
    flipped = torch.load(newest, map_location="cpu", weights_only=True)
    with pytest.raises(AssertionError):
        assert_same_tree(flipped, good)
    with pytest.raises(InputError, match="step-00000020.pt"):
        runs.load_checkpoint(newest)


def test_every_checkpoint_corrupt_is_one_clean_error(divgen, tmp_path):
    run = _run_with_three_checkpoints(divgen, tmp_path / "run")
    for path in runs.checkpoints(run):
        path.write_bytes(path.read_bytes()[:100])
    contents = {p.name: p.read_bytes() for p in (run / runs.CHECKPOINTS).iterdir()}
    result = divgen("train", "--resume", run, "--steps", 30)
    assert_clean_failure(result)
    assert "checkpoint" in result.err
    # nothing deleted: every damaged file is still there with its bytes (possibly renamed *.corrupt)
    after = {p.name.removesuffix(".corrupt"): p.read_bytes() for p in (run / runs.CHECKPOINTS).iterdir()}
    assert after == contents


# ---------------------------------------------------------- safe loading ---
MARKER_NAME = "pwned"


class Payload:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_malicious(path: Path, marker: Path, how: str) -> None:
    payload = {"step": 99, "generator": Payload(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_malicious_checkpoint_is_refused(divgen, tmp_path, how):
    marker = tmp_path / MARKER_NAME
    # the payload works when loaded the unsafe way (so the test below can fail)
    probe = tmp_path / "probe.pt"
    _write_malicious(probe, marker, how)
    if how == "torch.save":
        torch.load(probe, weights_only=False)
    else:
        pickle.loads(probe.read_bytes())
    assert marker.exists()
    marker.unlink()

    run = _run_with_three_checkpoints(divgen, tmp_path / "run")
    evil = run / runs.CHECKPOINTS / "step-00000099.pt"
    _write_malicious(evil, marker, how)
    with pytest.raises(InputError, match="step-00000099.pt"):
        runs.load_checkpoint(evil)
    assert not marker.exists()

    # with good checkpoints beside it, sampling skips it with a warning that names it
    result = divgen("sample", run, "-n", 10, "-o", tmp_path / "a.npy")
    assert result.code == 0 and "step-00000099.pt" in result.err, result.err
    # when it is the only checkpoint, `divgen sample` refuses with exit code 2
    for path in runs.checkpoints(run):
        if path != evil:
            path.unlink()
    result = divgen("sample", run, "-n", 10, "-o", tmp_path / "b.npy")
    assert result.code == 2, result.err
    assert result.err_lines[-1].startswith("divgen: error:") and "Traceback" not in result.err
    assert not (tmp_path / "b.npy").exists()
    assert not marker.exists()


def test_every_torch_load_in_src_is_weights_only():
    calls = 0
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        found = 0
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                found += 1
                flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, f"{path.name}:{node.lineno}: torch.load without weights_only=True"
        # every textual `torch.load(` is one of the calls checked above (no aliasing around the check)
        assert len(re.findall(r"\btorch\.load\s*\(", text)) == found, path.name
        assert not re.search(r"from\s+torch\s+import\s+[^\n]*\bload\b", text), path.name
        assert "pickle.load" not in text, path.name
        calls += found
    assert calls >= 1  # runs.load_checkpoint


# --------------------------------------------------------------- NaN/inf ---
def _nan_at(monkeypatch, name: str, calls) -> None:
    """Make objectives.<name> return NaN (keeping its graph) on the calls whose number is in `calls`."""
    original = getattr(objectives, name)
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        count["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if count["n"] in calls else loss

    monkeypatch.setattr(objectives, name, wrapped)


class _Always:
    def __contains__(self, item):
        return True


@pytest.mark.parametrize("network", ["critic", "generator"])
def test_nan_stops_with_a_message_and_keeps_the_last_good_checkpoint(divgen, tmp_path, monkeypatch, network):
    _nan_at(monkeypatch, f"fgan_{network}_loss", {17})  # one critic step per generator step: call 17 is step 17
    run = tmp_path / "run"
    result = divgen("train", "--data", "mog1d", "--divergence", "hellinger", *SMALL, "--checkpoint-every", 10, "--steps", 40, "--out", run)
    assert result.code == 1, result.err
    message = result.err_lines[-1]
    assert "step 17" in message and "hellinger" in message and f"{network} loss" in message, message
    assert "Traceback" not in result.err
    assert checkpoint_steps(run) == [0, 10]  # nothing written from the bad step on
    state = runs.load_checkpoint(runs.checkpoints(run)[-1])
    assert state["step"] == 10 and all_finite(state)
    assert steps_of(run) == [5, 10, 15]
    assert not (run / "samples.npy").exists()


def test_nan_raises_training_diverged_in_process(tmp_path, monkeypatch):
    _nan_at(monkeypatch, "fgan_generator_loss", {3})
    cfg = train.Config(data="mog1d", steps=20, width=16, n_data=500, batch_size=64, log_every=5, n_samples=1000, checkpoint_every=10)
    with pytest.raises(train.TrainingDiverged, match=r"generator loss.*step 3\b"):
        train.train(cfg, tmp_path / "run", quiet=True)
    assert checkpoint_steps(tmp_path / "run") == [0]


def _rollback_run(divgen, tmp_path, monkeypatch, calls, *flags):
    _nan_at(monkeypatch, "fgan_generator_loss", calls)
    run = tmp_path / "run"
    result = divgen("train", "--data", "mog1d", *SMALL, "--checkpoint-every", 10, "--steps", 30, "--on-nan", "rollback",
                    *flags, "--out", run)
    return run, result


def test_rollback_halves_a_linear_schedules_rates_for_good(divgen, tmp_path, monkeypatch):
    """With --lr-schedule linear the halved base rate is in the checkpoint: the last step (30 of 30) trains at
    half the base rate × 1/30, and a resume to 40 steps goes on from the halved base (× 1/40 at step 40)."""
    run, result = _rollback_run(divgen, tmp_path, monkeypatch, {17}, "--lr-schedule", "linear")
    assert result.code == 0, result.err
    for steps in (30, 40):
        if steps == 40:
            assert divgen("train", "--resume", run, "--steps", 40).code == 0
        state = runs.load_checkpoint(runs.checkpoints(run)[-1])
        assert state["step"] == steps
        for side in ("generator", "critic"):
            half = config.family_default(f"lr_{side}", "mlp") / 2
            assert [g["lr"] for g in state["optimizers"][side]["param_groups"]] == [pytest.approx(half / steps)]


def test_rollback_recovers_from_one_nan_with_halved_learning_rates(divgen, tmp_path, monkeypatch):
    run, result = _rollback_run(divgen, tmp_path, monkeypatch, {17})
    assert result.code == 0, result.err
    warnings = [line for line in result.err_lines if "warning" in line]
    assert len(warnings) == 1 and "rolled back to step 10" in warnings[0] and "rollback 1 of 3" in warnings[0], result.err
    state = runs.load_checkpoint(runs.checkpoints(run)[-1])
    assert state["step"] == 30 and all_finite(state)
    for side in ("generator", "critic"):  # half of the family's default
        half = config.family_default(f"lr_{side}", "mlp") / 2
        assert [g["lr"] for g in state["optimizers"][side]["param_groups"]] == [pytest.approx(half)]
    assert (run / "samples.npy").is_file()


def test_rollback_warning_names_the_failing_step(divgen, tmp_path, monkeypatch):
    run, result = _rollback_run(divgen, tmp_path, monkeypatch, {17})
    assert result.code == 0, result.err
    (warning,) = [line for line in result.err_lines if "warning" in line]
    assert "at step 17" in warning, warning


def test_rollback_keeps_writing_metrics(divgen, tmp_path, monkeypatch):
    """After a rollback the rows of the redone steps and of the rest of the run are in metrics.jsonl, once each."""
    run, result = _rollback_run(divgen, tmp_path, monkeypatch, {17})
    assert result.code == 0, result.err
    assert steps_of(run) == [5, 10, 15, 20, 25, 30]
    assert json.loads(result.out.split("final: ")[1].splitlines()[0])["step"] == 30


def test_rollback_gives_up_after_three(divgen, tmp_path, monkeypatch):
    run, result = _rollback_run(divgen, tmp_path, monkeypatch, _Always())
    assert result.code == 1, result.err
    warnings = [line for line in result.err_lines if "warning" in line]
    assert [re.search(r"rollback (\d) of 3", w).group(1) for w in warnings] == ["1", "2", "3"], result.err
    assert "diverged" in result.err_lines[-1] and "generator loss" in result.err_lines[-1]
    state = runs.load_checkpoint(runs.checkpoints(run)[-1])
    assert state["step"] == 0 and all_finite(state)


# ---------------------------------------------------------------- Ctrl-C ---
def test_sigint_checkpoints_exits_130_and_resumes(divgen, tmp_path):
    run = tmp_path / "run"
    proc = start_divgen("train", "--data", "mog1d", *SMALL, "--checkpoint-every", 10, "--steps", 100_000, "--out", run, cwd=tmp_path)
    wait_for_checkpoint(proc, run, 20)  # past step 0: the signal handler is installed by now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "--resume" in lines[-1] and str(run.name) in lines[-1], err
    stopped = checkpoint_steps(run)[-1]
    state = runs.load_checkpoint(runs.checkpoints(run)[-1])
    assert state["step"] == stopped >= 20 and all_finite(state)
    assert steps_of(run)[-1] <= stopped  # no row logged after the final checkpoint
    # the final checkpoint holds the state at the step where it stopped: resume picks up there
    result = divgen("train", "--resume", run, "--steps", stopped + 10)
    assert result.code == 0, result.err
    steps = steps_of(run)
    assert steps == sorted(set(steps)) and steps[-1] == stopped + 10
    assert checkpoint_steps(run)[-1] == stopped + 10


# --------------------------------------------------------------- logging ---
def test_tensorboard_and_plain_progress_lines_without_a_terminal(tmp_path):
    run = tmp_path / "run"
    proc = start_divgen("train", "--data", "mog1d", *SMALL, "--steps", 40, "--tensorboard", "--out", run, cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # no progress bar: no carriage returns, no bar glyphs; plain `step N/M` lines instead
    assert "\r" not in err and "\x1b[" not in err and "it/s" not in err and "%|" not in err, repr(err[:500])
    progress = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == [f"{n}/40" for n in range(5, 41, 5)], err
    assert all(line.startswith("step ") for line in err.splitlines() if line.strip()), err

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no event file under RUN/tensorboard"
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"critic_loss", "generator_loss", "estimate", "lr_generator", "lr_critic"} <= tags, tags
    assert [e.step for e in acc.Scalars("critic_loss")] == list(range(5, 41, 5))
    assert acc.Scalars("lr_generator")[-1].value == pytest.approx(config.family_default("lr_generator", "mlp"))
    logged = [row["critic_loss"] for row in runs.read_metrics(run)]
    assert [e.value for e in acc.Scalars("critic_loss")] == pytest.approx(logged, rel=1e-6)


# ------------------------------------------------------------ distributed ---
def _torchrun(*args, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=env1(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


DDP_FLAGS = ["--data", "mog2d", "--width", "16", "--n-data", "500", "--batch-size", "64", "--log-every", "5",
             "--n-samples", "1000", "--checkpoint-every", "10", "--lr-schedule", "constant"]


@pytest.mark.slow
def test_two_processes_match_one(divgen, tmp_path):
    """`torchrun --nproc_per_node=2 -m divgen train` on gloo/CPU equals one process with the same global batch."""
    _torchrun("-m", "divgen", "train", *DDP_FLAGS, "--steps", 30, "--out", tmp_path / "two", cwd=tmp_path)
    result = divgen("train", *DDP_FLAGS, "--steps", 30, "--out", tmp_path / "one")
    assert result.code == 0, result.err
    two, one = tmp_path / "two", tmp_path / "one"
    assert checkpoint_steps(two) == checkpoint_steps(one) == [10, 20, 30]
    for a, b in zip(runs.checkpoints(two), runs.checkpoints(one)):
        sa, sb = runs.load_checkpoint(a), runs.load_checkpoint(b)
        assert sa["world_size"] == 2 and sb["world_size"] == 1
        assert len(sa["local_rngs"]) == 2
        assert_close_params(sa, sb)
    rows_two, rows_one = metrics_without_timing(two), metrics_without_timing(one)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]
    for r2, r1 in zip(rows_two, rows_one):
        for key in ("critic_loss", "generator_loss", "estimate"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5, abs=1e-6), (r2, r1)
    assert json.loads((two / "config.json").read_text()) == json.loads((one / "config.json").read_text())


# One torchrun launch runs several trainings in a row; a spy on train._loop (which gets
# the run's Session, with its networks) saves each rank's final parameters, so equality
# across ranks is checked directly. The process group is kept between trainings.
RANK_SPY = '''
import os, sys, torch
import torch.distributed as dist
from divgen import cli, parallel, train

original, last = train._loop, {}

def spy(session):
    try:
        return original(session)
    finally:
        last["state"] = {k: v.clone() for k, v in session.nets.state_dict().items()}

train._loop = spy
parallel.teardown = lambda world: None  # one process group for all the trainings below
codes = []
for i, argv in enumerate(json.loads(a) for a in sys.argv[2:]):
    codes.append(cli.main(argv))
    torch.save(last["state"], os.path.join(sys.argv[1], f"run{i}-rank{os.environ['RANK']}.pt"))
dist.destroy_process_group()
sys.stdout.flush(); sys.stderr.flush()
os._exit(max(codes))  # as divgen.cli.run ends a torchrun worker: the interpreter's teardown can abort
'''


@pytest.mark.slow
def test_two_processes_ranks_agree_resume_and_gradient_penalty(tmp_path):
    spy = tmp_path / "rank_spy.py"
    spy.write_text("import json\n" + RANK_SPY)
    trainings = [
        ["train", *DDP_FLAGS, "--steps", "40", "--out", "straight"],
        ["train", *DDP_FLAGS, "--steps", "20", "--out", "resumed"],
        ["train", "--resume", "resumed", "--steps", "40"],
        ["train", *DDP_FLAGS, "--steps", "10", "--divergence", "wasserstein", "--lipschitz", "gp", "--out", "wgp"],
    ]
    _torchrun(spy, tmp_path, *map(json.dumps, trainings), cwd=tmp_path)
    for i in range(len(trainings)):
        rank0, rank1 = (torch.load(tmp_path / f"run{i}-rank{r}.pt", weights_only=True) for r in (0, 1))
        assert_same_tree(rank0, rank1, f"training {i}: rank 0 vs rank 1")
    # what rank 0 checkpointed is what every rank trained
    final = runs.load_checkpoint(runs.checkpoints(tmp_path / "straight")[-1])
    assert_same_tree(final["nets"], torch.load(tmp_path / "run0-rank0.pt", weights_only=True))

    # resuming a 2-process run with 2 processes continues it: 20 + 20 steps == 40 steps
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert checkpoint_steps(resumed) == checkpoint_steps(straight) == [20, 30, 40]
    for a, b in zip(runs.checkpoints(resumed), runs.checkpoints(straight)):
        assert_close_params(runs.load_checkpoint(a), runs.load_checkpoint(b))
    assert [r["step"] for r in metrics_without_timing(resumed)] == list(range(5, 41, 5))
    for r1, r2 in zip(metrics_without_timing(resumed), metrics_without_timing(straight)):
        for key in ("critic_loss", "generator_loss", "estimate"):
            assert r1[key] == pytest.approx(r2[key], rel=1e-5, abs=1e-6)

    # a Wasserstein critic with a gradient penalty trains under DDP
    wgp = runs.load_checkpoint(runs.checkpoints(tmp_path / "wgp")[-1])
    assert wgp["step"] == 10 and all_finite(wgp)
    assert all(math.isfinite(row["critic_loss"]) for row in runs.read_metrics(tmp_path / "wgp"))


def test_resume_with_another_number_of_processes_is_refused(divgen, tmp_path):
    """A checkpoint written by 2 processes cannot silently continue in 1 (its RNG streams are per rank)."""
    run = _run_with_three_checkpoints(divgen, tmp_path / "run")
    for path in runs.checkpoints(run):
        state = runs.load_checkpoint(path)
        state["world_size"] = 2
        state["local_rngs"] = state["local_rngs"] * 2
        step = state.pop("step")
        runs.save_checkpoint(run, step, state, keep=10)  # re-sealed with a valid digest
    before = snapshot(tmp_path)
    result = divgen("train", "--resume", run, "--steps", 30)
    assert_clean_failure(result)
    assert "2 processes" in result.err
    assert snapshot(tmp_path) == before, "a refused resume changed the run directory"


# -------------------------------------------------------------- bad input ---
@pytest.mark.parametrize("flags", [["--on-nan", "maybe"], ["--device", "tpu"], ["--lipschitz", "none"]],
                         ids=["on-nan", "device", "lipschitz"])
def test_unknown_flag_values(divgen, tmp_path, flags):
    before = snapshot(tmp_path)
    result = divgen("train", "--data", "mog1d", *SMALL, "--steps", 5, "--out", tmp_path / "run", *flags)
    assert_clean_failure(result)
    assert flags[0] in result.err and flags[1] in result.err
    assert snapshot(tmp_path) == before


def test_resume_conflict_lists_every_key(divgen, tmp_path):
    run = _run_with_three_checkpoints(divgen, tmp_path / "run")
    before = snapshot(tmp_path)
    result = divgen("train", "--resume", run, "--divergence", "kl", "--width", 32, "--seed", 7, "--steps", 40)
    assert_clean_failure(result)
    for key in ("divergence", "width", "seed"):
        assert key in result.err, result.err
    assert "steps" not in result.err  # --steps may change on resume: not a conflict
    assert snapshot(tmp_path) == before


def test_unwritable_output_directory(divgen, tmp_path):
    (tmp_path / "file").write_text("a regular file")
    before = snapshot(tmp_path)
    result = divgen("train", "--data", "mog1d", *SMALL, "--steps", 5, "--out", tmp_path / "file" / "sub")
    assert_clean_failure(result)
    assert "file" in result.err
    assert snapshot(tmp_path) == before
