"""The run directory: creating it without clobbering, its config and metrics, and its checkpoints.

Layout (DESIGN.md): config.json, metrics.jsonl, checkpoints/step-XXXXXXXX.pt,
samples.npy, samples.png, losses.png, and params.json for a density model.
Files are written through files.py (atomic, digest-checked); the metrics log
is logs.py, finishing and loading a run results.py.

A command that writes a run checks the whole folder first (check_out for a new
run, check_run for a resumed one): every file it will write or remove, that the
folder takes new files, and that the data it reads is none of them. While a
run is written, its folder is locked (hold): a second divgen process is refused.
Only names divgen gives are its files; a file named otherwise (even
checkpoints/step-mine.pt) is the user's and is never removed or renamed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from divgen import catalog, jsonout, parallel
from divgen.config import check_recorded
from divgen.errors import InputError, one_line, warn
from divgen.files import (atomic_write, is_folder, kind, load_checked, lstat, replaceable, require_folder, save_checked,
                          temporaries)

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
# A run's results, written when it finishes; stale (and removed) once it trains further.
RESULTS = ("samples.npy", "samples.png", "losses.png", "params.json", "eval.json")
# Every file a run writes, as patterns (`*`: any name part, `<n>`: digits): `--overwrite` removes
# these, and their atomic_write temporaries, and nothing else.
RUN_FILES = (CONFIG, METRICS, *RESULTS, f"{CHECKPOINTS}/step-<n>.pt", f"{CHECKPOINTS}/step-<n>.pt.corrupt",
             f"{TENSORBOARD}/events.out.tfevents.*")
# Folders only divgen creates in a run; `--overwrite` removes them once they are empty.
RUN_FOLDERS = (CHECKPOINTS, TENSORBOARD)
CHECKPOINT = re.compile(r"step-([0-9]+)\.pt")  # a checkpoint's name; any other name is not divgen's


def prepare(out: Path, overwrite: bool = False, files: tuple[str, ...] = RUN_FILES,
            folders: tuple[str, ...] = RUN_FOLDERS, resumable: bool = False, data: str | None = None,
            lock: bool = False) -> Path:
    """Create a fresh output directory; refuse to touch an existing one unless asked.

    Everything is checked first (check_out). With `overwrite`, the files of an
    existing directory that match `files` (divgen's own names and patterns, and
    their temporary files) are removed, then `folders` that are left empty;
    every other file stays where it is. `resumable`: a run directory of train,
    which the message offers to --resume. `lock`: hold the folder (see hold) from
    here on; the caller releases it.
    """
    out = Path(out)
    check_out(out, overwrite, files, folders, resumable, data)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {str(out)!r}: {e.strerror or e}") from None
    if lock:
        hold(out)
        check_out(out, overwrite, files, folders, resumable, data)  # again: another process may have written there
    if overwrite:
        remove(out, files, folders)
    return out


def check_out(out: Path, overwrite: bool = False, files: tuple[str, ...] = RUN_FILES,
              folders: tuple[str, ...] = RUN_FOLDERS, resumable: bool = False, data: str | None = None) -> None:
    """InputError unless prepare may write `out`: a new or empty folder, or with `overwrite` one whose files
    matching `files` are divgen's (in a run directory, `resumable`: one with a config.json that divgen wrote)
    and are files; `folders` that are folders; not the data (`data`) nor holding it under an output's name;
    a place that takes new files. Nothing is written."""
    out = Path(out)
    st = lstat(out, "--out")
    if st is not None and not is_folder(out):
        raise InputError(f"--out {str(out)!r} exists and is not a directory")
    existing = st is not None and _has_entries(out)
    if existing and not overwrite:
        if resumable and (out / CONFIG).is_file():
            raise InputError(f"--out {str(out)!r} is an existing run; continue it with --resume {str(out)!r}, "
                             "or pass --overwrite to replace the files divgen wrote there")
        raise InputError(f"--out {str(out)!r} already exists and is not empty; choose another --out, or pass "
                         "--overwrite to replace the files divgen wrote there (other files are kept)")
    if existing:
        found = _check_entries(out, files, folders, "--out")
        if resumable and found and not _written_by_divgen(out):
            raise InputError(f"--out {str(out)!r} holds {found[0].relative_to(out).as_posix()!r} but is not a divgen run "
                             f"(it has no {CONFIG} of divgen's): divgen replaces only files it wrote; move the file, or "
                             "choose another --out")
    _check_data(out, files, data, "--out")
    require_folder(out, "--out")


def check_run(run: Path, data: str | None = None) -> None:
    """InputError unless a resumed run can be written in full: every file it writes or removes is a file,
    checkpoints/ a folder, the data none of its files, and the folder and checkpoints/ take new files.
    Checked before anything is written, so that a run that cannot continue is left as it was."""
    run = Path(run)
    read_config(run)
    _check_entries(run, RUN_FILES, RUN_FOLDERS, "the run")
    _check_data(run, RUN_FILES, data, "the run")
    require_folder(run, "the run")
    if is_folder(run / CHECKPOINTS):
        require_folder(run / CHECKPOINTS, "the run's checkpoints")


def _check_entries(out: Path, files: tuple[str, ...], folders: tuple[str, ...], what: str) -> list[Path]:
    """The entries of `out` matching `files`; InputError if one is not a file (or link), or one of `folders`
    is not a folder: divgen could neither replace nor remove it."""
    for name in folders:
        st = lstat(out / name, what)
        if st is not None and not is_folder(out / name):
            raise InputError(f"{what}: {str(out / name)!r} is a {kind(st)}, where divgen keeps a folder; move it away")
    found = matching(out, files)
    for path in found:
        st = lstat(path, what)
        if not replaceable(st):
            raise InputError(f"{what}: {str(path)!r} is a {kind(st)}, where divgen writes a file; move it away")
    return found


def _has_entries(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(True for _ in entries)


def _written_by_divgen(out: Path) -> bool:
    """Whether `out` is a run directory: its config.json holds a JSON object naming a divergence."""
    try:
        config = json.loads((out / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "divergence" in config


def _check_data(out: Path, files: tuple[str, ...], data: str | None, what: str) -> None:
    """InputError if the data file `data` is (or links to) a file divgen writes in `out`, or `out` lies in a data
    folder. `what` names `out` in the message."""
    if data is None or data in catalog.DATASETS or lstat(data, "--data") is None:
        return
    source, target = os.path.realpath(data), os.path.realpath(out)
    if is_folder(source):
        if os.path.commonpath([source, target]) == source:
            raise InputError(f"{what} {str(out)!r} lies inside the data folder {data!r}: its files would become data; "
                             "choose an --out outside it")
        return
    rel = os.path.relpath(source, target).replace(os.sep, "/")
    if rel.startswith(os.pardir) or not _regex_any(files).fullmatch(rel):  # not there by its path: by a hard link?
        rel = next((p.relative_to(out).as_posix() for p in matching(out, files)
                    if os.path.exists(p) and os.path.samefile(data, p)), None)
    if rel is not None:
        raise InputError(f"--data {data!r} is the file {rel!r} that divgen writes in {what} {str(out)!r}: it would be "
                         "replaced; move or copy the data elsewhere, or choose another --out")


def _regex(pattern: str) -> str:
    """A pattern of RUN_FILES (`*`: any part of a name, `<n>`: digits) as a regular expression."""
    return "".join("[0-9]+" if part == "<n>" else "[^/]*" if part == "*" else re.escape(part)
                   for part in re.split(r"(<n>|\*)", pattern))


def _regex_any(files: tuple[str, ...]) -> re.Pattern:
    """One expression for the paths of `files` and of their atomic_write temporaries."""
    names = []
    for pattern in files:
        folder, _, name = pattern.rpartition("/")
        names += [_regex(pattern), _regex(f"{folder}/" if folder else "") + _regex(temporaries(name))]
    return re.compile("|".join(f"(?:{n})" for n in names))


def matching(out: Path, files: tuple[str, ...]) -> list[Path]:
    """The entries under `out` (of any kind) whose path matches one of `files` or their temporaries."""
    out, regex = Path(out), _regex_any(files)
    found = []
    for folder in dict.fromkeys(pattern.rpartition("/")[0] for pattern in files):
        if not is_folder(out / folder):
            continue
        with os.scandir(out / folder) as entries:
            found += sorted(out / folder / e.name for e in entries
                            if regex.fullmatch(f"{folder}/{e.name}" if folder else e.name))
    return found


def remove(out: Path, files: tuple[str, ...], folders: tuple[str, ...] = ()) -> None:
    """Delete the files under `out` that match `files` (and their atomic_write temporaries), then the
    `folders` that are left empty. Nothing else is touched (check_out has made sure every match is a file)."""
    out = Path(out)
    for p in matching(out, files):
        if p.is_file() or p.is_symlink():
            p.unlink()
    for folder in folders:
        try:
            (out / folder).rmdir()
        except OSError:  # absent, or it holds the user's files
            pass


# ------------------------------------------------------------------ lock ---
_HELD: dict[str, list] = {}  # real path of a held run folder -> [its descriptor, how many holds]


def hold(run: Path) -> None:
    """Lock the run folder against other divgen processes (an exclusive flock on the folder itself, so no
    file is made), until release; InputError if another holds it. Nested holds in one process count."""
    key = os.path.realpath(run)
    if key in _HELD:
        _HELD[key][1] += 1
        return
    if fcntl is None:
        return
    fd = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(f"run directory {str(run)!r} is in use by another divgen process (training or resuming it); "
                         "wait until it ends") from None
    except OSError:  # a file system without locks (some network mounts): the run is written unlocked
        pass
    _HELD[key] = [fd, 1]


def release(run: Path) -> None:
    """Undo one hold of `run` (the lock goes with the last); nothing if this process does not hold it."""
    key = os.path.realpath(run)
    if key not in _HELD:
        return
    _HELD[key][1] -= 1
    if _HELD[key][1] == 0:
        os.close(_HELD.pop(key)[0])  # closing the descriptor releases the flock


def read_config(run: Path) -> dict:
    """config.json of a run directory, or InputError if `run` is not one or the file cannot be read."""
    run = Path(run)
    if lstat(run, "run directory") is not None and not is_folder(run):
        raise InputError(f"{str(run)!r} is not a divgen run directory (it is a file)")
    path = run / CONFIG
    st = lstat(path, "run directory")
    if st is None:
        raise InputError(f"{str(run)!r} is not a divgen run directory (no {CONFIG})")
    if not path.is_file():  # never opened: a named pipe would block
        raise InputError(f"{str(path)!r} is a {kind(st)}, not a file")
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"cannot read {str(path)!r}: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except ValueError as e:
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
    """Checkpoint files (named exactly step-<digits>.pt), oldest first; InputError if checkpoints/ is not a folder."""
    folder = Path(run) / CHECKPOINTS
    st = lstat(folder, "the run")
    if st is None:
        return []
    if not is_folder(folder):
        raise InputError(f"{str(folder)!r} is a {kind(st)}, where divgen keeps the run's checkpoints; move it away")
    with os.scandir(folder) as entries:
        found = [(int(m.group(1)), folder / e.name) for e in entries if (m := CHECKPOINT.fullmatch(e.name))]
    return [path for _, path in sorted(found)]


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

    def __init__(self, nets, opts: dict, stream, spec, world: parallel.World, config: dict | None = None):
        self.nets, self.opts, self.stream, self.spec, self.world = nets, opts, stream, spec, world
        self.config = config  # the resolved config the networks were trained with (config.check_recorded)
        self.on_first_save = None  # called once (rank 0) after the next checkpoint is written whole

    def save(self, out: Path, step: int, keep: int) -> int:
        """Write the checkpoint of `step` (rank 0; a collective, every rank contributes its local RNG)."""
        state = {
            "nets": self.nets.state_dict(),
            "optimizers": {side: opt.state_dict() for side, opt in self.opts.items()},
            "rng": self.stream.state(),
            "local_rngs": parallel.gather(self.world, self.stream.local.get_state()),
            "data": {"event_shape": list(self.spec.event_shape), "n_classes": self.spec.n_classes},
            "world_size": self.world.size,
            "config": self.config,
        }
        if self.world.main:
            save_checkpoint(out, step, state, keep)
            if self.on_first_save is not None:
                self.on_first_save()
        self.on_first_save = None
        parallel.barrier(self.world)
        return step

    def restore(self, out: Path) -> int:
        """Load the newest good checkpoint of `out`; returns its step."""
        s = latest_checkpoint(out, set_aside=self.world.main)
        parallel.barrier(self.world)
        if self.config is not None:
            check_recorded(s.get("config"), self.config, str(Path(out) / CONFIG))
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


def _kernel_norm_upgraded(saved: dict, current: dict) -> dict:
    """The networks of a checkpoint written before a conv critic's spectral normalization was the convolution's
    own norm (models.ConvOperatorNorm) kept torch's spectral_norm vectors `_u`, `_v` for each conv layer; they
    are dropped, and the layer's power iteration starts from the freshly built network's vector (it settles in a
    few training steps; sampling does not use the critic). Any other checkpoint is returned as it is."""
    out = dict(saved)
    for key in current:
        head = key[: -len("u")]
        if key.endswith(".parametrizations.weight.0.u") and key not in saved and head + "_u" in saved and head + "_v" in saved:
            del out[head + "_u"], out[head + "_v"]
            out[key] = current[key]
    return out


def load_networks(nets, state: dict, run: Path) -> None:
    """Load the checkpoint's networks; InputError naming the first tensor whose name or shape does not fit
    the networks that config.json builds (a checkpoint copied from another run)."""
    current = nets.state_dict()
    state = dict(state, nets=_kernel_norm_upgraded(state["nets"], current))
    want = {k: tuple(v.shape) for k, v in current.items()}
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
