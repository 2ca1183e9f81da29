"""Run files never lose data: hostile paths, folders and processes around the files divgen writes.

Each test is one example a user meets: a data file named like an output, a run
whose metrics.jsonl is a folder, a SIGTERM while sampling, a second process on
the same run, a umask. Each ends with one error line and exit code 2 (or with
the right files) and leaves the user's files byte-identical. The examples that
fit the in-process bad-input table are also in tests/fuzz.py (_file_cases);
these are the ones that need signals, processes, permissions, named pipes, or
a look at the message or the file modes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, assert_clean_failure, snapshot
from divgen import cli, evaluate, families, files, limits, runs, sample_files, train
from divgen.errors import InputError

FAST = ["--steps", "10", *TINY, "--n-samples", "1000", "--no-figures"]
ROOT = os.geteuid() == 0  # root writes through any permission: chmod cannot make a folder read-only for it
needs_permissions = pytest.mark.skipif(ROOT, reason="root ignores file permissions; the same checks run on a "
                                       "virtual file system and on paths through a file in other tests")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run on mog1d, with an eval.json, copied by `run` for each test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["train", "--data", "mog1d", *FAST, "--out", str(out), "--json"]) == 0
    (out / "eval.json").write_text('{"kept": true}\n')
    return out


@pytest.fixture
def run(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture
def umask():
    """The process's umask is 0o027 for the test: new files are 0o640."""
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def _data(path: Path) -> Path:
    np.save(path, np.random.default_rng(0).normal(size=(300, 2)))
    return path


# ------------------------------------------------------- 1. data loss ---
def test_the_example_train_data_named_samples_npy_with_out_dot(divgen, tmp_path, monkeypatch):
    """cd dl && divgen train --data samples.npy --out . --overwrite: dl is not a run, and its samples.npy is the user's."""
    dl = tmp_path / "dl"
    dl.mkdir()
    _data(dl / "samples.npy")
    before = snapshot(tmp_path)
    monkeypatch.chdir(dl)
    result = divgen("train", "--data", "samples.npy", *FAST, "--out", ".", "--overwrite")
    assert_clean_failure(result)
    assert "'samples.npy'" in result.err and "not a divgen run" in result.err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("how", ["the output itself", "a symbolic link to it", "a hard link to it"])
def test_the_data_is_never_an_output_of_the_run_it_trains(divgen, run, tmp_path, how):
    data = run / "samples.npy"
    if how == "a symbolic link to it":
        (tmp_path / "data.npy").symlink_to(data)
        data = tmp_path / "data.npy"
    elif how == "a hard link to it":
        os.link(data, tmp_path / "data.npy")
        data = tmp_path / "data.npy"
    before = snapshot(tmp_path)
    result = divgen("train", "--data", data, *FAST, "--out", run, "--overwrite")
    assert_clean_failure(result)
    assert "is the file 'samples.npy' that divgen writes" in result.err
    assert snapshot(tmp_path) == before


def image_folder(folder: Path) -> Path:
    """An unlabelled image folder: 10 PNGs of 8×8 grey pixels."""
    from PIL import Image

    folder.mkdir()
    for i, pixels in enumerate(np.random.default_rng(0).integers(0, 256, (10, 8, 8), dtype=np.uint8)):
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def test_an_output_folder_inside_the_data_folder_is_refused(divgen, tmp_path):
    images = image_folder(tmp_path / "images")
    before = snapshot(tmp_path)
    result = divgen("train", "--data", images, *FAST, "--out", images / "run")
    assert_clean_failure(result)
    assert "lies inside the data folder" in result.err
    assert snapshot(tmp_path) == before


def _replace_by_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("the user's")


def _checkpoints_a_file(run: Path) -> None:
    shutil.rmtree(run / runs.CHECKPOINTS)
    (run / runs.CHECKPOINTS).write_text("not a folder")


