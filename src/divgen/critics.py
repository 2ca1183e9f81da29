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

from divgen import divergences, objectives, offload, recipes
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
    progress=None,
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

    `progress` (progress.Progress) counts Adam steps as they are taken, and the steps that early
    stopping saved when it stops, so that a fit counts `steps` in all.
    """
    if optimizer == "lbfgs":
        return _fit_lbfgs(critic, objective, a, b, rng, steps, weight_decay)
    ia, ib = torch.randperm(len(a), generator=rng), torch.randperm(len(b), generator=rng)
    na, nb = (max(1, int(len(a) * val_fraction)), max(1, int(len(b) * val_fraction))) if val_fraction else (0, 0)
    val_a, fit_a, val_b, fit_b = a[ia[:na]], a[ia[na:]], b[ib[:nb]], b[ib[nb:]]
    opt = Adam(list(critic.parameters()), lr, betas)
    best, best_state, waited = -math.inf, copy.deepcopy(critic.state_dict()), 0
    counted = 0  # steps told to `progress`
    with one_thread():
        for step in range(1, steps + 1):
            xa, xb = fit_a, fit_b
            if len(fit_a) > batch_size:
                xa = fit_a[torch.randint(len(fit_a), (batch_size,), generator=rng)]
            if len(fit_b) > batch_size:
                xb = fit_b[torch.randint(len(fit_b), (batch_size,), generator=rng)]
            loss = -objective(critic, xa, xb, rng) + _ridge(critic, weight_decay)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress is not None and step % check_every == 0:
                progress.update(step - counted)
                counted = step
            if val_fraction and (step % check_every == 0 or step == steps):
                value = float(objective(critic, val_a, val_b, rng).detach())
                if value > best:
                    best, best_state, waited = value, copy.deepcopy(critic.state_dict()), 0
                elif step >= min_steps:
                    waited += 1
                    if waited >= patience:
                        break
    if progress is not None:
        progress.update(steps - counted)
    if val_fraction:
        critic.load_state_dict(best_state)
    return critic


def _ridge(critic: nn.Module, weight: float) -> torch.Tensor | float:
    if not weight:
        return 0.0
    return weight * sum((w * w).sum() for name, w in critic.named_parameters() if not name.endswith("bias"))


class Adam:
    """Adam (Kingma & Ba 2015) by the kernel torch.optim.Adam(fused=True) runs, torch._fused_adam_: the
    same update bit for bit, one kernel per step, without torch.optim's Optimizer class.

    The class imports torch._dynamo when it is built and at every step (0.8 s on first use, under the
    import lock, so every critic fitted at once waited for it), and its step's bookkeeping took about a
    tenth of a small critic's step.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]  # first moments
        self.v = [torch.zeros_like(p) for p in params]  # second moments
        self.t = [torch.zeros((), dtype=torch.float32) for _ in params]  # steps, as torch.optim keeps them

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]  # as torch.optim: no gradient, no step
        if not live:
            return
        params, grads, m, v, t = ([xs[i] for i in live] for xs in
                                  (self.params, [p.grad for p in self.params], self.m, self.v, self.t))
        torch._foreach_add_(t, 1)
        torch._fused_adam_(params, grads, m, v, [], t, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                           weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)


