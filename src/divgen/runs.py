"""The run directory: creation without clobbering, atomic checkpoints, the metrics log,
finishing a run and loading it back.

Layout (DESIGN.md): config.json, metrics.jsonl, checkpoints/step-XXXXXXXX.pt,
samples.npy, samples.png, losses.png, and params.json for a density model.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from divgen import jsonout, limits, parallel
from divgen.errors import InputError, one_line, warn

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
        for p in [*out.glob(pattern), *out.glob(f"{folder + '/' if folder else ''}.{name}.*.tmp")]:
            if p.is_file() or p.is_symlink():
                p.unlink()
    for folder in folders:
        try:
            (out / folder).rmdir()
        except OSError:  # absent, or it holds the user's files
            pass


def write_json(path: Path, obj) -> None:
    """Write strict JSON (non-finite numbers as null, see jsonout) atomically: temporary file, fsync, rename."""
    atomic_write(Path(path), lambda fh: fh.write(jsonout.dumps(obj, indent=2).encode() + b"\n"))


def read_config(run: Path) -> dict:
    """config.json of a run directory, or InputError if `run` is not one."""
    path = Path(run) / CONFIG
    if not path.is_file():
        raise InputError(f"{str(run)!r} is not a divgen run directory (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{str(path)!r} is not valid JSON: {e}") from None


def read_run_config(run: Path):
    """The resolved Config of a run directory; InputError naming config.json if it is wrong."""
    from divgen.config import Config, resolve

    where = str(Path(run) / CONFIG)
    raw = read_config(run)
    try:
        return resolve(Config.from_dict(raw, where))
    except InputError as e:
        raise InputError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


def read_metrics(run: Path) -> list[dict]:
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

    The file carries a SHA-256 digest of its contents, so that damage which
    still unzips and unpickles (a flipped bit in a tensor) is caught on load.
    """
    folder = Path(run) / CHECKPOINTS
    folder.mkdir(exist_ok=True)
    path = save_checkpoint_file(folder / f"step-{step:08d}.pt", {"step": step, **state})
    for old in checkpoints(run)[:-keep]:
        old.unlink()
    return path


def save_checkpoint_file(path: Path, state: dict) -> Path:
    """Write `state` (a dict with a "step") atomically with its SHA-256 digest; load_checkpoint reads it."""
    atomic_write(Path(path), lambda fh: torch.save({**state, "sha256": _digest(state)}, fh))
    return Path(path)


