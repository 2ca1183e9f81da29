"""One readable training loop: critic steps, a generator step, log, checkpoint.

What is trained and how comes from two tables: the model family (families.py:
the networks, what the critic sees) and the recipe of the divergence
(recipes.py: the losses, the penalty, the constraint). The loop composes them
and names neither.

    result = train(Config(data="ring8", divergence="js"), "runs/a")
    result.metrics["estimate"], result.nets["generator"]
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from divgen import config as configs
from divgen import data as datasets
from divgen import data_files, families, files, limits, logs, parallel, recipes, runs
from divgen.config import Config
from divgen.data import Batch
from divgen.errors import InputError, Interrupted, TrainingDiverged, warn
from divgen.families import CRITIC
from divgen.models import critic_pair
from divgen.results import TrainResult, finish, read_run_config

MAX_ROLLBACKS = 3


def train(cfg: Config, out: Path | str, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> TrainResult:
    """Train cfg.model on cfg.data by minimizing cfg.divergence in the run directory `out`.

    `resume` continues `out` from its newest good checkpoint; settings other than
    config.RESUMABLE must match its config.json. Under torchrun every process
    calls this; they train one model, averaging gradients, and only rank 0 writes.

    Every request is checked before anything is allocated or written: the
    settings (config.validate), the data (and, for a file, that it is the one
    the run was trained on), the memory and disk the run needs (limits.py), and
    on resume that --steps goes past the run's step. A run interrupted before
    its step-0 checkpoint starts from step 0 on resume.
    """
    if resume and overwrite:
        raise InputError("--resume continues a run and --overwrite replaces it; pass one of them")
    out = Path(out)
    saved = read_run_config(out) if resume else None  # its own errors name config.json, not a flag
    configs.resolve(cfg)  # every setting checked before the data are read
    # the run folder too: every file it will write (that the data is none of them: once it is read); by the
    # process that writes it, as the others may look once it has begun
    if parallel.launched_main() and resume:
        runs.check_run(out)
    elif parallel.launched_main():
        runs.check_out(out, overwrite, resumable=True)
    ds = datasets.load(cfg.data, n=cfg.n_data, seed=cfg.seed, holdout=cfg.holdout)  # refuses a toy set too large to draw
    cfg = configs.resolve(cfg, ds)
    if resume:
        cfg = replace(cfg, data_sha256=cfg.data_sha256 or saved.data_sha256)  # the file the run was trained on
        configs.check_resume(saved, cfg, str(out))
    world, device = parallel.setup(resolve_device(cfg.device))
    try:
        if resume and world.main:  # a new run's folder is held by runs.prepare, once it exists
            runs.hold(out)  # until the run ends: a second divgen process is refused
            runs.check_run(out, cfg.data)  # again, now that no other process writes there
        with _process_settings():
            return _train(cfg, ds, out, world, device, resume, overwrite, quiet)
    finally:
        if world.main:
            runs.release(out)
        parallel.teardown(world)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: no MPS device is available")
    return torch.device(name)


@contextlib.contextmanager
def _process_settings():
    """Flush denormal floats while training, and restore the caller's setting afterwards.

    Denormals (e.g. exp of a very negative critic output in the KL conjugate)
    make CPU arithmetic several times slower and carry no signal. torch has no
    getter for the flag, so it is read off arithmetic: with flushing on, a
    denormal times one is zero.
    """
    was_on = bool((torch.tensor([1e-40]) * 1.0 == 0).item())
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


# ----------------------------------------------------------------- pieces ---
class Draws:
    """Random draws of one kind (batch indices, noise) made `chunk` steps at a time in one kernel.

    Each kind has its own generator. The generator's state at the start of the
    current chunk and the offset into it are the resumable state: restoring
    them redraws the same chunk and continues bit for bit.
    """

    def __init__(self, draw: Callable[[torch.Generator, int], torch.Tensor], seed: int, device, chunk: int):
        self.rng = torch.Generator(device).manual_seed(seed)
        self.draw, self.chunk = draw, chunk
        self.start, self.buf, self.i = self.rng.get_state(), None, chunk

    def next(self) -> torch.Tensor:
        if self.i == self.chunk:
            self.start, self.buf, self.i = self.rng.get_state(), self.draw(self.rng, self.chunk), 0
        self.i += 1
        return self.buf[self.i - 1]

    def state(self) -> dict:
        return {"start": self.start, "offset": self.i}

    def set_state(self, s: dict) -> None:
        self.rng.set_state(s["start"])
        self.start, self.i = s["start"], s["offset"]
        self.buf = self.draw(self.rng, self.chunk) if self.i < self.chunk else None


class Stream:
    """The batches and the noise. The global stream is the same on every rank and each
    rank computes on its own slice of it, so K processes see exactly the batches of one
    process; rank-local randomness (gradient-penalty interpolates) has its own generator."""

    CHUNK_BYTES = 4 << 20  # random numbers drawn ahead, per kind

    def __init__(self, ds: datasets.Dataset, cfg: Config, noise_dim: int, world: parallel.World, device):
        self.x = ds.train.to(device)
        self.y = None if ds.train_labels is None else ds.train_labels.to(device)
        n, b = len(self.x), cfg.batch_size
        chunk = max(1, min(64, self.CHUNK_BYTES // (4 * b * max(noise_dim, 2))))
        self.indices = Draws(lambda g, k: torch.randint(n, (k, b), generator=g, device=device), cfg.seed, device, chunk)
        self.noises = Draws(lambda g, k: torch.randn(k, b, noise_dim, generator=g, device=device), cfg.seed + 1, device, chunk)
        self.local = torch.Generator(device).manual_seed(cfg.seed + 2 + world.rank)
        share = b // world.size
        self.mine = slice(world.rank * share, (world.rank + 1) * share) if world.size > 1 else None
        self.device = device

    def batch(self) -> Batch:  # (B/K, d) rows of the training set, drawn with replacement
        i = self._slice(self.indices.next())
        return Batch(self.x[i], None if self.y is None else self.y[i])

    def noise(self) -> torch.Tensor:  # (B/K, noise_dim)
        return self._slice(self.noises.next())

    def _slice(self, t: torch.Tensor) -> torch.Tensor:  # this rank's share of a global draw
        return t if self.mine is None else t[self.mine]

    def state(self) -> dict:
        return {"indices": self.indices.state(), "noise": self.noises.state()}

    def set_state(self, s: dict) -> None:
        self.indices.set_state(s["indices"])
        self.noises.set_state(s["noise"])


class Faults:
    """Non-finite losses, kept as device tensors every step (no host sync, no kernel) and read at boundaries."""

    def __init__(self):
        self.losses: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, critic loss, generator loss)

    def record(self, step: int, loss_c: torch.Tensor, loss_g: torch.Tensor) -> None:
        self.losses.append((step, loss_c, loss_g))  # their graphs are already freed by backward()

    def check(self, world: parallel.World, nets: nn.ModuleDict | None) -> tuple[str, int] | None:
        """(what, step) of the first non-finite loss since the last check, or of a parameter (if `nets`)."""
        if not self.losses:
            return None
        steps = torch.tensor([s for s, _, _ in self.losses])
        with torch.no_grad():
            bad = ~torch.isfinite(torch.stack([torch.stack([c, g]) for _, c, g in self.losses])).cpu()  # (n, 2)
        self.losses.clear()
        first = torch.nonzero(bad.any(1))
        code = 0 if len(first) == 0 else int(steps[first[0, 0]]) * 4 + (1 if bad[first[0, 0], 0] else 2)
        code = int(parallel.maximum(world, torch.tensor(code)))  # every rank takes the same branch
        if code:
            return ("the critic loss" if code % 4 == 1 else "the generator loss"), code // 4
        if nets is not None:
            for name, net in nets.items():
                if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
                    return f"a {name} parameter", -1
        return None

class StopSignal:
    """Turns SIGINT/SIGTERM into a flag that the loop reads at the end of a step."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self, world: parallel.World) -> bool:
        """Whether any process was asked to stop (a collective under torchrun)."""
        return bool(parallel.maximum(world, torch.tensor(int(self.requested)))) if world.size > 1 else self.requested

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Average:
    """The exponential moving average of the generator's weights (Yazıcı et al. 2019).

    The decay ramps up as min(decay, (1 + t)/(10 + t)), so that the first
    steps' random weights do not linger in the average of a short run.
    """

    def __init__(self, nets: nn.ModuleDict, decay: float):
        self.average = list(nets[families.EMA].parameters())
        self.live = list(nets["generator"].parameters())
        self.decay = decay

    def update(self, step: int) -> None:
        with torch.no_grad():
            torch._foreach_lerp_(self.average, self.live, 1 - min(self.decay, (1 + step) / (10 + step)))