# the run's state that a resume must not be able to write, and a word of the message
BROKEN_RUNS = {
    "metrics.jsonl is a folder": (lambda run: _replace_by_folder(run / runs.METRICS), "metrics.jsonl' is a folder"),
    "samples.npy is a folder": (lambda run: _replace_by_folder(run / "samples.npy"), "samples.npy' is a folder"),
    "eval.json is a folder": (lambda run: _replace_by_folder(run / "eval.json"), "eval.json' is a folder"),
    "checkpoints is a file": (_checkpoints_a_file, "checkpoints' is a file, where divgen keeps a folder"),
    "a checkpoint's name is a folder": (lambda run: (run / runs.CHECKPOINTS / "step-00000099.pt").mkdir(),
                                        "step-00000099.pt' is a folder"),
    "tensorboard is a file": (lambda run: (run / runs.TENSORBOARD).write_text("mine"), "tensorboard' is a file"),
}


@pytest.mark.parametrize("case", BROKEN_RUNS)
def test_resume_that_cannot_write_leaves_the_run_as_it_was(divgen, run, case):
    """Before: samples.npy and eval.json deleted and config.json rewritten, then a traceback."""
    damage, words = BROKEN_RUNS[case]
    damage(run)
    before = snapshot(run)
    result = divgen("train", "--resume", run, "--steps", 20)
    assert_clean_failure(result)
    assert words in result.err
    assert snapshot(run) == before


@needs_permissions
def test_resume_with_read_only_checkpoints_leaves_the_run_as_it_was(divgen, run):
    (run / runs.CHECKPOINTS).chmod(0o555)
    try:
        before = snapshot(run)
        result = divgen("train", "--resume", run, "--steps", 20)
        assert_clean_failure(result)
        assert "checkpoints" in result.err and "Permission denied" in result.err
        assert snapshot(run) == before
    finally:
        (run / runs.CHECKPOINTS).chmod(0o755)


def test_a_file_named_like_a_checkpoint_is_not_one(divgen, run):
    """checkpoints/step-mine.pt sorts after step-00000010.pt; it was taken for the newest checkpoint and renamed .corrupt."""
    mine = {"step-mine.pt": b"my own file", "step-10.pt.bak": b"a backup", "step-.pt": b"no digits"}
    for name, content in mine.items():
        (run / runs.CHECKPOINTS / name).write_bytes(content)
    assert [p.name for p in runs.checkpoints(run)] == ["step-00000000.pt", "step-00000010.pt"]
    result = divgen("train", "--resume", run, "--steps", 20)
    assert result.code == 0, result.err
    assert "warning" not in result.err
    assert divgen("train", "--data", "mog1d", *FAST, "--out", run, "--overwrite").code == 0
    for name, content in mine.items():  # neither renamed by resume nor removed by --overwrite
        assert (run / runs.CHECKPOINTS / name).read_bytes() == content
    assert not list((run / runs.CHECKPOINTS).glob("*.corrupt"))


def test_checkpoints_are_ordered_by_their_step_not_their_name(tmp_path):
    (tmp_path / runs.CHECKPOINTS).mkdir()
    for name in ("step-100000000.pt", "step-99999999.pt", "step-00000005.pt"):
        (tmp_path / runs.CHECKPOINTS / name).write_bytes(b"")
    assert [p.name for p in runs.checkpoints(tmp_path)] == ["step-00000005.pt", "step-99999999.pt", "step-100000000.pt"]


