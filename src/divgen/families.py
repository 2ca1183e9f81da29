"""Model families (`--model`): one record per family, and the loop never names one.

A family says which networks it builds, what the critic sees of real data and
of model samples (its *view*), what data it needs (labels, images), which
objective trains it when that is not the divergence's own (the ELBO of a VAE),
and its own defaults: a Gaussian density model wants a few critic steps per
generator step and a large learning rate, an MLP generator the usual GAN
settings. Networks live in one `nn.ModuleDict`; the one named "critic" is the
critic side, every other one the generator side (generator, encoder).
Checkpoints, resume, distributed training, sampling and loading iterate over
that dict.

The latent and conditional families use convolutional networks for image data
(an event shape (H, W) or (C, H, W)) and MLPs for vectors.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from divgen import recipes
from divgen.data import Batch, Spec
from divgen.errors import InputError
from divgen.models import (ConvCritic, ConvGenerator, ConvUp, Decoder, GaussianModel, MLPCritic, MLPGenerator,
                           Standardize, Views, conv_encoder, mlp, mlp_encoder)

CRITIC = "critic"  # the name of the critic-side network in every family's ModuleDict
EMA = "generator_ema"  # the moving average of the generator's weights, when --ema is on


@dataclass(frozen=True)
class View:
    """What the critic sees: of a data batch, and of generated samples x = G(z, y)."""

    real: Callable[[nn.ModuleDict, Batch], Views]
    fake: Callable[[nn.ModuleDict, torch.Tensor, torch.Tensor | None], Views]  # (nets, z, y)
    # the real views move with the generator side (an encoder's codes E(x)), which then trains on them
    real_trains_generator: bool = False


# The critic sees samples only.
PLAIN = View(real=lambda nets, batch: (batch.x,), fake=lambda nets, z, y: (nets["generator"](z, y),))
# Conditional GAN: the critic sees (x, y), generated samples carry the real batch's labels.
CONDITIONAL = View(real=lambda nets, batch: (batch.x, batch.y), fake=lambda nets, z, y: (nets["generator"](z, y), y))
# BiGAN (Donahue et al. 2017; ALI, Dumoulin et al. 2017): the critic tells (x, E(x)) from (G(z), z).
BIDIRECTIONAL = View(real=lambda nets, batch: (batch.x, nets["encoder"](batch.x)),
                     fake=lambda nets, z, y: (nets["generator"](z), z), real_trains_generator=True)


@dataclass(frozen=True)
class Family:
    """A row of the family table."""

    name: str
    help: str
    build: Callable  # (cfg, spec, x (N, d), y (N,) or None, gen) -> nn.ModuleDict of the generator side
    defaults: dict = field(default_factory=dict)  # Config fields this family sets differently
    image_defaults: dict = field(default_factory=dict)  # and on image data, where it differs again
    view: View = PLAIN
    # a density model: the `auto` generator loss is minimax, whose gradient at the
    # optimal critic is the gradient of the named divergence even when the model
    # cannot match the data; see config.resolve
    parametric: bool = False
    conditional: bool = False  # needs labels; `sample --label K` draws class K
    images_only: bool = False
    recipe: str | None = None  # the objective that trains it regardless of --divergence ("elbo")
    divergences: tuple[str, ...] | None = None  # the only divergence names it accepts (None: any)

    def check(self, spec: Spec) -> None:
        """InputError if the data cannot train this family."""
        if self.conditional and not spec.n_classes:
            raise InputError(f"--model {self.name} needs labelled data (a .npz with integer labels 'y', or digits, mnist1d)")
        if self.images_only and not spec.image:
            raise InputError(f"--model {self.name} needs image data (N×H×W or N×C×H×W); got samples of shape {spec.event_shape}")

    def networks(self, cfg, spec: Spec, x: torch.Tensor, y: torch.Tensor | None, recipe, seed: int) -> nn.ModuleDict:
        """The family's networks for data like x (N, d) with labels y, initialized from `seed`
        without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = self.build(cfg, spec, x, y, torch.Generator().manual_seed(seed))
            if recipe.uses_critic:
                nets[CRITIC] = _critic(cfg, spec, x, recipe.spectral_norm, self.view, nets)
        if cfg.ema:  # the averaged generator: no gradients, updated by the loop, saved with the networks
            nets[EMA] = copy.deepcopy(nets["generator"]).requires_grad_(False)
        return nets


# ---------------------------------------------------------------- builders ---
def _scaler(spec: Spec, x: torch.Tensor) -> Standardize:
    return Standardize.of(x, pooled=spec.image)  # images: one mean and sd for every pixel