def compiled(nets: nn.ModuleDict, device: torch.device) -> dict[str, nn.Module] | nn.ModuleDict:
    """The networks as the loop calls them with --compile: torch.compile wrappers that share the parameters
    of `nets`, whose state dicts (the checkpoints) stay as they are. `nets` itself, after one warning line,
    where inductor cannot compile: no C++ compiler for the CPU, no Triton for CUDA."""
    try:
        if device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()  # raises when none is installed
        elif device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                raise RuntimeError("Triton is not installed")
    except Exception as e:  # torch's messages differ by version; the point is the same
        warn(f"--compile: torch.compile cannot compile for {device.type} here ({e}); training without it")
        return nets
    return {name: torch.compile(net, dynamic=False) for name, net in nets.items()}  # a run's shapes never change


def _detached(views: tuple) -> tuple:
    return tuple(t.detach() for t in views)


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list, world: parallel.World, only: bool) -> None:
    """One optimizer step on `params`. `only`: no other network gets a gradient (nor the work of
    computing one), for the generator step, whose loss passes through the critic. The critic step
    needs no such restriction (its generated samples carry no graph), and it costs ~7% of a small step."""
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=params if only else None)
    parallel.average_gradients(world, params)
    opt.step()


# --------------------------------------------------------------- the run ---
@dataclass
class Session:
    """What the loop works with: built by _train, read and advanced (step, rollbacks) by _loop."""

    cfg: Config
    out: Path
    nets: nn.ModuleDict
    recipe: recipes.Recipe
    view: families.View | None  # what the divergence compares; None for a family's own loss alone
    opts: dict  # side -> optimizer
    sides: dict  # side -> parameters
    stream: Stream
    ckpt: runs.CheckpointState
    log: logs.MetricsLog
    stop: StopSignal
    world: parallel.World
    step: int
    rollbacks: int = 0