def checkpoints(run: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    return sorted((Path(run) / CHECKPOINTS).glob("step-*.pt"))


def load_checkpoint(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """Load one checkpoint with weights_only=True; InputError naming the file if it is damaged or unsafe,
    or if it lacks any of `keys`."""
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickles; the outcome is reported below
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, forbidden global: all mean "not a good checkpoint"
        text = str(e)
        if "Weights only load failed" in text or "weights_only" in text:
            reason = "it holds objects that a weights-only load refuses to build (possibly malicious); it was not executed"
        else:
            reason = one_line(next((line for line in text.splitlines() if line.strip()), type(e).__name__), 160)
        raise InputError(f"checkpoint {str(path)!r} is corrupt or unsafe: {reason}") from None
    if not isinstance(state, dict) or not {"step", "sha256", *keys} <= set(state):
        raise InputError(f"checkpoint {str(path)!r} is not a divgen checkpoint")
    digest = state.pop("sha256")
    if digest != _digest(state):
        raise InputError(f"checkpoint {str(path)!r} is corrupt: its contents do not match their SHA-256 digest")
    return state


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


def atomic_write(path: Path, write) -> None:
    """`write(fh)` into a temporary file beside `path`, fsync, rename: `path` is either whole or untouched."""
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


# ------------------------------------------------------------ metrics log ---
class MetricsLog:
    """metrics.jsonl always; a progress bar on a terminal, plain lines otherwise; TensorBoard if asked. Rank 0 only."""

    def __init__(self, out: Path, cfg, world: parallel.World, quiet: bool, start: int):
        from tqdm import tqdm

        self.cfg, self.active = cfg, world.main
        self.interactive = self.active and sys.stderr.isatty() and not quiet
        self.plain = self.active and not self.interactive and not quiet
        self.out, self.file, self.last = out, None, {}
        if self.active:
            truncate_metrics(out, start)  # rows after the checkpoint are redone
            self.file = open(out / METRICS, "a")
            rows = read_metrics(out)
            self.last = rows[-1] if rows else {}
        self.bar = tqdm(total=cfg.steps, initial=start, disable=not self.interactive, unit="step",
                        desc=f"{cfg.divergence} on {Path(cfg.data).name}")
        self.writer = None
        if self.active and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        self.t0, self.since = time.perf_counter(), start

    def row(self, step: int, values: dict, opts: dict) -> None:
        if not self.active:
            return
        now = time.perf_counter()
        row = {"step": step, **values, "steps_per_s": round((step - self.since) / max(now - self.t0, 1e-9), 2)}
        self.t0, self.since, self.last = now, step, row
        self.file.write(jsonout.dumps(row) + "\n")
        self.file.flush()
        if self.writer:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)
            for side, opt in opts.items():
                self.writer.add_scalar(f"lr_{side}", opt.param_groups[0]["lr"], step)
            self.writer.add_scalar("samples_per_s", row["steps_per_s"] * self.cfg.batch_size, step)
        if self.interactive:
            self.bar.set_postfix(critic=f"{row['critic_loss']:.3f}", gen=f"{row['generator_loss']:.3f}", est=f"{row['estimate']:.3f}")
        elif self.plain and (step % max(self.cfg.log_every, self.cfg.steps // 10) == 0 or step == self.cfg.steps):
            print(f"step {step}/{self.cfg.steps}  critic {row['critic_loss']:.4f}  generator {row['generator_loss']:.4f}  "
                  f"estimate {row['estimate']:.4f}  {row['steps_per_s']:.0f} steps/s", file=sys.stderr)

    def figure(self, step: int, data: torch.Tensor, samples) -> None:
        if self.writer:
            from divgen import plots

            fig = plots.new_figure(5, 4)
            plots.draw_samples(fig.add_subplot(), data.cpu(), samples())
            self.writer.add_figure("samples", fig, step)

    def rewind(self, step: int) -> None:
        """After a rollback to `step`: drop later metric rows and continue from there."""
        if self.active:
            self.file.close()
            truncate_metrics(self.out, step)
            self.file = open(self.out / METRICS, "a")
        self.bar.n = step
        self.t0, self.since = time.perf_counter(), step

    def note(self, text: str) -> None:
        if self.active:
            from tqdm import tqdm

            tqdm.write(f"divgen: warning: {text}", file=sys.stderr)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


# ------------------------------------------------------- finishing, loading ---
def finish(out: Path, cfg, ds, nets, recipe, quiet: bool = True) -> None:
    """params.json for a density model, the figures, and samples.npy (streamed), last: a run that has it is
    finished, so one whose figures failed is finished again by --resume."""
    from divgen import families, sample_files

    samples = families.draw(nets, min(cfg.n_samples, 2000), cfg.seed + 1)  # the first rows of samples.npy, for the figures
    model = families.density_model(nets)
    if model is not None:
        write_json(out / "params.json", model.params())
    critic_t = None
    critic = nets["critic"] if recipe.uses_critic else None
    # contours of T(x) need a critic of one x alone: a conditional or BiGAN critic also takes a label or a
    # code, and a PacGAN critic judges packs of samples
    if critic is not None and not (critic.n_classes or critic.latent_dim) and critic.pack == 1:

        def critic_t(points):  # T(x), what the critic certifies
            with torch.no_grad():
                return recipe.critic_t(critic(points.to(next(critic.parameters()).device))).cpu()
    if cfg.figures:
        _figures(out, cfg, ds, nets, samples, critic_t)
    sample_files.write(out / "samples.npy", nets, cfg.n_samples, cfg.seed + 1, (ds.dim,), quiet=quiet, flag="--n-samples")


def _figures(out: Path, cfg, ds, nets, samples, critic_t) -> None:
    from divgen import families, plots

    title = f"{cfg.divergence} · {cfg.model} on {Path(cfg.data).name}"
    per_class = None
    if nets["generator"].n_classes and ds.spec.image:
        present = sorted(set(ds.train_labels.tolist()))
        per_class = {k: families.draw(nets, 8, cfg.seed + 2 + k, label=k) for k in present}
    plots.samples_figure(out / "samples.png", ds.train, samples, density=ds.density, critic=critic_t, title=title,
                         event_shape=ds.event_shape, data_labels=ds.train_labels, samples_by_class=per_class)
    plots.losses_figure(out / "losses.png", read_metrics(out), title=f"{cfg.divergence} on {Path(cfg.data).name}")


def encode(trained, x, y, event_shape) -> torch.Tensor:
    """Codes (N, k) of samples x (N, d) by a trained model's encoder: E(x) for a BiGAN, the
    posterior mean for a VAE; a conditional encoder needs the labels y."""
    nets, cfg = trained.nets, trained.config
    if "encoder" not in nets:
        raise InputError(f"run {str(trained.run)!r} ({cfg.model}) has no encoder; train --model bigan, vae or cvae")
    state = latest_checkpoint(trained.run)
    expected = tuple(state["data"]["event_shape"])
    if tuple(event_shape) != expected:
        raise InputError(f"samples of shape {tuple(event_shape)}, but the model was trained on {expected}")
    encoder = nets["encoder"]
    labels = None
    if encoder.n_classes:
        if y is None:
            raise InputError(f"--model {cfg.model} encodes (x, y): give a .npz with the labels 'y'")
        if int(y.max()) >= encoder.n_classes:
            raise InputError(f"labels up to {int(y.max())}, but the model knows {encoder.n_classes} classes")
        labels = torch.as_tensor(y)
    x = torch.as_tensor(x)
    with torch.no_grad():
        return torch.cat([encoder.code(x[i : i + 4096], None if labels is None else labels[i : i + 4096])
                          for i in range(0, len(x), 4096)])


def load_run(run: Path, checkpoint: Path | None = None):
    """A finished or running run directory as a TrainResult: its config, last metrics, and networks
    from its newest good checkpoint (or from `checkpoint`), on the CPU in eval mode."""
    from divgen import families, recipes
    from divgen.data import Spec
    from divgen.train import TrainResult

    run = Path(run)
    cfg = read_run_config(run)
    state = latest_checkpoint(run) if checkpoint is None else load_checkpoint(checkpoint, CHECKPOINT_KEYS)
    spec = Spec(tuple(state["data"]["event_shape"]), state["data"]["n_classes"])
    x = torch.zeros(2, spec.dim)  # the networks' statistics and class frequencies come from the checkpoint
    family, recipe = families.FAMILIES[cfg.model], recipes.build(cfg, x)
    # the networks and the checkpoint's copy of them, before either is built
    sizes = limits.network_sizes(cfg, spec.event_shape, families.network_count(cfg, family, recipe))
    limits.require([(flag, 2 * limits.FLOAT32 * n) for flag, n in sizes.items()], limits.memory_available())
    nets = family.networks(cfg, spec, x, None, recipe, cfg.seed)
    load_networks(nets, state, run)
    rows = read_metrics(run)
    return TrainResult(run, cfg, rows[-1] if rows else {}, nets.eval(), spec)
