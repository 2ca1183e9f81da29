"""One readable training loop: critic steps, a generator step, log, checkpoint.

The objective is composed from the pure losses of objectives.py according to
the divergence: the f-GAN bound with the divergence's own conjugate and output
activation, a Lipschitz critic for `wasserstein`, or a kernel for `mmd`.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from divgen import data as datasets
from divgen import divergences, objectives, parallel, plots, runs
from divgen.errors import InputError
from divgen.models import Critic, GaussianModel, MLPGenerator, Standardize, critic_pair


def option(default, help: str, choices=None):
    """A Config field whose one-line help becomes its `--help` text."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Config:
    """Everything that defines a training run; saved resolved as config.json."""

    data: str = option("ring8", f"built-in data set ({', '.join(datasets.BUILTIN)}) or a .npy/.npz/.csv file")
    divergence: str = option("js", f"divergence to minimize: {', '.join(divergences.NAMES)}")
    model: str = option("mlp", "generator: an MLP network, or a Gaussian N(μ, LLᵀ)", ("mlp", "gaussian"))
    generator_loss: str = option("nonsaturating", "f-GAN generator loss: saddle objective or −E[g_f(V(G(z)))]", objectives.GENERATOR_LOSSES)
    lipschitz: str = option("gp", "how a wasserstein critic is kept 1-Lipschitz: clipping, gradient penalty, spectral norm", ("clip", "gp", "sn"))
    steps: int = option(3000, "generator steps")
    critic_steps: int = option(1, "critic steps per generator step")
    batch_size: int = option(256, "samples per batch, real and generated")
    lr_generator: float = option(2e-4, "Adam learning rate of the generator")
    lr_critic: float = option(2e-4, "Adam learning rate of the critic")
    width: int = option(128, "units per hidden layer, generator and critic")
    depth: int = option(2, "hidden layers, generator and critic")
    init_std: float = option(1.0, "Gaussian model: initial standard deviation, as a multiple of the data's")
    noise_dim: int = option(8, "dimension of the generator's Gaussian noise z (the Gaussian model uses the data dimension)")
    gp_weight: float = option(10.0, "gradient-penalty weight for --lipschitz gp")
    clip: float = option(0.01, "weight-clipping bound for --lipschitz clip")
    n_data: int = option(10_000, "training samples drawn from a built-in toy density")
    holdout: float = option(0.2, "fraction of the data kept aside, never trained on, for `divgen evaluate`")
    seed: int = option(0, "random seed: same seed, same numbers on CPU")
    device: str = option("cpu", "cpu, cuda, mps, or auto (cuda if available)", ("auto", "cpu", "cuda", "mps"))
    log_every: int = option(50, "steps between lines of metrics.jsonl")
    checkpoint_every: int = option(500, "steps between checkpoints")
    keep_checkpoints: int = option(3, "checkpoints kept on disk")
    n_samples: int = option(10_000, "samples written to samples.npy at the end")
    on_nan: str = option("stop", "on a NaN/inf loss or parameter: stop, or roll back to the last checkpoint with halved learning rates (≤ 3 times)", ("stop", "rollback"))
    tensorboard: bool = option(False, "also write TensorBoard event files to RUN/tensorboard")
    bf16: bool = option(False, "bfloat16 autocast for the networks on CUDA")

    def validate(self) -> "Config":
        divergences.check_name(self.divergence)
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise InputError(f"--{f.name.replace('_', '-')} {getattr(self, f.name)!r} is not one of {', '.join(choices)}")
        positive = ("steps", "batch_size", "width", "depth", "noise_dim", "n_data", "log_every", "checkpoint_every", "keep_checkpoints", "n_samples")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.critic_steps < 0 or not (self.lr_critic > 0 and self.lr_generator > 0):
            raise InputError("--critic-steps must be ≥ 0 and learning rates > 0")
        if not self.init_std > 0:
            raise InputError("--init-std must be positive")
        if not 0 <= self.holdout < 1:
            raise InputError("--holdout must lie in [0, 1)")
        return self


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: no MPS device is available")
    return torch.device(name)