def _fit_lbfgs(critic, objective, a, b, rng, steps, weight_decay) -> nn.Module:
    """L-BFGS by SciPy's L-BFGS-B on the flattened parameters (history 20, as torch.optim.LBFGS was run
    here; torch's class imports torch._dynamo, see Adam). The objective is convex in the parameters of the
    critics fitted this way, so any converged L-BFGS reaches the same minimum: on the quadratic
    logistic regressions of a ring's cross-fitting fold, the losses agreed with torch's to 1e-7."""
    from scipy.optimize import minimize
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    params = list(critic.parameters())

    def loss_and_gradient(x):
        with torch.no_grad():
            vector_to_parameters(torch.from_numpy(x).to(params[0].dtype), params)
        for p in params:
            p.grad = None
        loss = -objective(critic, a, b, rng) + _ridge(critic, weight_decay)
        loss.backward()
        grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        return float(loss.detach()), grad.double().numpy()

    with one_thread():
        x0 = parameters_to_vector(params).detach().double().numpy()
        found = minimize(loss_and_gradient, x0, jac=True, method="L-BFGS-B",
                         options={"maxiter": steps, "maxcor": 20, "gtol": 1e-9, "ftol": 1e-12})
        with torch.no_grad():
            vector_to_parameters(torch.from_numpy(found.x).to(params[0].dtype), params)
    for p in params:
        p.grad = None
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

    The value is divided by the critic's `out_scale` (the data's spread, models.MLPCritic): a number of
    order 1 in any units, so Adam's ε stays negligible and data 10⁴ times smaller fit as the same critic.
    """
    penalty = recipes.Penalty("gp", gp_weight, one_sided=True, lipschitz=True)

    def objective(critic, a, b, rng):
        m = min(len(a), len(b))
        pairs = torch.randint(m, (penalty_points,), generator=rng) if m > penalty_points else slice(m)
        with torch.enable_grad():
            value = (-objectives.wasserstein_critic_loss(*critic_pair(critic, a, b))
                     - penalty(critic, (a[pairs],), (b[pairs],), rng))
        return value / getattr(critic, "out_scale", 1.0)  # a bare function: its own units

    return objective


# ------------------------------------------------- the transport potential ---
# Dimensions up to which the `wasserstein` estimate takes its critic from optimal transport
# (transport_potential) instead of fitting a network. An empirical transport potential converges like the
# empirical measures, n^(-1/2) (a log factor at d = 2) up to d = 2 but n^(-1/d) beyond, and was measured
# so (`python benchmarks/evaluation.py --section wasserstein`, docs/evaluation.md): on N(0, I) against
# N(e1, I), W1 = 1, 2,000 points per side, the held-out estimate averaged 1.009 (d = 1), 0.961 (d = 2),
# 0.928 (d = 3) and 0.724 (d = 5), where the MLP with a gradient penalty gave 1.061, 1.020, 1.039 and 1.056.
TRANSPORT_MAX_DIM = 2
TRANSPORT_MAX_ROWS = 2000  # rows per side the transport problem takes at most (POT: about 1 s at 2,000 + 2,000)


class TransportPotential(nn.Module):
    """V(x) = min_j (‖x − b_j‖ − v_j), float64, shape (N,): a 1-Lipschitz critic in the data's units.

    Each term is 1-Lipschitz, and so is their minimum, whatever the offsets v_j: so for any
    samples E_A[V] − E_B[V] is at most W1(A, B) in expectation (Kantorovich–Rubinstein), and a
    held-out mean of it is a lower bound with nothing soft in it. transport_potential sets
    the support b_j and the offsets v_j from an optimal transport between two samples.

    x is taken `block` rows at a time: a block's distances to 2,000 support points are 4 MB at 256 rows.
    At 4,096 rows (65 MB, fresh pages from the system for every block) 100,000 1-D points took 4.0 s on one
    thread against 1.2 s, with the same values.
    """

    def __init__(self, support: torch.Tensor, offsets: torch.Tensor, block: int = 256):
        super().__init__()
        self.register_buffer("support", support.double())
        self.register_buffer("offsets", offsets.double())
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1).double()
        return torch.cat([(_distances(rows, self.support) - self.offsets).min(1).values
                          for rows in x.split(self.block)]) if len(x) else x.new_zeros(0)


def _distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖x_i − y_j‖ from the differences themselves. cdist's faster form, √(‖x‖² + ‖y‖² − 2xᵀy), loses the
    digits of close points far from the origin, and with them the slope bound: on data centred at 10⁴, V
    changed 43 times faster than x between points 10⁻⁶ apart."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")


def transport_potential(a: torch.Tensor, b: torch.Tensor, rng: torch.Generator,
                        max_rows: int = TRANSPORT_MAX_ROWS) -> TransportPotential:
    """The Kantorovich potential of the optimal transport from sample a to sample b, as a critic of all x.

    POT's network simplex solves the transport between the two samples (at most
    `max_rows` random rows of each, drawn with `rng`) for the Euclidean cost and
    returns dual variables u (on a), v (on b) with u_i + v_j ≤ ‖a_i − b_j‖ and
    mean(u) + mean(v) = W1 of the samples. V(x) = min_j (‖x − b_j‖ − v_j), the
    c-transform of v, is 1-Lipschitz, with V(a_i) ≥ u_i and V(b_j) ≤ −v_j, so it reaches
    that W1 on the samples themselves: the optimal critic of W1 there, extended to every x
    with slope at most 1. No step size, no stopping rule, no penalty weight.
    """
    a, b = (x if len(x) <= max_rows else x[torch.randperm(len(x), generator=rng)[:max_rows]] for x in (a, b))
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    return TransportPotential(b, torch.from_numpy(offload.run("transport_duals", _distances(a, b).numpy())))


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
                          fit: CriticFit = CriticFit(), val_fraction: float = 0.2, progress=None) -> Candidates:
    """Classifiers of A against B whose logit V estimates log(p_A/p_B), and their held-out log-likelihoods.

    A fraction `val_fraction` of each sample is set aside; every candidate is fitted
    (fit_critic, logistic_objective) on the rest and scored there by the class-balanced
    log-likelihood E_A[log σ(V)] + E_B[log σ(−V)] (higher is better); best_candidate
    picks one from these scores alone, so nothing outside (a, b) plays a part. Candidates, least
    regularized first: the log-ratio of Gaussians fitted to each sample
    (gaussian_classifier, shrinkages SHRINKAGES), quadratic logistic regressions
    V = c + wᵀh + hᵀAh on the standardized input h, with ridge penalties (r/n)·Σw²
    for r in RIDGES (d ≤ QUADRATIC_MAX_DIM), and a `fit.depth`-layer SiLU MLP of
    `fit.width` units with a quadratic term, trained by Adam with early stopping (its steps counted
    by `progress`, fit_critic).
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
    candidates.append(fit_critic(critic, logistic_objective, fit_a, fit_b, rng, steps=fit.steps, lr=fit.lr,
                                 progress=progress))
    with torch.no_grad():
        # per validation point: log σ(V) on A, log σ(−V) on B; the objective is the sum of their means
        scores = [(F.logsigmoid(v_a).double(), F.logsigmoid(-v_b).double())
                  for v_a, v_b in (critic_pair(c, val_a, val_b) for c in candidates)]
    return Candidates(candidates, scores)


