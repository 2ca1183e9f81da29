"""Evaluation without likelihoods: two-sample tests, the independent critic, mode statistics.

A sampler is judged the way it was trained. A fresh classifier, fitted from
scratch on held-out real data against generated samples, estimates the
divergence and certifies a lower bound on it; two-sample tests with exact
p-values say whether the samples can be told apart at all; precision, recall,
density, coverage and, on toy mixtures, mode statistics say what was captured.
docs/evaluation.md says what every number covers and how well it does.

Sample arrays are (N, d) float tensors or arrays; A plays P (the data) and B
plays Q (the model) throughout, so `estimate(a, b, "kl")` estimates KL(A‖B).
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from divgen import divergences, jsonout, objectives, recipes
from divgen.errors import InputError
from divgen.models import MLPCritic, Standardize, critic_pair

ESTIMATORS = ("critic", "knn")
KNN_DIVERGENCES = ("kl", "reverse-kl")
MIN_SAMPLES = 20


@dataclass(frozen=True)
class TestResult:
    """A two-sample test of H0: A and B come from the same distribution."""

    __test__ = False  # not a pytest test class, despite the name

    method: str  # "c2st" or "mmd"
    statistic: float  # held-out accuracy (c2st) or unbiased MMD² (mmd)
    p_value: float
    n_a: int
    n_b: int


@dataclass(frozen=True)
class Estimate:
    """An estimate of D(A‖B), an interval around it, and (where the method has one) a certified lower bound.

    What each number means (critic_estimates, knn_estimate say more):
    - estimate: the point estimate (critic: cross-fitted plug-in of the classifier's log-ratio).
    - [ci_low, ci_high]: a two-sided `confidence` interval for the estimator's mean at this
      sample size: sampling and refitting variability, not the estimator's bias.
    - lower_bound: a one-sided `confidence` lower confidence bound on the true D(A‖B): the held-out
      variational bound, which no critic can push above D, minus z·(its standard error). None
      where the method certifies nothing (wasserstein with a soft gradient penalty, knn).
    - extrapolated: the estimate is above the most that the lower bound can certify from these
      samples (_ceiling: a classifier that is never wrong, with odds of n : 1), for a divergence
      without a finite maximum (Divergence.maximum; kl, pearson, ...). The estimate then rests on
      the classifier's log-ratio where the samples cannot check it: separated samples cannot tell
      a large kl from an infinite one (extrapolation_note). None where no classifier is fitted.
    Non-finite numbers are written as null in JSON (Estimate.to_dict).
    """

    divergence: str
    estimate: float
    ci_low: float
    ci_high: float
    method: str  # "critic" or "knn"
    n_a: int
    n_b: int
    lower_bound: float | None = None
    extrapolated: bool | None = None

    def to_dict(self) -> dict:
        """The record as strict JSON: NaN and ±inf become null."""
        return {k: _json_number(v) for k, v in asdict(self).items()}


def extrapolation_note(e: dict) -> str | None:
    """The line a reader needs under an extrapolated estimate (Estimate.to_dict); None for any other."""
    if not e.get("extrapolated"):
        return None
    name = e["divergence"]
    return (f"{name}: the estimate is above what these samples can certify (odds beyond n : 1, n points per side): "
            "it rests on the classifier's log-ratio where no sample checks it, and samples that a classifier "
            f"separates cannot tell a large {name} from an infinite one; the lower bound is what they certify")


@dataclass(frozen=True)
class ModeStats:
    """VEEGAN/PacGAN mode statistics of generated samples on a Gaussian mixture."""

    modes_captured: int  # modes that are the nearest mode of ≥ 1 high-quality sample
    n_modes: int
    high_quality: float  # fraction of samples within 3 σ of their nearest mode
    reverse_kl: float  # KL(histogram of high-quality samples over modes ‖ uniform), nats
    n: int


def _json_number(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


# ------------------------------------------------------------------ inputs ---
def as_samples(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two sample sets, (N, d) and (M, d), as float32 tensors; InputError otherwise."""
    out = []
    for name, x in (("A", a), ("B", b)):
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] == 0:
            raise InputError(f"samples {name} must be a 2-D array (samples × features), got shape {tuple(x.shape)}")
        if x.shape[0] < MIN_SAMPLES:
            raise InputError(f"samples {name} has {x.shape[0]} rows; at least {MIN_SAMPLES} are needed")
        if not torch.isfinite(x).all():
            raise InputError(f"samples {name} contain NaN or infinite values")
        out.append(x.contiguous())
    if out[0].shape[1] != out[1].shape[1]:
        raise InputError(f"A has dimension {out[0].shape[1]} but B has dimension {out[1].shape[1]}")
    if (out[0] == out[0][:1]).all() and (out[1] == out[0][:1]).all():
        raise InputError("samples A and B are one and the same point repeated: there is nothing to test or estimate")
    return out[0], out[1]


def _z(p: float) -> float:
    """The standard normal quantile."""
    return statistics.NormalDist().inv_cdf(p)


