"""Training objectives: the terms a run's loss adds up, composed from the pure losses of objectives.py.

`config.resolve` records a run's objective once, as the names of its terms joined by " + ": the
divergence's term ("f-gan", "wasserstein" or "mmd"), the family's own loss ("elbo",
"reconstruction"), or both ("reconstruction + f-gan": an adversarial autoencoder). A term is either
adversarial, a critic's loss and the generator's loss as functions of critic outputs, with its
penalty, constraint and normalization, or a loss of the step's samples. The training loop calls
these fields and names no divergence and no family; evaluation asks `row(name).estimator` how an
independent critic measures a divergence.

    recipe = recipes.build(cfg, x_train)
    loss_c = recipe.adversarial.critic_loss(v_real, v_fake)   # + recipe.adversarial.penalty(...)
    loss_g = recipe.adversarial.generator_loss(v_real, v_fake) + Σ term(nets, draw) for term in recipe.sample_losses
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from divgen import catalog, divergences, objectives
from divgen.errors import InputError

Tensor = torch.Tensor
# How an independent critic estimates a divergence of each kind (evaluate.py): by a classifier whose
# logit estimates log p/q, plugged into the f-GAN bound; by a critic kept Lipschitz; or not at all
# (a kernel statistic is not a variational bound).
ESTIMATORS = {"f-gan": "classifier", "wasserstein": "lipschitz", "mmd": None}


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
    # lazy regularization (Karras et al. 2020): taken on every `every`-th critic step, with its weight times `every`
    every: int = 1

    def due(self, critic_step: int) -> bool:
        """Whether the critic's step number `critic_step` (0, 1, … over the run) takes the penalty."""
        return critic_step % self.every == 0

    def __call__(self, critic, real, fake, rng: torch.Generator) -> Tensor:
        if self.lipschitz:
            weight, unit = self.every * self.weight * getattr(critic, "out_scale", 1.0), None
        else:
            scaler = getattr(critic, "scaler", None)  # a bare function: slopes in its inputs' units
            weight, unit = self.every * self.weight, None if scaler is None else scaler.std
        if self.name == "r1":
            return weight * objectives.r1_penalty(critic, real, unit)
        return weight * objectives.gradient_penalty(critic, real, fake, rng, one_sided=self.one_sided, unit=unit)


def _penalty(cfg, lipschitz: bool = False) -> Penalty | None:
    if cfg.critic_penalty == "none" or cfg.penalty_weight == 0:
        return None
    return Penalty(cfg.critic_penalty, cfg.penalty_weight, lipschitz=lipschitz, every=cfg.penalty_every)


@dataclass(frozen=True)
class Adversarial:
    """A critic's term: pure functions of critic outputs V, (B,) each."""

    critic_loss: Callable[[Tensor, Tensor], Tensor]  # (v_real, v_fake) -> loss; the logged estimate is −loss
    generator_loss: Callable[[Tensor | None, Tensor], Tensor]  # (v_real, or None unless the real views move, v_fake)
    critic_t: Callable[[Tensor], Tensor]  # T as a function of the raw output V (figures)
    penalty: Penalty | None = None
    # (v_real, v_fake) -> the loss whose negation the log reports as the estimate, where that is not the
    # critic's own loss (ratio: the named divergence's bound at the critic its log-ratio implies)
    estimate_loss: Callable[[Tensor, Tensor], Tensor] | None = None
    constrain: Callable[[nn.Module], None] | None = None  # applied to the critic after each of its steps
    spectral_norm: bool = False
    lipschitz: bool = False  # the critic's output is in the data's units (W1), see models.MLPCritic


# A loss of one step's draw (train.Draw: its batch, noise and the views the divergence compares), summed
# into the generator side's loss.
SampleLoss = Callable[[nn.ModuleDict, object], Tensor]


@dataclass(frozen=True)
class Term:
    """One term of an objective: adversarial, or a loss of the samples, with what its value means."""

    estimate: str
    adversarial: Adversarial | None = None
    sample_loss: SampleLoss | None = None