# ---------------------------------------------------------------- building ---
def build_models(cfg: Config, x_train: torch.Tensor) -> tuple[nn.Module, Critic]:
    """Generator and critic for data like `x_train` (N, d); both in data units."""
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    if cfg.model == "gaussian":
        # start at a random data point with the data's spread: not at the data mean,
        # which is a saddle point for mode-seeking divergences on symmetric data
        start = x_train[torch.randint(len(x_train), (1,))][0]
        generator: nn.Module = GaussianModel(start, std * cfg.init_std)
    else:
        generator = MLPGenerator(cfg.noise_dim, Standardize(mean, std), cfg.width, cfg.depth)
    critic = Critic(Standardize(mean, std), cfg.width, cfg.depth, spectral_norm=cfg.divergence == "wasserstein" and cfg.lipschitz == "sn")
    return generator, critic


@dataclass(frozen=True)
class Objective:
    """The critic's loss (with the divergence estimate it certifies) and the generator's loss."""

    critic_loss: Callable | None  # (critic, x_real, x_fake, rng) -> (loss, estimate)
    generator_loss: Callable  # (critic, x_real, x_fake) -> loss


def make_objective(cfg: Config, x_train: torch.Tensor, critic_module: nn.Module | None = None) -> Objective:
    """`critic_module` is the critic without a DistributedDataParallel wrapper, for the gradient penalty."""
    if cfg.divergence == "mmd":  # no critic: the kernel two-sample statistic is the loss
        h = objectives.median_bandwidth(x_train[:1000], x_train[1000:2000])  # the second may be empty
        return Objective(None, lambda critic, x_real, x_fake: objectives.mmd2_unbiased(x_real, x_fake, h))

    if cfg.divergence == "wasserstein":
        def critic_loss(critic, x_real, x_fake, rng):
            v_real, v_fake = critic_pair(critic, x_real, x_fake)
            loss = objectives.wasserstein_critic_loss(v_real, v_fake)
            estimate = -loss.detach()
            if cfg.lipschitz == "gp":
                loss = loss + cfg.gp_weight * objectives.gradient_penalty(critic if critic_module is None else critic_module, x_real, x_fake, rng)
            return loss, estimate

        return Objective(critic_loss, lambda critic, x_real, x_fake: objectives.wasserstein_generator_loss(critic(x_fake)))

    div = divergences.get(cfg.divergence)

    def fgan_critic_loss(critic, x_real, x_fake, rng):
        v_real, v_fake = critic_pair(critic, x_real, x_fake)
        loss = objectives.fgan_critic_loss(div, v_real, v_fake)
        return loss, -loss.detach()

    return Objective(
        fgan_critic_loss,
        lambda critic, x_real, x_fake: objectives.fgan_generator_loss(div, critic(x_fake), cfg.generator_loss),
    )


# ------------------------------------------------------------------ the loop ---
class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN or infinite (and no rollback was left)."""


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM: a final checkpoint was written; the message says how to resume."""


MAX_ROLLBACKS = 3


