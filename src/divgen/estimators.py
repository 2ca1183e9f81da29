"""Estimates of a divergence D(A‖B) from two samples: cross-fitted independent critics, and k-NN for KL.

A fresh classifier, fitted from scratch on one half of the samples and scored
on the other, estimates the divergence and certifies a lower bound on it
(critic_estimates); `wasserstein` has its own Lipschitz critic. docs/evaluation.md
says what every number covers and how well it does.

Sample arrays are (N, d) float tensors or arrays; A plays P (the data) and B
plays Q (the model) throughout, so `estimate(a, b, "kl")` estimates KL(A‖B).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from divgen import catalog, divergences, jsonout, recipes
from divgen.critics import (TRANSPORT_MAX_DIM, Candidates, CriticFit, TransportPotential, best_candidate,
                            classifier_candidates, fit_critic, new_critic, transport_potential, wasserstein_objective)
from divgen.densities import exact_integrand
from divgen.errors import InputError
from divgen.models import critic_pair
from divgen.progress import Progress
from divgen.samples import as_samples, duplicate_rows
from divgen.threads import concurrently

KNN_DIVERGENCES = ("kl", "reverse-kl")


@dataclass(frozen=True)
class Estimate:
    """An estimate of D(A‖B), an interval around it, and (where the method has one) a certified lower bound.

    What each number means (critic_estimates, knn_estimate say more):
    - estimate: the point estimate (critic: cross-fitted plug-in of the classifier's log-ratio).
    - [ci_low, ci_high]: a two-sided `confidence` normal-theory interval of the held-out sampling
      error (critic_estimates, knn_estimate): no coverage promise, neither for the truth nor for
      the estimator's mean (docs/evaluation.md measures both).
    - lower_bound: a one-sided `confidence` lower confidence bound on the true D(A‖B): the held-out
      variational bound, which no critic can push above D, minus z·(its standard error). None
      where the method certifies nothing (wasserstein above TRANSPORT_MAX_DIM dimensions, whose
      critic's gradient penalty is soft; knn).
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
    note: str | None = None  # what the estimate rests on when it is not every row given (estimate)

    def to_dict(self) -> dict:
        """The record as strict JSON: NaN and ±inf become null."""
        return jsonout.strict(asdict(self))


def extrapolation_note(e: dict) -> str | None:
    """The line a reader needs under an extrapolated estimate (Estimate.to_dict); None for any other."""
    if not e.get("extrapolated"):
        return None
    name = e["divergence"]
    return (f"{name}: the estimate is above what these samples can certify (odds beyond n : 1, n points per side): "
            "it rests on the classifier's log-ratio where no sample checks it, and samples that a classifier "
            f"separates cannot tell a large {name} from an infinite one; the lower bound is what they certify")


def _z(p: float) -> float:
    """The standard normal quantile."""
    return statistics.NormalDist().inv_cdf(p)


# ------------------------------------------------------------- the terms ---
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


# ------------------------------------------------------------ cross-fitting ---
@dataclass(frozen=True)
class Fold:
    """One cross-fitting fold: a critic is fitted on the training halves and scores the held-out ones."""

    train_a: torch.Tensor
    train_b: torch.Tensor
    test_a: torch.Tensor
    test_b: torch.Tensor


@dataclass(frozen=True)
class FoldTerms:
    """One fold's held-out terms for one divergence; each value is mean(on A) − mean(on B)."""

    estimate_a: torch.Tensor  # plug-in terms on held-out A (a Lipschitz critic: V)
    estimate_b: torch.Tensor  # on held-out B, signed so that the estimate is their mean subtracted
    bound_a: torch.Tensor | None = None  # f-GAN bound terms t_a on A (fgan_terms); V for a transport potential; else None
    bound_b: torch.Tensor | None = None  # t_b = f*(t) on B
    ceiling: float | None = None  # the most the bound can certify at the fold's size (_ceiling)


@dataclass
class CrossFit:
    """What the cross-fitted critics left: per name, the held-out terms of each fold; the folds and the
    generator after the split (c2st-logit's relabellings); fold 0's classifier candidates (None without
    an f-divergence)."""

    terms: dict[str, list[FoldTerms]]
    folds: list[Fold]
    rng: torch.Generator
    first_classifier: Candidates | None


def critic_estimates(a, b, names, seed: int = 0, confidence: float = 0.95, fit: CriticFit = CriticFit(),
                     gp_weight: float = 10.0, quiet: bool = True) -> list[Estimate]:
    """D(A‖B) for each name, from independent critics with cross-fitting.

    Each sample is split in halves. Critics are trained on the first halves and
    evaluated on the second halves; then the halves swap, and the held-out terms
    of both folds are pooled, so every point is scored once, never by a critic
    that saw it.

    f-divergences share one classifier per fold (classifier_candidates, the candidate
    chosen on that fold's training half alone: best_candidate), whose logit l estimates
    log(p/q); so nothing a fold's bound is evaluated on shaped its critic. On held-out points it is
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
      two folds' estimates (a one-degree-of-freedom glimpse of the refitting variability).
      It describes the held-out sampling error and makes no coverage promise: refitting the
      critics moves the estimate more than it says, and its bias is not in it (across
      repetitions it held the mean of the estimates in 5–10 of 10, the truth less often;
      docs/evaluation.md). The one-sided lower bound is the number with a guarantee.

    `wasserstein` reports E_A[V] − E_B[V] for its own critic V. Up to TRANSPORT_MAX_DIM
    dimensions V is the potential of the optimal transport between the training halves
    (critics.transport_potential), which is 1-Lipschitz exactly, so the held-out value is at
    most W1 in expectation and lower_bound is that value minus z·se. Above, V is an MLP trained
    with a one-sided gradient penalty; the penalty is soft, so the critic can be steeper than 1
    and the value can exceed W1: an estimate, with lower_bound None.

    Unless `quiet`, the fits' Adam steps are counted on stderr (progress.Progress).
    """
    a, b = as_samples(a, b)
    names = list(names)
    progress = Progress(0, "estimate", quiet, unit="critic steps")
    jobs, finish = cross_fit_jobs(a, b, names, seed, fit, gp_weight, progress)
    terms = finish(concurrently(jobs)).terms
    progress.close()
    return [pooled(name, terms[name], confidence, len(a), len(b)) for name in names]


def _halves(n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=rng)
    return perm[: n // 2], perm[n // 2 :]


def split_folds(a: torch.Tensor, b: torch.Tensor, seed: int) -> tuple[list[Fold], torch.Generator]:
    """The two cross-fitting folds and the generator that drew them, for what follows (c2st-logit's
    relabellings). The split of A depends only on len(A) and the seed, so two calls with the same A and
    seed score A's points in the same order (paired_difference)."""
    rng = torch.Generator().manual_seed(seed)
    a1, a2 = _halves(len(a), rng)
    b1, b2 = _halves(len(b), rng)
    return [Fold(a[a1], b[b1], a[a2], b[b2]), Fold(a[a2], b[b2], a[a1], b[b1])], rng


def fold_classifier(fold: Fold, k: int, seed: int, fit: CriticFit = CriticFit(), progress=None) -> Candidates:
    """classifier_candidates fitted on fold k's training halves, with the fold's own generator."""
    return classifier_candidates(fold.train_a, fold.train_b, torch.Generator().manual_seed(seed + 1 + k), seed + 1 + k,
                                 fit, progress=progress)


def _fold_wasserstein(fold: Fold, k: int, seed: int, fit: CriticFit, gp_weight: float, progress=None) -> nn.Module:
    """Fold k's `wasserstein` critic: up to TRANSPORT_MAX_DIM dimensions the potential of the optimal transport
    between the training halves (transport_potential), else an MLP with a one-sided gradient penalty."""
    if fold.train_a.shape[1] <= TRANSPORT_MAX_DIM:
        critic = transport_potential(fold.train_a, fold.train_b, torch.Generator().manual_seed(seed + 11 + k))
        if progress is not None:
            progress.update(fit.steps)  # counted as a fit's steps: the job is done
        return critic
    critic = new_critic(fold.train_a, fold.train_b, fit.width, fit.depth, seed + 11 + k, lipschitz=True)
    return fit_critic(critic, wasserstein_objective(gp_weight), fold.train_a, fold.train_b,
                      torch.Generator().manual_seed(seed + 11 + k), steps=fit.steps, lr=fit.lr, progress=progress)


def cross_fit_jobs(a, b, names, seed: int, fit: CriticFit = CriticFit(), gp_weight: float = 10.0,
                   progress=None) -> tuple[list[tuple[str, Callable]], Callable[[list], CrossFit]]:
    """The critic fits of critic_estimates as independent jobs, (name, job) with one per kind of critic and
    fold (threads.concurrently runs them), and the function that turns their results, in order, into a
    CrossFit. `progress` (progress.Progress) expects fit.steps Adam steps per job and counts them as the
    jobs take them (fit_critic)."""
    kinds = {n: _critic_kind(n) for n in names}
    folds, rng = split_folds(a, b, seed)
    order = list(dict.fromkeys(kinds.values()))  # one critic per kind and fold
    fitters = {"classifier": lambda fold, k: fold_classifier(fold, k, seed, fit, progress),
               "lipschitz": lambda fold, k: _fold_wasserstein(fold, k, seed, fit, gp_weight, progress)}
    jobs = [(f"critic for {', '.join(n for n in names if kinds[n] == kind)}, fold {k + 1}",
             lambda kind=kind, k=k: fitters[kind](folds[k], k))
            for kind in order for k in range(len(folds))]
    if progress is not None:
        progress.expect(len(jobs) * fit.steps)

    def finish(results: list) -> CrossFit:
        fitted = {kind: results[i * len(folds):(i + 1) * len(folds)] for i, kind in enumerate(order)}
        first = None
        if "classifier" in fitted:
            first = fitted["classifier"][0]
            # each fold's classifier is chosen on its own training half: the other fold's validation
            # points are this fold's held-out ones, on which its bound is evaluated
            fitted["classifier"] = [c.critics[best_candidate(c.scores)] for c in fitted["classifier"]]
        return CrossFit(_held_out_terms(fitted, folds, names, kinds), folds, rng, first)

    return jobs, finish


def _held_out_terms(critics: dict[str, list[nn.Module]], folds: list[Fold], names, kinds) -> dict[str, list[FoldTerms]]:
    """Per name, per fold: the held-out terms of the fold's critic (FoldTerms)."""
    terms: dict[str, list[FoldTerms]] = {n: [] for n in names}
    for kind, fold_critics in critics.items():
        for critic, fold in zip(fold_critics, folds):
            with torch.no_grad():
                v_a, v_b = (v.double() for v in critic_pair(critic, fold.test_a, fold.test_b))
                if kind == "classifier":
                    seen_a, seen_b = (v.double() for v in critic_pair(critic, fold.train_a, fold.train_b))
                    lo, hi = float(min(seen_a.min(), seen_b.min())), float(max(seen_a.max(), seen_b.max()))
                    w_a, w_b = (v.clamp(*_bound_range(seen_a, seen_b)) for v in (v_a, v_b))
                    v_a, v_b = v_a.clamp(lo, hi), v_b.clamp(lo, hi)
            for name in (n for n in names if kinds[n] == kind):
                if kind == "classifier":
                    div = divergences.get(name)
                    ceiling = _ceiling(div, min(len(seen_a), len(seen_b)))
                    terms[name].append(FoldTerms(plugin_terms(div, v_a), -plugin_terms(div, v_b),
                                                 *fgan_terms(div, w_a, w_b), ceiling))
                elif isinstance(critic, TransportPotential):  # exactly 1-Lipschitz: its terms are a bound on W1
                    terms[name].append(FoldTerms(v_a, v_b, v_a, v_b))
                else:
                    terms[name].append(FoldTerms(v_a, v_b))
    return terms


def _bound_range(seen_a: torch.Tensor, seen_b: torch.Tensor) -> tuple[float, float]:
    """The interval the bound's critic is clipped to, from its logits on the fold's training A and B.

    Any critic gives a valid bound, so the clip only has to keep the held-out terms
    light-tailed. [smallest logit of a training A point, largest of a training B point]
    keeps the terms that can be heavy-tailed, f*(T) on B where T is large (e^l for KL)
    and T on A where it is very negative (−e^−l for reverse KL; l itself for JS),
    within what each sample reached; if the training samples were separated (that
    interval is empty), the whole training range. Either is then cut to
    |l| ≤ log n, n the smaller training sample (within_odds).
    """
    a_min, b_max = float(seen_a.min()), float(seen_b.max())
    if a_min > b_max:  # separated: B's logits all below A's
        a_min, b_max = float(seen_b.min()), float(seen_a.max())
    return within_odds(a_min, b_max, min(len(seen_a), len(seen_b)))


def within_odds(lo: float, hi: float, n: int) -> tuple[float, float]:
    """[lo, hi] cut to |l| ≤ log n, an interval still where [lo, hi] lies beyond it.

    Odds beyond n : 1 are more than n points can check, and a term of size e^|l|
    far above n leaves the normal interval of a mean of n terms meaningless. One
    held-out point with l = −10⁴ would otherwise pull a JS bound down by 10⁴/n.
    """
    cap = math.log(n)
    return min(max(lo, -cap), cap), min(max(hi, -cap), cap)


def _ceiling(div: divergences.Divergence, n: int) -> float:
    """The most the held-out bound can certify when its critic is fitted on n points per side: the bound of
    a critic that is never wrong, at the log-ratios ±log n that _bound_range allows (about log n for kl)."""
    cap = torch.tensor([math.log(n)], dtype=torch.float64)
    t_a, t_b = fgan_terms(div, cap, -cap)
    return float(t_a - t_b)


def pooled(name: str, folds: list[FoldTerms], confidence: float, n_a: int, n_b: int) -> Estimate:
    """One Estimate from the held-out terms of the folds (see critic_estimates)."""
    def summary(pairs):  # per fold (on A, on B) -> pooled value, its se, its se with the fold spread
        t_a, t_b = torch.cat([on_a for on_a, _ in pairs]), torch.cat([on_b for _, on_b in pairs])
        per_fold = [float(on_a.mean() - on_b.mean()) for on_a, on_b in pairs]
        return float(t_a.mean() - t_b.mean()), _se(t_a, t_b), max(_se(t_a, t_b), abs(per_fold[0] - per_fold[1]) / 2)

    value, _, se = summary([(f.estimate_a, f.estimate_b) for f in folds])
    lower = None
    if folds[0].bound_a is not None:
        bound, bound_se, bound_spread = summary([(f.bound_a, f.bound_b) for f in folds])
        lower = bound - _z(confidence) * bound_se
        if bound > value:  # the truth is at least the bound's mean, so the plug-in was too low
            value, se = bound, bound_spread
    z = _z(0.5 + confidence / 2)
    extrapolated = None
    if folds[0].ceiling is not None:
        unbounded = not math.isfinite(divergences.get(name).maximum)
        extrapolated = unbounded and value > statistics.fmean(f.ceiling for f in folds)
    return Estimate(name, value, value - z * se, value + z * se, "critic", n_a, n_b, lower, extrapolated)


@dataclass(frozen=True)
class Difference:
    """D(A‖B₁) − D(A‖B₂) from one set of real samples A, with a paired interval."""

    divergence: str
    difference: float  # positive: B₂ is closer to A
    ci_low: float
    ci_high: float


def paired_difference(a, b1, b2, name: str, seed: int = 0, confidence: float = 0.95, fit: CriticFit = CriticFit(),
                      gp_weight: float = 10.0) -> Difference:
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
    (jobs1, finish1), (jobs2, finish2) = (cross_fit_jobs(a, b, [name], seed, fit, gp_weight) for b in (b1, b2))
    results = concurrently(jobs1 + jobs2)
    t1, t2 = finish1(results[:len(jobs1)]).terms[name], finish2(results[len(jobs1):]).terms[name]
    on_a = torch.cat([f.estimate_a for f in t1]) - torch.cat([f.estimate_a for f in t2])  # paired: same points of A
    on_b1, on_b2 = torch.cat([f.estimate_b for f in t1]), torch.cat([f.estimate_b for f in t2])
    value = float(on_a.mean() - on_b1.mean() + on_b2.mean())
    se = math.sqrt(float(on_a.var()) / len(on_a) + float(on_b1.var()) / len(on_b1) + float(on_b2.var()) / len(on_b2))
    z = _z(0.5 + confidence / 2)
    return Difference(name, value, value - z * se, value + z * se)


def _critic_kind(name: str) -> str:
    """How an independent critic estimates `name` (recipes.ESTIMATORS); InputError if it cannot."""
    kind = recipes.row(name).estimator
    if kind is None:
        raise InputError(f"{name} is not a variational bound that a critic can estimate; "
                         "use `divgen test --method mmd` for the kernel statistic")
    return kind


def critic_estimate(a, b, name: str, seed: int = 0, confidence: float = 0.95, fit: CriticFit = CriticFit(),
                    gp_weight: float = 10.0, quiet: bool = True) -> Estimate:
    """D(A‖B) certified by an independent critic; see critic_estimates."""
    return critic_estimates(a, b, [name], seed=seed, confidence=confidence, fit=fit, gp_weight=gp_weight,
                            quiet=quiet)[0]


# Rows per side that the critic method uses at most. Its Adam steps see batches of at most 8,192 rows,
# but the rest grows with the rows: the quadratic classifiers' full-batch L-BFGS, the early-stopping
# checks on a fifth of each half, and the held-out terms. 10⁶ rows per side of 1-D data took 21 s on
# one core (11 s on two); beyond that the critics' fitting noise, not the sample, limits the estimate.
CRITIC_MAX_ROWS = 1_000_000


def at_most(a: torch.Tensor, b: torch.Tensor, max_rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """A and B cut to at most `max_rows` rows each, drawn at random (with `seed`), and the sentence that
    says so (None when both are used whole)."""
    if max(len(a), len(b)) <= max_rows:
        return a, b, None
    rng = torch.Generator().manual_seed(seed)
    sub_a, sub_b = (x[torch.randperm(len(x), generator=rng)[:max_rows]] if len(x) > max_rows else x for x in (a, b))
    return sub_a, sub_b, (f"estimated on {len(sub_a):,} of {len(a):,} rows of A and {len(sub_b):,} of {len(b):,} rows "
                          f"of B, drawn at random: the critics' cost grows with the rows, and at most {max_rows:,} "
                          "per side are used")


# --------------------------------------------------------------------- k-NN ---
def knn_estimate(a, b, name: str = "kl", k: int = 5, confidence: float = 0.95) -> Estimate:
    """KL(A‖B) by k-nearest-neighbour distances (Wang, Kulkarni & Verdú 2009, eq. 5).

    D̂ = (d/n) Σ_i log(ν_k(i) / ρ_k(i)) + log(m / (n − 1)), with ρ_k(i) the
    distance from a_i to its k-th nearest neighbour among the other a's and
    ν_k(i) to its k-th nearest neighbour among the m b's. `reverse-kl` swaps
    A and B. The estimator assumes continuous densities: samples with many
    repeated rows (more than KNN_MAX_TIES: rounded or discrete data, the same file
    twice) or a k-th neighbour at distance 0, which make log ρ = −∞ or spuriously
    small, are refused with an InputError.

    The interval is normal theory on the n terms as if they were independent (each
    uses its neighbours, so they are not), with no coverage promise: its bias, at n in
    the thousands of the order of the interval or far larger in d ≥ 2, is not in it
    (docs/evaluation.md); there is no lower bound (lower_bound None).
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
    for name, x in (("A", a), ("B", b)):
        if (k := duplicate_rows(x.numpy())) > KNN_MAX_TIES * len(x):
            raise InputError(f"--method knn: samples {name} repeat {k} of their {len(x)} rows; k-NN distances need "
                             "distinct points (a continuous distribution): remove duplicates or use --method critic")
    if (k := duplicate_rows(a.numpy(), b.numpy())) > KNN_MAX_TIES * len(a):
        raise InputError(f"--method knn: {k} rows of A also occur in B; the k-NN estimator needs two independent "
                         "samples (the same file twice gives a biased estimate): use --method critic or another sample")


# ------------------------------------------------------------------ entry ---
def estimate(a, b, name: str, method: str = "critic", seed: int = 0, confidence: float = 0.95,
             quiet: bool = True) -> Estimate:
    """D(A‖B) for any f-divergence name or `wasserstein`, by `critic` or (KL only) `knn`.

    The critic method uses at most CRITIC_MAX_ROWS rows per side (at_most; the Estimate's note says so,
    and its n_a, n_b count the rows used). Unless `quiet`, its progress goes to stderr."""
    if method not in catalog.ESTIMATION_METHODS:
        raise InputError(f"unknown estimation method {method!r}; valid: {', '.join(catalog.ESTIMATION_METHODS)}")
    _critic_kind(name)  # InputError for unknown or non-estimable names, before any work
    if not 0 < confidence < 1:
        raise InputError("--confidence must lie strictly between 0 and 1")
    if method == "knn":
        return knn_estimate(a, b, name, confidence=confidence)
    a, b, note = at_most(*as_samples(a, b), CRITIC_MAX_ROWS, seed)
    return replace(critic_estimate(a, b, name, seed=seed, confidence=confidence, quiet=quiet), note=note)