def _channels(cfg) -> int:
    """Conv nets: `width` counts the units of the widest layer, which has 2·(width/4) channels."""
    return max(4, cfg.width // 4)


def _class_probs(y: torch.Tensor | None, spec: Spec) -> torch.Tensor | None:
    return None if y is None else torch.bincount(y, minlength=spec.n_classes).float() / len(y)


def _generator(cfg, spec: Spec, x: torch.Tensor, y, n_classes: int) -> nn.Module:
    if spec.image:
        return ConvGenerator(cfg.noise_dim, spec.event_shape, _channels(cfg), float(x.min()), float(x.max()), n_classes,
                             _class_probs(y, spec) if n_classes else None)
    return MLPGenerator(cfg.noise_dim, _scaler(spec, x), cfg.width, cfg.depth, n_classes, _class_probs(y, spec) if n_classes else None)


def _critic(cfg, spec: Spec, x, spectral_norm: bool, view: View, nets) -> nn.Module:
    n_classes = spec.n_classes if view is CONDITIONAL else 0
    latent = cfg.noise_dim if view is BIDIRECTIONAL else 0
    lipschitz = recipes.row(cfg.divergence).estimator == "lipschitz"  # its output in the data's units
    if spec.image:
        return ConvCritic(_scaler(spec, x), spec.event_shape, _channels(cfg), spectral_norm, n_classes, latent, cfg.pack,
                          lipschitz)
    return MLPCritic(_scaler(spec, x), cfg.width, cfg.depth, spectral_norm, n_classes=n_classes, latent_dim=latent,
                     pack=cfg.pack, lipschitz=lipschitz)


def _encoder(cfg, spec: Spec, x, latent: int, n_classes: int = 0, gaussian: bool = False) -> nn.Module:
    if spec.image:
        return conv_encoder(_scaler(spec, x), spec.event_shape, _channels(cfg), latent, n_classes, gaussian)
    return mlp_encoder(_scaler(spec, x), cfg.width, cfg.depth, latent, n_classes, gaussian)


def _gan(conditional: bool):
    def build(cfg, spec, x, y, gen):
        return nn.ModuleDict({"generator": _generator(cfg, spec, x, y, spec.n_classes if conditional else 0)})
    return build


def _bigan(cfg, spec, x, y, gen):
    return nn.ModuleDict({"generator": _generator(cfg, spec, x, y, 0), "encoder": _encoder(cfg, spec, x, cfg.noise_dim)})


def _vae(conditional: bool):
    def build(cfg, spec, x, y, gen):
        k = spec.n_classes if conditional else 0
        latent = cfg.noise_dim
        body = ConvUp(latent + k, spec.event_shape, _channels(cfg)) if spec.image else mlp(latent + k, spec.dim, cfg.width, cfg.depth)
        decoder = Decoder(body, latent, cfg.likelihood, _scaler(spec, x), k, _class_probs(y, spec) if k else None)
        return nn.ModuleDict({"generator": decoder, "encoder": _encoder(cfg, spec, x, latent, k, gaussian=True)})
    return build


def _gaussian(cfg, spec, x, y, gen):
    # start at a random data point with the data's spread: not at the data mean,
    # which is a saddle point for mode-seeking divergences on symmetric data
    start = x[torch.randint(len(x), (1,), generator=gen)][0]
    return nn.ModuleDict({"generator": GaussianModel(start, Standardize.of(x).std * cfg.init_std)})


# Chosen on PacGAN's ring and grid (benchmarks/modes.py, docs/modes.md): the R1 penalty keeps
# every mode, a 3×256 generator with a 5e-4 learning rate places samples sharply, and the
# moving average of its weights removes the last jitter of the optimizer
_GAN_DEFAULTS = dict(divergence="js", steps=10_000, critic_steps=1, batch_size=256, lr_generator=5e-4, lr_critic=5e-4,
                     width=256, depth=3, critic_penalty="r1", ema=0.999)
# a GAN on images: conv nets (see _gan), smaller batches, a larger latent
_ON_IMAGES = dict(batch_size=64, noise_dim=32, steps=4000, width=128, depth=2, lr_generator=2e-4, lr_critic=2e-4)

FAMILIES: dict[str, Family] = {
    "mlp": Family("mlp", "an MLP generator x = G(z), z ~ N(0, I)", _gan(False), _GAN_DEFAULTS),
    "conv": Family("conv", "a convolutional generator and critic, for images", _gan(False), dict(_GAN_DEFAULTS, **_ON_IMAGES),
                   images_only=True),
    "gaussian": Family(
        "gaussian", "a Gaussian N(μ, LLᵀ) with learned μ and L (params.json); a density model", _gaussian,
        # A few critic steps per generator step keep the critic near its optimum, so
        # that the minimax gradient is the divergence's; a generator learning rate of
        # 2e-3 moves the mean ~2 data units in ~1000 steps. On held-out 1-D mixtures
        # these land within 0.001 nats of the exact minimizers (benchmarks/exact_vs_adversarial.py).
        dict(divergence="js", steps=3000, critic_steps=5, batch_size=512, lr_generator=2e-3, lr_critic=1e-3,
             width=64, depth=2),
        parametric=True,
    ),
    "cgan": Family("cgan", "a conditional GAN: labels into the generator and the critic (projection for images)",
                   _gan(True), _GAN_DEFAULTS, _ON_IMAGES, view=CONDITIONAL, conditional=True),
    "bigan": Family("bigan", "BiGAN: a generator and an encoder E; the critic tells (x, E(x)) from (G(z), z)",
                    _bigan, _GAN_DEFAULTS,
                    # on digits an 8-D code and no penalty on the (x, z) pairs keep the encoder
                    # informative: reconstructions keep their class 45% of the time, against 10%
                    # with a 32-D code or R1 (benchmarks/digits.py)
                    dict(_ON_IMAGES, noise_dim=8, critic_penalty="none"), view=BIDIRECTIONAL),
    "vae": Family("vae", "a variational autoencoder trained on the ELBO (approximate maximum likelihood: kl)",
                  _vae(False), dict(divergence="kl", steps=4000, batch_size=128, lr_generator=1e-3, noise_dim=16),
                  recipe="elbo", divergences=("kl",)),
    "cvae": Family("cvae", "a conditional VAE: labels into the encoder and the decoder",
                   _vae(True), dict(divergence="kl", steps=4000, batch_size=128, lr_generator=1e-3, noise_dim=16),
                   conditional=True, recipe="elbo", divergences=("kl",)),
}
NAMES = tuple(FAMILIES)


def network_count(cfg, family: Family, recipe) -> int:
    """How many networks `family` trains with `recipe`: the generator, an encoder (BiGAN, VAE), a critic,
    the generator's moving average (--ema); limits.py sizes them before they are built."""
    return 1 + int(family.view is BIDIRECTIONAL or family.recipe == "elbo") + int(recipe.uses_critic) + int(cfg.ema > 0)


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