@dataclass(frozen=True)
class Recipe:
    """How a run trains: the sum of its terms. At most one term is adversarial (the run has one critic)."""

    objective: str  # the term names, as config.resolve recorded them
    estimate: str  # what the logged `estimate` means
    adversarial: Adversarial | None
    sample_losses: tuple[SampleLoss, ...]

    @property
    def uses_critic(self) -> bool:
        return self.adversarial is not None


# --------------------------------------------------------------- the terms ---
def _fgan(cfg, space: Tensor) -> Term:
    div = divergences.get(cfg.divergence)
    ratio = cfg.generator_loss == "ratio"  # the critic is a logistic classifier of log p/q (the gan critic's)
    trained = divergences.get("gan") if ratio else div  # the divergence whose bound the critic maximizes

    def generator_loss(v_real, v_fake):
        # the fake side: objectives' minimax, non-saturating or ratio loss; the real side matters
        # only when the real views move with the generator side (an encoder): then the
        # minimax loss is the bound itself, and the non-saturating one flips its roles
        loss = objectives.fgan_generator_loss(div, v_fake, cfg.generator_loss)
        if v_real is not None:
            if ratio:  # the bound's E_P[T] at T = f'(e^l)
                return loss + div.g(objectives.capped(div, div.v_opt(v_real))).mean()
            v = objectives.capped(div, v_real)
            loss = loss + (div.g(v).mean() if cfg.generator_loss == "minimax" else div.f_star_g(v).mean())
        return loss

    def critic_t(v):  # T as the figures show it: the divergence's critic, implied by log p/q with ratio
        return div.g(objectives.capped(div, div.v_opt(v) if ratio else v))

    return Term(
        estimate=(f"the training critic's lower bound on {cfg.divergence}(P‖Q), E_P[T] − E_Q[f*(T)]"
                  + (" at T = f'(p/q) of the classifier's log-ratio (--generator-loss ratio)" if ratio else "")),
        adversarial=Adversarial(
            critic_loss=lambda v_real, v_fake: objectives.fgan_critic_loss(trained, v_real, v_fake),
            generator_loss=generator_loss,
            critic_t=critic_t,
            penalty=_penalty(cfg),
            spectral_norm=cfg.spectral_norm,
            estimate_loss=(lambda v_real, v_fake: objectives.fgan_critic_loss(div, div.v_opt(v_real), div.v_opt(v_fake)))
            if ratio else None,
        ),
    )


def _wasserstein(cfg, space: Tensor) -> Term:
    def generator_loss(v_real, v_fake):
        loss = objectives.wasserstein_generator_loss(v_fake)
        return loss if v_real is None else loss + v_real.mean()

    def clip(critic: nn.Module) -> None:
        with torch.no_grad():
            for p in critic.parameters():
                p.clamp_(-cfg.clip, cfg.clip)

    return Term(
        estimate="E_P[V] − E_Q[V] of the training critic: W1(P, Q) if the critic is 1-Lipschitz",
        adversarial=Adversarial(
            critic_loss=objectives.wasserstein_critic_loss,
            generator_loss=generator_loss,
            critic_t=lambda v: v,
            penalty=_penalty(cfg, lipschitz=True),
            constrain=clip if cfg.lipschitz == "clip" else None,
            spectral_norm=cfg.spectral_norm,
            lipschitz=True,
        ),
    )


def _mmd(cfg, space: Tensor) -> Term:
    # the median heuristic on samples of the compared space, fixed for the run; the second half may be empty
    h = objectives.median_bandwidth(space[:1000], space[1000:2000])
    return Term(
        estimate="unbiased MMD²(P, Q) of the batch, Gaussian kernel with the median-heuristic bandwidth",
        sample_loss=lambda nets, draw: objectives.mmd2_unbiased(draw.views.real[0], draw.views.fake[0], h),
    )


