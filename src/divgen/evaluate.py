"""Evaluation without likelihoods: two-sample tests, the independent critic, mode statistics.

A sampler is judged the way it was trained. A fresh critic, trained from
scratch on held-out real data against generated samples, certifies a lower
bound on the divergence; two-sample tests say whether the samples can be told
apart at all; on toy mixtures, mode statistics count what was captured.

Sample arrays are (N, d) float tensors or arrays; A plays P (the data) and B
plays Q (the model) throughout, so `estimate(a, b, "kl")` estimates KL(A‖B).
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import stats
from torch import nn

from divgen import divergences, objectives, recipes
from divgen.errors import InputError
from divgen.models import MLPCritic, Standardize, critic_pair

TESTS = ("c2st", "mmd")
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
    """An estimate of D(A‖B) with a confidence interval."""

    divergence: str
    estimate: float
    ci_low: float
    ci_high: float
    method: str  # "critic" (held-out variational bound) or "knn"
    n_a: int
    n_b: int


@dataclass(frozen=True)
class ModeStats:
    """VEEGAN/PacGAN mode statistics of generated samples on a Gaussian mixture."""

    modes_captured: int  # modes that are the nearest mode of ≥ 1 high-quality sample
    n_modes: int
    high_quality: float  # fraction of samples within 3 σ of their nearest mode
    reverse_kl: float  # KL(histogram of high-quality samples over modes ‖ uniform), nats
    n: int


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


def _halves(n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=rng)
    return perm[: n // 2], perm[n // 2 :]


def new_critic(a, b, width: int = 64, depth: int = 2, seed: int = 0, activation: type[nn.Module] = nn.SiLU) -> MLPCritic:
    """A fresh critic for samples like a and b (standardized by their pooled statistics), initialized from `seed`.

    SiLU, not ReLU, by default: log-density ratios are smooth (quadratic between
    Gaussians), and a smooth critic fits them with less data; on Gaussian pairs
    in 5-10 dimensions it halved the KL estimate's bias.
    """
    with torch.random.fork_rng(devices=[]):  # global RNG untouched
        torch.manual_seed(seed)
        return MLPCritic(Standardize.of(a, b), width, depth, activation=activation)


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
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def fit_critic(
    critic: nn.Module,
    objective: Objective,
    a: torch.Tensor,
    b: torch.Tensor,
    rng: torch.Generator,
    steps: int = 3000,
    lr: float = 3e-3,
    batch_size: int = 8192,
    check_every: int = 25,
    patience: int = 8,
    val_fraction: float = 0.2,
    betas: tuple[float, float] = (0.9, 0.999),
) -> nn.Module:
    """Train a critic for a fixed pair of samples: maximize objective(critic, a, b, rng) with Adam.

    The one routine behind every critic that divgen fits to fixed samples: the
    independent critics of `estimate` and `evaluate`, the classifier test, and
    diagnostics such as fit.check_discriminator. A fraction `val_fraction` of
    each sample is set aside (0: no early stopping, every step is kept). Every
    `check_every` steps the objective is computed there, and the critic with
    the best value is kept; training stops after `patience` checks without
    improvement. Samples of up to `batch_size` rows per side are used whole
    (full-batch Adam), the smooth, low-variance optimization a divergence
    estimate needs; larger ones are subsampled each step.
    """
    ia, ib = torch.randperm(len(a), generator=rng), torch.randperm(len(b), generator=rng)
    na, nb = (max(1, int(len(a) * val_fraction)), max(1, int(len(b) * val_fraction))) if val_fraction else (0, 0)
    val_a, fit_a, val_b, fit_b = a[ia[:na]], a[ia[na:]], b[ib[:nb]], b[ib[nb:]]
    opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)
    best, best_state, waited = -math.inf, copy.deepcopy(critic.state_dict()), 0
    with _one_thread():
        for step in range(1, steps + 1):
            xa, xb = fit_a, fit_b
            if len(fit_a) > batch_size:
                xa = fit_a[torch.randint(len(fit_a), (batch_size,), generator=rng)]
            if len(fit_b) > batch_size:
                xb = fit_b[torch.randint(len(fit_b), (batch_size,), generator=rng)]
            loss = -objective(critic, xa, xb, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if val_fraction and (step % check_every == 0 or step == steps):
                value = float(objective(critic, val_a, val_b, rng).detach())
                if value > best:
                    best, best_state, waited = value, copy.deepcopy(critic.state_dict()), 0
                else:
                    waited += 1
                    if waited >= patience:
                        break
    if val_fraction:
        critic.load_state_dict(best_state)
    return critic


def logistic_objective(critic, a, b, rng=None) -> torch.Tensor:
    """The `gan` critic's objective E_A[log σ(V)] + E_B[log(1 − σ(V))]: class-balanced logistic regression of A against B.

    Its maximizer is V = log(p_A/p_B), whatever the sample sizes; its maximum is
    2·JS(A, B) − log 4 (Goodfellow et al. 2014, Proposition 1).
    """
    return objectives.fgan_bound(_GAN, *critic_pair(critic, a, b))


def wasserstein_objective(gp_weight: float) -> Objective:
    """E_A[V] − E_B[V] − gp_weight · one-sided gradient penalty (WGAN-LP): the `wasserstein` recipe's critic loss."""
    penalty = recipes.Penalty("gp", gp_weight, one_sided=True)

    def objective(critic, a, b, rng):
        m = min(len(a), len(b))
        with torch.enable_grad():
            return -objectives.wasserstein_critic_loss(*critic_pair(critic, a, b)) - penalty(critic, (a[:m],), (b[:m],), rng)

    return objective