def test_sigterm_while_sampling_removes_the_temporary_file(divgen, trained_run, tmp_path, monkeypatch):
    """SIGINT removed the hidden temporary file, SIGTERM left it (132 MB in the example)."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("the test runner handles SIGTERM itself")
    out = tmp_path / "s.npy"
    np.save(out, np.arange(6.0))
    before = snapshot(tmp_path)
    real = families.draw_chunks

    def chunks(*args, **kwargs):
        parts = real(*args, **kwargs)
        yield next(parts)
        assert list(tmp_path.glob(".s.npy.*.tmp")), "the samples are written to a temporary file"
        # with the default handler, this SIGTERM would end pytest itself: fail instead
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM would leave the temporary file"
        os.kill(os.getpid(), signal.SIGTERM)
        yield from parts

    monkeypatch.setattr(families, "draw_chunks", chunks)
    result = divgen("sample", trained_run, "-n", 20_000, "-o", out, "--overwrite")
    assert result.code == 130 and result.err.strip() == "divgen: interrupted"
    assert snapshot(tmp_path) == before  # the old file whole, no temporary file
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back


def test_sigterm_during_training_still_ends_with_a_checkpoint(tmp_path):
    """atomic_write leaves SIGTERM to a handler already there: the training loop's, which checkpoints and stops."""
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        files.atomic_write(tmp_path / "a.bin", lambda fh: (os.kill(os.getpid(), signal.SIGTERM), fh.write(b"whole")))
        assert seen == [signal.SIGTERM] and (tmp_path / "a.bin").read_bytes() == b"whole"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_broken_link_given_to_o_is_not_replaced_without_overwrite(divgen, trained_run, tmp_path):
    link, target = tmp_path / "s.npy", tmp_path / "nowhere" / "s.npy"
    link.symlink_to(target)
    result = divgen("sample", trained_run, "-n", 10, "-o", link)
    assert_clean_failure(result)
    assert "exists; pass --overwrite" in result.err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert divgen("sample", trained_run, "-n", 10, "-o", link, "--overwrite").code == 0
    assert not link.is_symlink() and np.load(link).shape == (10, 2)  # the link is replaced, not written through
    assert not target.parent.exists()


# ---------------------------------------------------- 5. OS errors ---
LONG = "x" * 300  # longer than any file system's name limit (255)


@pytest.mark.parametrize("argv", [
    ["sample", "{run}", "-n", "10", "-o", f"{LONG}.npy"],
    ["sample", LONG, "-n", "10", "-o", "s.npy"],
    ["train", "--data", "mog1d", *FAST, "--out", LONG],
    ["train", "--resume", LONG, "--steps", "20"],
    ["evaluate", LONG],
    ["test", f"{LONG}.npy", "{data}"],
], ids=["sample -o", "sample RUN", "train --out", "train --resume", "evaluate", "test"])
def test_a_name_too_long_is_one_line_naming_the_reason(divgen, trained_run, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    data = _data(tmp_path / "a.npy")
    before = snapshot(tmp_path)
    result = divgen(*[a.format(run=trained_run, data=data) for a in argv])
    assert_clean_failure(result)
    assert "File name too long" in result.err
    assert snapshot(tmp_path) == before


virtual = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc on this system")


@virtual
@pytest.mark.parametrize("argv", [["sample", "{run}", "-n", "10", "-o", "/proc/divgen-s.npy"],
                                  ["train", "--data", "mog1d", *FAST, "--out", "/proc/divgen-run"]],
                         ids=["sample -o", "train --out"])
def test_an_output_under_proc_is_not_blamed_on_disk_space(divgen, trained_run, argv):
    result = divgen(*[a.format(run=trained_run) for a in argv])
    assert_clean_failure(result)
    assert "cannot create files in '/proc'" in result.err and "disk space" not in result.err


def _unblock_after(fifo: Path, seconds: float = 10) -> threading.Timer:
    """Should divgen open the named pipe, it would wait for a writer forever: be that writer after `seconds`,
    so that a wrong behaviour fails the test instead of hanging it."""

    def write():
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:  # nobody reads it: nothing to unblock
            pass

    timer = threading.Timer(seconds, write)
    timer.start()
    return timer


@pytest.mark.parametrize("argv", [["sample", "{run}", "-n", "10", "-o", "s.npy"], ["evaluate", "{run}"],
                                  ["train", "--resume", "{run}", "--steps", "20"]],
                         ids=["sample", "evaluate", "train --resume"])
def test_a_named_pipe_for_config_json_is_never_opened(divgen, run, argv, monkeypatch, tmp_path):
    """A FIFO was reported as missing (or read, which waits for a writer forever)."""
    monkeypatch.chdir(tmp_path)
    (run / runs.CONFIG).unlink()
    os.mkfifo(run / runs.CONFIG)
    timer = _unblock_after(run / runs.CONFIG)
    try:
        result = divgen(*[a.format(run=run) for a in argv])
    finally:
        timer.cancel()
    assert_clean_failure(result)
    assert "config.json' is a named pipe (FIFO), not a file" in result.err
    assert stat.S_ISFIFO(os.lstat(run / runs.CONFIG).st_mode) and not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("argv", [["test", "{fifo}", "{data}"], ["train", "--data", "{fifo}", *FAST, "--out", "{out}"]],
                         ids=["test", "train"])
def test_a_named_pipe_as_data_is_refused_not_read(divgen, tmp_path, argv):
    """A FIFO given as data was reported as missing (or read, which waits for a writer forever)."""
    fifo, data = tmp_path / "fifo.npy", _data(tmp_path / "a.npy")
    os.mkfifo(fifo)
    timer = _unblock_after(fifo)
    try:
        result = divgen(*[a.format(fifo=fifo, data=data, out=tmp_path / "run") for a in argv])
    finally:
        timer.cancel()
    assert_clean_failure(result)
    assert "is not a file (a named pipe" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "fifo.npy"]


