"""Training objectives: one record per divergence name, composed from the pure losses of objectives.py.

A recipe says what training by one divergence needs and does: whether there
is a critic, the critic's loss and the generator's loss as functions of
critic outputs (or, with no critic, of the samples themselves), the
constraint applied after each critic step (weight clipping), whether the
critic is spectrally normalized, the penalty added to the critic's loss, and
what the logged estimate means. The training loop calls these fields and
never names a divergence; neither does evaluation, which asks `estimator`
how an independent critic measures the divergence.

    recipe = recipes.build(cfg, x_train)
    loss_c = recipe.critic_loss(v_real, v_fake)       # + recipe.penalty(...)
    loss_g = recipe.generator_loss(v_real, v_fake)    # v_real is None unless the
                                                      # real views depend on the generator side (BiGAN)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from divgen import divergences, objectives
from divgen.errors import InputError

Tensor = torch.Tensor
GENERATOR_LOSSES = ("auto", *objectives.GENERATOR_LOSSES)
LIPSCHITZ = ("clip", "gp", "sn")
# How an independent critic estimates a divergence (evaluate.py): by a classifier
# whose logit estimates log p/q, plugged into the f-GAN bound; by a critic kept
# Lipschitz; or not at all (a kernel statistic is not a variational bound).
ESTIMATORS = ("classifier", "lipschitz", None)


PENALTIES = ("none", "gp", "r1")


@dataclass(frozen=True)
class Penalty:
    """A term added to the critic's loss: weight · penalty(critic, real views, fake views).

    The penalty measures the critic's slope so that training is the same in any units. An
    f-GAN critic's output is a log-ratio, a pure number: its slope is taken per standard
    deviation of each coordinate (the critic's scaler), as if on standardized data. A
    `lipschitz` critic (wasserstein) bounds its slope in the data's own units, where W1 is
    measured, and its output, the E_P[V] − E_Q[V] the penalty is weighed against, carries
    those units (MLPCritic's `lipschitz`): so the weight is multiplied by the critic's
    `out_scale`, the data's spread.
    """

    name: str  # "gp" or "r1"
    weight: float
    one_sided: bool = False
    lipschitz: bool = False

    def __call__(self, critic, real, fake, rng: torch.Generator) -> Tensor:
        if self.lipschitz:
            weight, unit = self.weight * getattr(critic, "out_scale", 1.0), None
        else:
            scaler = getattr(critic, "scaler", None)  # a bare function: slopes in its inputs' units
            weight, unit = self.weight, None if scaler is None else scaler.std
        if self.name == "r1":
            return weight * objectives.r1_penalty(critic, real, unit)
        return weight * objectives.gradient_penalty(critic, real, fake, rng, one_sided=self.one_sided, unit=unit)


def _penalty(cfg, lipschitz: bool = False) -> Penalty | None:
    if cfg.critic_penalty == "none" or cfg.penalty_weight == 0:
        return None
    return Penalty(cfg.critic_penalty, cfg.penalty_weight, lipschitz=lipschitz)


@dataclass(frozen=True)
class Recipe:
    """How training by one divergence works. Exactly one of critic_loss and sample_loss is set."""

    name: str  # the divergence name, as the user typed it
    kind: str  # "f-gan", "wasserstein" or "mmd": the row of the table it came from
    estimate: str  # what the logged `estimate` means
    # with a critic: pure functions of critic outputs V, (B,) each
    critic_loss: Callable[[Tensor, Tensor], Tensor] | None = None  # (v_real, v_fake) -> loss; estimate = −loss
    generator_loss: Callable[[Tensor | None, Tensor], Tensor] | None = None  # (v_real or None, v_fake) -> loss
    # without a critic: a loss of the data batch and the model, which is also the estimate
    sample_loss: Callable | None = None  # (nets, view, real: Batch, z: noise) -> loss
    critic_t: Callable[[Tensor], Tensor] | None = None  # T as a function of the raw output V (figures)
    penalty: Penalty | None = None
    constrain: Callable[[nn.Module], None] | None = None  # applied to the critic after each of its steps
    spectral_norm: bool = False

    @property
    def uses_critic(self) -> bool:
        return self.critic_loss is not None


# --------------------------------------------------------------- the rows ---
def _fgan(name: str, cfg) -> Recipe:
    div = divergences.get(name)

    def generator_loss(v_real, v_fake):
        # the fake side: objectives' minimax or non-saturating loss; the real side matters
        # only when the real views move with the generator side (an encoder): then the
        # minimax loss is the bound itself, and the non-saturating one flips its roles
        loss = objectives.fgan_generator_loss(div, v_fake, cfg.generator_loss)
        if v_real is not None:
            v = objectives.capped(div, v_real)
            loss = loss + (div.g(v).mean() if cfg.generator_loss == "minimax" else div.f_star_g(v).mean())
        return loss

    return Recipe(
        name=name, kind="f-gan",
        estimate=f"the training critic's lower bound on {name}(P‖Q), E_P[T] − E_Q[f*(T)]",
        critic_loss=lambda v_real, v_fake: objectives.fgan_critic_loss(div, v_real, v_fake),
        generator_loss=generator_loss,
        critic_t=lambda v: div.g(objectives.capped(div, v)),
        penalty=_penalty(cfg),
        spectral_norm=cfg.spectral_norm,
    )


def _wasserstein(name: str, cfg) -> Recipe:
    def generator_loss(v_real, v_fake):
        loss = objectives.wasserstein_generator_loss(v_fake)
        return loss if v_real is None else loss + v_real.mean()

    def clip(critic: nn.Module) -> None:
        with torch.no_grad():
            for p in critic.parameters():
                p.clamp_(-cfg.clip, cfg.clip)

    return Recipe(
        name=name, kind="wasserstein",
        estimate="E_P[V] − E_Q[V] of the training critic: W1(P, Q) if the critic is 1-Lipschitz",
        critic_loss=objectives.wasserstein_critic_loss,
        generator_loss=generator_loss,
        critic_t=lambda v: v,
        penalty=_penalty(cfg, lipschitz=True),
        constrain=clip if cfg.lipschitz == "clip" else None,
        spectral_norm=cfg.spectral_norm,
    )


def _mmd(name: str, cfg, x_train: Tensor) -> Recipe:
    # the median heuristic on the training data, fixed for the run; the second half may be empty
    h = objectives.median_bandwidth(x_train[:1000], x_train[1000:2000])
    return Recipe(
        name=name, kind="mmd",
        estimate="unbiased MMD²(P, Q) of the batch, Gaussian kernel with the median-heuristic bandwidth",
        sample_loss=lambda nets, view, real, z: objectives.mmd2_unbiased(real.x, view.fake(nets, z, real.y)[0], h),
    )


def _elbo(name: str, cfg, x_train: Tensor) -> Recipe:
    """The VAE's objective (Kingma & Welling 2014): maximize the evidence lower bound
    E_q[log p(x | z)] − KL(q(z | x) ‖ N(0, I)) ≤ log p(x), i.e. approximate maximum
    likelihood, which minimizes KL(P‖Q). The reparametrized z = μ + σ·ε takes its ε
    from the loop's noise stream, so runs reproduce and resume bit for bit."""

    def loss(nets, view, real, z):
        mean, log_var = nets["encoder"](real.x, real.y)
        eps = z[:, : mean.shape[1]]
        code = torch.addcmul(mean, torch.exp(0.5 * log_var), eps)
        log_px = nets["generator"].log_likelihood(real.x, code, real.y)
        return (objectives.gaussian_kl_to_standard(mean, log_var) - log_px).mean()

    return Recipe(name=name, kind="elbo", estimate="−ELBO of the batch, nats per sample (≥ −log q(x))", sample_loss=loss)


@dataclass(frozen=True)
class Row:
    """An entry of the table: how to build the recipe, and how evaluation estimates the divergence."""

    make: Callable  # (name, cfg, x_train) -> Recipe
    estimator: str | None  # one of ESTIMATORS


FGAN = Row(lambda name, cfg, x: _fgan(name, cfg), "classifier")  # every f-divergence name
TABLE: dict[str, Row] = {
    "wasserstein": Row(lambda name, cfg, x: _wasserstein(name, cfg), "lipschitz"),
    "mmd": Row(_mmd, None),
}
NAMES = divergences.F_DIVERGENCES + tuple(TABLE)
# Objectives that a model family names itself (families.Family.recipe), whatever the divergence.
BY_FAMILY: dict[str, Row] = {"elbo": Row(_elbo, "classifier")}
# Every run is evaluated by these besides its own divergence (evaluate.py).
EVALUATED = ("js", "wasserstein")


def row(name: str) -> Row:
    """The table entry of any divergence name; InputError lists the valid names."""
    if name in TABLE:
        return TABLE[name]
    try:
        divergences.get(name)
    except divergences.UnknownDivergence:
        raise InputError(f"unknown divergence {name!r}; valid: {', '.join(NAMES)}") from None
    return FGAN


def check_name(name: str) -> str:
    """Validate any divergence name, f-divergence or not."""
    row(name)
    return name


def build(cfg, x_train: Tensor) -> Recipe:
    """The recipe of the run (a resolved Config): its family's own objective, or cfg.divergence's."""
    from divgen.families import FAMILIES

    own = FAMILIES[cfg.model].recipe
    return (BY_FAMILY[own] if own else row(cfg.divergence)).make(cfg.divergence, cfg, x_train)
