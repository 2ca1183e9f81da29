"""Files divgen writes, whole or not at all, and read back only when they are intact.

- `atomic_write`: a temporary file beside the target, fsync, rename; a reader
  (or a kill) never sees half a file, and a failed write leaves the old one.
- `write_json`: strict JSON (jsonout: NaN and infinities as null), atomically.
- `save_checked` / `load_checked`: a dict of tensors (and plain values) with a
  SHA-256 digest of its contents, read back by a weights-only torch load,
  so a file that would run code when unpickled, or one damaged where torch does
  not look (a flipped bit in a tensor), is refused as InputError.

The lowest floor of the file code: runs, sample files, metrics and the commands
write through it; it imports no other divgen module but errors and jsonout.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import torch

from divgen import jsonout
from divgen.errors import InputError, one_line

DIGEST = "sha256"  # the key of the digest in a checked file: the digest is over every other key


def temporaries(name: str) -> str:
    """The glob pattern of the temporary files that atomic_write leaves if it is killed while writing `name`."""
    return f".{name}.*.tmp"


def atomic_write(path: Path, write) -> None:
    """`write(fh)` into a temporary file beside `path`, fsync, rename: `path` is either whole or untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # see temporaries
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # the rename itself, on disk
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
