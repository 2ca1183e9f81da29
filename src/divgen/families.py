"""Model families (`--model`): the networks of each row of catalog.FAMILIES, and what its divergence compares.

A family's row (catalog.py) says what it needs: a decoder or a plain generator,
an encoder, labels, and which space its divergence compares (`compares`: data,
labelled data, (x, code) pairs, or latent codes against the prior). This module
builds the networks those fields ask for, and the *view* of each space: what the
critic (or a kernel) sees of a data batch and of the model. The loop never names
a family. Networks live in one `nn.ModuleDict`; the one named "critic" is the
critic side, every other one the generator side (generator, encoder).
Checkpoints, resume, distributed training, sampling and loading iterate over
that dict.

The networks are convolutional for image data (an event shape (H, W) or
(C, H, W)) and MLPs for vectors; a latent critic is always an MLP.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import torch
from torch import nn

from divgen import catalog
from divgen.data import Batch, Spec
from divgen.errors import InputError
from divgen.models import (ConvCritic, ConvUp, Decoder, GaussianModel, MLPCritic, Standardize, Views, conv_encoder,
                           conv_generator, mlp, mlp_encoder, mlp_generator)

CRITIC = "critic"  # the name of the critic-side network in every family's ModuleDict
EMA = "generator_ema"  # the moving average of the generator's weights, when --ema is on


class Pair(NamedTuple):
    """What the divergence compares in one step: views of P (the data side) and of Q (the model side)."""

    real: Views
    fake: Views


@dataclass(frozen=True)
class View:
    """How a space is seen: pair(nets, batch, z) -> Pair, for a data batch and the step's noise z."""

    pair: Callable[[nn.ModuleDict, Batch, torch.Tensor], Pair]
    # the real views move with the generator side (an encoder's codes E(x)), which then trains on them
    real_moves: bool = False


def _codes(nets: nn.ModuleDict, batch: Batch) -> torch.Tensor:
    return nets["encoder"](batch.x, batch.y)


# One per key of catalog.COMPARES.
VIEWS: dict[str, View] = {
    # the critic sees samples only (an unconditional generator ignores the labels)
    "data": View(lambda nets, batch, z: Pair((batch.x,), (nets["generator"](z, batch.y),))),
    # conditional GAN: the critic sees (x, y); generated samples carry the real batch's labels
    "labelled": View(lambda nets, batch, z: Pair((batch.x, batch.y), (nets["generator"](z, batch.y), batch.y))),
    # BiGAN (Donahue et al. 2017; ALI, Dumoulin et al. 2017): the critic tells (x, E(x)) from (G(z), z)
    "pairs": View(lambda nets, batch, z: Pair((batch.x, _codes(nets, batch)), (nets["generator"](z), z)), real_moves=True),
    # adversarial autoencoder (Makhzani et al. 2015): prior draws z ~ N(0, I) against codes E(x) ~ q(z)
    "latent": View(lambda nets, batch, z: Pair((z[:, : nets["encoder"].latent_dim],), (_codes(nets, batch),))),
}


def view(cfg) -> View | None:
    """The view of a resolved Config's family, None if its divergence compares nothing (a VAE)."""
    compares = catalog.FAMILIES[cfg.model].compares
    return None if compares is None else VIEWS[compares]


def networks(cfg, spec: Spec, x: torch.Tensor, y: torch.Tensor | None, recipe, seed: int) -> nn.ModuleDict:
    """The networks of a resolved Config's family for data like x (N, d) with labels y, initialized from
    `seed` without touching the global RNG: the generator (or decoder), an encoder if the row has one, a
    critic if the recipe has an adversarial term, and the generator's moving average with --ema."""
    family = catalog.FAMILIES[cfg.model]
    k = label_count(cfg, spec)  # labels into the generator side
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = nn.ModuleDict({"generator": _generator(cfg, family, spec, x, y, k, torch.Generator().manual_seed(seed))})
        if family.encoder:
            nets["encoder"] = _encoder(cfg, spec, x, k, gaussian=family.encoder == "gaussian")
        if recipe.uses_critic:
            nets[CRITIC] = _critic(cfg, family, spec, x, recipe.adversarial)
    if cfg.ema:  # the averaged generator: no gradients, updated by the loop, saved with the networks
        nets[EMA] = copy.deepcopy(nets["generator"]).requires_grad_(False)
    return nets


