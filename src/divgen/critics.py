"""Critics fitted from scratch to a fixed pair of samples: the networks, their objectives, the classifier.

One routine, fit_critic, trains every critic that divgen fits to fixed samples:
the independent critics of the estimators, the classifier tests, and
diagnostics such as fit.check_discriminator. The classifier whose logit
estimates log p_A/p_B is chosen among candidates (classifier_candidates) by
held-out log-likelihood (best_candidate).
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from divgen import divergences, objectives, recipes
from divgen.models import MLPCritic, Standardize, critic_pair
from divgen.threads import one_thread

# Adam's step size for the critics fitted to fixed samples (full-batch, so low-noise steps). With 3e-3
# the MLP classifier of a ring of narrow modes was still improving at 3,000 steps. On 8 pairs of 2-D
# data (rings, grid25, moons, swiss roll, Gaussians; an ad-hoc run, early stopping from step 500), the
# held-out JS bounds summed to 0.264 at 1e-2 against 0.223 at 3e-3; at 2e-2 the MLP overfitted within
# the 3,000 steps.
CRITIC_LR = 1e-2


@dataclass(frozen=True)
class CriticFit:
    """The network of a critic fitted to fixed samples, and how it is trained (fit_critic)."""

    width: int = 64  # units per hidden layer
    depth: int = 2  # hidden layers
    steps: int = 3000  # Adam steps at most; early stopping may end sooner
    lr: float = CRITIC_LR  # Adam's step size


Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def new_critic(a, b, width: int = 64, depth: int = 2, seed: int = 0, activation: type[nn.Module] = nn.SiLU,
               quadratic: bool = False, lipschitz: bool = False) -> MLPCritic:
    """A fresh critic for samples like a and b (standardized by their pooled statistics), initialized from `seed`.

    SiLU, not ReLU, by default: log-density ratios are smooth (quadratic between
    Gaussians), and a smooth critic fits them with less data; on Gaussian pairs
    in 5-10 dimensions it halved the KL estimate's bias.
    """
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):  # global RNG untouched, one thread at a time
        torch.manual_seed(seed)
        return MLPCritic(Standardize.of(a, b), width, depth, activation=activation, quadratic=quadratic,
                         lipschitz=lipschitz)


_INIT_LOCK = threading.Lock()  # new_critic seeds the global RNG: concurrent jobs (threads.concurrently) take turns


# ----------------------------------------------------------------- training ---
def fit_critic(
    critic: nn.Module,
    objective: Objective,
    a: torch.Tensor,
    b: torch.Tensor,
    rng: torch.Generator,
    steps: int = 3000,
    lr: float = CRITIC_LR,
    batch_size: int = 8192,
    check_every: int = 25,
    patience: int = 8,
    min_steps: int = 500,
    val_fraction: float = 0.2,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    optimizer: str = "adam",
) -> nn.Module:
    """Train a critic for a fixed pair of samples: maximize objective(critic, a, b, rng) with Adam.

    A fraction `val_fraction` of each sample is set aside (0: no early stopping,
    every step is kept). Every `check_every` steps the objective is computed
    there, and the critic with the best value is kept; training stops after
    `patience` checks without improvement, counted from step `min_steps` on: a
    classifier of finely structured data (a ring of narrow modes) can stay at or
    below chance on the held-out split for its first few hundred steps before it
    improves for thousands, and stopping on that plateau left it at chance.
    Samples of up to `batch_size` rows per side are used whole (full-batch Adam),
    the smooth, low-variance optimization a divergence estimate needs; larger
    ones are subsampled each step.

    `weight_decay` adds weight_decay·Σ w² over the weights (not the biases) to
    the loss. `optimizer="lbfgs"` minimizes that full-batch by L-BFGS for up to
    `steps` iterations, without early stopping: for critics whose objective is
    convex in their parameters (a quadratic logistic regression), where the
    ridge, not the stopping time, is the regularizer.
    """
    if optimizer == "lbfgs":
        return _fit_lbfgs(critic, objective, a, b, rng, steps, weight_decay)
    ia, ib = torch.randperm(len(a), generator=rng), torch.randperm(len(b), generator=rng)
    na, nb = (max(1, int(len(a) * val_fraction)), max(1, int(len(b) * val_fraction))) if val_fraction else (0, 0)
    val_a, fit_a, val_b, fit_b = a[ia[:na]], a[ia[na:]], b[ib[:nb]], b[ib[nb:]]
    opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas, fused=True)  # one kernel per step, not per tensor
    best, best_state, waited = -math.inf, copy.deepcopy(critic.state_dict()), 0
    with one_thread():
        for step in range(1, steps + 1):
            xa, xb = fit_a, fit_b
            if len(fit_a) > batch_size:
                xa = fit_a[torch.randint(len(fit_a), (batch_size,), generator=rng)]
            if len(fit_b) > batch_size:
                xb = fit_b[torch.randint(len(fit_b), (batch_size,), generator=rng)]
            loss = -objective(critic, xa, xb, rng) + _ridge(critic, weight_decay)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if val_fraction and (step % check_every == 0 or step == steps):
                value = float(objective(critic, val_a, val_b, rng).detach())
                if value > best:
                    best, best_state, waited = value, copy.deepcopy(critic.state_dict()), 0
                elif step >= min_steps:
                    waited += 1
                    if waited >= patience:
                        break
    if val_fraction:
        critic.load_state_dict(best_state)
    return critic


def _ridge(critic: nn.Module, weight: float) -> torch.Tensor | float:
    if not weight:
        return 0.0
    return weight * sum((w * w).sum() for name, w in critic.named_parameters() if not name.endswith("bias"))


def _fit_lbfgs(critic, objective, a, b, rng, steps, weight_decay) -> nn.Module:
    opt = torch.optim.LBFGS(critic.parameters(), max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = -objective(critic, a, b, rng) + _ridge(critic, weight_decay)
        loss.backward()
        return loss

    with one_thread():
        opt.step(closure)
    return critic


# --------------------------------------------------------------- objectives ---
_GAN = divergences.get("gan")


def logistic_objective(critic, a, b, rng=None) -> torch.Tensor:
    """The `gan` critic's objective E_A[log σ(V)] + E_B[log(1 − σ(V))]: class-balanced logistic regression of A against B.

    Its maximizer is V = log(p_A/p_B), whatever the sample sizes; its maximum is
    2·JS(A, B) − log 4 (Goodfellow et al. 2014, Proposition 1).
    """
    return objectives.fgan_bound(_GAN, *critic_pair(critic, a, b))


def wasserstein_objective(gp_weight: float, penalty_points: int = 256) -> Objective:
    """E_A[V] − E_B[V] − gp_weight · one-sided gradient penalty (WGAN-LP): the `wasserstein` recipe's critic loss.

    The penalty, a double backward pass, is taken at `penalty_points` random (A, B) pairs per call, as
    WGAN-GP takes it once per pair of a minibatch: it only has to keep the slope near 1, and on all
    pairs of a 2,000-point fold it took most of the step's time. On N(0, I) against N(e1, I), W1 = 1
    (2,000 points per side, 3 seeds), the estimates moved by at most 0.004 in d = 1 and 2 and 0.013 in
    d = 10, and took 20–30% less time.
    """
    penalty = recipes.Penalty("gp", gp_weight, one_sided=True, lipschitz=True)

    def objective(critic, a, b, rng):
        m = min(len(a), len(b))
        pairs = torch.randint(m, (penalty_points,), generator=rng) if m > penalty_points else slice(m)
        with torch.enable_grad():
            return (-objectives.wasserstein_critic_loss(*critic_pair(critic, a, b))
                    - penalty(critic, (a[pairs],), (b[pairs],), rng))

    return objective


# ---------------------------------------------------------- the classifier ---
# Candidates for the classifier whose logit estimates log p/q, chosen by held-out log-likelihood:
# the Gaussian (QDA) log-ratio, quadratic logistic regressions at several ridge strengths
# (both exact models of a Gaussian pair; QDA is the more data-efficient, logistic regression
# the more robust), and an MLP with a quadratic term (anything else).
RIDGES = (3.0, 10.0, 30.0, 100.0)  # λ·n: the penalty on the mean log-loss is (λ·n/n)·Σw²
SHRINKAGES = (0.0, 0.05, 0.1, 1.0)  # of gaussian_classifier; 1 is LDA (one shared covariance)
QUADRATIC_MAX_DIM = 128  # above it the d×d quadratic form costs more than it helps


class Candidates(NamedTuple):
    """Fitted classifiers, least regularized first, and each one's held-out log-likelihood per point:
    (log σ(V) on validation A, log σ(−V) on validation B), float64."""

    critics: list[MLPCritic]
    scores: list[tuple[torch.Tensor, torch.Tensor]]


def classifier_candidates(a: torch.Tensor, b: torch.Tensor, rng: torch.Generator, seed: int = 0,
                          fit: CriticFit = CriticFit(), val_fraction: float = 0.2) -> Candidates:
    """Classifiers of A against B whose logit V estimates log(p_A/p_B), and their held-out log-likelihoods.

    A fraction `val_fraction` of each sample is set aside; every candidate is fitted
    (fit_critic, logistic_objective) on the rest and scored there by the class-balanced
    log-likelihood E_A[log σ(V)] + E_B[log σ(−V)] (higher is better). Cross-fitted
    callers pick one candidate for all folds (best_candidate). Candidates, least
    regularized first: the log-ratio of Gaussians fitted to each sample
    (gaussian_classifier, shrinkages SHRINKAGES), quadratic logistic regressions
    V = c + wᵀh + hᵀAh on the standardized input h, with ridge penalties (r/n)·Σw²
    for r in RIDGES (d ≤ QUADRATIC_MAX_DIM), and a `fit.depth`-layer SiLU MLP of
    `fit.width` units with a quadratic term, trained by Adam with early stopping.
    """
    na, nb = max(1, int(len(a) * val_fraction)), max(1, int(len(b) * val_fraction))
    ia, ib = torch.randperm(len(a), generator=rng), torch.randperm(len(b), generator=rng)
    val_a, fit_a, val_b, fit_b = a[ia[:na]], a[ia[na:]], b[ib[:nb]], b[ib[nb:]]
    quadratic = a.shape[1] <= QUADRATIC_MAX_DIM
    candidates = []
    if quadratic:
        for shrinkage in SHRINKAGES:
            candidates.append(gaussian_classifier(fit_a, fit_b, shrinkage))
        for ridge in RIDGES:
            critic = new_critic(fit_a, fit_b, fit.width, 0, seed, quadratic=True)  # depth 0: linear + quadratic
            candidates.append(fit_critic(critic, logistic_objective, fit_a, fit_b, rng, steps=200,
                                         weight_decay=ridge / (len(fit_a) + len(fit_b)), optimizer="lbfgs"))
    critic = new_critic(fit_a, fit_b, fit.width, fit.depth, seed, quadratic=quadratic)
    candidates.append(fit_critic(critic, logistic_objective, fit_a, fit_b, rng, steps=fit.steps, lr=fit.lr))
    with torch.no_grad():
        # per validation point: log σ(V) on A, log σ(−V) on B; the objective is the sum of their means
        scores = [(F.logsigmoid(v_a).double(), F.logsigmoid(-v_b).double())
                  for v_a, v_b in (critic_pair(c, val_a, val_b) for c in candidates)]
    return Candidates(candidates, scores)


def best_candidate(scores: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> int:
    """The candidate to use, from each fold's per-point validation log-likelihoods (Candidates.scores).

    The first candidate, in the order of classifier_candidates (least regularized
    first), whose validation log-likelihood summed over folds is within one paired
    standard error of the best one's: a plug-in estimate of a divergence is biased
    by regularization (shrunk log-ratios give smaller divergences), so among
    classifiers that predict equally well the least shrunk is preferred.
    """
    n = len(scores[0])
    totals = [sum(float(fold[i][0].mean() + fold[i][1].mean()) for fold in scores) for i in range(n)]
    best = max(range(n), key=lambda i: (totals[i], -i))
    for i in range(n):
        var = sum(float((fold[best][0] - fold[i][0]).var()) / len(fold[i][0])
                  + float((fold[best][1] - fold[i][1]).var()) / len(fold[i][1]) for fold in scores)
        if totals[i] >= totals[best] - math.sqrt(var):
            return i
    return best


def gaussian_classifier(a: torch.Tensor, b: torch.Tensor, shrinkage: float = 0.0) -> MLPCritic:
    """The critic V = log N(x; μ_A, Σ_A) − log N(x; μ_B, Σ_B) (quadratic discriminant analysis).

    A depth-0 MLPCritic (linear + quadratic form on the standardized input) whose
    weights are set in closed form from each sample's mean and covariance: the
    exact log-ratio when both are Gaussian, with far less variance than a
    discriminatively trained quadratic. `shrinkage` λ pulls each covariance
    towards the pooled one, Σ_k ← (1 − λ)Σ_k + λΣ_pooled (regularized discriminant
    analysis, Friedman 1989): where the two covariances agree, their sampling noise
    then cancels in the log-ratio instead of inflating it.
    """
    critic = new_critic(a, b, 1, 0, quadratic=True)
    with torch.no_grad():
        moments = []
        h_a, h_b = critic.scaler(a).double(), critic.scaler(b).double()
        d = h_a.shape[1]
        covs = [torch.cov(h.T).reshape(d, d) for h in (h_a, h_b)]
        pooled = (covs[0] * (len(h_a) - 1) + covs[1] * (len(h_b) - 1)) / (len(h_a) + len(h_b) - 2)
        for h, cov in zip((h_a, h_b), covs):
            mean = h.mean(0)
            cov = (1 - shrinkage) * cov + shrinkage * pooled + 1e-6 * torch.eye(d, dtype=cov.dtype)
            chol = torch.linalg.cholesky(cov)
            precision = torch.cholesky_inverse(chol)
            moments.append((mean, precision, 2 * torch.log(torch.diagonal(chol)).sum()))
        (ma, pa, lda), (mb, pb, ldb) = moments
        # log N_A − log N_B = hᵀ(−½P_A + ½P_B)h + (P_A μ_A − P_B μ_B)ᵀh + c
        critic.quadratic.copy_(0.5 * (pb - pa))
        critic.net[0].weight.copy_((pa @ ma - pb @ mb)[None])
        critic.net[0].bias.copy_((-0.5 * ma @ pa @ ma + 0.5 * mb @ pb @ mb - 0.5 * lda + 0.5 * ldb)[None])
    return critic
