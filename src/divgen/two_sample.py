"""Two-sample tests of H0: A and B come from the same distribution, each with an exact p-value.

Kernel tests (mmd-agg, divgen's default, energy and mmd) take permutation
p-values from all relabellings at once (_permuted_mmd2); classifier tests
(c2st-logit, c2st) fit a fresh classifier on part of the samples and test on
the rest. docs/evaluation.md compares their power.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from divgen import catalog, limits, objectives
from divgen.critics import Candidates, CriticFit, best_candidate, fit_critic, logistic_objective, new_critic
from divgen.errors import InputError
from divgen.estimators import Fold, fold_classifier, split_folds, within_odds
from divgen.models import critic_pair
from divgen.samples import as_samples


@dataclass(frozen=True)
class TestResult:
    """A two-sample test of H0: A and B come from the same distribution."""

    __test__ = False  # not a pytest test class, despite the name

    method: str  # a name of catalog.TEST_METHODS
    statistic: float  # e.g. held-out accuracy (c2st) or unbiased MMD² (mmd)
    p_value: float
    n_a: int
    n_b: int


# ------------------------------------------------------- classifier tests ---
C2ST_FIT = CriticFit(steps=1000)


def c2st(a, b, seed: int = 0, fit: CriticFit = C2ST_FIT) -> TestResult:
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

    critic = new_critic(train_a, train_b, fit.width, fit.depth, seed + 1)
    fit_critic(critic, logistic_objective, train_a, train_b, rng, steps=fit.steps, lr=fit.lr, check_every=10,
               patience=10)
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


def c2st_logit(a, b, seed: int = 0, permutations: int = 1000, fit: CriticFit = CriticFit()) -> TestResult:
    """A classifier test on held-out logits, with an exact permutation p-value.

    Each sample is split in halves, as estimators.critic_estimates splits them; the
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
    folds, rng = split_folds(a, b, seed)
    return logit_test(fold_classifier(folds[0], 0, seed, fit), folds[0], rng, permutations)


def logit_test(candidates: Candidates, fold: Fold, rng: torch.Generator, permutations: int) -> TestResult:
    """c2st-logit from fold 0's classifier candidates and that fold's held-out halves."""
    # chosen on fold 0 alone: the held-out halves play no part
    critic = candidates.critics[best_candidate(candidates.scores)]
    with torch.no_grad():
        seen = torch.cat(critic_pair(critic, fold.train_a, fold.train_b))
        v = torch.cat(critic_pair(critic, fold.test_a, fold.test_b)).double()  # (n + m,), A first
    v = v.clamp(*within_odds(float(seen.min()), float(seen.max()), min(len(fold.train_a), len(fold.train_b))))
    n, m = len(fold.test_a), len(fold.test_b)
    member = _memberships(n + m, n, permutations, rng).double()  # (n + m, P + 1)
    in_a = v @ member  # Σ_{A} V per relabelling
    stat = in_a / n - (v.sum() - in_a) / m
    n_a, n_b = len(fold.train_a) + n, len(fold.train_b) + m
    return TestResult("c2st-logit", float(stat[0]), _p_value(stat), n_a, n_b)


# ------------------------------------------------------------ permutations ---
def _memberships(big_n: int, n: int, permutations: int, rng: torch.Generator) -> torch.Tensor:
    """(N, P + 1) 0/1 matrix: column 0 puts the first n points in A, the others are random relabellings."""
    member = torch.zeros(big_n, permutations + 1)
    member[:n, 0] = 1
    for p in range(1, permutations + 1):
        member[torch.randperm(big_n, generator=rng)[:n], p] = 1
    return member


def _p_value(stats_: torch.Tensor) -> float:
    """(1 + #{permuted ≥ observed}) / (1 + P) for a statistic whose column 0 is the observed one (Phipson & Smyth 2010)."""
    return (1 + int((stats_[1:] >= stats_[0]).sum())) / len(stats_)


# ------------------------------------------------------------ kernel tests ---
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
        q05, q95 = torch.quantile(dist, torch.tensor([0.05, 0.95], dtype=dist.dtype)).tolist()  # one sort
        lo, hi = q05 / 2, q95 * 2
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


# ------------------------------------------------------------------ entry ---
# The tests of `divgen test --method` (catalog.TEST_METHODS names and describes them):
# name -> (a, b, seed, permutations) -> TestResult
_RUN: dict[str, Callable[..., TestResult]] = {
    "mmd-agg": lambda a, b, seed, permutations: mmd_agg_test(a, b, permutations=permutations, seed=seed),
    "energy": lambda a, b, seed, permutations: energy_test(a, b, permutations=permutations, seed=seed),
    "c2st-logit": lambda a, b, seed, permutations: c2st_logit(a, b, seed=seed, permutations=max(permutations, 1)),
    "c2st": lambda a, b, seed, permutations: c2st(a, b, seed=seed),
    "mmd": lambda a, b, seed, permutations: mmd_test(a, b, permutations=permutations, seed=seed),
}
KERNEL_TESTS = ("mmd-agg", "energy", "mmd")


def two_sample_test(a, b, method: str = catalog.DEFAULT_TEST, seed: int = 0, permutations: int = 500) -> TestResult:
    """Test H0: A and B have the same distribution, by any method of catalog.TEST_METHODS."""
    if method not in _RUN:
        raise InputError(f"unknown test method {method!r}; valid: {', '.join(catalog.TEST_METHODS)}")
    if method in KERNEL_TESTS:  # the (N, P + 1) relabelling matrices must fit
        limits.require(limits.mmd_test_memory(len(a), len(b), permutations, KERNEL_BLOCK), limits.memory_available())
    return _RUN[method](a, b, seed, permutations)