def _elbo(cfg, space: Tensor) -> Term:
    """The VAE's objective (Kingma & Welling 2014): maximize the evidence lower bound
    E_q[log p(x | z)] − KL(q(z | x) ‖ N(0, I)) ≤ log p(x), i.e. approximate maximum
    likelihood, which minimizes KL(P‖Q). The reparametrized z = μ + σ·ε takes its ε
    from the loop's noise stream, so runs reproduce and resume bit for bit."""

    def loss(nets, draw):
        real = draw.batch
        mean, log_var = nets["encoder"](real.x, real.y)
        eps = draw.z[:, : mean.shape[1]]
        code = torch.addcmul(mean, torch.exp(0.5 * log_var), eps)
        log_px = nets["generator"].log_likelihood(real.x, code, real.y)
        return (objectives.gaussian_kl_to_standard(mean, log_var) - log_px).mean()

    return Term(estimate="−ELBO of the batch, nats per sample (≥ −log q(x))", sample_loss=loss)


def _reconstruction(cfg, space: Tensor) -> Term:
    """−E log p(x | z = E(x)): the decoder reconstructs each sample from its code (an autoencoder's loss,
    in nats per sample; Makhzani et al. 2015 use the squared error, which is the Gaussian case)."""

    def loss(nets, draw):
        real = draw.batch
        return -nets["generator"].log_likelihood(real.x, nets["encoder"](real.x, real.y), real.y).mean()

    return Term(estimate="−log p(x | E(x)) of the batch, nats per sample", sample_loss=loss)


def _cycle(cfg, space: Tensor) -> Term:
    """cycle_weight · ‖x − G(E(x))‖² / v, v the mean variance per coordinate of the compared data: a BiGAN's
    generator redraws each training sample from the encoder's code of it. At the BiGAN's optimum G and E
    invert each other, but the adversarial game reaches it slowly and its encoder's codes stay loosely tied to
    x; an explicit reconstruction of x (ALICE's cycle consistency, Li et al. 2017) ties them. Dividing by v
    makes the weight independent of the data's units."""
    flat = space.flatten(1)
    scale = cfg.cycle_weight / float(flat.var(0).mean().clamp_min(1e-12)) if len(flat) > 1 else cfg.cycle_weight

    def loss(nets, draw):
        x, code = draw.views.real  # the batch and its codes E(x) as the critic saw them (families.VIEWS["pairs"])
        return scale * (nets["generator"](code) - x).flatten(1).pow(2).sum(1).mean()

    return Term(estimate="cycle_weight · ‖x − G(E(x))‖² / v of the batch", sample_loss=loss)


# Every term an objective can name: the divergence kinds of catalog.DIVERGENCE_KINDS, the families' own losses.
TERMS: dict[str, Callable[[object, Tensor], Term]] = {
    "f-gan": _fgan, "wasserstein": _wasserstein, "mmd": _mmd, "elbo": _elbo, "reconstruction": _reconstruction,
    "cycle": _cycle,
}


@dataclass(frozen=True)
class Row:
    """A divergence name's entry: the term that trains by it, and how evaluation estimates it."""

    kind: str  # a key of TERMS
    estimator: str | None  # a value of ESTIMATORS


def row(name: str) -> Row:
    """The entry of any divergence name; InputError lists the valid names."""
    kind = catalog.divergence_kind(name)
    return Row(kind, ESTIMATORS[kind])


def prior_sample(latent_dim: int, n: int = 2000) -> Tensor:
    """Draws of the prior N(0, I) in `latent_dim` dimensions, fixed (seed 0): the space a latent term compares."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(0))


def build(cfg, x_train: Tensor) -> Recipe:
    """The recipe of a resolved Config: the terms of cfg.objective, on the space its family compares."""
    family = catalog.FAMILIES[cfg.model]
    space = prior_sample(cfg.noise_dim) if family.compares == "latent" else x_train
    terms = [TERMS[name](cfg, space) for name in cfg.objective.split(" + ")]
    adversarial = [t.adversarial for t in terms if t.adversarial is not None]
    if len(adversarial) > 1:
        raise InputError(f"objective {cfg.objective!r} has {len(adversarial)} critic terms; a run has one critic")
    return Recipe(cfg.objective, "; ".join(t.estimate for t in terms), adversarial[0] if adversarial else None,
                  tuple(t.sample_loss for t in terms if t.sample_loss is not None))