def test_a_named_pipe_given_to_o_is_not_replaced(divgen, trained_run, tmp_path):
    fifo = tmp_path / "s.npy"
    os.mkfifo(fifo)
    result = divgen("sample", trained_run, "-n", 10, "-o", fifo, "--overwrite")
    assert_clean_failure(result)
    assert "is a named pipe (FIFO), not a file" in result.err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and sorted(tmp_path.iterdir()) == [fifo]


def test_a_config_json_that_cannot_be_read_says_why(run, monkeypatch):
    """A config.json of mode 000 was "not valid JSON"."""
    if not ROOT:
        (run / runs.CONFIG).chmod(0)
    else:  # root reads it anyway: the same refusal, from the same call
        def refuse(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(InputError, match=r"cannot read .*config.json': Permission denied"):
        runs.read_config(run)


class WorkStarted(Exception):
    pass


@pytest.fixture
def no_work(monkeypatch):
    """evaluate's tens of seconds of work (critics and tests) must not start: refusing after it is too late."""

    def work(*args, **kwargs):
        raise WorkStarted

    monkeypatch.setattr(evaluate, "_critics_and_tests", work)


@pytest.mark.parametrize("case", ["eval.json is a folder", "checkpoints is a file"])
def test_evaluate_checks_where_it_writes_before_its_work(divgen, run, no_work, case):
    damage, words = BROKEN_RUNS[case]
    damage(run)
    before = snapshot(run)
    result = divgen("evaluate", run)
    assert_clean_failure(result)
    assert words.replace(", where divgen keeps a folder", "") in result.err
    assert "--resume" not in result.err  # it advised train --resume, which then crashed
    assert snapshot(run) == before


@needs_permissions
def test_evaluate_refuses_a_read_only_run_before_its_work(divgen, run, no_work):
    run.chmod(0o555)
    try:
        result = divgen("evaluate", run)
    finally:
        run.chmod(0o755)
    assert_clean_failure(result)
    assert "Permission denied" in result.err


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory) -> Path:
    """A conditional run on labelled data: evaluate trains (and caches) the data set's classifier."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    np.savez(root / "labelled.npz", x=rng.normal(size=(300, 2)), y=np.arange(300) % 3)
    argv = ["train", "--data", str(root / "labelled.npz"), "--model", "cgan", *FAST, "--out", str(root / "run")]
    assert cli.main(argv) == 0
    return root / "run"


def test_evaluate_refuses_a_classifier_cache_it_cannot_write_before_its_work(divgen, labelled_run, tmp_path,
                                                                               no_work, monkeypatch):
    (tmp_path / "afile").write_text("a file, not a folder")
    monkeypatch.setenv("DIVGEN_CACHE", str(tmp_path / "afile" / "cache"))
    result = divgen("evaluate", labelled_run)
    assert_clean_failure(result)
    assert "the classifier cache" in result.err and "afile" in result.err
    if not ROOT:  # a read-only cache folder, as the example had it
        (tmp_path / "cache").mkdir(mode=0o555)
        monkeypatch.setenv("DIVGEN_CACHE", str(tmp_path / "cache"))
        result = divgen("evaluate", labelled_run)
        assert_clean_failure(result)
        assert "the classifier cache" in result.err and "Permission denied" in result.err
    assert not (labelled_run / "eval.json").exists()


# ------------------------------------ 7. concurrency and permissions ---
HOLD = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); " \
       "print('held', flush=True); time.sleep(120)"


@pytest.fixture
def held(tmp_path):
    """hold(folder): another process holds the folder's lock until the test ends."""
    procs = []

    def hold(folder: Path) -> None:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("argv", [["train", "--resume", "{run}", "--steps", "20"],
                                  ["train", "--data", "mog1d", *FAST, "--out", "{run}", "--overwrite"]],
                         ids=["train --resume", "train --overwrite"])
