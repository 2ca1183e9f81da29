"""The run directory: creation without clobbering, atomic checkpoints, config and metrics files.

Layout (DESIGN.md): config.json, metrics.jsonl, checkpoints/step-XXXXXXXX.pt,
samples.npy, samples.png, losses.png, and params.json for a Gaussian model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from divgen.errors import InputError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
# Everything a run writes; `--overwrite` removes these and nothing else.
RUN_FILES = (CONFIG, METRICS, CHECKPOINTS, "samples.npy", "samples.png", "losses.png", "params.json", "eval.json", "tensorboard")


def prepare(out: Path, overwrite: bool = False) -> Path:
    """Create a fresh run directory; refuse to touch an existing one unless asked."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"run directory {str(out)!r} already exists; use --resume to continue it or --overwrite to replace it")
        for name in RUN_FILES:  # only divgen's own files; anything else the user put there stays
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise InputError(f"cannot write to run directory {str(out)!r}: {e.strerror or e}") from None
    return out


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file, fsync, rename)."""
    _atomic_write(Path(path), lambda fh: fh.write(json.dumps(obj, indent=2).encode() + b"\n"))


def read_config(run: Path) -> dict:
    """config.json of a run directory, or InputError if `run` is not one."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise InputError(f"{str(run)!r} is not a divgen run directory (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{str(path)!r} is not valid JSON: {e}") from None


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run: Path, last_step: int) -> None:
    """Drop metric lines logged after `last_step` (they are redone on resume)."""
    rows = [r for r in read_metrics(run) if r.get("step", 0) <= last_step]
    _atomic_write(Path(run) / METRICS, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def save_checkpoint(run: Path, step: int, state: dict, keep: int) -> Path:
    """Write checkpoints/step-<step>.pt atomically and keep the newest `keep`.

    The file carries a SHA-256 digest of its contents, so that damage which
    still unzips and unpickles (a flipped bit in a tensor) is caught on load.
    """
    folder = Path(run) / CHECKPOINTS
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    state = {"step": step, **state}
    _atomic_write(path, lambda fh: torch.save({**state, "sha256": _digest(state)}, fh))
    for old in checkpoints(run)[:-keep]:
        old.unlink()
    return path


def checkpoints(run: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    return sorted((Path(run) / CHECKPOINTS).glob("step-*.pt"))


def load_checkpoint(path: Path) -> dict:
    """Load one checkpoint with weights_only=True; InputError naming the file if it is damaged or unsafe."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, forbidden global: all mean "not a good checkpoint"
        text = str(e)
        if "Weights only load failed" in text or "weights_only" in text:
            reason = "it holds objects that a weights-only load refuses to build (possibly malicious); it was not executed"
        else:
            first = next((line for line in text.splitlines() if line.strip()), type(e).__name__)
            reason = "".join(c for c in first if c.isprintable())[:120]
        raise InputError(f"checkpoint {str(path)!r} is corrupt or unsafe: {reason}") from None
    if not isinstance(state, dict) or "step" not in state or "sha256" not in state:
        raise InputError(f"checkpoint {str(path)!r} is not a divgen checkpoint")
    digest = state.pop("sha256")
    if digest != _digest(state):
        raise InputError(f"checkpoint {str(path)!r} is corrupt: its contents do not match their SHA-256 digest")
    return state


def latest_checkpoint(run: Path, set_aside: bool = False) -> dict:
    """The newest checkpoint that loads. A damaged newer one is reported by name and,
    with `set_aside`, renamed to *.corrupt so that the resumed run cannot overwrite it."""
    found = checkpoints(run)
    if not found:
        raise InputError(f"run directory {str(run)!r} has no checkpoint")
    damaged = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path)
        except InputError as e:
            damaged.append((path, e))
            continue
        for bad, error in damaged:
            kept = ""
            if set_aside:
                bad.rename(bad.with_name(bad.name + ".corrupt"))
                kept = f" (kept as {bad.name}.corrupt)"
            print(f"divgen: warning: {error}{kept}; using {path.name} instead", file=sys.stderr)
        return state
    names = ", ".join(p.name for p, _ in damaged)
    raise InputError(f"no checkpoint in {str(Path(run) / CHECKPOINTS)!r} could be loaded ({names}); first problem: {damaged[0][1]}")


def _digest(obj) -> str:
    """SHA-256 over a nested state: tensors by their raw bytes, everything else by repr."""
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


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
