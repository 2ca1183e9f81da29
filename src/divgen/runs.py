"""The run directory: creating it without clobbering, its config and metrics, and its checkpoints.

Layout (DESIGN.md): config.json, metrics.jsonl, checkpoints/step-XXXXXXXX.pt,
samples.npy, samples.png, losses.png, and params.json for a density model.
Files are written through files.py (atomic, digest-checked); the metrics log
is logs.py, finishing and loading a run results.py.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from divgen import jsonout, parallel
from divgen.errors import InputError, one_line, warn
from divgen.files import atomic_write, load_checked, save_checked, temporaries

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
# A run's results, written when it finishes; stale (and removed) once it trains further.
RESULTS = ("samples.npy", "samples.png", "losses.png", "params.json", "eval.json")
# Every file a run writes, as glob patterns: `--overwrite` removes these and nothing else.
RUN_FILES = (CONFIG, METRICS, *RESULTS, f"{CHECKPOINTS}/step-*.pt", f"{CHECKPOINTS}/step-*.pt.corrupt",
             f"{TENSORBOARD}/events.out.tfevents.*")
# Folders only divgen creates in a run; `--overwrite` removes them once they are empty.
RUN_FOLDERS = (CHECKPOINTS, TENSORBOARD)


def prepare(out: Path, overwrite: bool = False, files: tuple[str, ...] = RUN_FILES,
            folders: tuple[str, ...] = RUN_FOLDERS, resumable: bool = False) -> Path:
    """Create a fresh output directory; refuse to touch an existing one unless asked.

    With `overwrite`, the files of an existing directory that match `files`
    (divgen's own names and patterns, and their temporary files) are removed,
    then `folders` that are left empty; every other file stays where it is.
    `resumable`: the command has --resume (train), which the message offers for a run.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} exists and is not a directory")
    existing = out.is_dir() and any(out.iterdir())
    if existing and not overwrite:
        if resumable and (out / CONFIG).is_file():
            raise InputError(f"--out {str(out)!r} is an existing run; continue it with --resume {str(out)!r}, "
                             "or pass --overwrite to replace the files divgen wrote there")
        raise InputError(f"--out {str(out)!r} already exists and is not empty; choose another --out, or pass "
                         "--overwrite to replace the files divgen wrote there (other files are kept)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise InputError(f"cannot write to {str(out)!r}: {e.strerror or e}") from None
    if existing:
        remove(out, files, folders)
    return out


def remove(out: Path, files: tuple[str, ...], folders: tuple[str, ...] = ()) -> None:
    """Delete the files under `out` that match `files` (and their atomic_write temporaries), then the
    `folders` that are left empty. Nothing else is touched."""
    out = Path(out)
    for pattern in files:
        folder, _, name = pattern.rpartition("/")
        for p in [*out.glob(pattern), *out.glob(f"{folder + '/' if folder else ''}{temporaries(name)}")]:
            if p.is_file() or p.is_symlink():
                p.unlink()
    for folder in folders:
        try:
            (out / folder).rmdir()
        except OSError:  # absent, or it holds the user's files
            pass


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
    """The rows of metrics.jsonl (none if it is absent); a line that is not a JSON object is skipped with a warning."""
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:  # a line cut by a kill mid-write; the steps after the checkpoint are redone anyway
            row = None
            warn(f"{str(path)!r}, line {i}: not a JSON object; skipped")
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(run: Path, last_step: int) -> None:
    """Drop metric lines logged after `last_step` (they are redone on resume)."""
    rows = [r for r in read_metrics(run) if r.get("step", 0) <= last_step]
    atomic_write(Path(run) / METRICS, lambda fh: fh.write("".join(jsonout.dumps(r) + "\n" for r in rows).encode()))


def save_checkpoint(run: Path, step: int, state: dict, keep: int) -> Path:
    """Write checkpoints/step-<step>.pt atomically and keep the newest `keep`.

    The file is digest-checked (files.save_checked), so that damage which
    still unzips and unpickles (a flipped bit in a tensor) is caught on load.
    """
    folder = Path(run) / CHECKPOINTS
    folder.mkdir(exist_ok=True)
    path = save_checked(folder / f"step-{step:08d}.pt", {"step": step, **state})
    for old in checkpoints(run)[:-keep]:
        old.unlink()
    return path


def checkpoints(run: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    return sorted((Path(run) / CHECKPOINTS).glob("step-*.pt"))


def load_checkpoint(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """Load one checkpoint with weights_only=True (files.load_checked); InputError naming the file if it is
    damaged or unsafe, or if it lacks its step or any of `keys`."""
    return load_checked(path, ("step", *keys), what="checkpoint")


# What every checkpoint holds (CheckpointState.save), its digest included.
CHECKPOINT_KEYS = ("step", "sha256", "nets", "optimizers", "rng", "local_rngs", "data", "world_size")


def latest_checkpoint(run: Path, set_aside: bool = False, warn_damaged: bool = True) -> dict:
    """The newest checkpoint that loads. A damaged newer one is reported by name (unless not
    `warn_damaged`) and, with `set_aside`, renamed to *.corrupt so that the resumed run cannot overwrite it."""
    found = checkpoints(run)
    if not found:
        raise InputError(f"run directory {str(run)!r} has no checkpoint: it was stopped before step 0; "
                         f"start it with divgen train --resume {str(run)!r}")
    damaged = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path, CHECKPOINT_KEYS)
            if not isinstance(state["nets"], dict):
                raise InputError(f"checkpoint {str(path)!r} is not a divgen checkpoint")
        except InputError as e:
            damaged.append((path, e))
            continue
        for bad, error in damaged if warn_damaged or set_aside else ():
            kept = ""
            if set_aside:
                bad.rename(bad.with_name(bad.name + ".corrupt"))
                kept = f" (kept as {bad.name}.corrupt)"
            warn(f"{error}{kept}; using {path.name} instead")
        return state
    names = ", ".join(p.name for p, _ in damaged)
    raise InputError(f"no checkpoint in {str(Path(run) / CHECKPOINTS)!r} could be loaded ({names}); first problem: {damaged[0][1]}")


# ------------------------------------------------------------ training state ---
class CheckpointState:
    """Everything needed to continue a run bit for bit: the networks, the optimizers,
    the batch and noise streams, and what the networks were built for."""

    def __init__(self, nets, opts: dict, stream, spec, world: parallel.World):
        self.nets, self.opts, self.stream, self.spec, self.world = nets, opts, stream, spec, world

    def save(self, out: Path, step: int, keep: int) -> int:
        """Write the checkpoint of `step` (rank 0; a collective, every rank contributes its local RNG)."""
        state = {
            "nets": self.nets.state_dict(),
            "optimizers": {side: opt.state_dict() for side, opt in self.opts.items()},
            "rng": self.stream.state(),
            "local_rngs": parallel.gather(self.world, self.stream.local.get_state()),
            "data": {"event_shape": list(self.spec.event_shape), "n_classes": self.spec.n_classes},
            "world_size": self.world.size,
        }
        if self.world.main:
            save_checkpoint(out, step, state, keep)
        parallel.barrier(self.world)
        return step

    def restore(self, out: Path) -> int:
        """Load the newest good checkpoint of `out`; returns its step."""
        s = latest_checkpoint(out, set_aside=self.world.main)
        parallel.barrier(self.world)
        check_spec(s, self.spec)
        if s["world_size"] != self.world.size:
            raise InputError(f"the run was trained by {s['world_size']} processes; resume it with the same number "
                             f"(now {self.world.size})")
        load_networks(self.nets, s, out)
        for side, opt in self.opts.items():
            try:
                opt.load_state_dict(s["optimizers"][side])
            except (KeyError, ValueError, RuntimeError) as e:
                raise InputError(f"the checkpoint in {str(out)!r} holds no matching {side} optimizer state "
                                 f"({one_line(e, 120)}); was it copied from another run?") from None
        self.stream.set_state(s["rng"])
        self.stream.local.set_state(s["local_rngs"][self.world.rank])
        return s["step"]


def check_spec(state: dict, spec) -> None:
    """InputError if the data now has another shape or other classes than the checkpoint's."""
    saved = tuple(state["data"]["event_shape"])
    if saved != tuple(spec.event_shape):
        raise InputError(f"data has dimension {spec.dim} (shape {tuple(spec.event_shape)}) but the run was trained "
                         f"on dimension {_prod(saved)} (shape {saved})")
    if state["data"]["n_classes"] != spec.n_classes:
        raise InputError(f"data has {spec.n_classes} classes but the run was trained on {state['data']['n_classes']}")


def _prod(shape) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def load_networks(nets, state: dict, run: Path) -> None:
    """Load the checkpoint's networks; InputError naming the first tensor whose name or shape does not fit
    the networks that config.json builds (a checkpoint copied from another run)."""
    want = {k: tuple(v.shape) for k, v in nets.state_dict().items()}
    got = {k: tuple(v.shape) if torch.is_tensor(v) else None for k, v in state["nets"].items()}
    differ = [k for k in want if k in got and got[k] != want[k]]
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    if differ or missing or extra:
        if differ:
            k = differ[0]
            first = f"{k} has shape {got[k]} in the checkpoint but {want[k]} for config.json"
        elif missing:
            first = f"it has no {missing[0]}"
        else:
            first = f"it has {extra[0]}, which config.json's model does not have"
        n = len(differ) + len(missing) + len(extra)
        raise InputError(f"the checkpoint in {str(run)!r} does not fit its config.json: {n} tensor(s) differ, "
                         f"first: {first}; was it copied from another run?")
    nets.load_state_dict(state["nets"])