def test_a_run_another_process_writes_is_refused(divgen, run, held, argv):
    """Two --resume of one run at once both exited 0, one reporting a run that ended as the other's."""
    held(run)
    before = snapshot(run)
    result = divgen(*[a.format(run=run) for a in argv])
    assert_clean_failure(result)
    assert "is in use by another divgen process" in result.err
    assert snapshot(run) == before


def test_a_new_run_in_a_folder_another_process_writes_is_refused(divgen, tmp_path, held):
    (tmp_path / "new").mkdir()
    held(tmp_path / "new")
    result = divgen("train", "--data", "mog1d", *FAST, "--out", tmp_path / "new")
    assert_clean_failure(result)
    assert "is in use" in result.err and not any((tmp_path / "new").iterdir())


def test_the_run_is_locked_until_its_last_file_is_written(divgen, run, monkeypatch):
    real, tries = train.finish, []

    def finish(out, *args, **kwargs):  # the last step of a run: samples.npy
        fd = os.open(out, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: what another process would try
            tries.append("got the lock")
        except BlockingIOError:
            tries.append("refused")
        finally:
            os.close(fd)
        return real(out, *args, **kwargs)

    monkeypatch.setattr(train, "finish", finish)
    assert divgen("train", "--resume", run, "--steps", 20).code == 0
    assert tries == ["refused"]
    fd = os.open(run, os.O_RDONLY)  # and released when the command ends
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_every_file_divgen_writes_follows_the_umask(divgen, tmp_path, umask):
    """Every file was 0600 whatever the umask (mkstemp's mode)."""
    out = tmp_path / "run"
    assert divgen("train", "--data", "mog1d", "--steps", 10, *TINY, "--n-samples", 1000, "--out", out).code == 0
    assert divgen("sample", out, "-n", 10, "-o", tmp_path / "s.csv").code == 0
    written = [p for p in [*out.rglob("*"), tmp_path / "s.csv"] if p.is_file()]
    assert {"config.json", "metrics.jsonl", "samples.npy", "step-00000010.pt", "s.csv"} <= {p.name for p in written}
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(umask) for p in written}


@pytest.mark.parametrize("mask", [0o077, 0o002])
def test_atomic_write_gives_the_mode_of_a_new_file(tmp_path, mask):
    old = os.umask(mask)
    try:
        files.atomic_write(tmp_path / "a.bin", lambda fh: fh.write(b"x"))
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.bin") == 0o666 & ~mask


