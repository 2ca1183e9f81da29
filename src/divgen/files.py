"""Files divgen writes, whole or not at all, and read back only when they are intact.

- `atomic_write`: a temporary file beside the target, fsync, rename; a reader
  (or a kill) never sees half a file, and a failed write leaves the old one.
  The file keeps the permissions of the file it replaces, or gets those of any
  new file (0666 less the umask), and
  SIGTERM, like Ctrl-C, removes the temporary file before the process ends.
- `lstat`, `require_target`, `require_folder`: what lies at a path, and whether
  divgen can write there, checked before a command starts its work; the
  operating system's refusals (a name too long, no permission, a read-only or
  virtual file system) become one-line InputErrors naming the path.
- `write_json`: strict JSON (jsonout: NaN and infinities as null), atomically.
- `save_checked` / `load_checked`: a dict of tensors (and plain values) with a
  SHA-256 digest of its contents, read back by a weights-only torch load,
  so a file that would run code when unpickled, or one damaged where torch does
  not look (a flipped bit in a tensor), is refused as InputError.

The lowest floor of the file code: runs, sample files, metrics and the commands
write through it; it imports no other divgen module but errors and jsonout.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from divgen import jsonout
from divgen.errors import InputError, one_line

DIGEST = "sha256"  # the key of the digest in a checked file: the digest is over every other key


def cache_dir() -> Path:
    """Where divgen keeps what it can rebuild (classifiers, generated data sets): $DIVGEN_CACHE if set,
    else $XDG_CACHE_HOME/divgen (default ~/.cache/divgen)."""
    if os.environ.get("DIVGEN_CACHE"):
        return Path(os.environ["DIVGEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "divgen"


def temporaries(name: str) -> str:
    """The glob pattern of the temporary files that atomic_write leaves if it is killed while writing `name`."""
    return f".{name}.*.tmp"


def atomic_write(path: Path, write) -> None:
    """`write(fh)` into a temporary file beside `path`, fsync, rename: `path` is either whole or untouched."""
    path = Path(path)
    tmp = None
    with _terminate_as_interrupt():
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # see temporaries
            os.fchmod(fd, _mode_for(path))  # mkstemp's 0600 keeps the half-written file private; the whole one is not
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if tmp is not None and os.path.lexists(tmp):
                os.unlink(tmp)
            raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # the rename itself, on disk
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _mode_for(path: Path) -> int:
    """The permissions of the file written at `path`: those of the file it replaces, so a user's choice is kept,
    else those of any new file."""
    try:
        st = os.stat(path)
    except OSError:
        return new_file_mode()
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else new_file_mode()


def new_file_mode() -> int:
    """The permissions open() gives a new file: 0o666 less the process's umask."""
    try:  # Linux states the umask; reading it elsewhere means setting it
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt (what Ctrl-C raises) while a temporary file exists, so that the
    `except` above removes it; by default SIGTERM ends the process at once and leaves it behind. Left
    alone where someone else handles SIGTERM (a training run turns it into a checkpoint)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ------------------------------------------------------------------ paths ---
KINDS = ((stat.S_ISDIR, "folder"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symbolic link"),
         (stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"))


def kind(st: os.stat_result) -> str:
    """What a stat result describes, in words: "file", "folder", "named pipe (FIFO)", ..."""
    return next((name for test, name in KINDS if test(st.st_mode)), "special file")


def lstat(path: Path | str, what: str) -> os.stat_result | None:
    """What lies at `path` (a final symbolic link not followed), None if nothing does. InputError naming
    `what` and the path where the system refuses the path itself: a name too long, a part of it that is a
    file, a folder that may not be searched."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise InputError(f"{what} {str(path)!r}: a part of the path is a file, not a folder") from None
    except OSError as e:
        raise InputError(f"{what} {str(path)!r}: {e.strerror or e}") from None


def is_folder(path: Path | str) -> bool:
    """Whether `path` is a folder (a symbolic link to one counts), without raising for a bad path."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def replaceable(st: os.stat_result) -> bool:
    """Whether atomic_write may replace what `st` describes: a file, or a link (replaced, not followed)."""
    return stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)


def require_target(path: Path | str, what: str) -> None:
    """InputError unless atomic_write can write `path`: nothing there, or a file (or a link, which is
    replaced, not followed), in a folder that takes new files. Checked before the work that makes the file."""
    path = Path(path)
    st = lstat(path, what)
    if st is not None and not replaceable(st):
        raise InputError(f"{what}: {str(path)!r} is a {kind(st)}, where divgen writes a file; move it away")
    if not is_folder(path.parent):
        raise InputError(f"{what}: {str(path.parent)!r} is not a folder")
    require_folder(path.parent, what)


def require_folder(folder: Path | str, what: str) -> None:
    """InputError unless new files can be made in `folder`, or, where it does not exist yet, in the
    nearest folder above it (it will be created there). Probed with a file that has no name: nothing
    is left behind, and the answer is the file system's own (read-only, no permission, virtual)."""
    probe = Path(folder)
    while (st := lstat(probe, what)) is None and probe != probe.parent:
        probe = probe.parent
    if not is_folder(probe):
        where = "is" if probe == Path(folder) else f"cannot be created: {str(probe)!r} is"
        raise InputError(f"{what} {str(folder)!r} {where} a {kind(st)}, not a folder")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        # a virtual file system (/proc) answers "no such file" for a folder that is there
        reason = "the file system takes no new files" if isinstance(e, FileNotFoundError) else e.strerror or str(e)
        raise InputError(f"{what}: cannot create files in {str(probe)!r}: {reason}") from None


def write_json(path: Path, obj) -> None:
    """Write strict JSON (non-finite numbers as null, see jsonout), indented, atomically."""
    atomic_write(Path(path), lambda fh: fh.write(jsonout.dumps(obj, indent=2).encode() + b"\n"))


def save_checked(path: Path, state: dict) -> Path:
    """Write `state` atomically with its SHA-256 digest (under DIGEST); load_checked reads it back."""
    if DIGEST in state:
        raise ValueError(f"a checked file's state cannot hold the key {DIGEST!r}: it is the digest's")
    atomic_write(Path(path), lambda fh: torch.save({**state, DIGEST: digest(state)}, fh))
    return Path(path)


def load_checked(path: Path, keys: tuple[str, ...] = (), what: str = "file") -> dict:
    """The state that save_checked wrote to `path`, on the CPU, its digest removed.

    Loaded with weights_only=True: nothing in the file is executed. InputError naming
    the file (`what`: how messages call it, e.g. "checkpoint") if it does not load,
    holds objects a weights-only load refuses, is not a dict with a digest and every
    one of `keys`, or does not match its digest.
    """
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickles; the outcome is reported below
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, forbidden global: all mean "not a good file"
        text = str(e)
        if "Weights only load failed" in text or "weights_only" in text:
            reason = "it holds objects that a weights-only load refuses to build (possibly malicious); it was not executed"
        else:
            reason = one_line(next((line for line in text.splitlines() if line.strip()), type(e).__name__), 160)
        raise InputError(f"{what} {str(path)!r} is corrupt or unsafe: {reason}") from None
    if not isinstance(state, dict) or not {DIGEST, *keys} <= set(state):
        raise InputError(f"{what} {str(path)!r} is not a divgen {what}")
    saved = state.pop(DIGEST)
    if saved != digest(state):
        raise InputError(f"{what} {str(path)!r} is corrupt: its contents do not match their SHA-256 digest")
    return state


def digest(obj) -> str:
    """SHA-256 over a nested state: tensors by dtype, shape and raw bytes, dicts by sorted key, everything else by repr."""
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()