def train(cfg: Config, out: Path, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> Path:
    """Train a generator on cfg.data by minimizing cfg.divergence; returns the run directory.

    Under torchrun every process calls this; they train one model with
    DistributedDataParallel and only rank 0 writes files.
    """
    cfg.validate()
    world, device = parallel.setup(resolve_device(cfg.device))
    try:
        return _train(cfg, Path(out), world, device, resume, overwrite, quiet)
    finally:
        parallel.teardown(world)


def _train(cfg: Config, out: Path, world: parallel.World, device: torch.device, resume: bool, overwrite: bool, quiet: bool) -> Path:
    if cfg.batch_size % world.size:
        raise InputError(f"--batch-size {cfg.batch_size} (the global batch) must be divisible by the {world.size} processes")
    ds = datasets.load(cfg.data, n=cfg.n_data, seed=cfg.seed, holdout=cfg.holdout)
    if not resume:  # rank 0 creates the directory; every rank learns whether that failed
        error = None
        if world.main:
            try:
                runs.prepare(out, overwrite)
                runs.write_json(out / runs.CONFIG, asdict(cfg))
            except InputError as e:
                error = str(e)
        if error := parallel.broadcast(world, error):
            raise InputError(error)

    # Denormal floats (e.g. exp of a very negative critic output in the KL
    # conjugate) make CPU arithmetic several times slower and carry no signal.
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)  # network initialization, identical on every rank
    gen_module, critic_module = build_models(cfg, ds.train)
    gen_module, critic_module = gen_module.to(device), critic_module.to(device)
    ddp = (lambda m: DistributedDataParallel(m)) if world.size > 1 else (lambda m: m)
    generator, critic = ddp(gen_module), ddp(critic_module)
    objective = make_objective(cfg, ds.train, critic_module)
    # fused: one kernel per optimizer step instead of several per parameter tensor
    opt_g = torch.optim.Adam(gen_module.parameters(), lr=cfg.lr_generator, betas=(0.5, 0.999), fused=True)
    opt_c = torch.optim.Adam(critic_module.parameters(), lr=cfg.lr_critic, betas=(0.5, 0.999), fused=True)
    x = ds.train.to(device)
    # The global batch stream (indices, noise) is the same on every rank, and each
    # rank computes on its own slice of it: K processes see exactly the batches of
    # one process, so results match a single-process run. Rank-local randomness
    # (gradient-penalty interpolates) has a stream of its own per rank.
    rng = torch.Generator(device).manual_seed(cfg.seed)
    local_rng = torch.Generator(device).manual_seed(cfg.seed + 1 + world.rank)
    share = cfg.batch_size // world.size
    mine = slice(world.rank * share, (world.rank + 1) * share)
    critic_steps = cfg.critic_steps if objective.critic_loss else 0
    bf16 = cfg.bf16 and device.type == "cuda"
    if cfg.bf16 and not bf16 and world.main:
        print("divgen: warning: --bf16 applies on CUDA only; training in float32", file=sys.stderr)

    def batch():  # (B/K, d) rows of the training set, with replacement
        return x[torch.randint(len(x), (cfg.batch_size,), generator=rng, device=device)[mine]]

    def noise():  # (B/K, noise_dim)
        return torch.randn(cfg.batch_size, gen_module.noise_dim, generator=rng, device=device)[mine]

    def state() -> dict:  # everything needed to continue bit for bit
        return {
            "generator": gen_module.state_dict(), "critic": critic_module.state_dict(),
            "opt_generator": opt_g.state_dict(), "opt_critic": opt_c.state_dict(),
            "rng": rng.get_state(), "local_rngs": parallel.gather(world, local_rng.get_state()),
            "torch_rng": torch.get_rng_state(), "numpy_rng": _numpy_rng_state(), "python_rng": random.getstate(),
            "data_shape": list(ds.train.shape), "world_size": world.size,
        }

    def restore(s: dict) -> int:
        if s["data_shape"][1] != ds.dim:
            raise InputError(f"data has dimension {ds.dim} but the run was trained on dimension {s['data_shape'][1]}")
        if s["world_size"] != world.size:
            raise InputError(f"the run was trained by {s['world_size']} processes; resume it with the same number (now {world.size})")
        gen_module.load_state_dict(s["generator"])
        critic_module.load_state_dict(s["critic"])
        opt_g.load_state_dict(s["opt_generator"])
        opt_c.load_state_dict(s["opt_critic"])
        rng.set_state(s["rng"])
        local_rng.set_state(s["local_rngs"][world.rank])
        torch.set_rng_state(s["torch_rng"])
        _set_numpy_rng_state(s["numpy_rng"])
        random.setstate(s["python_rng"])
        return s["step"]

    def checkpoint(step: int) -> None:
        s = state()  # collective: every rank contributes its local RNG
        if world.main:
            runs.save_checkpoint(out, step, s, cfg.keep_checkpoints)
        parallel.barrier(world)

    def latest() -> dict:
        s = runs.latest_checkpoint(out, set_aside=world.main)
        parallel.barrier(world)
        return s

    stop = _StopSignal()  # from here on, Ctrl-C ends with a checkpoint at a step boundary
    try:
        if resume:
            step = restore(latest())
            if world.main:  # only now that the run is known to continue: record the new step count
                runs.write_json(out / runs.CONFIG, asdict(cfg))
        else:
            step = 0
            checkpoint(0)  # so that a crash, a kill or a rollback always has a state to return to
        log = _Logger(out, cfg, world, quiet, start=step)
    except BaseException:
        stop.restore()
        raise
    rollbacks = 0
    try:
        while step < cfg.steps:
            step += 1
            for _ in range(critic_steps):
                x_real = batch()
                with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    x_fake = gen_module(noise())
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    loss_c, estimate = objective.critic_loss(critic, x_real, x_fake, local_rng)
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
                if cfg.divergence == "wasserstein" and cfg.lipschitz == "clip":
                    with torch.no_grad():
                        for p in critic_module.parameters():
                            p.clamp_(-cfg.clip, cfg.clip)
            if critic_steps == 0:
                loss_c = estimate = torch.zeros((), device=device)

            # generator step; the critic's own gradients are not needed here
            critic_module.requires_grad_(False)
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss_g = objective.generator_loss(critic_module, batch() if critic_steps == 0 else None, generator(noise()))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            critic_module.requires_grad_(True)

            at_checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.steps
            fault = _fault(loss_c, loss_g, gen_module, critic_module, check_parameters=at_checkpoint)
            bad, interrupted = parallel.any_flag(world, torch.tensor([fault is not None, stop.requested])).tolist()
            if bad:
                where = fault or "another process's loss"
                if cfg.on_nan == "rollback" and rollbacks < MAX_ROLLBACKS:
                    rollbacks += 1
                    failed, step = step, restore(latest())
                    for opt in (opt_g, opt_c):
                        for group in opt.param_groups:
                            group["lr"] /= 2
                    log.rewind(step)
                    log.note(f"{where} became non-finite at step {failed}; rolled back to step {step} "
                             f"and halved the learning rates (rollback {rollbacks} of {MAX_ROLLBACKS})")
                    continue
                raise TrainingDiverged(f"{where} became non-finite at step {step} (divergence {cfg.divergence}); "
                                       f"the last good checkpoint in {out / runs.CHECKPOINTS} is kept; "
                                       "try lower learning rates or --on-nan rollback")
            if step % cfg.log_every == 0 or step == cfg.steps:
                values = parallel.mean(world, torch.stack([loss_c.detach().float(), loss_g.detach().float(), estimate.float()]))
                log.row(step, dict(zip(("critic_loss", "generator_loss", "estimate"), values.tolist())), opt_g, opt_c)
            if interrupted:
                checkpoint(step)
                raise Interrupted(f"stopped at step {step} with a checkpoint; continue with: divgen train --resume {out}")
            if at_checkpoint:
                checkpoint(step)
                log.figure(step, ds.train, lambda: draw(gen_module, 1000, cfg.seed + 1))
            log.advance()
    finally:
        stop.restore()
        log.close()

    if world.main:
        finish(out, cfg, ds, gen_module, critic_module)
    parallel.barrier(world)
    return out


