"""One readable training loop: critic steps, a generator step, log, checkpoint.

The objective is composed from the pure losses of objectives.py according to
the divergence: the f-GAN bound with the divergence's own conjugate and output
activation, a Lipschitz critic for `wasserstein`, or a kernel for `mmd`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from divgen import data as datasets
from divgen import divergences, objectives, plots, runs
from divgen.errors import InputError
from divgen.models import Critic, GaussianModel, MLPGenerator, Standardize


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
        generator: nn.Module = GaussianModel(start, std)
    else:
        generator = MLPGenerator(cfg.noise_dim, Standardize(mean, std), cfg.width, cfg.depth)
    critic = Critic(Standardize(mean, std), cfg.width, cfg.depth, spectral_norm=cfg.divergence == "wasserstein" and cfg.lipschitz == "sn")
    return generator, critic


@dataclass(frozen=True)
class Objective:
    """The critic's loss (with the divergence estimate it certifies) and the generator's loss."""

    critic_loss: Callable | None  # (critic, x_real, x_fake, rng) -> (loss, estimate)
    generator_loss: Callable  # (critic, x_real, x_fake) -> loss


def make_objective(cfg: Config, x_train: torch.Tensor) -> Objective:
    if cfg.divergence == "mmd":  # no critic: the kernel two-sample statistic is the loss
        h = objectives.median_bandwidth(x_train[:1000], x_train[1000:2000] if len(x_train) > 1000 else x_train)
        return Objective(None, lambda critic, x_real, x_fake: objectives.mmd2_unbiased(x_real, x_fake, h))

    if cfg.divergence == "wasserstein":
        def critic_loss(critic, x_real, x_fake, rng):
            v_real, v_fake = critic(torch.cat([x_real, x_fake])).split([len(x_real), len(x_fake)])
            loss = objectives.wasserstein_critic_loss(v_real, v_fake)
            estimate = -loss.detach()
            if cfg.lipschitz == "gp":
                loss = loss + cfg.gp_weight * objectives.gradient_penalty(critic, x_real, x_fake, rng)
            return loss, estimate

        return Objective(critic_loss, lambda critic, x_real, x_fake: objectives.wasserstein_generator_loss(critic(x_fake)))

    div = divergences.get(cfg.divergence)

    def fgan_critic_loss(critic, x_real, x_fake, rng):
        # one forward pass over both halves: a single larger matmul is faster than two
        v_real, v_fake = critic(torch.cat([x_real, x_fake])).split([len(x_real), len(x_fake)])
        loss = objectives.fgan_critic_loss(div, v_real, v_fake)
        return loss, -loss.detach()

    return Objective(
        fgan_critic_loss,
        lambda critic, x_real, x_fake: objectives.fgan_generator_loss(div, critic(x_fake), cfg.generator_loss),
    )


# ------------------------------------------------------------------ the loop ---
class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN or infinite."""


def train(cfg: Config, out: Path, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> Path:
    """Train a generator on cfg.data by minimizing cfg.divergence; returns the run directory."""
    cfg.validate()
    device = resolve_device(cfg.device)
    ds = datasets.load(cfg.data, n=cfg.n_data, seed=cfg.seed, holdout=cfg.holdout)
    out = Path(out) if resume else runs.prepare(Path(out), overwrite)
    if not resume:
        runs.write_json(out / runs.CONFIG, asdict(cfg))

    # Denormal floats (e.g. exp of a very negative critic output in the KL
    # conjugate) make CPU arithmetic several times slower and carry no signal.
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)  # network initialization
    x = ds.train.to(device)
    generator, critic = build_models(cfg, ds.train)
    generator, critic = generator.to(device), critic.to(device)
    objective = make_objective(cfg, ds.train)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_generator, betas=(0.5, 0.999))
    opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.lr_critic, betas=(0.5, 0.999))
    # All randomness of the loop (batches, noise, penalty interpolates) flows from this one generator.
    rng = torch.Generator(device).manual_seed(cfg.seed)
    critic_steps = cfg.critic_steps if objective.critic_loss else 0

    start = 0
    if resume:
        state = runs.latest_checkpoint(out)
        if state["data_shape"][1] != ds.dim:
            raise InputError(f"data has dimension {ds.dim} but the resumed run was trained on dimension {state['data_shape'][1]}")
        generator.load_state_dict(state["generator"])
        critic.load_state_dict(state["critic"])
        opt_g.load_state_dict(state["opt_generator"])
        opt_c.load_state_dict(state["opt_critic"])
        rng.set_state(state["rng"])
        start = state["step"]
        runs.truncate_metrics(out, start)

    def checkpoint(step):
        runs.save_checkpoint(out, step, {
            "generator": generator.state_dict(), "critic": critic.state_dict(),
            "opt_generator": opt_g.state_dict(), "opt_critic": opt_c.state_dict(),
            "rng": rng.get_state(), "data_shape": list(ds.train.shape),
        }, cfg.keep_checkpoints)

    def batch():  # (B, d) rows of the training set, with replacement
        return x[torch.randint(len(x), (cfg.batch_size,), generator=rng, device=device)]

    def noise():  # (B, noise_dim)
        return torch.randn(cfg.batch_size, generator.noise_dim, generator=rng, device=device)

    interactive = sys.stderr.isatty() and not quiet
    bar = tqdm(total=cfg.steps, initial=start, disable=not interactive, desc=f"{cfg.divergence} on {Path(cfg.data).name}", unit="step")
    metrics_file = open(out / runs.METRICS, "a")
    loss_c = estimate = torch.zeros(())
    t0, last_step = time.perf_counter(), start
    try:
        for step in range(start + 1, cfg.steps + 1):
            for _ in range(critic_steps):
                x_real = batch()
                with torch.no_grad():
                    x_fake = generator(noise())
                loss_c, estimate = objective.critic_loss(critic, x_real, x_fake, rng)
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
                if cfg.divergence == "wasserstein" and cfg.lipschitz == "clip":
                    with torch.no_grad():
                        for p in critic.parameters():
                            p.clamp_(-cfg.clip, cfg.clip)

            # generator step; the critic's own gradients are not needed here
            critic.requires_grad_(False)
            loss_g = objective.generator_loss(critic, batch() if critic_steps == 0 else None, generator(noise()))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            critic.requires_grad_(True)

            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                row = {
                    "step": step,
                    "critic_loss": loss_c.item(),
                    "generator_loss": loss_g.item(),
                    "estimate": float(estimate),
                    "steps_per_s": round((step - last_step) / (now - t0), 2),
                }
                t0, last_step = now, step
                if not all(np.isfinite([row["critic_loss"], row["generator_loss"]])):
                    bad = "critic" if not np.isfinite(row["critic_loss"]) else "generator"
                    raise TrainingDiverged(f"the {bad} loss became non-finite by step {step} (divergence {cfg.divergence}); "
                                           "the last good checkpoint is kept — try lower learning rates")
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                if interactive:
                    bar.set_postfix(critic=f"{row['critic_loss']:.3f}", gen=f"{row['generator_loss']:.3f}", est=f"{row['estimate']:.3f}")
                elif not quiet and step % max(cfg.log_every, cfg.steps // 10) == 0:
                    print(f"step {step}/{cfg.steps}  critic {row['critic_loss']:.4f}  generator {row['generator_loss']:.4f}  "
                          f"estimate {row['estimate']:.4f}  {row['steps_per_s']:.0f} steps/s", file=sys.stderr)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint(step)
            bar.update(1)
    finally:
        bar.close()
        metrics_file.close()

    finish(out, cfg, ds, generator, critic)
    return out


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