# How far below the best validation log-likelihood a preferred candidate may be, in paired standard
# errors. A standard error shrinks like 1/√n: 1/√2 of one fold's is one of both folds' scores pooled,
# the margin the rule was tuned with (one standard error then); on a ring of narrow modes one fold's
# scores alone, at one standard error, chose the Gaussian classifier (JS 0.023 against 0.092 exact).
SE_MARGIN = 1 / math.sqrt(2)


def best_candidate(scores: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """The candidate to use, from its per-point validation log-likelihoods (Candidates.scores).

    The first candidate, in the order of classifier_candidates (least regularized
    first), whose validation log-likelihood is within SE_MARGIN paired standard errors
    of the best one's: a plug-in estimate of a divergence is biased by regularization
    (shrunk log-ratios give smaller divergences), so among classifiers that predict
    equally well the least shrunk is preferred.

    The scores are those of one fit: a cross-fitted caller chooses each fold's classifier from
    that fold's own scores, whose validation points lie in its training half. Pooling the
    folds' scores would choose fold 1's classifier partly on fold 2's validation points,
    which are fold 1's held-out half, and its held-out bound would no longer be one.
    """
    totals = [float(on_a.mean() + on_b.mean()) for on_a, on_b in scores]
    best = max(range(len(scores)), key=lambda i: (totals[i], -i))
    for i, (on_a, on_b) in enumerate(scores):
        var = (float((scores[best][0] - on_a).var()) / len(on_a)
               + float((scores[best][1] - on_b).var()) / len(on_b))
        if totals[i] >= totals[best] - SE_MARGIN * math.sqrt(var):
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