def _halves(n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=rng)
    return perm[: n // 2], perm[n // 2 :]


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


_INIT_LOCK = threading.Lock()  # new_critic seeds the global RNG: concurrent jobs (_concurrently) take turns


def _cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _concurrently(jobs: list[tuple[str, Callable[[], object]]], progress=None) -> list:
    """The results of independent jobs, (name, job) pairs, in order, run on the machine's cores, each on
    one intra-op thread.

    The jobs here fit small critics, whose matrices are too small for several
    threads to speed up one of them, but whose fits are independent. Each job has
    its own random generator and builds its own networks (new_critic), so the
    results are the same bit for bit whatever the number of cores. `progress`
    (progress.Progress) hears of each job, by name, as it ends.
    """
    def done(i: int) -> None:
        if progress is not None:
            progress.begin(f"{jobs[i][0]} done")
            progress.update()

    with _one_thread():
        if min(len(jobs), _cores()) <= 1:
            results = []
            for i, (_, job) in enumerate(jobs):
                results.append(job())
                done(i)
            return results
        with ThreadPoolExecutor(min(len(jobs), _cores())) as pool:
            futures = {pool.submit(job): i for i, (_, job) in enumerate(jobs)}
            for future in as_completed(futures):
                done(futures[future])
            return [f.result() for f in futures]


@contextmanager
def _one_thread():
    """Run small-network training on one intra-op thread, then restore the setting.

    The critic's matrices are a few thousand by 64: splitting them across
    threads costs more in synchronization than it gains, and on a busy
    machine two threads ran 8× slower than one (measured on 2 shared cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------- training ---
# Adam's step size for the critics fitted to fixed samples (full-batch, so low-noise steps). With 3e-3
# the MLP classifier of a ring of narrow modes was still improving at 3,000 steps. On 8 pairs of 2-D
# data (rings, grid25, moons, swiss roll, Gaussians; an ad-hoc run, early stopping from step 500), the
# held-out JS bounds summed to 0.264 at 1e-2 against 0.223 at 3e-3; at 2e-2 the MLP overfitted within
# the 3,000 steps.
CRITIC_LR = 1e-2

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


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

    The one routine behind every critic that divgen fits to fixed samples: the
    independent critics of `estimate` and `evaluate`, the classifier test, and
    diagnostics such as fit.check_discriminator. A fraction `val_fraction` of
    each sample is set aside (0: no early stopping, every step is kept). Every
    `check_every` steps the objective is computed there, and the critic with
    the best value is kept; training stops after `patience` checks without
    improvement, counted from step `min_steps` on: a classifier of finely
    structured data (a ring of narrow modes) can stay at or below chance on
    the held-out split for its first few hundred steps before it improves for
    thousands, and stopping on that plateau left it at chance. Samples of up
    to `batch_size` rows per side are used whole (full-batch Adam), the smooth,
    low-variance optimization a divergence estimate needs; larger ones are
    subsampled each step.

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
    with _one_thread():
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

    with _one_thread():
        opt.step(closure)
    return critic


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


_GAN = divergences.get("gan")


def fgan_terms(div: divergences.Divergence, log_ratio_a: torch.Tensor, log_ratio_b: torch.Tensor):
    """Terms of the f-GAN bound at T = f'(r), r = exp(log ratio): t_a = f'(r) on A, t_b = f*(f'(r)) on B.

    D_f(P‖Q) ≥ E_P[t_a] − E_Q[t_b] for any r > 0, with equality at r = p/q.
    Both go through the table's stable forms, t_a = g_f(v), t_b = f*(g_f(v)) at
    v = v_opt(log r) (log-sigmoid and softplus for js and gan), in float64, so no
    log-ratio that float64 can hold makes them −inf or NaN.
    """
    v_a, v_b = div.v_opt(log_ratio_a.double()), div.v_opt(log_ratio_b.double())
    return div.g(v_a), div.f_star_g(v_b)


def plugin_terms(div: divergences.Divergence, log_ratio: torch.Tensor) -> torch.Tensor:
    """f(r)/(1 + r) at r = exp(log ratio), in log space: D_f(P‖Q) = E_P[f(r)/(1 + r)] + E_Q[f(r)/(1 + r)].

    (p + q)·f(p/q)/(1 + p/q) = q·f(p/q): the plug-in weighs both samples, so it stays
    finite where E_P[f(r)/r] or E_Q[f(r)] alone have heavy tails (KL with Q narrower
    than P). Computed as densities.exact_integrand with p, q replaced by σ(l), σ(−l).
    """
    from divgen.densities import exact_integrand

    l = log_ratio.double()
    return exact_integrand(div, F.logsigmoid(l), F.logsigmoid(-l))


def _normal_ci(t_a: torch.Tensor, t_b: torch.Tensor, confidence: float) -> tuple[float, float, float]:
    """mean(t_a) − mean(t_b) and its normal-theory interval (the two samples independent)."""
    value = float(t_a.mean() - t_b.mean())
    se = _se(t_a, t_b)
    z = _z(0.5 + confidence / 2)
    return value, value - z * se, value + z * se


def _se(t_a: torch.Tensor, t_b: torch.Tensor) -> float:
    """Standard error of mean(t_a) ± mean(t_b), the two samples independent."""
    return math.sqrt(float(t_a.var()) / len(t_a) + float(t_b.var()) / len(t_b))


# ---------------------------------------------------------- the classifier ---
# Candidates for the classifier whose logit estimates log p/q, chosen by held-out log-loss:
# the Gaussian (QDA) log-ratio, quadratic logistic regressions at several ridge strengths
# (both exact models of a Gaussian pair; QDA is the more data-efficient, logistic regression
# the more robust), and an MLP with a quadratic term (anything else).
RIDGES = (3.0, 10.0, 30.0, 100.0)  # λ·n: the penalty on the mean log-loss is (λ·n/n)·Σw²
SHRINKAGES = (0.0, 0.05, 0.1, 1.0)  # of gaussian_classifier; 1 is LDA (one shared covariance)
QUADRATIC_MAX_DIM = 128  # above it the d×d quadratic form costs more than it helps


def classifier_candidates(a: torch.Tensor, b: torch.Tensor, rng: torch.Generator, seed: int = 0, width: int = 64,
                          depth: int = 2, steps: int = 3000, lr: float = CRITIC_LR,
                          val_fraction: float = 0.2) -> tuple[list[MLPCritic], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Classifiers of A against B whose logit V estimates log(p_A/p_B), and their held-out log-likelihoods.

    A fraction `val_fraction` of each sample is set aside; every candidate is fitted
    (fit_critic, logistic_objective) on the rest and scored there by the class-balanced
    log-likelihood E_A[log σ(V)] + E_B[log σ(−V)] (higher is better). Cross-fitted
    callers pick one candidate for all folds (_best). Scores are per-point (log σ(V) on
    validation A, log σ(−V) on validation B). Candidates, least regularized first:
    the log-ratio of Gaussians fitted to each sample (gaussian_classifier, shrinkages
    SHRINKAGES), quadratic logistic regressions V = c + wᵀh + hᵀAh on the standardized input h, with
    ridge penalties (r/n)·Σw² for r in RIDGES (d ≤ QUADRATIC_MAX_DIM), and a `depth`-layer SiLU MLP of `width` units with
    a quadratic term, trained by Adam with early stopping.
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
            critic = new_critic(fit_a, fit_b, width, 0, seed, quadratic=True)  # depth 0: linear + quadratic
            candidates.append(fit_critic(critic, logistic_objective, fit_a, fit_b, rng, steps=200,
                                         weight_decay=ridge / (len(fit_a) + len(fit_b)), optimizer="lbfgs"))
    critic = new_critic(fit_a, fit_b, width, depth, seed, quadratic=quadratic)
    candidates.append(fit_critic(critic, logistic_objective, fit_a, fit_b, rng, steps=steps, lr=lr))
    with torch.no_grad():
        # per validation point: log σ(V) on A, log σ(−V) on B; the objective is the sum of their means
        scores = [(F.logsigmoid(v_a).double(), F.logsigmoid(-v_b).double())
                  for v_a, v_b in (critic_pair(c, val_a, val_b) for c in candidates)]
    return candidates, scores


def _best(scores: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> int:
    """The candidate to use, from each fold's per-point validation log-likelihoods (classifier_candidates).

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


# -------------------------------------------------------------- estimators ---
def critic_estimates(
    a,
    b,
    names,
    seed: int = 0,
    confidence: float = 0.95,
    width: int = 64,
    depth: int = 2,
    steps: int = 3000,
    lr: float = CRITIC_LR,
    gp_weight: float = 10.0,
) -> list[Estimate]:
    """D(A‖B) for each name, from independent critics with cross-fitting.

    Each sample is split in halves. Critics are trained on the first halves and
    evaluated on the second halves; then the halves swap, and the held-out terms
    of both folds are pooled, so every point is scored once, never by a critic
    that saw it.

    f-divergences share one classifier per fold (classifier_candidates, one candidate
    chosen for both folds), whose logit l estimates log(p/q); on held-out points it is
    clipped to the range it took on the training fold (any critic gives a valid bound,
    and a point far outside what the classifier was fitted on must not dominate the
    mean), and for the bound to a narrower range (_bound_range: what each sample
    reached, and |l| ≤ log n), which keeps its heavy-tailed terms (e^l on B for KL)
    light. Then, per divergence:
    - estimate: the plug-in E_A[φ(l)] + E_B[φ(l)], φ(l) = f(e^l)/(1 + e^l)
      (plugin_terms), which converges to D_f(P‖Q) as l does, but is not a bound;
      where the held-out bound below (before its margin) is larger, the bound, since
      D_f(P‖Q) is at least the bound's expectation.
    - lower_bound: the f-GAN bound E_A[f'(e^l)] − E_B[f*(f'(e^l))] (fgan_terms), which
      for any held-out l is ≤ D_f(P‖Q) in expectation, minus z_confidence times its
      standard error: a one-sided lower confidence bound on the true value.
    - [ci_low, ci_high]: the estimate ± z·se, where se² is the larger of the
      normal-theory variance of the held-out terms and (e₁ − e₂)²/4, the spread of the
      two folds' estimates (which includes refitting variability). It covers the
      estimator's mean at this sample size, not its bias.

    `wasserstein` trains its own critic with a one-sided gradient penalty and reports
    E_A[V] − E_B[V]. The penalty is soft, so the critic can be steeper than 1 and the
    value can exceed W1: it is an estimate, with lower_bound None.
    """
    a, b = as_samples(a, b)
    names = list(names)
    jobs, finish = _cross_fit_jobs(a, b, names, seed, width, depth, steps, lr, gp_weight)
    folds = finish(_concurrently(jobs)).terms
    return [_pooled(name, folds[name], confidence, len(a), len(b)) for name in names]


def _split(a: torch.Tensor, b: torch.Tensor, seed: int) -> tuple[list[tuple], torch.Generator]:
    """The two cross-fitting folds, (training A, training B, held-out A, held-out B) each, and the generator
    that drew them, for what follows (c2st-logit's relabellings). The split of A depends only on len(A)
    and the seed, so two calls with the same A and seed score A's points in the same order (paired_difference)."""
    rng = torch.Generator().manual_seed(seed)
    a1, a2 = _halves(len(a), rng)
    b1, b2 = _halves(len(b), rng)
    return [(a[a1], b[b1], a[a2], b[b2]), (a[a2], b[b2], a[a1], b[b1])], rng


def _fold_classifier(fold: tuple, k: int, seed: int, width: int, depth: int, steps: int, lr: float):
    """classifier_candidates fitted on fold k's training halves, with the fold's own generator."""
    train_a, train_b = fold[:2]
    return classifier_candidates(train_a, train_b, torch.Generator().manual_seed(seed + 1 + k), seed + 1 + k,
                                 width, depth, steps, lr)


def _fold_wasserstein(fold: tuple, k: int, seed: int, width: int, depth: int, steps: int, lr: float, gp_weight: float):
    train_a, train_b = fold[:2]
    critic = new_critic(train_a, train_b, width, depth, seed + 11 + k, lipschitz=True)
    return fit_critic(critic, wasserstein_objective(gp_weight), train_a, train_b,
                      torch.Generator().manual_seed(seed + 11 + k), steps=steps, lr=lr)


@dataclass
class CrossFit:
    """What the cross-fitted critics left: per name and fold, the held-out terms (estimate terms on A, on
    B, bound terms on A, on B; the value is mean(first) − mean(second)) and the most the bound can certify
    at the fold's size (_ceiling; None without a classifier); the folds and the generator
    after the split; fold 0's classifier candidates and scores (None without an f-divergence)."""

    terms: dict[str, list[tuple]]
    folds: list[tuple]
    rng: torch.Generator
    first_classifier: tuple | None


def _cross_fit_jobs(a, b, names, seed, width: int = 64, depth: int = 2, steps: int = 3000, lr: float = CRITIC_LR,
                    gp_weight: float = 10.0) -> tuple[list[tuple[str, Callable]], Callable]:
    """The critic fits of critic_estimates as independent jobs, (name, job) with one per kind of critic and
    fold, and the function that turns their results, in order, into a CrossFit."""
    kinds = {n: _estimator(n) for n in names}
    folds, rng = _split(a, b, seed)
    order = list(dict.fromkeys(kinds.values()))  # one critic per kind and fold
    fitters = {"classifier": _fold_classifier,
               "lipschitz": lambda fold, k, *args: _fold_wasserstein(fold, k, *args, gp_weight)}
    jobs = [(f"critic for {', '.join(n for n in names if kinds[n] == kind)}, fold {k + 1}",
             lambda kind=kind, k=k: fitters[kind](folds[k], k, seed, width, depth, steps, lr))
            for kind in order for k in range(len(folds))]

    def finish(results: list) -> CrossFit:
        fitted = {kind: results[i * len(folds):(i + 1) * len(folds)] for i, kind in enumerate(order)}
        first = None
        if "classifier" in fitted:
            first = fitted["classifier"][0]
            best = _best([scores for _, scores in fitted["classifier"]])
            fitted["classifier"] = [candidates[best] for candidates, _ in fitted["classifier"]]
        return CrossFit(_held_out_terms(fitted, folds, names, kinds), folds, rng, first)

    return jobs, finish


def _held_out_terms(critics: dict[str, list[nn.Module]], folds: list[tuple], names, kinds) -> dict[str, list[tuple]]:
    """Per name, per fold: the held-out terms of the fold's critic (see CrossFit)."""
    terms: dict[str, list[tuple]] = {n: [] for n in names}
    for kind, fold_critics in critics.items():
        for critic, (train_a, train_b, test_a, test_b) in zip(fold_critics, folds):
            with torch.no_grad():
                v_a, v_b = (v.double() for v in critic_pair(critic, test_a, test_b))
                if kind == "classifier":
                    seen_a, seen_b = (v.double() for v in critic_pair(critic, train_a, train_b))
                    lo, hi = float(min(seen_a.min(), seen_b.min())), float(max(seen_a.max(), seen_b.max()))
                    w_a, w_b = (v.clamp(*_bound_range(seen_a, seen_b)) for v in (v_a, v_b))
                    v_a, v_b = v_a.clamp(lo, hi), v_b.clamp(lo, hi)
            for name in (n for n in names if kinds[n] == kind):
                if kind == "classifier":
                    div = divergences.get(name)
                    terms[name].append((plugin_terms(div, v_a), -plugin_terms(div, v_b), *fgan_terms(div, w_a, w_b),
                                        _ceiling(div, min(len(seen_a), len(seen_b)))))
                else:
                    terms[name].append((v_a, v_b, None, None, None))
    return terms


def _bound_range(seen_a: torch.Tensor, seen_b: torch.Tensor) -> tuple[float, float]:
    """The interval the bound's critic is clipped to, from its logits on the fold's training A and B.

    Any critic gives a valid bound, so the clip only has to keep the held-out terms
    light-tailed. [smallest logit of a training A point, largest of a training B point]
    keeps the terms that can be heavy-tailed, f*(T) on B where T is large (e^l for KL)
    and T on A where it is very negative (−e^−l for reverse KL; l itself for JS),
    within what each sample reached; if the training samples were separated (that
    interval is empty), the whole training range. Either is then cut to
    |l| ≤ log n, n the smaller training sample: odds beyond n : 1 are more than n
    points can check, and a term of size e^|l| far above n leaves the normal
    interval of a mean of n terms meaningless. One held-out point with l = −10⁴ would
    otherwise pull a JS bound down by 10⁴/n.
    """
    a_min, b_max = float(seen_a.min()), float(seen_b.max())
    if a_min > b_max:  # separated: B's logits all below A's
        a_min, b_max = float(seen_b.min()), float(seen_a.max())
    return _capped(a_min, b_max, min(len(seen_a), len(seen_b)))


def _capped(lo: float, hi: float, n: int) -> tuple[float, float]:
    """[lo, hi] cut to |l| ≤ log n (see _bound_range); an interval still where [lo, hi] lies beyond it."""
    cap = math.log(n)
    return min(max(lo, -cap), cap), min(max(hi, -cap), cap)


def _ceiling(div: divergences.Divergence, n: int) -> float:
    """The most the held-out bound can certify when its critic is fitted on n points per side: the bound of
    a critic that is never wrong, at the log-ratios ±log n that _bound_range allows (about log n for kl)."""
    cap = torch.tensor([math.log(n)], dtype=torch.float64)
    t_a, t_b = fgan_terms(div, cap, -cap)
    return float(t_a - t_b)


def _pooled(name: str, folds: list[tuple], confidence: float, n_a: int, n_b: int) -> Estimate:
    """One Estimate from the held-out terms of the folds (see critic_estimates)."""
    def summary(i):  # pooled value, its se (held-out terms and fold spread)
        t_a, t_b = torch.cat([f[i] for f in folds]), torch.cat([f[i + 1] for f in folds])
        per_fold = [float(f[i].mean() - f[i + 1].mean()) for f in folds]
        return float(t_a.mean() - t_b.mean()), _se(t_a, t_b), max(_se(t_a, t_b), abs(per_fold[0] - per_fold[1]) / 2)

    value, _, se = summary(0)
    lower = None
    if folds[0][2] is not None:
        bound, bound_se, bound_spread = summary(2)
        lower = bound - _z(confidence) * bound_se
        if bound > value:  # the truth is at least the bound's mean, so the plug-in was too low
            value, se = bound, bound_spread
    z = _z(0.5 + confidence / 2)
    extrapolated = None
    if folds[0][4] is not None:
        unbounded = not math.isfinite(divergences.get(name).maximum)
        extrapolated = unbounded and value > statistics.fmean(f[4] for f in folds)
    return Estimate(name, value, value - z * se, value + z * se, "critic", n_a, n_b, lower, extrapolated)


@dataclass(frozen=True)
class Difference:
    """D(A‖B₁) − D(A‖B₂) from one set of real samples A, with a paired interval."""

    divergence: str
    difference: float  # positive: B₂ is closer to A
    ci_low: float
    ci_high: float


def paired_difference(a, b1, b2, name: str, seed: int = 0, confidence: float = 0.95, **kwargs) -> Difference:
    """How much closer B₂ is to A than B₁ by divergence `name`: the difference of two cross-fitted
    critic estimates (their plug-in terms, critic_estimates) that score the same points of A.

    Each point of A contributes one term to each estimate, so the A side of the
    difference is a mean of paired differences, whose variance is far below the
    sum of the two estimates' variances; the B sides are independent. The
    interval is normal theory on those terms (the training variability of the
    critics is not in it).
    """
    a, b1 = as_samples(a, b1)
    _, b2 = as_samples(a, b2)
    (jobs1, finish1), (jobs2, finish2) = (_cross_fit_jobs(a, b, [name], seed, **kwargs) for b in (b1, b2))
    results = _concurrently(jobs1 + jobs2)
    t1, t2 = finish1(results[:len(jobs1)]).terms[name], finish2(results[len(jobs1):]).terms[name]
    on_a = torch.cat([f[0] for f in t1]) - torch.cat([f[0] for f in t2])  # paired: same points of A
    on_b1, on_b2 = torch.cat([f[1] for f in t1]), torch.cat([f[1] for f in t2])
    value = float(on_a.mean() - on_b1.mean() + on_b2.mean())
    se = math.sqrt(float(on_a.var()) / len(on_a) + float(on_b1.var()) / len(on_b1) + float(on_b2.var()) / len(on_b2))
    z = _z(0.5 + confidence / 2)
    return Difference(name, value, value - z * se, value + z * se)


def _estimator(name: str) -> str:
    """How an independent critic estimates `name` (recipes.ESTIMATORS); InputError if it cannot."""
    kind = recipes.row(name).estimator
    if kind is None:
        raise InputError(f"{name} is not a variational bound that a critic can estimate; "
                         "use `divgen test --method mmd` for the kernel statistic")
    return kind


def critic_estimate(a, b, name: str, seed: int = 0, confidence: float = 0.95, **kwargs) -> Estimate:
    """D(A‖B) certified by an independent critic; see critic_estimates."""
    return critic_estimates(a, b, [name], seed=seed, confidence=confidence, **kwargs)[0]


def knn_estimate(a, b, name: str = "kl", k: int = 5, confidence: float = 0.95) -> Estimate:
    """KL(A‖B) by k-nearest-neighbour distances (Wang, Kulkarni & Verdú 2009, eq. 5).

    D̂ = (d/n) Σ_i log(ν_k(i) / ρ_k(i)) + log(m / (n − 1)), with ρ_k(i) the
    distance from a_i to its k-th nearest neighbour among the other a's and
    ν_k(i) to its k-th nearest neighbour among the m b's. `reverse-kl` swaps
    A and B. The estimator assumes continuous densities: samples with many
    repeated rows (more than KNN_MAX_TIES: rounded or discrete data, the same file
    twice) or a k-th neighbour at distance 0, which make log ρ = −∞ or spuriously
    small, are refused with an InputError.

    The interval is normal theory on the n terms: it covers the estimator's mean
    at this sample size, not its bias, which at n in the thousands is of the
    order of the interval or larger in d ≥ 2 (docs/evaluation.md); there is no
    lower bound (lower_bound None).
    """
    from scipy.spatial import cKDTree

    if name not in KNN_DIVERGENCES:
        raise InputError(f"--method knn estimates {' and '.join(KNN_DIVERGENCES)} only, not {name!r}")
    a, b = as_samples(a, b)
    _distinct_points(a, b)
    p, q = (a, b) if name == "kl" else (b, a)
    p, q = p.double().numpy(), q.double().numpy()
    n, d = p.shape
    m = len(q)
    if k >= n:
        raise InputError(f"k-NN with k = {k} needs more than {k} rows in each sample")
    rho = cKDTree(p).query(p, k=k + 1)[0][:, k]  # k + 1: the nearest is the point itself
    nu = cKDTree(q).query(p, k=k)[0]
    nu = nu[:, k - 1] if nu.ndim == 2 else nu
    # within the 1% of ties _distinct_points allows, k copies of one point would still make
    # a k-th neighbour distance 0 and log ρ = −∞
    if (rho == 0).any() or (nu == 0).any():
        raise InputError(f"--method knn: some points have {k} or more exact copies (a k-th neighbour at distance 0); "
                         "k-NN distances need distinct points: remove duplicates or use --method critic")
    terms = d * (np.log(nu) - np.log(rho)) + math.log(m / (n - 1))
    value, lo, hi = _normal_ci(torch.from_numpy(terms), torch.zeros(2, dtype=torch.float64), confidence)
    return Estimate(name, value, lo, hi, "knn", len(a), len(b))


# Ties the k-NN estimator tolerates: independent float32 samples of a continuous distribution
# repeat a few values by rounding alone (2 in 10,000 draws of a 1-D normal); ties beyond this
# fraction bias it (every row twice: KL 0.43 instead of 0; the same file twice: a negative KL).
KNN_MAX_TIES = 0.01


def _distinct_points(a: torch.Tensor, b: torch.Tensor) -> None:
    """InputError if the k-NN estimator's distances would tie for more than KNN_MAX_TIES of the rows:
    rows repeated within A or B, or rows of A that are also in B."""
    from divgen.data import duplicate_rows

    for name, x in (("A", a), ("B", b)):
        if (k := duplicate_rows(x.numpy())) > KNN_MAX_TIES * len(x):
            raise InputError(f"--method knn: samples {name} repeat {k} of their {len(x)} rows; k-NN distances need "
                             "distinct points (a continuous distribution): remove duplicates or use --method critic")
    if (k := duplicate_rows(a.numpy(), b.numpy())) > KNN_MAX_TIES * len(a):
        raise InputError(f"--method knn: {k} rows of A also occur in B; the k-NN estimator needs two independent "
                         "samples (the same file twice gives a biased estimate): use --method critic or another sample")


def estimate(a, b, name: str, method: str = "critic", seed: int = 0, confidence: float = 0.95) -> Estimate:
    """D(A‖B) for any f-divergence name or `wasserstein`, by `critic` or (KL only) `knn`."""
    if method not in ESTIMATORS:
        raise InputError(f"unknown estimation method {method!r}; valid: {', '.join(ESTIMATORS)}")
    _estimator(name)  # InputError for unknown or non-estimable names, before any work
    if not 0 < confidence < 1:
        raise InputError("--confidence must lie strictly between 0 and 1")
    if method == "knn":
        return knn_estimate(a, b, name, confidence=confidence)
    return critic_estimate(a, b, name, seed=seed, confidence=confidence)


# ------------------------------------------------------- two-sample tests ---
def c2st(a, b, seed: int = 0, width: int = 64, depth: int = 2, steps: int = 1000, lr: float = CRITIC_LR) -> TestResult:
    """The classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017).

    A test set of n_te/2 points from each sample is set aside (balanced, so a
    classifier that ignores its input scores exactly ½ in expectation). A small
    network is trained on the remaining points to tell A from B, with the
    classes weighted equally and early stopping on a validation split, and it
    labels the top-scoring half of the test set A. The statistic is its
    held-out accuracy. Because exactly half the test set is called A, the number
    of A's among those calls is Hypergeometric(n_te, n_te/2, n_te/2) under H0 and
    `correct` is twice it: the p-value is that exact tail, not a Binomial one.
    """
    a, b = as_samples(a, b)
    rng = torch.Generator().manual_seed(seed)
    half = min(len(a), len(b)) // 2
    ia, ib = torch.randperm(len(a), generator=rng), torch.randperm(len(b), generator=rng)
    test_a, test_b = a[ia[:half]], b[ib[:half]]
    train_a, train_b = a[ia[half:]], b[ib[half:]]

    critic = new_critic(train_a, train_b, width, depth, seed + 1)
    fit_critic(critic, logistic_objective, train_a, train_b, rng, steps=steps, lr=lr, check_every=10, patience=10)
    with torch.no_grad():
        v = torch.cat(critic_pair(critic, test_a, test_b))  # (n_te,), A first
    # The classifier calls the half of the test set it scores highest "A" (ties
    # broken at random), so its calls are balanced like the truth.
    n_te = 2 * half
    order = torch.randperm(n_te, generator=rng)
    ranked = order[torch.argsort(v[order], stable=True)]  # ascending score, random among ties
    called_a = torch.zeros(n_te, dtype=torch.bool)
    called_a[ranked[half:]] = True
    hits = int(called_a[:half].sum())  # A's called A; then B's called B = half − (half − hits) = hits
    return TestResult("c2st", 2 * hits / n_te, balanced_calls_p_value(hits, half), len(a), len(b))


def balanced_calls_p_value(hits: int, half: int) -> float:
    """P(K ≥ hits) for K ~ Hypergeometric(2·half, half, half): the exact null of a classifier that calls
    exactly `half` of a balanced test set of 2·half points "A" (correct = 2K)."""
    from scipy import stats

    return float(stats.hypergeom.sf(hits - 1, 2 * half, half, half))


def c2st_logit(a, b, seed: int = 0, permutations: int = 1000, width: int = 64, depth: int = 2,
               steps: int = 3000, lr: float = CRITIC_LR) -> TestResult:
    """A classifier test on held-out logits, with an exact permutation p-value.

    Each sample is split in halves, as critic_estimates splits them; the
    classifier of its first fold (classifier_candidates fitted on the first
    halves: the Gaussian, quadratic-logistic and MLP candidates, the best by
    validation log-likelihood on that half alone) scores the second halves. The
    statistic is the mean held-out logit V on A minus that on B (for a good
    classifier an estimate of E_P[log p/q] − E_Q[log p/q] = KL(P‖Q) + KL(Q‖P)):
    it uses how far each point is from the boundary, not only its side as c2st's
    accuracy does. V is clipped to the range it took on the first halves and to
    |V| ≤ log n (n the smaller first half), as the estimates' bound is: a few
    held-out points far outside what the classifier was fitted on (logits of
    −10⁷ from a Gaussian classifier of images) would otherwise outweigh every
    other point. Under H0 the labels of the held-out halves are exchangeable
    given the classifier, which never saw them, so relabelling them gives an exact
    p-value, (1 + #{permuted ≥ observed}) / (1 + P). `divgen evaluate` takes this
    classifier from its critic estimates instead of fitting it again (same
    seed, same numbers).

    Not cross-fitted: swapping the halves and adding the second fold's statistic
    makes the relabelling null too narrow (each half would train the classifier that
    tests the other; measured 13.5% rejections at α = 0.05 on a Gaussian null), and a
    Bonferroni combination of the two folds' p-values was too conservative (0 of 40).
    """
    a, b = as_samples(a, b)
    if permutations < 1:
        raise InputError("--permutations must be at least 1")
    folds, rng = _split(a, b, seed)
    first = _fold_classifier(folds[0], 0, seed, width, depth, steps, lr)
    return _logit_test(first, folds[0], rng, permutations)


def _logit_test(first_classifier: tuple, fold: tuple, rng: torch.Generator, permutations: int) -> TestResult:
    """c2st-logit from fold 0's classifier candidates and scores and that fold's held-out halves."""
    candidates, scores = first_classifier
    critic = candidates[_best([scores])]  # chosen on fold 0 alone: the held-out halves play no part
    train_a, train_b, held_a, held_b = fold
    with torch.no_grad():
        seen = torch.cat(critic_pair(critic, train_a, train_b))
        v = torch.cat(critic_pair(critic, held_a, held_b)).double()  # (n + m,), A first
    v = v.clamp(*_capped(float(seen.min()), float(seen.max()), min(len(train_a), len(train_b))))
    n, m = len(held_a), len(held_b)
    member = _memberships(n + m, n, permutations, rng).double()  # (n + m, P + 1)
    in_a = v @ member  # Σ_{A} V per relabelling
    stat = in_a / n - (v.sum() - in_a) / m
    n_a, n_b = len(fold[0]) + n, len(fold[1]) + m
    return TestResult("c2st-logit", float(stat[0]), _p_value(stat), n_a, n_b)


def _memberships(big_n: int, n: int, permutations: int, rng: torch.Generator) -> torch.Tensor:
    """(N, P + 1) 0/1 matrix: column 0 puts the first n points in A, the others are random relabellings."""
    member = torch.zeros(big_n, permutations + 1)
    member[:n, 0] = 1
    for p in range(1, permutations + 1):
        member[torch.randperm(big_n, generator=rng)[:n], p] = 1
    return member


KERNEL_BLOCK = 512  # rows of a block of the kernel matrix (_permuted_mmd2)


def _permuted_mmd2(z: torch.Tensor, n: int, kernels, member: torch.Tensor, block: int = KERNEL_BLOCK) -> torch.Tensor:
    """Unbiased MMD² of every relabelling in `member` (N, P + 1), for each kernel: (K, P + 1), float64.

    `kernels` are functions of squared distances, float32 (B, B') -> (B, B'), each
    with k(x, x) = kernel(0). With S the 0/1 membership of A in each relabelling,
    the statistic needs SᵀKS and SᵀK1 per relabelling. K is formed one pair of
    blocks at a time and never whole, and only for blocks i ≤ j: K is symmetric,
    so the pair (i, j) gives S_iᵀK_ij S_j + S_jᵀK_ji S_i = 2·S_iᵀ(K_ij S_j), from
    one product (about half the products of the full matrix). The distances of a
    pair of blocks are computed once, in float64, for all kernels; the products
    run in float32 and are summed in float64: every relabelling's statistic is
    computed by the same arithmetic, so the permutation p-value stays exact, and
    the rounding is far below the statistic's spread under relabelling.
    """
    big_n = len(z)
    m = big_n - n
    aka = torch.zeros(len(kernels), member.shape[1], dtype=torch.float64)  # Σ_{i,j ∈ A} K_ij per relabelling
    k_one = torch.zeros(len(kernels), big_n, dtype=torch.float64)  # K 1
    member32, z64 = member.float(), z.double()
    starts = range(0, big_n, block)
    for i in starts:
        rows = slice(i, i + block)
        for j in (j for j in starts if j >= i):
            cols = slice(j, j + block)
            sq = torch.cdist(z64[rows], z64[cols]).square_().float()  # (block, block)
            for k, kernel in enumerate(kernels):
                kern = kernel(sq)
                inner = (member32[rows] * (kern @ member32[cols])).sum(0, dtype=torch.float64)
                aka[k] += inner if i == j else 2 * inner
                k_one[k, rows] += kern.sum(1, dtype=torch.float64)
                if i != j:
                    k_one[k, cols] += kern.sum(0, dtype=torch.float64)
    member64 = member.double()
    ak1 = k_one @ member64  # Σ_{i ∈ A, j} K_ij
    total = k_one.sum(1, keepdim=True)
    bkb = total - 2 * ak1 + aka
    akb = ak1 - aka
    diag = torch.tensor([float(kernel(torch.zeros(1, 1))) for kernel in kernels], dtype=torch.float64)[:, None]
    # remove the n (m) self-pairs from the within-sample sums
    return (aka - n * diag) / (n * (n - 1)) + (bkb - m * diag) / (m * (m - 1)) - 2 * akb / (n * m)


def _p_value(stats_: torch.Tensor) -> float:
    """(1 + #{permuted ≥ observed}) / (1 + P) for a statistic whose column 0 is the observed one (Phipson & Smyth 2010)."""
    return (1 + int((stats_[1:] >= stats_[0]).sum())) / len(stats_)


def _gaussian(h: float):
    # exp(−d²/(2h²)) of squared distances: one new (block, N) array
    return lambda sq: torch.mul(sq, -0.5 / (h * h)).exp_()


def _energy(sq: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(sq).neg_()  # −‖x − y‖


def mmd_test(a, b, permutations: int = 500, seed: int = 0, block: int = KERNEL_BLOCK) -> TestResult:
    """Kernel two-sample test: unbiased MMD² with a Gaussian kernel and a permutation p-value.

    Bandwidth: the median heuristic on a random subsample of the pooled data (a
    function of the pool only, so every permutation uses the same kernel).
    All permutations are evaluated together (_permuted_mmd2). It is blind to
    differences at scales far below the median distance (narrow modes): use mmd-agg.
    """
    a, b = as_samples(a, b)
    if permutations < 1:
        raise InputError("--permutations must be at least 1")
    rng = torch.Generator().manual_seed(seed)
    z = torch.cat([a, b])
    sub = z[torch.randperm(len(z), generator=rng)[:1000]]
    h = float(objectives.median_bandwidth(sub, sub[:0]))
    mmd2 = _permuted_mmd2(z, len(a), [_gaussian(h)], _memberships(len(z), len(a), permutations, rng), block)[0]
    return TestResult("mmd", float(mmd2[0]), _p_value(mmd2), len(a), len(b))


AGG_BANDWIDTHS = 6
KERNEL_MAX_PER_SIDE = 2500  # the kernel tests' cost grows like N² × kernels × permutations


def _relabelled_mmd2(a, b, permutations: int, seed: int, block: int, max_per_side: int, kernels_of) -> torch.Tensor:
    """The kernel tests' one protocol: at most `max_per_side` random rows of each sample, P random
    relabellings, then kernels_of(pooled sample, generator) and their MMD² (_permuted_mmd2), (K, P + 1).
    mmd-agg's last kernel is the energy test's, so `divgen evaluate` gets both from one pass, with the
    numbers `divgen test` gives for each."""
    a, b = as_samples(a, b)
    if permutations < 1:
        raise InputError("--permutations must be at least 1")
    rng = torch.Generator().manual_seed(seed)
    a = a[torch.randperm(len(a), generator=rng)[:max_per_side]]
    b = b[torch.randperm(len(b), generator=rng)[:max_per_side]]
    z = torch.cat([a, b])
    member = _memberships(len(z), len(a), permutations, rng)
    return _permuted_mmd2(z, len(a), kernels_of(z, rng), member, block)


def _agg_kernels(bandwidths: int, with_energy: bool):
    """mmd-agg's kernels of a pooled sample: Gaussians on a grid of bandwidths, then the energy kernel."""
    def kernels_of(z: torch.Tensor, rng: torch.Generator) -> list:
        sub = z[torch.randperm(len(z), generator=rng)[:1000]].double()
        dist = torch.pdist(sub)
        dist = dist[dist > 0]
        if len(dist) == 0:
            dist = torch.ones(1, dtype=torch.float64)
        lo, hi = float(torch.quantile(dist, 0.05)) / 2, float(torch.quantile(dist, 0.95)) * 2
        return [_gaussian(float(h)) for h in np.geomspace(lo, hi, bandwidths)] + ([_energy] if with_energy else [])

    return kernels_of


def mmd_agg_test(a, b, permutations: int = 500, seed: int = 0, block: int = KERNEL_BLOCK,
                 bandwidths: int = AGG_BANDWIDTHS, with_energy: bool = True,
                 max_per_side: int = KERNEL_MAX_PER_SIDE) -> TestResult:
    """MMD over many kernels with one calibrated p-value (min-p aggregation); divgen's default test.

    Gaussian kernels with `bandwidths` bandwidths on a geometric grid from half the
    5% quantile to twice the 95% quantile of the pooled pairwise distances (as in
    Schrab et al., "MMD Aggregated Two-Sample Test", JMLR 2023), so narrow modes
    and broad shifts are both seen, and (`with_energy`) the energy-distance kernel
    −‖x − y‖, which has the most power against shifts in many dimensions. For every
    relabelling, each kernel's MMD²
    is turned into its permutation p-value among all relabellings; the statistic
    is the smallest of them (ties broken by their mean), and its own permutation distribution (the same
    relabellings, Westfall & Young's min-p) gives the p-value, exact at any level.
    `statistic` is the smallest per-kernel permutation p-value. Samples larger than
    `max_per_side` are tested on a random subset of that size (the cost grows like
    N² × kernels × permutations: 2 × 5,000 points took 77 s without it).
    """
    mmd2 = _relabelled_mmd2(a, b, permutations, seed, block, max_per_side, _agg_kernels(bandwidths, with_energy))
    return _min_p("mmd-agg", mmd2, len(a), len(b))


def _min_p(method: str, mmd2: torch.Tensor, n_a: int, n_b: int) -> TestResult:
    """The min-p aggregate of several kernels' MMD² over the same relabellings (mmd_agg_test)."""
    # per kernel, the permutation p-value of every column among all P + 1 (ties counted against)
    ranks = (mmd2[:, None, :] >= mmd2[:, :, None]).sum(-1).double() / mmd2.shape[1]  # (K, P + 1)
    min_p = ranks.min(0).values  # (P + 1,)
    # min_p takes only P + 1 values and two kernels often share one, so columns tie with the
    # observed one; counting every tie against it made the test conservative (1% rejections at
    # α = 0.05 on ring8). The mean of the kernels' p-values breaks the ties: the order is
    # lexicographic, (min_p, mean_p), and the p-value exact again.
    key = min_p + ranks.mean(0) / (2 * mmd2.shape[1])  # mean_p / (2(P + 1)) < the step of min_p
    p_value = int((key <= key[0]).sum()) / len(key)
    return TestResult(method, float(min_p[0]), p_value, n_a, n_b)


def energy_test(a, b, permutations: int = 500, seed: int = 0, block: int = KERNEL_BLOCK,
                max_per_side: int = KERNEL_MAX_PER_SIDE) -> TestResult:
    """Energy-distance test (Székely & Rizzo 2004) with a permutation p-value.

    The statistic is the unbiased energy distance 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖,
    which is the unbiased MMD² of the kernel −‖x − y‖ (distances of A to A and of B
    to B over distinct pairs): no bandwidth to choose, and sensitive to differences
    at every scale, weighted towards large ones. Samples larger than `max_per_side`
    are tested on a random subset of that size, with the relabellings mmd-agg uses.
    """
    stat = _relabelled_mmd2(a, b, permutations, seed, block, max_per_side, lambda z, rng: [_energy])[0]
    return TestResult("energy", float(stat[0]), _p_value(stat), len(a), len(b))


def kernel_tests(a, b, permutations: int = 500, seed: int = 0) -> list[TestResult]:
    """mmd-agg and energy from one pass over the kernel matrices: the energy kernel is mmd-agg's last, and
    both tests draw the same rows and relabellings, so each result is what its own function gives."""
    mmd2 = _relabelled_mmd2(a, b, permutations, seed, KERNEL_BLOCK, KERNEL_MAX_PER_SIDE, _agg_kernels(AGG_BANDWIDTHS, True))
    n_a, n_b = len(a), len(b)
    return [_min_p("mmd-agg", mmd2, n_a, n_b), TestResult("energy", float(mmd2[-1, 0]), _p_value(mmd2[-1]), n_a, n_b)]


# The tests of `divgen test --method`: name -> (a, b, seed, permutations) -> TestResult
TEST_METHODS: dict[str, Callable[..., TestResult]] = {
    "mmd-agg": lambda a, b, seed, permutations: mmd_agg_test(a, b, permutations=permutations, seed=seed),
    "energy": lambda a, b, seed, permutations: energy_test(a, b, permutations=permutations, seed=seed),
    "c2st-logit": lambda a, b, seed, permutations: c2st_logit(a, b, seed=seed, permutations=max(permutations, 1)),
    "c2st": lambda a, b, seed, permutations: c2st(a, b, seed=seed),
    "mmd": lambda a, b, seed, permutations: mmd_test(a, b, permutations=permutations, seed=seed),
}
TESTS = tuple(TEST_METHODS)
DEFAULT_TEST = "mmd-agg"
KERNEL_TESTS = ("mmd-agg", "energy", "mmd")


def two_sample_test(a, b, method: str = DEFAULT_TEST, seed: int = 0, permutations: int = 500) -> TestResult:
    """Test H0: A and B have the same distribution, by any method of TESTS."""
    if method not in TEST_METHODS:
        raise InputError(f"unknown test method {method!r}; valid: {', '.join(TESTS)}")
    if method in KERNEL_TESTS:  # the (N, P + 1) relabelling matrices must fit
        from divgen import limits

        limits.require(limits.mmd_test_memory(len(a), len(b), permutations, KERNEL_BLOCK), limits.memory_available())
    return TEST_METHODS[method](a, b, seed, permutations)


# ---------------------------------------------------------- mode statistics ---
def mode_stats(samples, modes, mode_std: float, weights=None, n_std: float = 3.0) -> ModeStats:
    """Modes captured, high-quality fraction and mode-histogram reverse KL (VEEGAN, PacGAN).

    A sample is high quality if it lies within `n_std` standard deviations of
    its nearest mode; a mode is captured if it is the nearest mode of at least
    one high-quality sample. The reverse KL is KL(q ‖ w), with q the histogram of
    high-quality samples over their nearest modes and w the true mixture weights
    (`weights`, (K,); uniform if None), as PacGAN defines it: 0 for a sampler
    that hits the modes in their true proportions, −log w_k when a single mode k
    takes everything (NaN when no sample is of high quality). These are the
    published tables' definitions; a mode counts as captured after a single
    sample, so read them beside prdc's coverage.
    """
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    modes = torch.as_tensor(np.asarray(modes, dtype=np.float32))
    k = len(modes)
    w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.shape != (k,) or not bool((w > 0).all()):
        raise InputError(f"mode weights must be {k} positive numbers")
    w = w / w.sum()
    dist, nearest = torch.cdist(x, modes).min(dim=1)  # (N,), (N,)
    good = dist <= n_std * mode_std
    counts = torch.bincount(nearest[good], minlength=k).double()
    if counts.sum() > 0:
        q = counts / counts.sum()
        reverse_kl = float(torch.xlogy(q, q / w).sum())
    else:
        reverse_kl = math.nan
    return ModeStats(int((counts > 0).sum()), k, float(good.double().mean()), reverse_kl, len(x))


@dataclass(frozen=True)
class PRDC:
    """Precision, recall, density and coverage of generated samples against real ones (Naeem et al., ICML 2020)."""

    precision: float  # fraction of generated samples inside some real sample's k-NN ball
    recall: float  # fraction of real samples inside some generated sample's k-NN ball
    density: float  # mean number of real k-NN balls per generated sample, divided by k (1 when matched)
    coverage: float  # fraction of real samples whose k-NN ball holds a generated sample
    k: int
    n_real: int
    n_fake: int


def prdc(real, fake, k: int = 5, max_samples: int = 5000, seed: int = 0) -> PRDC:
    """Precision, recall, density and coverage with k nearest neighbours of the samples themselves, by the
    authors' `prdc` package (metrics.prdc, which evaluate_run also applies in a classifier's feature space).

    At most `max_samples` rows of each (a random subset) are used: the
    package forms the full distance matrices.
    """
    from divgen import metrics

    real, fake = as_samples(real, fake)
    if k >= min(len(real), len(fake)):
        raise InputError(f"prdc with k = {k} needs more than {k} samples on each side")
    rng = torch.Generator().manual_seed(seed)
    real = real[torch.randperm(len(real), generator=rng)[:max_samples]]
    fake = fake[torch.randperm(len(fake), generator=rng)[:max_samples]]
    out = metrics.prdc(real.numpy(), fake.numpy(), k=k)
    return PRDC(out["precision"], out["recall"], out["density"], out["coverage"], k, len(real), len(fake))


# ---------------------------------------------------------------- the run ---
def _exact_divergences(ds, nets, names) -> dict:
    """D(P‖Q) between the known data density and the model's density (a density model only), by name."""
    from divgen import families
    from divgen.densities import exact_divergence, gaussian

    model = families.density_model(nets)
    if ds.density is None or model is None:
        return {}  # a generator network has no density
    q = gaussian(**model.params())
    out = {}
    for name in names:
        try:
            result = exact_divergence(ds.density, q, name)
        except InputError:  # no exact method for this pair (e.g. W1 beyond 1-D)
            continue
        out[name] = {"value": result.value, "error": result.error, "method": result.method,
                     "infinite": math.isinf(result.value)}
    return out


# The tests every run is evaluated by (cheap enough for a routine `divgen evaluate`).
EVALUATE_TESTS = ("mmd-agg", "energy", "c2st-logit")
EVALUATE_PERMUTATIONS = 500


def evaluate_run(run, seed: int = 0, n_modes_samples: int = 2500, quiet: bool = True) -> dict:
    """Held-out evaluation of a run directory; writes RUN/eval.json and returns its content.

    The real samples are the run's held-out split, which training never saw;
    the generated ones are fresh draws of the same size. Reported: independent
    critic estimates for the run's divergence and recipes.EVALUATED (`js`,
    `wasserstein`); the EVALUATE_TESTS two-sample tests; precision, recall, density
    and coverage (k = 5); exact divergences when both densities are known; and
    mode statistics for the toy mixtures. Non-finite numbers are written as null
    (an infinite exact divergence also says `"infinite": true`).
    """
    from divgen import data as datasets
    from divgen import families, runs

    run = Path(run)
    trained = runs.load_run(run)
    cfg, nets = trained.config, trained.nets
    ds = datasets.load(cfg.data, n=cfg.n_data, seed=cfg.seed, holdout=cfg.holdout)
    datasets.fingerprint(cfg.data, cfg.data_sha256)  # the held-out rows are those of the file the run split
    real = ds.holdout
    if len(real) < MIN_SAMPLES:
        raise InputError(f"run {str(run)!r} kept {len(real)} held-out samples; at least {MIN_SAMPLES} are needed "
                         "(train with --holdout > 0 and more data)")
    # fresh noise: neither the training batches nor samples.npy (seed + 1)
    fake = families.draw(nets, len(real), seed=cfg.seed + 1_000_003 + seed)
    names = [n for n in dict.fromkeys([cfg.divergence, *recipes.EVALUATED]) if recipes.row(n).estimator]
    estimates, tests, prdc_ = _critics_and_tests(real, fake, names, seed, quiet)
    result = {
        "run": str(run),
        "data": cfg.data,
        "divergence": cfg.divergence,
        "model": cfg.model,
        "n_real": len(real),
        "n_fake": len(fake),
        "critic": estimates,
        "tests": tests,
        "prdc": prdc_,
        "exact": _exact_divergences(ds, nets, names),
        "modes": None,
    }
    if ds.modes is not None and ds.mode_std is not None:
        samples = families.draw(nets, n_modes_samples, seed=cfg.seed + 2_000_003 + seed)
        result["modes"] = asdict(mode_stats(samples, ds.modes, ds.mode_std, ds.mode_weights))
    result.update(_model_metrics(ds, nets, families.FAMILIES[cfg.model], seed, quiet))
    result = jsonout.strict(result)
    runs.write_json(run / "eval.json", result)
    return result


def _critics_and_tests(real, fake, names, seed: int, quiet: bool) -> tuple[list[dict], list[dict], dict | None]:
    """critic_estimates of `names`, the EVALUATE_TESTS and prdc (k = 5), as concurrent jobs (_concurrently):
    the critics' fits, longest first, the kernel tests (kernel_tests) and prdc. c2st-logit takes the
    classifier of the critics' first fold, as c2st_logit fits it. Each number is the one `divgen estimate`,
    `divgen test` or evaluate.prdc gives with the seed."""
    from divgen import limits
    from divgen.progress import Progress

    real, fake = as_samples(real, fake)
    limits.require(limits.mmd_test_memory(len(real), len(fake), EVALUATE_PERMUTATIONS, KERNEL_BLOCK), limits.memory_available())
    fits, finish = _cross_fit_jobs(real, fake, names, seed)
    jobs = fits + [("mmd-agg and energy tests", lambda: kernel_tests(real, fake, EVALUATE_PERMUTATIONS, seed)),
                   ("prdc", lambda: asdict(prdc(real, fake, k=5, seed=seed)) if min(len(real), len(fake)) > 5 else None)]
    progress = Progress(len(jobs), "evaluate", quiet, unit="jobs")
    *fitted, kernel, prdc_ = _concurrently(jobs, progress)
    progress.close()
    cross = finish(fitted)
    estimates = [_pooled(name, cross.terms[name], 0.95, len(real), len(fake)) for name in names]
    tests = {t.method: t for t in kernel}
    tests["c2st-logit"] = _logit_test(cross.first_classifier, cross.folds[0], cross.rng, EVALUATE_PERMUTATIONS)
    return [asdict(e) for e in estimates], [asdict(tests[name]) for name in EVALUATE_TESTS], prdc_


def _model_metrics(ds, nets, family, seed: int, quiet: bool) -> dict:
    """Labelled data: the data set's classifier's metrics. Latent-variable likelihood models: ELBO and IWAE."""
    from divgen import metrics

    out = {"classifier_metrics": None, "likelihood": None}
    if ds.n_classes and len(ds.holdout) >= MIN_SAMPLES:
        out["classifier_metrics"] = metrics.image_metrics(ds, nets, seed=seed, quiet=quiet)
    if family.recipe == "elbo":
        y = ds.holdout_labels if family.conditional else None
        out["likelihood"] = asdict(metrics.likelihood_bounds(nets, ds.holdout, y, seed=seed))
    return out


def _num(x, fmt: str = ".4f") -> str:
    return "—" if x is None else format(x, fmt)


def report(result: dict) -> str:
    """evaluate_run's result as markdown tables."""
    from divgen.tables import markdown

    parts = [f"run {result['run']}: {result['divergence']} · {result['model']} on {result['data']}; "
             f"{result['n_real']} held-out real vs {result['n_fake']} generated samples",
             markdown(["independent critic", "estimate", "95% CI (estimator's spread)", "95% lower bound"],
                      [[e["divergence"], _num(e["estimate"]), f"[{_num(e['ci_low'])}, {_num(e['ci_high'])}]",
                        _num(e["lower_bound"])] for e in result["critic"]]),
             *filter(None, map(extrapolation_note, result["critic"])),
             markdown(["test", "statistic", "p-value"],
                      [[t["method"], _num(t["statistic"], ".4g"), _num(t["p_value"], ".4g")] for t in result["tests"]])]
    if result.get("prdc"):
        r = result["prdc"]
        parts.append(markdown(["precision", "recall", "density", "coverage", "k"],
                              [[_num(r["precision"], ".3f"), _num(r["recall"], ".3f"), _num(r["density"], ".3f"),
                                _num(r["coverage"], ".3f"), r["k"]]], "rrrrr"))
    if result["exact"]:
        parts.append(markdown(["exact divergence", "value", "method"],
                              [[name, "inf" if x.get("infinite") else _num(x["value"]), x["method"]]
                               for name, x in result["exact"].items()], "lrl"))
    m = result["modes"]
    if m:
        parts.append(markdown(["modes captured", "high quality", "reverse KL of the mode histogram (vs true weights)"],
                              [[f"{m['modes_captured']} / {m['n_modes']}", f"{100 * m['high_quality']:.1f}%",
                                _num(m["reverse_kl"])]], "rrr"))
    c = result.get("classifier_metrics")
    if c:
        f, p, pt, k = c["frechet"], c["prdc"], c["prdc_train_vs_test"], c["classes"]
        rows = [["Fréchet distance to the test split", _num(f["model_vs_test"], ".3f"), _num(f["train_vs_test"], ".3f")],
                *[[name, _num(p[name], ".3f"), _num(pt[name], ".3f")] for name in ("precision", "recall", "density", "coverage")],
                ["classes covered", f"{k['covered']} / {k['n_classes']}", ""],
                ["KL(generated labels ‖ training labels)", _num(k["kl"]), ""]]
        if c["conditional_accuracy"] is not None:
            rows.append(["conditional accuracy", f"{100 * c['conditional_accuracy']:.1f}%", ""])
        parts.append(f"in the feature space of a classifier trained on the training split (held-out accuracy "
                     f"{100 * c['classifier']['test_accuracy']:.1f}%), {f['n']} samples each:\n"
                     + markdown(["classifier metric", "model", "real train vs test"], rows))
    lb = result.get("likelihood")
    if lb:
        parts.append(markdown(["held-out bound", "nats per sample", "bits per dimension"],
                              [["ELBO", _num(lb["elbo"], ".3f"), _num(lb["elbo_bits_per_dim"])],
                               [f"IWAE, k = {lb['k']}", _num(lb["iwae"], ".3f"), _num(lb["iwae_bits_per_dim"])]]))
    return "\n\n".join(parts)