def _fault(loss_c, loss_g, generator: nn.Module, critic: nn.Module, check_parameters: bool) -> str | None:
    """Which quantity is NaN/inf, if any: the losses every step, the parameters at checkpoints."""
    if not torch.isfinite(loss_c):
        return "the critic loss"
    if not torch.isfinite(loss_g):
        return "the generator loss"
    if check_parameters:
        for name, net in (("generator", generator), ("critic", critic)):
            if not all(torch.isfinite(p).all() for p in net.parameters()):
                return f"a {name} parameter"
    return None


def _numpy_rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_rng_state(s: dict) -> None:
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag that the loop reads at the end of a step."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Logger:
    """metrics.jsonl always; a progress bar on a terminal, plain lines otherwise; TensorBoard if asked. Rank 0 only."""

    def __init__(self, out: Path, cfg: Config, world: parallel.World, quiet: bool, start: int):
        self.cfg, self.active = cfg, world.main
        self.interactive = self.active and sys.stderr.isatty() and not quiet
        self.plain = self.active and not self.interactive and not quiet
        self.out, self.file = out, None
        if self.active:
            runs.truncate_metrics(out, start)  # rows after the checkpoint are redone
            self.file = open(out / runs.METRICS, "a")
        self.bar = tqdm(total=cfg.steps, initial=start, disable=not self.interactive, unit="step",
                        desc=f"{cfg.divergence} on {Path(cfg.data).name}")
        self.writer = None
        if self.active and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        self.t0, self.last = time.perf_counter(), start

    def row(self, step: int, values: dict, opt_g, opt_c) -> None:
        if not self.active:
            return
        now = time.perf_counter()
        row = {"step": step, **values, "steps_per_s": round((step - self.last) / max(now - self.t0, 1e-9), 2)}
        self.t0, self.last = now, step
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)
            self.writer.add_scalar("lr_generator", opt_g.param_groups[0]["lr"], step)
            self.writer.add_scalar("lr_critic", opt_c.param_groups[0]["lr"], step)
            self.writer.add_scalar("samples_per_s", row["steps_per_s"] * self.cfg.batch_size, step)
        if self.interactive:
            self.bar.set_postfix(critic=f"{row['critic_loss']:.3f}", gen=f"{row['generator_loss']:.3f}", est=f"{row['estimate']:.3f}")
        elif self.plain and (step % max(self.cfg.log_every, self.cfg.steps // 10) == 0 or step == self.cfg.steps):
            print(f"step {step}/{self.cfg.steps}  critic {row['critic_loss']:.4f}  generator {row['generator_loss']:.4f}  "
                  f"estimate {row['estimate']:.4f}  {row['steps_per_s']:.0f} steps/s", file=sys.stderr)

    def figure(self, step: int, data: torch.Tensor, samples) -> None:
        if self.writer:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 4))
            plots.draw_samples(ax, data, samples())
            self.writer.add_figure("samples", fig, step)

    def rewind(self, step: int) -> None:
        """After a rollback to `step`: drop later metric rows and continue from there."""
        if self.active:
            self.file.close()
            runs.truncate_metrics(self.out, step)
            self.file = open(self.out / runs.METRICS, "a")
        self.bar.n = step
        self.t0, self.last = time.perf_counter(), step

    def note(self, text: str) -> None:
        if self.active:
            tqdm.write(f"divgen: warning: {text}", file=sys.stderr)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def draw(generator: nn.Module, n: int, seed: int, chunk: int = 8192) -> torch.Tensor:
    """n samples (n, d) from a generator, reproducible from `seed`; on the CPU."""
    device = next(generator.parameters()).device
    rng = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        parts = [generator(torch.randn(min(chunk, n - i), generator.noise_dim, generator=rng, device=device)) for i in range(0, n, chunk)]
    return torch.cat(parts).cpu()