_GAN = divergences.get("gan")


def fgan_terms(div: divergences.Divergence, log_ratio_a: torch.Tensor, log_ratio_b: torch.Tensor):
    """Terms of the f-GAN bound at T = f'(r), r = exp(log ratio): t_a = f'(r) on A, t_b = f*(f'(r)) on B.

    D_f(P‖Q) ≥ E_P[t_a] − E_Q[t_b] for any r > 0, with equality at r = p/q.
    float64: r = exp(V) spans e^{±60} once V is `bounded`, and f'(r) can be r².
    """
    r_a = torch.exp(objectives.bounded(log_ratio_a).double())
    r_b = torch.exp(objectives.bounded(log_ratio_b).double())
    return div.f_prime(r_a), div.f_star(div.f_prime(r_b))


def _normal_ci(t_a: torch.Tensor, t_b: torch.Tensor, confidence: float) -> tuple[float, float, float]:
    """mean(t_a) − mean(t_b) and its normal-theory interval (the two samples independent)."""
    value = float(t_a.mean() - t_b.mean())
    se = math.sqrt(float(t_a.var()) / len(t_a) + float(t_b.var()) / len(t_b))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return value, value - z * se, value + z * se


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
    lr: float = 3e-3,
    gp_weight: float = 10.0,
) -> list[Estimate]:
    """D(A‖B) for each name, certified by independent critics, with cross-fitting.

    Each sample is split in halves. Critics are trained (fit_critic) on the
    first halves and the variational bound is evaluated on the second halves;
    then the halves swap, and the held-out terms of both folds are pooled, so
    every point is scored once, never by a critic that saw it.

    f-divergences share one critic per fold: a classifier of A against B
    (logistic_objective), whose output V estimates log(p/q). Each divergence's
    f-GAN bound E_A[T] − E_B[f*(T)] is then evaluated at its optimal form
    T = f'(exp V) (fgan_terms) — a valid lower bound for any V, tight at the
    true ratio. The classifier trains more stably than the exp-type bounds
    themselves (KL, χ²) and one training serves every divergence.
    `wasserstein` trains its own critic with a gradient penalty and reports
    E_A[V] − E_B[V].

    The interval is normal theory on the held-out terms. It covers the value
    of the bound the critics reach; their approximation error biases the
    estimate downward and is not in it.
    """
    a, b = as_samples(a, b)
    names = list(names)
    kinds = {n: _estimator(n) for n in names}
    objectives_ = {"classifier": (logistic_objective, 1), "lipschitz": (wasserstein_objective(gp_weight), 11)}
    rng = torch.Generator().manual_seed(seed)
    a1, a2 = _halves(len(a), rng)
    b1, b2 = _halves(len(b), rng)
    terms: dict[str, tuple[list, list]] = {n: ([], []) for n in names}
    for k, (fa, ea, fb, eb) in enumerate(((a1, a2, b1, b2), (a2, a1, b2, b1))):
        train_a, train_b, test_a, test_b = a[fa], b[fb], a[ea], b[eb]
        for kind in dict.fromkeys(kinds.values()):  # one critic per kind and fold, in a fixed order
            objective, offset = objectives_[kind]
            critic = fit_critic(new_critic(train_a, train_b, width, depth, seed + offset + k), objective,
                                train_a, train_b, rng, steps=steps, lr=lr)
            with torch.no_grad():
                v_a, v_b = critic_pair(critic, test_a, test_b)
            for name in (n for n in names if kinds[n] == kind):
                t_a, t_b = fgan_terms(divergences.get(name), v_a, v_b) if kind == "classifier" else (v_a.double(), v_b.double())
                terms[name][0].append(t_a)
                terms[name][1].append(t_b)
    out = []
    for name in names:
        value, lo, hi = _normal_ci(torch.cat(terms[name][0]), torch.cat(terms[name][1]), confidence)
        out.append(Estimate(name, value, lo, hi, "critic", len(a), len(b)))
    return out


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
    A and B. The interval is normal theory on the n terms (it ignores their
    weak dependence).
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
    rho = cKDTree(p).query(p, k=k + 1)[0][:, k]  # k + 1: the nearest is the point itself
    nu = cKDTree(q).query(p, k=k)[0]
    nu = nu[:, k - 1] if nu.ndim == 2 else nu
    floor = 1e-12  # duplicated points give zero distances; the floor keeps the logs finite
    terms = d * (np.log(np.maximum(nu, floor)) - np.log(np.maximum(rho, floor))) + math.log(m / (n - 1))
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
def c2st(a, b, seed: int = 0, width: int = 64, depth: int = 2, steps: int = 1000, lr: float = 3e-3) -> TestResult:
    """The classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017).

    A test set of n_te/2 points from each sample is set aside (balanced, so a
    classifier that ignores its input scores exactly ½ in expectation). A small
    network is trained on the remaining points to tell A from B, with the
    classes weighted equally and early stopping on a validation split, and it
    labels the top-scoring half of the test set A. The statistic is its
    held-out accuracy; the p-value is P(Binomial(n_te, ½) ≥ correct).
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
    # The test set is balanced, so the classifier calls the half it scores
    # highest "A" (ties broken at random). Its predictions are then balanced
    # too, and under H0 the number correct has the Binomial(n_te, ½) variance
    # (up to a factor n_te/(n_te − 1)); a classifier that collapsed to one
    # class would otherwise score exactly ½ every time and make the test
    # conservative.
    n_te = 2 * half
    order = torch.randperm(n_te, generator=rng)
    ranked = order[torch.argsort(v[order], stable=True)]  # ascending score, random among ties
    called_a = torch.zeros(n_te, dtype=torch.bool)
    called_a[ranked[half:]] = True
    correct = int(called_a[:half].sum() + (~called_a[half:]).sum())
    p_value = float(stats.binom.sf(correct - 1, n_te, 0.5))
    return TestResult("c2st", correct / n_te, p_value, len(a), len(b))


def mmd_test(a, b, permutations: int = 500, seed: int = 0, block: int = 2048) -> TestResult:
    """Kernel two-sample test: unbiased MMD² with a Gaussian kernel and a permutation p-value.

    Bandwidth: the median heuristic on a random subsample of the pooled data (a
    function of the pool only, so every permutation uses the same kernel).
    All permutations are evaluated together: with S (N, P) the 0/1 membership
    of A in each permutation, the block sums of the kernel matrix K are
    SᵀKS, SᵀK1 and 1ᵀK1, and K is formed block by block, never whole. The
    p-value is (1 + #{permuted ≥ observed}) / (1 + P) (Phipson & Smyth 2010).
    """
    a, b = as_samples(a, b)
    if permutations < 1:
        raise InputError("--permutations must be at least 1")
    rng = torch.Generator().manual_seed(seed)
    z = torch.cat([a, b])
    n, m = len(a), len(b)
    big_n = n + m
    sub = z[torch.randperm(big_n, generator=rng)[:1000]]
    h = objectives.median_bandwidth(sub, sub[:0])

    # column 0 is the observed split, then `permutations` random relabellings
    member = torch.zeros(big_n, permutations + 1)
    member[:n, 0] = 1
    for p in range(1, permutations + 1):
        member[torch.randperm(big_n, generator=rng)[:n], p] = 1
    k_member = torch.empty_like(member)  # K S, (N, P + 1)
    k_one = torch.empty(big_n, dtype=torch.float64)  # K 1, (N,)
    for i in range(0, big_n, block):
        kern = objectives.gaussian_kernel(z[i : i + block], z, h)  # (block, N)
        k_member[i : i + block] = kern @ member
        k_one[i : i + block] = kern.double().sum(1)
    aka = (member.double() * k_member.double()).sum(0)  # Σ_{i,j ∈ A} K_ij
    ak1 = member.double().T @ k_one  # Σ_{i ∈ A, j} K_ij
    total = k_one.sum()
    bkb = total - 2 * ak1 + aka
    akb = ak1 - aka
    # the kernel's diagonal is 1: remove n (m) self-pairs from the within-sample sums
    mmd2 = (aka - n) / (n * (n - 1)) + (bkb - m) / (m * (m - 1)) - 2 * akb / (n * m)
    observed = mmd2[0]
    p_value = (1 + int((mmd2[1:] >= observed).sum())) / (1 + permutations)
    return TestResult("mmd", float(observed), p_value, n, m)


def two_sample_test(a, b, method: str = "c2st", seed: int = 0, permutations: int = 500) -> TestResult:
    """Test H0: A and B have the same distribution, by `c2st` or `mmd`."""
    if method == "c2st":
        return c2st(a, b, seed=seed)
    if method == "mmd":
        from divgen import limits

        limits.require(limits.mmd_test_memory(len(a), len(b), permutations), limits.memory_available())
        return mmd_test(a, b, permutations=permutations, seed=seed)
    raise InputError(f"unknown test method {method!r}; valid: {', '.join(TESTS)}")


# ---------------------------------------------------------- mode statistics ---
def mode_stats(samples, modes, mode_std: float, n_std: float = 3.0) -> ModeStats:
    """Modes captured, high-quality fraction and mode-histogram reverse KL (VEEGAN, PacGAN).

    A sample is high quality if it lies within `n_std` standard deviations of
    its nearest mode; a mode is captured if it is the nearest mode of at least
    one high-quality sample. The reverse KL is KL(q ‖ uniform) with q the
    histogram of high-quality samples over their nearest modes: 0 when the
    modes are hit evenly, log K when a single mode takes everything (NaN when
    no sample is of high quality).
    """
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    modes = torch.as_tensor(np.asarray(modes, dtype=np.float32))
    dist, nearest = torch.cdist(x, modes).min(dim=1)  # (N,), (N,)
    good = dist <= n_std * mode_std
    counts = torch.bincount(nearest[good], minlength=len(modes)).double()
    k = len(modes)
    if counts.sum() > 0:
        q = counts / counts.sum()
        reverse_kl = float(torch.xlogy(q, q * k).sum())
    else:
        reverse_kl = math.nan
    return ModeStats(int((counts > 0).sum()), k, float(good.double().mean()), reverse_kl, len(x))


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
        out[name] = {"value": result.value, "error": result.error, "method": result.method}
    return out


def evaluate_run(run, seed: int = 0, n_modes_samples: int = 2500, quiet: bool = True) -> dict:
    """Held-out evaluation of a run directory; writes RUN/eval.json and returns its content.

    The real samples are the run's held-out split, which training never saw;
    the generated ones are fresh draws of the same size. Reported: independent
    critic estimates for the run's divergence and recipes.EVALUATED (`js`,
    `wasserstein`); c2st and mmd tests; exact divergences when both densities
    are known; and mode statistics for the toy mixtures.
    """
    from divgen import data as datasets
    from divgen import families, runs
    from divgen.progress import Progress

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
    jobs = [("critics", names)] + [("test", t) for t in TESTS]
    progress = Progress(len(jobs), "evaluate", quiet, unit="jobs")
    estimates, tests = [], []
    for kind, name in jobs:
        progress.begin(f"independent critics ({', '.join(name)})" if kind == "critics" else f"{name} test")
        if kind == "critics":  # one classifier serves every f-divergence
            estimates += [asdict(e) for e in critic_estimates(real, fake, name, seed=seed)]
        else:
            tests.append(asdict(two_sample_test(real, fake, name, seed=seed)))
        progress.update()
    progress.close()
    result = {
        "run": str(run),
        "data": cfg.data,
        "divergence": cfg.divergence,
        "model": cfg.model,
        "n_real": len(real),
        "n_fake": len(fake),
        "critic": estimates,
        "tests": tests,
        "exact": _exact_divergences(ds, nets, names),
        "modes": None,
    }
    if ds.modes is not None and ds.mode_std is not None:
        samples = families.draw(nets, n_modes_samples, seed=cfg.seed + 2_000_003 + seed)
        result["modes"] = asdict(mode_stats(samples, ds.modes, ds.mode_std))
    result.update(_model_metrics(ds, nets, families.FAMILIES[cfg.model], seed, quiet))
    runs.write_json(run / "eval.json", result)
    return result


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


def report(result: dict) -> str:
    """evaluate_run's result as markdown tables."""
    from divgen.tables import markdown

    parts = [f"run {result['run']}: {result['divergence']} · {result['model']} on {result['data']}; "
             f"{result['n_real']} held-out real vs {result['n_fake']} generated samples",
             markdown(["independent critic", "estimate", "95% CI"],
                      [[e["divergence"], f"{e['estimate']:.4f}", f"[{e['ci_low']:.4f}, {e['ci_high']:.4f}]"] for e in result["critic"]]),
             markdown(["test", "statistic", "p-value"],
                      [[t["method"], f"{t['statistic']:.4g}", f"{t['p_value']:.4g}"] for t in result["tests"]])]
    if result["exact"]:
        parts.append(markdown(["exact divergence", "value", "method"],
                              [[name, f"{x['value']:.4f}", x["method"]] for name, x in result["exact"].items()], "lrl"))
    m = result["modes"]
    if m:
        parts.append(markdown(["modes captured", "high quality", "reverse KL of the mode histogram"],
                              [[f"{m['modes_captured']} / {m['n_modes']}", f"{100 * m['high_quality']:.1f}%", f"{m['reverse_kl']:.4f}"]], "rrr"))
    c = result.get("classifier_metrics")
    if c:
        f, p, pt, k = c["frechet"], c["prdc"], c["prdc_train_vs_test"], c["classes"]
        rows = [["Fréchet distance to the test split", f"{f['model_vs_test']:.3f}", f"{f['train_vs_test']:.3f}"],
                *[[name, f"{p[name]:.3f}", f"{pt[name]:.3f}"] for name in ("precision", "recall", "density", "coverage")],
                ["classes covered", f"{k['covered']} / {k['n_classes']}", ""],
                ["KL(generated labels ‖ training labels)", f"{k['kl']:.4f}", ""]]
        if c["conditional_accuracy"] is not None:
            rows.append(["conditional accuracy", f"{100 * c['conditional_accuracy']:.1f}%", ""])
        parts.append(f"in the feature space of a classifier trained on the training split (held-out accuracy "
                     f"{100 * c['classifier']['test_accuracy']:.1f}%), {f['n']} samples each:\n"
                     + markdown(["classifier metric", "model", "real train vs test"], rows))
    lb = result.get("likelihood")
    if lb:
        parts.append(markdown(["held-out bound", "nats per sample", "bits per dimension"],
                              [["ELBO", f"{lb['elbo']:.3f}", f"{lb['elbo_bits_per_dim']:.4f}"],
                               [f"IWAE, k = {lb['k']}", f"{lb['iwae']:.3f}", f"{lb['iwae_bits_per_dim']:.4f}"]]))
    return "\n\n".join(parts)
