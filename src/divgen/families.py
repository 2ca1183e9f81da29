"""Model families (`--model`): one record per family, and the loop never names one.

A family says which networks it builds, what the critic sees of real data and
of model samples (its *views*), and its own defaults: a Gaussian density model
wants a few critic steps per generator step and a large learning rate, an MLP
generator the usual GAN settings. Networks live in one `nn.ModuleDict`; the
one named "critic" is the critic side, every other one the generator side
(generator, encoder, ...). Checkpoints, resume, distributed training,
sampling and loading iterate over that dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from divgen.data import Batch, Spec
from divgen.models import Critic, GaussianModel, MLPGenerator, Standardize, Views

CRITIC = "critic"  # the name of the critic-side network in every family's ModuleDict


@dataclass(frozen=True)
class View:
    """What the critic sees: of a data batch, and of generated samples x = G(z, y)."""

    real: Callable[[nn.ModuleDict, Batch], Views]
    fake: Callable[[nn.ModuleDict, torch.Tensor, torch.Tensor | None], Views]  # (nets, z, y)
    cond_dim: Callable[[Spec, int], int]  # (data spec, noise dim) -> width of the critic's condition input
    # the real views move with the generator side (an encoder's codes E(x)), which then trains on them
    real_trains_generator: bool = False


# The critic sees samples only.
PLAIN = View(
    real=lambda nets, batch: (batch.x,),
    fake=lambda nets, z, y: (nets["generator"](z, y),),
    cond_dim=lambda spec, noise_dim: 0,
)


@dataclass(frozen=True)
class Family:
    """A row of the family table."""

    name: str
    help: str
    build: Callable  # (cfg, spec, x_train (N, d), recipe, generator) -> nn.ModuleDict
    defaults: dict = field(default_factory=dict)  # Config fields this family sets differently
    view: View = PLAIN
    # a density model: the `auto` generator loss is minimax, whose gradient at the
    # optimal critic is the gradient of the named divergence even when the model
    # cannot match the data; see config.resolve
    parametric: bool = False

    def networks(self, cfg, spec: Spec, x_train: torch.Tensor, recipe, seed: int) -> nn.ModuleDict:
        """The family's networks, initialized from `seed` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            nets = self.build(cfg, spec, x_train, recipe, gen)
        if recipe.uses_critic:
            nets[CRITIC] = _critic(cfg, spec, x_train, recipe, self.view.cond_dim(spec, cfg.noise_dim), seed)
        return nets


def _critic(cfg, spec: Spec, x_train, recipe, cond_dim: int, seed: int) -> Critic:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return Critic(Standardize.of(x_train), cfg.width, cfg.depth, spectral_norm=recipe.spectral_norm, cond_dim=cond_dim)


def _mlp(cfg, spec, x_train, recipe, gen) -> nn.ModuleDict:
    return nn.ModuleDict({"generator": MLPGenerator(cfg.noise_dim, Standardize.of(x_train), cfg.width, cfg.depth)})


def _gaussian(cfg, spec, x_train, recipe, gen) -> nn.ModuleDict:
    # start at a random data point with the data's spread: not at the data mean,
    # which is a saddle point for mode-seeking divergences on symmetric data
    start = x_train[torch.randint(len(x_train), (1,), generator=gen)][0]
    return nn.ModuleDict({"generator": GaussianModel(start, Standardize.of(x_train).std * cfg.init_std)})


FAMILIES: dict[str, Family] = {
    "mlp": Family(
        "mlp", "an MLP generator x = G(z), z ~ N(0, I)", _mlp,
        defaults=dict(divergence="js", steps=3000, critic_steps=1, batch_size=256, lr_generator=2e-4, lr_critic=2e-4,
                      width=128, depth=2),
    ),
    "gaussian": Family(
        "gaussian", "a Gaussian N(μ, LLᵀ) with learned μ and L (params.json); a density model", _gaussian,
        # A few critic steps per generator step keep the critic near its optimum, so
        # that the minimax gradient is the divergence's; a generator learning rate of
        # 2e-3 moves the mean ~2 data units in ~1000 steps. On held-out 1-D mixtures
        # these land within 0.001 nats of the exact minimizers (benchmarks/exact_vs_adversarial.py).
        defaults=dict(divergence="js", steps=3000, critic_steps=5, batch_size=512, lr_generator=2e-3, lr_critic=1e-3,
                      width=64, depth=2),
        parametric=True,
    ),
}
NAMES = tuple(FAMILIES)


def generator_side(nets: nn.ModuleDict) -> list[nn.Parameter]:
    """Parameters of every network but the critic (generator, encoder, ...)."""
    return [p for name, net in nets.items() if name != CRITIC for p in net.parameters()]


def density_model(nets: nn.ModuleDict) -> GaussianModel | None:
    """The generator when it has an explicit density (exact divergences, params.json), else None."""
    g = nets["generator"]
    return g if isinstance(g, GaussianModel) else None


def draw(nets: nn.ModuleDict, n: int, seed: int, chunk: int = 8192) -> torch.Tensor:
    """n samples (n, d) from the generator, reproducible from `seed` (same numbers whatever `chunk`); on the CPU."""
    return torch.cat(list(draw_chunks(nets, n, seed, chunk)))


def draw_chunks(nets: nn.ModuleDict, n: int, seed: int, chunk: int = 8192) -> Iterator[torch.Tensor]:
    """The samples of `draw`, `chunk` rows (≤ chunk, d) at a time on the CPU: a large n is streamed, never held."""
    generator = nets["generator"]
    device = next(generator.parameters()).device
    rng = torch.Generator(device).manual_seed(seed)
    for i in range(0, n, chunk):
        with torch.no_grad():
            yield generator(torch.randn(min(chunk, n - i), generator.noise_dim, generator=rng, device=device)).cpu()