def _train(cfg: Config, ds: datasets.Dataset, out: Path, world: parallel.World, device, resume: bool, overwrite: bool,
           quiet: bool) -> TrainResult:
    if cfg.batch_size % world.size:
        raise InputError(f"--batch-size {cfg.batch_size} (the global batch) must be divisible by the {world.size} processes")
    if (cfg.batch_size // world.size) % cfg.pack:  # each process packs its own share of the batch
        raise InputError(f"--pack {cfg.pack}: must divide each of the {world.size} processes' batch of "
                         f"{cfg.batch_size // world.size} (--batch-size {cfg.batch_size})")
    cfg = replace(cfg, data_sha256=data_files.fingerprint(cfg.data, cfg.data_sha256))  # refuses a changed file
    recipe = recipes.build(cfg, ds.train)
    count, k = families.network_count(cfg, recipe), families.label_count(cfg, ds.spec)
    limits.require(limits.training_memory(cfg, ds.spec.event_shape, len(ds.train) + len(ds.holdout), count, k),
                   limits.memory_available(device))
    limits.require_disk(limits.training_disk(cfg, ds.spec.event_shape, count, k), out / runs.CONFIG)
    start = _resume_point(cfg, out) if resume else None
    nets = families.networks(cfg, ds.spec, ds.train, ds.train_labels, recipe, cfg.seed).to(device)
    sides = {"generator": families.generator_side(nets), "critic": list(nets[CRITIC].parameters()) if recipe.uses_critic else []}
    lrs = {"generator": cfg.lr_generator, "critic": cfg.lr_critic}
    # fused: one kernel per optimizer step instead of several per parameter tensor
    opts = {side: torch.optim.Adam(p, lr=lrs[side], betas=(cfg.adam_beta1, 0.999), fused=True) for side, p in sides.items() if p}
    stream = Stream(ds, cfg, nets["generator"].noise_dim, world, device)
    ckpt = runs.CheckpointState(nets, opts, stream, ds.spec, world, configs.recorded(cfg))
    if not resume:  # rank 0 creates the directory; every rank learns whether that failed
        error = None
        if world.main:
            try:
                runs.prepare(out, overwrite, resumable=True, data=cfg.data, lock=True)
                files.write_json(out / runs.CONFIG, cfg.to_dict())
            except InputError as e:
                error = str(e)
        if error := parallel.broadcast(world, error):
            raise InputError(error)
    stop = StopSignal()  # from here on, Ctrl-C ends with a checkpoint at a step boundary
    try:
        # a run stopped before its step-0 checkpoint (start None) starts from step 0
        step = ckpt.restore(out) if start is not None else ckpt.save(out, 0, cfg.keep_checkpoints)
        if resume:  # once the run has trained further: its new step count, and the old results go stale
            ckpt.on_first_save = lambda: (runs.remove(out, runs.RESULTS), files.write_json(out / runs.CONFIG, cfg.to_dict()))
        log = logs.MetricsLog(out, cfg, world, quiet, start=step)
    except BaseException:
        stop.restore()
        raise
    try:
        _loop(Session(cfg, out, nets, recipe, families.view(cfg), opts, sides, stream, ckpt, log, stop, world, step))
    finally:
        stop.restore()
        log.close()
    nets.eval()
    if world.main:
        finish(out, cfg, ds, nets, recipe, quiet)
    parallel.barrier(world)
    return TrainResult(out, cfg, log.last, nets, ds.spec)


def _resume_point(cfg: Config, out: Path) -> int | None:
    """The step a resumed run continues from, None if it never wrote a checkpoint (it starts from step 0).
    InputError if --steps leaves nothing to do: at or below the run's step, for a finished run."""
    if not runs.checkpoints(out):
        return None
    step = runs.latest_checkpoint(out, warn_damaged=False)["step"]
    if step > cfg.steps or (step == cfg.steps and (out / "samples.npy").is_file()):
        raise InputError(f"--steps {cfg.steps}: the run in {str(out)!r} is already at step {step}; "
                         "pass a larger --steps to train it further")
    return step


class Draw(NamedTuple):
    """One step's draw: a data batch, the noise, and the views of them that the divergence compares."""

    batch: Batch
    z: torch.Tensor
    views: families.Pair | None


def _loop(s: Session) -> None:
    """Critic steps, a generator step, log, checkpoint; until cfg.steps, a fault, or a stop request."""
    cfg = s.cfg
    run = compiled(s.nets, s.stream.device) if cfg.compile else s.nets  # the networks the steps call
    amp = torch.autocast("cuda", torch.bfloat16) if cfg.bf16 and s.stream.device.type == "cuda" else contextlib.nullcontext()
    faults, ema = Faults(), Average(s.nets, cfg.ema) if cfg.ema else None
    zero = torch.zeros((), device=s.stream.device)  # the critic's loss of a run without a critic
    while s.step < cfg.steps:
        s.step += 1
        if cfg.lr_schedule != "constant":
            _schedule(s)
        draw, loss_c, bound = _critic_steps(s, run, amp, zero)
        with amp:  # the generator step, on the last critic step's draw: gradients reach the generator side only
            loss_g = _generator_loss(s.recipe, s.view, run, draw)
        _update(s.opts["generator"], loss_g, s.sides["generator"], s.world, only=True)
        if ema is not None:
            ema.update(s.step)
        faults.record(s.step, loss_c, loss_g)
        at_checkpoint = s.step % cfg.checkpoint_every == 0 or s.step == cfg.steps
        interrupted = s.stop.agreed(s.world)
        s.log.advance()
        if not (at_checkpoint or interrupted or s.step % cfg.log_every == 0):
            continue
        fault = faults.check(s.world, s.nets if at_checkpoint else None)
        if fault:
            _roll_back(s, *fault)
            continue
        if _logged(s):
            estimate = loss_g if bound is None else -bound  # the critic's bound, else the sample loss itself
            values = torch.stack([loss_c.detach().float(), loss_g.detach().float(), estimate.detach().float()])
            s.log.row(s.step, dict(zip(("critic_loss", "generator_loss", "estimate"), parallel.mean(s.world, values).tolist())),
                      s.opts)
        if interrupted:
            s.ckpt.save(s.out, s.step, cfg.keep_checkpoints)
            raise Interrupted(f"stopped at step {s.step} with a checkpoint; continue with: divgen train --resume {s.out}")
        if at_checkpoint:
            s.ckpt.save(s.out, s.step, cfg.keep_checkpoints)
            s.log.figure(s.step, s.stream.x, lambda: families.draw(s.nets, 1000, cfg.seed + 1))


def _logged(s: Session) -> bool:
    """Whether this step writes a row of the training log."""
    return s.step % s.cfg.log_every == 0 or s.step == s.cfg.steps


def _schedule(s: Session) -> None:
    """Set this step's learning rates: --lr-schedule linear falls from the base rate at step 1 to 0 after the
    last step. The base rate is kept in the optimizer's state ("initial_lr", as torch's schedulers keep it), so
    that a rollback's halving of it is checkpointed and survives a resume."""
    factor = 1 - (s.step - 1) / s.cfg.steps
    for opt in s.opts.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


def _critic_steps(s: Session, run, amp, zero: torch.Tensor) -> tuple[Draw, torch.Tensor, torch.Tensor | None]:
    """The critic's steps of one generator step: (the last draw, the critic's loss, its loss without the penalty,
    None without a critic). Each step draws a batch and noise; the last draw keeps its graph for the generator
    step (generated once, as in PyTorch's DCGAN example), detached for the critic. Without a critic, one draw."""
    adversarial = s.recipe.adversarial
    critic = run[CRITIC] if adversarial is not None else None
    n = s.cfg.critic_steps if critic is not None else 0
    loss_c = bound = zero
    for i in range(max(n, 1)):
        batch, z = s.stream.batch(), s.stream.noise()
        with torch.set_grad_enabled(i == max(n, 1) - 1), amp:
            views = None if s.view is None else s.view.pair(run, batch, z)
        if critic is None:
            return Draw(batch, z, views), loss_c, None
        real, fake = _detached(views.real), _detached(views.fake)
        with amp:
            v = critic_pair(critic, real, fake)
            loss_c = bound = adversarial.critic_loss(*v)
            if adversarial.penalty is not None and adversarial.penalty.due((s.step - 1) * n + i):
                loss_c = loss_c + adversarial.penalty(critic, real, fake, s.stream.local)
        _update(s.opts["critic"], loss_c, s.sides["critic"], s.world, only=False)
        if adversarial.constrain is not None:
            adversarial.constrain(critic)
    if adversarial.estimate_loss is not None and _logged(s):  # the last step's outputs, as the critic's own loss
        with torch.no_grad():
            bound = adversarial.estimate_loss(*v)
    return Draw(batch, z, views), loss_c, bound


def _generator_loss(recipe: recipes.Recipe, view: families.View | None, run, draw: Draw) -> torch.Tensor:
    """The generator side's loss: the adversarial term on the critic's outputs, plus every sample loss."""
    losses = [term(run, draw) for term in recipe.sample_losses]
    if recipe.adversarial is not None:
        critic = run[CRITIC]
        v_real = critic(*draw.views.real) if view.real_moves else None
        losses.insert(0, recipe.adversarial.generator_loss(v_real, critic(*draw.views.fake)))
    return losses[0] if len(losses) == 1 else sum(losses[1:], losses[0])


def _roll_back(s: Session, what: str, failed: int) -> None:
    """A non-finite loss or parameter: stop (TrainingDiverged), or with --on-nan rollback continue from the last
    good checkpoint with halved learning rates, at most MAX_ROLLBACKS times."""
    failed = s.step if failed < 0 else failed
    if s.cfg.on_nan != "rollback" or s.rollbacks == MAX_ROLLBACKS:
        raise TrainingDiverged(f"{what} became non-finite at step {failed} (divergence {s.cfg.divergence}); "
                               f"the last good checkpoint in {s.out / runs.CHECKPOINTS} is kept; "
                               "try lower learning rates or --on-nan rollback")
    s.rollbacks += 1
    s.step = s.ckpt.restore(s.out)
    for opt in s.opts.values():
        for group in opt.param_groups:
            group["lr"] /= 2
            if "initial_lr" in group:  # a schedule's base rate (_schedule)
                group["initial_lr"] /= 2
    s.log.rewind(s.step)
    s.log.note(f"{what} became non-finite at step {failed}; rolled back to step {s.step} "
               f"and halved the learning rates (rollback {s.rollbacks} of {MAX_ROLLBACKS})")