# ---------------------------------------------------------------- builders ---
def _scaler(spec: Spec, x: torch.Tensor) -> Standardize:
    return Standardize.of(x, pooled=spec.image)  # images: one mean and sd for every pixel


def _channels(cfg) -> int:
    """Conv nets: `width` counts the units of the widest layer, which has 2·(width/4) channels."""
    return max(4, cfg.width // 4)


def densest(x: torch.Tensor, bandwidth: float, gen: torch.Generator, n: int = 2000) -> torch.Tensor:
    """The point of x (N, d), among n drawn at random, where a Gaussian kernel density of those n with
    `bandwidth` in standardized units (each coordinate divided by its sd) is highest: near the centre of the
    densest mode at that scale."""
    sub = x[torch.randperm(len(x), generator=gen)[:n]].double()
    h = (sub - sub.mean(0)) / Standardize.of(x).std.double()
    density = torch.exp(-torch.cdist(h, h).square() / (2 * bandwidth**2)).sum(1)
    return sub[int(density.argmax())].to(x.dtype)


def _class_probs(y: torch.Tensor | None, spec: Spec) -> torch.Tensor | None:
    return None if y is None else torch.bincount(y, minlength=spec.n_classes).float() / len(y)


def _generator(cfg, family: catalog.Family, spec: Spec, x: torch.Tensor, y, k: int, gen: torch.Generator) -> nn.Module:
    probs = _class_probs(y, spec) if k else None
    if family.parametric:
        # with the data's spread times init_std; the data mean is near mode-covering fits, and a saddle
        # point for mode-seeking divergences on symmetric data, which start at a data point
        if cfg.init_at == "random":
            start = x[torch.randint(len(x), (1,), generator=gen)][0]
        else:
            start = densest(x, cfg.init_std, gen) if cfg.init_at == "densest" else x.mean(0)
        return GaussianModel(start, Standardize.of(x).std * cfg.init_std)
    if family.decoder:
        z = cfg.noise_dim
        body = ConvUp(z + k, spec.event_shape, _channels(cfg)) if spec.image else mlp(z + k, spec.dim, cfg.width, cfg.depth)
        return Decoder(body, z, cfg.likelihood, _scaler(spec, x), k, probs)
    if spec.image:
        return conv_generator(cfg.noise_dim, spec.event_shape, _channels(cfg), float(x.min()), float(x.max()), k, probs)
    return mlp_generator(cfg.noise_dim, _scaler(spec, x), cfg.width, cfg.depth, k, probs)


def _encoder(cfg, spec: Spec, x, k: int, gaussian: bool) -> nn.Module:
    if spec.image:
        return conv_encoder(_scaler(spec, x), spec.event_shape, _channels(cfg), cfg.noise_dim, k, gaussian)
    return mlp_encoder(_scaler(spec, x), cfg.width, cfg.depth, cfg.noise_dim, k, gaussian)


def _critic(cfg, family: catalog.Family, spec: Spec, x, adversarial) -> nn.Module:
    sn, lipschitz = adversarial.spectral_norm, adversarial.lipschitz  # lipschitz: its output in the data's units
    if family.compares == "latent":  # codes, in the prior's units
        prior = Standardize(torch.zeros(cfg.noise_dim), torch.ones(cfg.noise_dim))
        return MLPCritic(prior, cfg.width, cfg.depth, sn, pack=cfg.pack, lipschitz=lipschitz)
    n_classes = spec.n_classes if family.compares == "labelled" else 0
    latent = cfg.noise_dim if family.compares == "pairs" else 0
    if spec.image:
        return ConvCritic(_scaler(spec, x), spec.event_shape, _channels(cfg), sn, n_classes, latent, cfg.pack, lipschitz)
    # a density model's logistic critic of log p/q (--generator-loss ratio) reads the squares too, so that its
    # log-ratio falls off beyond the data as a Gaussian's does; not a minimax critic, whose output is f'(p/q):
    # with the squares, neyman's fits of mog1d came out too narrow (worst excess 0.082, against 0.0010), and
    # the demo's reverse-kl fit with rates falling to 0 stopped between mog2d's modes (mean (1.17, 0.01))
    squares = family.parametric and cfg.generator_loss == "ratio"
    return MLPCritic(_scaler(spec, x), cfg.width, cfg.depth, sn, n_classes=n_classes, latent_dim=latent, pack=cfg.pack,
                     lipschitz=lipschitz, squares=squares)


def network_count(cfg, recipe) -> int:
    """How many networks a resolved Config trains with `recipe`: the generator, an encoder, a critic, the
    generator's moving average (--ema); limits.py sizes them before they are built."""
    return 1 + bool(catalog.FAMILIES[cfg.model].encoder) + recipe.uses_critic + bool(cfg.ema)


def label_count(cfg, spec: Spec) -> int:
    """The classes whose labels enter a resolved Config's networks (0: none); limits.py sizes them."""
    return spec.n_classes if catalog.FAMILIES[cfg.model].conditional else 0


def generator_side(nets: nn.ModuleDict) -> list[nn.Parameter]:
    """Trained parameters of every network but the critic (generator, encoder, ...)."""
    return [p for name, net in nets.items() if name not in (CRITIC, EMA) for p in net.parameters()]


def sampler(nets: nn.ModuleDict) -> nn.Module:
    """The network that draws samples: the generator's moving average when there is one, else the generator."""
    return nets[EMA] if EMA in nets else nets["generator"]


def density_model(nets: nn.ModuleDict) -> GaussianModel | None:
    """The sampler when it has an explicit density (exact divergences, params.json), else None."""
    g = sampler(nets)
    return g if isinstance(g, GaussianModel) else None


def labels_for(nets: nn.ModuleDict, n: int, label: int | None, rng: torch.Generator) -> torch.Tensor | None:
    """Labels for n samples of a conditional generator: all `label`, or drawn from its class frequencies."""
    g = sampler(nets)
    if not g.n_classes:
        if label is not None:
            raise InputError("--label: this model is not conditional (train it with --model cgan or cvae)")
        return None
    if label is not None:
        if not 0 <= label < g.n_classes or float(g.class_probs[label]) == 0:
            present = [k for k in range(g.n_classes) if float(g.class_probs[k]) > 0]
            raise InputError(f"--label {label}: the model was trained on labels {present}")
        return torch.full((n,), label, dtype=torch.int64)
    return torch.multinomial(g.class_probs, n, replacement=True, generator=rng)


def draw(nets: nn.ModuleDict, n: int, seed: int, label: int | None = None, chunk: int = 8192) -> torch.Tensor:
    """n samples (n, d) from the generator, reproducible from `seed`; see draw_chunks."""
    return draw_labelled(nets, n, seed, label, chunk)[0]


def draw_labelled(nets: nn.ModuleDict, n: int, seed: int, label: int | None = None,
                  chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples (n, d) and their labels (None for an unconditional model); see draw_chunks."""
    parts = list(draw_chunks(nets, n, seed, label, chunk))
    y = None if parts[0][1] is None else torch.cat([part_y for _, part_y in parts])
    return torch.cat([part_x for part_x, _ in parts]), y


def draw_chunks(nets: nn.ModuleDict, n: int, seed: int, label: int | None = None,
                chunk: int = 8192) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The samples of `draw` and their labels, `chunk` rows at a time ((≤ chunk, d), (≤ chunk,)) on the CPU:
    a large n is streamed, never held (only the n labels of a conditional model are, 8 bytes each).
    Reproducible from `seed`, the same numbers whatever `chunk`. A conditional model draws class
    `label`, or classes in their training frequencies."""
    generator = sampler(nets)
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    y = labels_for(nets, n, label, rng)
    rng = torch.Generator(device).manual_seed(seed)
    for i in range(0, n, chunk):
        part_y = None if y is None else y[i : i + chunk]
        with torch.no_grad():
            x = generator(torch.randn(min(chunk, n - i), generator.noise_dim, generator=rng, device=device),
                          None if part_y is None else part_y.to(device))
        yield x.cpu(), part_y
