"""The run directory: creation without clobbering, atomic checkpoints, the metrics log,
finishing a run and loading it back.

Layout (DESIGN.md): config.json, metrics.jsonl, checkpoints/step-XXXXXXXX.pt,
samples.npy, samples.png, losses.png, and params.json for a density model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from divgen import parallel
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
    path = save_checkpoint_file(folder / f"step-{step:08d}.pt", {"step": step, **state})
    for old in checkpoints(run)[:-keep]:
        old.unlink()
    return path


def save_checkpoint_file(path: Path, state: dict) -> Path:
    """Write `state` (a dict with a "step") atomically with its SHA-256 digest; load_checkpoint reads it."""
    _atomic_write(Path(path), lambda fh: torch.save({**state, "sha256": _digest(state)}, fh))
    return Path(path)


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
            opt.load_state_dict(s["optimizers"][side])
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
    try:
        nets.load_state_dict(state["nets"])
    except (RuntimeError, KeyError) as e:
        first = str(e).replace("\n", " ").replace("\t", " ")
        raise InputError(f"checkpoint in {str(run)!r} does not match its config.json: {' '.join(first.split())[:300]}") from None


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
        self.file.write(json.dumps(row) + "\n")
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
def finish(out: Path, cfg, ds, nets, recipe) -> None:
    """samples.npy, the figures, and params.json for a density model."""
    import numpy as np

    from divgen import families

    samples = families.draw(nets, cfg.n_samples, cfg.seed + 1)
    np.save(out / "samples.npy", samples.numpy())
    model = families.density_model(nets)
    if model is not None:
        write_json(out / "params.json", model.params())
    critic_t = None
    if recipe.uses_critic:
        critic = nets["critic"]

        def critic_t(points):  # T(x), what the critic certifies
            with torch.no_grad():
                return recipe.critic_t(critic(points.to(next(critic.parameters()).device))).cpu()
    if not cfg.figures:
        return
    from divgen import plots

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
    from divgen.config import Config, resolve
    from divgen.data import Spec
    from divgen.train import TrainResult

    run = Path(run)
    cfg = resolve(Config.from_dict(read_config(run), str(run / CONFIG)))
    state = latest_checkpoint(run) if checkpoint is None else load_checkpoint(checkpoint)
    spec = Spec(tuple(state["data"]["event_shape"]), state["data"]["n_classes"])
    x = torch.zeros(2, spec.dim)  # the networks' statistics and class frequencies come from the checkpoint
    nets = families.FAMILIES[cfg.model].networks(cfg, spec, x, None, recipes.build(cfg, x), cfg.seed)
    load_networks(nets, state, run)
    rows = read_metrics(run)
    return TrainResult(run, cfg, rows[-1] if rows else {}, nets.eval())