def test_overwrite_keeps_a_replaced_files_mode_and_leaves_other_files_alone(divgen, run, trained_run,
                                                                             tmp_path, umask):
    """--overwrite turned a user's 0444 file into 0600: the file it writes keeps the mode of the one it replaces."""
    target = tmp_path / "s.npy"
    np.save(target, np.arange(3.0))
    target.chmod(0o444)
    assert divgen("sample", trained_run, "-n", 10, "-o", target, "--overwrite").code == 0
    assert mode(target) == 0o444 and np.load(target).shape == (10, 2)
    target.chmod(0o640)
    assert divgen("sample", trained_run, "-n", 10, "-o", target, "--overwrite").code == 0
    assert mode(target) == 0o640
    notes = run / "notes.txt"
    notes.write_text("the user's")
    notes.chmod(0o444)
    assert divgen("train", "--data", "mog1d", *FAST, "--out", run, "--overwrite").code == 0
    assert mode(notes) == 0o444 and notes.read_text() == "the user's"


# --------------------------------------------- 4. sizing of sample drawing ---
def test_a_sampling_chunk_is_sized_by_bytes():
    assert sample_files.chunk_rows(2) == sample_files.CHUNK_ROWS  # small samples: the row cap
    assert sample_files.chunk_rows(1000 * 1000) == 16  # 1000×1000 images: 64 MiB / 4 MB per image
    assert sample_files.chunk_rows(10**9) == 1


def test_sample_draws_chunks_of_chunk_rows_and_the_same_numbers(divgen, trained_run, tmp_path, monkeypatch):
    whole = tmp_path / "whole.npy"
    assert divgen("sample", trained_run, "-n", 1000, "-o", whole).code == 0
    monkeypatch.setattr(sample_files, "CHUNK_BYTES", limits.FLOAT32 * 2 * 300)  # 300 rows of dimension 2
    real, sizes = families.draw_chunks, []

    def spy(*args, chunk, **kwargs):
        for x, y in real(*args, chunk=chunk, **kwargs):
            sizes.append(len(x))
            yield x, y

    monkeypatch.setattr(families, "draw_chunks", spy)
    assert divgen("sample", trained_run, "-n", 1000, "-o", tmp_path / "parts.npy").code == 0
    assert sizes == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.load(tmp_path / "parts.npy"), np.load(whole))


def test_sampling_large_images_needs_memory_for_one_small_chunk(tmp_path, monkeypatch):
    """One 8,192-row chunk of 1000×1000 images would have needed about 65 GB of memory."""
    asked = {}
    monkeypatch.setattr(limits, "require",
                        lambda terms, have, what="memory": asked.setdefault(what, sum(b for _, b in terms)))
    monkeypatch.setattr(limits, "require_disk", lambda terms, path: None)
    monkeypatch.setattr(files, "atomic_write", lambda path, write: None)

    class Generator:
        n_classes = 0

    sample_files.write(tmp_path / "s.npy", {"generator": Generator()}, 100_000, 0, (1000, 1000))
    assert asked["memory"] <= 2 * sample_files.CHUNK_BYTES


def test_a_resume_that_fails_before_its_first_checkpoint_leaves_the_run_as_it_was(divgen, run, monkeypatch):
    """The old results and config.json are replaced only once the resumed run has written a checkpoint."""
    before = snapshot(run)

    def fails(session):
        raise RuntimeError("the disk is gone")

    monkeypatch.setattr(train, "_loop", fails)
    with pytest.raises(RuntimeError):
        cli.main(["train", "--resume", str(run), "--steps", "20"])
    assert snapshot(run) == before
    monkeypatch.undo()
    assert divgen("train", "--resume", run, "--steps", 20).code == 0  # and it resumes, replacing them
    assert (run / "samples.npy").read_bytes() != before["samples.npy"]