def finish(out: Path, cfg: Config, ds: datasets.Dataset, generator: nn.Module, critic: Critic) -> None:
    """samples.npy, the figures, and params.json for a Gaussian model."""
    samples = draw(generator, cfg.n_samples, cfg.seed + 1)
    np.save(out / "samples.npy", samples.numpy())
    if isinstance(generator, GaussianModel):
        runs.write_json(out / "params.json", generator.params())
    critic_t = None
    if cfg.divergence not in divergences.OTHER:
        g = divergences.get(cfg.divergence).g
        critic = critic.cpu()

        def critic_t(points):  # T(x) = g_f(V(x)), what the critic certifies
            with torch.no_grad():
                return g(objectives.bounded(critic(points)))
    plots.samples_figure(out / "samples.png", ds.train, samples, density=ds.density, critic=critic_t,
                         title=f"{cfg.divergence} · {cfg.model} on {Path(cfg.data).name}")
    plots.losses_figure(out / "losses.png", runs.read_metrics(out), title=f"{cfg.divergence} on {Path(cfg.data).name}")


def load_run(run: Path) -> tuple[Config, nn.Module]:
    """The config and the trained generator of a run directory (from its newest good checkpoint)."""
    raw = runs.read_config(run)
    known = {f.name for f in fields(Config)}
    cfg = Config(**{k: v for k, v in raw.items() if k in known})
    state = runs.latest_checkpoint(run)
    shape = state["data_shape"]
    generator, _ = build_models(cfg, torch.zeros(2, shape[1]))
    try:
        generator.load_state_dict(state["generator"])
    except (RuntimeError, KeyError) as e:
        raise InputError(f"checkpoint in {str(run)!r} does not match its config.json: {str(e).splitlines()[0]}") from None
    return cfg, generator.eval()
