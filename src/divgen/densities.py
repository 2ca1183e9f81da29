"""Explicit densities: anything with `log_prob(x)` and `sample(shape)`, and
exact divergences between them.

`torch.distributions` objects are the interface. Gaussian mixtures are
`MixtureSameFamily`; the noisy curves (swiss roll, moons) are data.CurveMixture,
whose density is an exact integral over the curve parameter, computed on a
fine grid.

`exact_divergence(p, q, name)` computes D(P‖Q) = E_Q[f(p/q)] for every
f-divergence of the table: closed forms between Gaussians, adaptive
quadrature in 1-D, a trapezoid grid in 2-D, importance-sampled Monte Carlo in
any dimension; each result carries its error estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from divgen import divergences
from divgen.errors import InputError


def gaussian_mixture(means, stds, weights=None) -> MixtureSameFamily:
    """Σ_k w_k N(means[k], stds[k]² I). means (K, d); stds (K,) isotropic."""
    means = torch.as_tensor(means, dtype=torch.float32)
    stds = torch.as_tensor(stds, dtype=torch.float32).expand(means.shape[0])
    k, d = means.shape
    weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    scale = stds[:, None, None] * torch.eye(d)
    return MixtureSameFamily(Categorical(probs=weights), normal_components(means, scale))


def normal_components(loc: torch.Tensor, scale_tril: torch.Tensor) -> MultivariateNormal:
    """MultivariateNormal(loc, scale_tril=scale_tril) for loc (K, d) and scale_tril (K, d, d), built without its
    constructor's torch.broadcast_shapes, whose first call imports torch's symbolic shapes and sympy (0.9 s
    of `divgen evaluate` on a toy set; `divgen train` imports them anyway, with torch._dynamo). The shapes
    already agree, so there is nothing to broadcast; the object is the one the constructor builds, with the
    same samples and densities bit for bit."""
    if loc.shape[:-1] != scale_tril.shape[:-2] or loc.shape[-1:] != scale_tril.shape[-1:]:
        raise ValueError(f"normal_components: loc {tuple(loc.shape)} and scale_tril {tuple(scale_tril.shape)} disagree")
    new = MultivariateNormal.__new__(MultivariateNormal)
    new.loc, new.scale_tril, new._unbroadcasted_scale_tril = loc, scale_tril, scale_tril
    Distribution.__init__(new, loc.shape[:-1], loc.shape[-1:])
    return new


# ============================================================================
# Exact divergences between explicit densities
# ============================================================================
# A density is any torch Distribution with `log_prob` and `sample`, of event
# shape () (scalar, d = 1) or (d,). Points are passed around as (N, d) float64.

# f_integrand clips log p/q to ±LOG_RATIO_MAX before f is applied, so that p/q and
# q/p stay inside float64 (e^±709); where both densities are below e^-700
# (≈ 1e-304) its integrand is taken as 0 rather than 0·∞. Gradient fits use it.
# exact_divergence uses exact_integrand, which clips nothing: beyond
# LOG_RATIO_SAFE it computes the integrand term by term in log space.
LOG_RATIO_MAX = 700.0
# exact_integrand switches to the unclipped term-by-term form beyond this |log p/q|
LOG_RATIO_SAFE = 600.0
NEGLIGIBLE_LOG_DENSITY = -700.0
# log of the largest float64: a closed-form term e^x beyond it is +inf
LOG_FLOAT_MAX = math.log(np.finfo(np.float64).max)
# The integration box reaches this many standard deviations past each density's mean.
BOX_SDS = 8.0


@dataclass(frozen=True)
class ExactResult:
    """A divergence between two known densities, with how it was computed."""

    value: float  # D(P‖Q) in nats (W1/W2 in data units); may be inf
    error: float  # quadrature: absolute error estimate; grid: |fine − coarse|; monte-carlo: one standard error; closed form: 0
    method: str  # "closed-form", "quadrature", "grid", "monte-carlo" or "singular"


def dim(dist: Distribution) -> int:
    """The dimension d of a density's points (1 for scalar distributions)."""
    return 1 if len(dist.event_shape) == 0 else int(dist.event_shape[0])


def as_double(dist: Distribution) -> Distribution:
    """The same density with float64 parameters, for the types divgen builds;
    any other distribution is returned as it is (and evaluated in its own dtype)."""
    # validate_args=False: the points are ours and always in the support; the check costs a third of the time
    if isinstance(dist, Normal):
        return Normal(dist.loc.double(), dist.scale.double(), validate_args=False)
    if isinstance(dist, MultivariateNormal):
        return MultivariateNormal(dist.loc.double(), scale_tril=dist.scale_tril.double(), validate_args=False)
    if isinstance(dist, Independent):
        return Independent(as_double(dist.base_dist), dist.reinterpreted_batch_ndims, validate_args=False)
    if isinstance(dist, MixtureSameFamily):
        mix = Categorical(logits=dist.mixture_distribution.logits.double(), validate_args=False)
        return MixtureSameFamily(mix, as_double(dist.component_distribution), validate_args=False)
    return dist


def log_density(dist: Distribution, x: torch.Tensor) -> torch.Tensor:
    """log p(x) for points x (N, d), as float64 (N,)."""
    pts = x[:, 0] if len(dist.event_shape) == 0 else x
    try:
        return dist.log_prob(pts).double()
    except RuntimeError:  # a float32 distribution that as_double does not know
        return dist.log_prob(pts.float()).double()


def gaussian(mean, cov) -> MultivariateNormal:
    """N(mean, cov) with a full covariance; mean (d,), cov (d, d)."""
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    cov = torch.as_tensor(cov, dtype=torch.float64).reshape(mean.shape[0], mean.shape[0])
    return MultivariateNormal(mean, covariance_matrix=cov)


def _gaussian_moments(dist: Distribution) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean (d,), cov (d, d)) in float64 if `dist` is a Gaussian, else None."""
    if isinstance(dist, Normal) and dist.batch_shape.numel() == 1:
        return dist.loc.double().reshape(1), dist.scale.double().reshape(1, 1) ** 2
    if isinstance(dist, MultivariateNormal) and len(dist.batch_shape) == 0:
        L = dist.scale_tril.double()
        return dist.loc.double(), L @ L.T
    return None


def f_integrand(f, log_p: torch.Tensor, log_q: torch.Tensor, log_base: torch.Tensor | float = 0.0,
                max_log_ratio: float = LOG_RATIO_MAX) -> torch.Tensor:
    """q·f(p/q) / base, computed from log-densities so that neither density may underflow.

    Where p ≤ q it is q·f(u); where p > q the same number is p·f(u)/u, which
    stays finite when q underflows (f(u)/u tends to the recession slope
    sup dom f*, or grows like log u for KL-like f). Both branches are finite
    for |log p/q| ≤ max_log_ratio, so gradients through torch.where are too;
    gradient-based fits pass a smaller bound (300) under which f' stays finite as well.
    """
    lr = (log_p - log_q).clamp(-max_log_ratio, max_log_ratio)
    u_lo = torch.exp(lr.clamp(max=0.0))  # p/q where it is ≤ 1, else 1
    u_hi = torch.exp(lr.clamp(min=0.0))  # p/q where it is > 1, else 1
    below = torch.exp(log_q - log_base) * f(u_lo)
    above = torch.exp(log_p - log_base) * f(u_hi) / u_hi
    out = torch.where(lr <= 0, below, above)
    negligible = torch.maximum(log_p, log_q) - log_base < NEGLIGIBLE_LOG_DENSITY
    return torch.where(negligible, torch.zeros_like(out), out)



def _term_integrand(terms, log_p: torch.Tensor, log_q: torch.Tensor, log_base) -> torch.Tensor:
    """q·f(p/q)/base for f(u) = Σ c·u^k·(log u)^m, term by term as c·exp(k·log p + (1 − k)·log q − log base)·l^m.

    Nothing is clipped: p^k q^(1−k) is formed in log space, so the integrand is
    exact wherever it is representable, whatever log p/q is (KL of a collapsed
    fit reaches log-ratios of thousands), and +inf where it truly overflows.
    """
    l = log_p - log_q
    out = torch.zeros_like(l)
    for c, k, m in terms:
        log_w = log_q if k == 0 else log_p if k == 1 else k * log_p + (1 - k) * log_q
        w = torch.exp(log_w - log_base)
        term = c * w * (l if m == 1 else 1.0)
        out = out + torch.where(w == 0, torch.zeros_like(out), term)  # 0·log 0 = 0
    return out


def exact_integrand(div: divergences.Divergence, log_p: torch.Tensor, log_q: torch.Tensor,
                    log_base: torch.Tensor | float = 0.0) -> torch.Tensor:
    """q·f(p/q)/base for exact_divergence: f_integrand where |log p/q| ≤ LOG_RATIO_SAFE, and beyond it
    the term-by-term log-space form of div.terms (every f whose f(u)/u or f(u) is unbounded has
    one). Divergences without terms (js, gan, tv, weighted JS) have bounded f(u)/u and f(0), so
    clipping their log-ratio changes the integrand by less than e^−600 of itself."""
    plain = f_integrand(div.f, log_p, log_q, log_base)
    if not div.terms:
        return plain
    l = log_p - log_q
    # also where l is ±inf or nan, and where f(u) itself overflows (u^α for α = 3 past l ≈ 236)
    far = ~(l.abs() <= LOG_RATIO_SAFE) | ~torch.isfinite(plain)
    if not bool(far.any()):
        return plain
    return torch.where(far, _term_integrand(div.terms, log_p, log_q, log_base), plain)


def box(dists: Sequence[Distribution], sds: float = BOX_SDS, components: bool = True) -> list[tuple[float, float]]:
    """Per-coordinate bounds (lo, hi) covering mean ± sds·sd of every density.

    With `components`, a Gaussian mixture contributes the union of its
    components' boxes, much tighter than its overall mean ± sds·sd when the
    components are narrow (grid25). A density without a finite mean or
    standard deviation (a CurveMixture, a Cauchy) is covered by the range of
    20,000 of its samples, widened by a third.
    """
    lo, hi = [], []
    for dist in dists:
        source = dist.component_distribution if components and isinstance(dist, MixtureSameFamily) else dist
        try:
            d = dim(dist)
            m, s = source.mean.double().reshape(-1, d), source.stddev.double().reshape(-1, d)
            ok = bool(torch.isfinite(m).all() and torch.isfinite(s).all())
        except NotImplementedError:
            ok = False
        if ok:
            lo.append((m - sds * s).min(0).values)
            hi.append((m + sds * s).max(0).values)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                x = dist.sample((20_000,)).double().reshape(20_000, -1)
            span = x.max(0).values - x.min(0).values
            lo.append(x.min(0).values - span / 3)
            hi.append(x.max(0).values + span / 3)
    lows, highs = torch.stack(lo).min(0).values, torch.stack(hi).max(0).values
    if not bool(torch.isfinite(lows).all() and torch.isfinite(highs).all()):
        raise InputError("cannot find an integration box for these densities; pass bounds=[(lo, hi), ...]")
    return [(float(a), float(b)) for a, b in zip(lows, highs)]


def trapezoid_grid(bounds: Sequence[tuple[float, float]], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes (n^d, d) and trapezoid weights (n^d,) of a regular grid on a box, float64."""
    axes = [torch.linspace(a, b, n, dtype=torch.float64) for a, b in bounds]
    w1 = [torch.full((n,), (b - a) / (n - 1), dtype=torch.float64) for a, b in bounds]
    for w in w1:
        w[0] = w[-1] = w[0] / 2
    points = torch.cartesian_prod(*axes).reshape(-1, len(bounds))
    weights = w1[0]
    for w in w1[1:]:
        weights = (weights[:, None] * w[None, :]).reshape(-1)
    return points, weights


def singular_divergence(name: str) -> float:
    """D_f(P‖Q) when P and Q are mutually singular: f(0) + lim_{u→∞} f(u)/u.

    Q puts its mass where p = 0 (each unit contributes f(0)) and P where q = 0
    (each unit contributes the recession slope of f, which equals sup dom f*).
    KL gives ∞, JS log 2, squared Hellinger ∫(√p − √q)² (= 2·H²) 2, TV 1.
    """
    div = divergences.get(name)
    return float(div.f(torch.zeros((), dtype=torch.float64))) + div.dom[1]


def point_mass_divergence(theta: float, name: str) -> float:
    """D(δ₀‖δ_θ) for an f-divergence name or `wasserstein` (W1 = |θ|).

    The lecture's example: off θ = 0 every f-divergence is stuck at its
    singular value (KL ∞, JS log 2) while W1 = |θ| shrinks continuously.
    """
    if name in POINT_MASS:
        return POINT_MASS[name](float(theta))
    if theta == 0:
        return float(divergences.get(name).f(torch.ones((), dtype=torch.float64)))
    return singular_divergence(name)


def _cdf_1d(dist: Distribution, x: torch.Tensor) -> torch.Tensor:
    """F(x) for a scalar density, x (N,) float64."""
    moments = _gaussian_moments(dist)
    if moments is not None:
        return Normal(moments[0][0], moments[1][0, 0].sqrt()).cdf(x)
    if isinstance(dist, MixtureSameFamily):
        w = dist.mixture_distribution.probs.double()  # (K,)
        comp = dist.component_distribution
        if isinstance(comp, MultivariateNormal) and comp.event_shape == (1,):
            comp = Normal(comp.loc[:, 0].double(), comp.scale_tril[:, 0, 0].double())
        return (w * comp.cdf(x[:, None])).sum(1)
    try:
        return dist.cdf(x if len(dist.event_shape) == 0 else x[:, None]).double()
    except NotImplementedError:
        raise InputError(f"W1 in 1-D needs a CDF, which {type(dist).__name__} does not provide") from None


def wasserstein_empirical(x, y, p: int = 1) -> float:
    """Exact W_p between two empirical samples x (N, d), y (M, d), by POT's network simplex (p = 1 or 2)."""
    import ot

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    if p not in (1, 2):
        raise InputError(f"wasserstein_empirical: p must be 1 or 2, got {p}")
    cost = ot.dist(x, y, metric="euclidean" if p == 1 else "sqeuclidean")
    value = ot.emd2(ot.unif(len(x)), ot.unif(len(y)), cost, numItermax=10_000_000)
    return float(value) if p == 1 else math.sqrt(max(float(value), 0.0))


def exact_divergence(
    p: Distribution,
    q: Distribution,
    name: str,
    method: str = "auto",
    *,
    bounds: Sequence[tuple[float, float]] | None = None,
    n_grid: int = 801,
    n_samples: int = 200_000,
    seed: int = 0,
) -> ExactResult:
    """D(P‖Q) = E_Q[f(p/q)] between two known densities, with an error estimate.

    Parameters
    ----------
    p, q : Distribution
        Data and model densities of the same dimension d.
    name : str
        Any f-divergence of the table, or a name of EXACT_METHODS:
        `wasserstein` (W1, d = 1: ∫|F_P − F_Q| dx), `wasserstein-2` (W2, Gaussians).
    method : {"auto", "closed-form", "quadrature", "grid", "monte-carlo"}
        `auto` takes a closed form where one exists, else adaptive quadrature
        (scipy.integrate.quad) for d = 1, a trapezoid grid for d = 2, and
        Monte Carlo for d > 2. Closed forms between Gaussians exist for every
        f whose f(u) is a sum of terms c·u^k·(log u)^m (Divergence.terms): KL,
        reverse KL, Jeffrey, Pearson, Neyman, squared Hellinger and α, through
        ∫p^k q^(1−k) (`inf` exactly when that integral diverges) and KL.
    bounds : list of (lo, hi), optional
        Starting integration box per coordinate for quadrature and grid; by
        default mean ± 8 sd of both densities. The box is then widened until the
        integrand is negligible at its edge (it follows the integrand, whose
        mass, e.g. p²/q, can lie far outside both densities), and what lies
        beyond is counted in the error.
    n_grid : int
        Nodes per axis of the 2-D grid (odd). The error is |I(h) − I(2h)|,
        the change when every other node is dropped, plus the integrand's
        mass in the box's outer tenth (the truncation: for integrands that decay
        at least exponentially it exceeds what lies outside).
    n_samples, seed : int
        Monte Carlo: n_samples/2 draws from each of P and Q (the proposal
        ½(p + q), stratified), importance weights q/r, one standard error.
        The standard error assumes the integrand has a finite variance under
        the proposal; for χ²-type divergences (terms u^k with k ∉ [0, 1]:
        Pearson, Neyman, α outside (0, 1)) it may not, and Monte Carlo cannot
        tell a finite divergence from an infinite one: prefer closed forms
        (Gaussians), quadrature (d = 1) or the grid (d = 2) for those.

    Infinite divergences are returned as `inf` (value) with error 0 by the
    closed forms, quadrature (the integrand does not decay 10⁹ box widths out)
    and the grid (not negligible at the edge of a box grown 4096-fold).
    """
    if dim(p) != dim(q):
        raise InputError(f"densities of different dimensions: {dim(p)} and {dim(q)}")
    p, q = as_double(p), as_double(q)
    d = dim(p)
    methods = ("auto", "closed-form", "quadrature", "grid", "monte-carlo")
    if method not in methods:
        raise InputError(f"unknown method {method!r}; valid: {', '.join(methods)}")

    if name in EXACT_METHODS:
        return EXACT_METHODS[name](p, q, d, bounds)

    div = divergences.get(name)
    if method in ("auto", "closed-form"):
        closed = _closed_form_gaussian(p, q, div)
        if closed is not None:
            return closed
        if method == "closed-form":
            raise InputError(f"no closed form of {name!r} for {type(p).__name__} and {type(q).__name__}")
        method = {1: "quadrature", 2: "grid"}.get(d, "monte-carlo")

    if method == "quadrature":
        if d != 1:
            raise InputError("method 'quadrature' is for d = 1; use 'grid' (d = 2) or 'monte-carlo'")
        return _quadrature_1d(div, p, q, bounds)
    if method == "grid":
        if d > 2:
            raise InputError("method 'grid' is for d ≤ 2; use 'monte-carlo'")
        return _grid(div, p, q, bounds, n_grid)
    return _monte_carlo(div, p, q, n_samples, seed)


def log_chernoff_gaussian(mp, mq, k: float) -> float:
    """log ∫ p^k q^(1−k) dx between Gaussians p = N(μ_p, Σ_p), q = N(μ_q, Σ_q); +inf where it diverges.

    With Σ_k = k Σ_q + (1 − k) Σ_p (Gil, Alajaji & Linder 2013, Rényi divergences
    of Gaussians):  −½ k(1 − k) Δμᵀ Σ_k⁻¹ Δμ − ½ log|Σ_k| + ½(1 − k) log|Σ_p| + ½ k log|Σ_q|.
    For k ∈ [0, 1] it is always finite; outside, exactly when Σ_k is positive
    definite (the precision kΣ_p⁻¹ + (1 − k)Σ_q⁻¹ of p^k q^(1−k) equals
    Σ_p⁻¹ Σ_k Σ_q⁻¹, and both lose definiteness where their determinant first vanishes).
    """
    (mu_p, cov_p), (mu_q, cov_q) = mp, mq
    if k == 0 or k == 1:
        return 0.0
    cov_k = k * cov_q + (1 - k) * cov_p
    chol, info = torch.linalg.cholesky_ex(cov_k)
    if int(info) != 0:
        return math.inf
    delta = (mu_p - mu_q)[:, None]
    maha = float((torch.cholesky_solve(delta, chol) * delta).sum())
    logdet = lambda c: float(2 * torch.log(torch.diagonal(torch.linalg.cholesky(c))).sum())  # noqa: E731
    log_det_k = float(2 * torch.log(torch.diagonal(chol)).sum())
    return -0.5 * k * (1 - k) * maha - 0.5 * log_det_k + 0.5 * (1 - k) * logdet(cov_p) + 0.5 * k * logdet(cov_q)


def _closed_form_gaussian(p, q, div) -> ExactResult | None:
    """D_f between Gaussians for f = Σ c·u^k·(log u)^m: E_Q[(p/q)^k] = ∫p^k q^(1−k), E_Q[(p/q) log(p/q)] = KL(P‖Q),
    E_Q[log(p/q)] = −KL(Q‖P)."""
    mp, mq = _gaussian_moments(p), _gaussian_moments(q)
    if mp is None or mq is None or not div.terms:
        return None
    if any(m == 1 and k not in (0.0, 1.0) for _, k, m in div.terms):
        return None
    value, infinite = 0.0, False
    for c, k, m in div.terms:
        if m == 1:
            gp, gq = MultivariateNormal(*mp), MultivariateNormal(*mq)
            value += c * (float(kl_divergence(gp, gq)) if k == 1 else -float(kl_divergence(gq, gp)))
            continue
        log_i = log_chernoff_gaussian(mp, mq, k)
        if log_i > LOG_FLOAT_MAX:  # ∫p^k q^(1−k) beyond float64, or infinite
            infinite = True  # c > 0 for every term that can diverge (k ∉ [0, 1]): f is convex
            continue
        value += c * math.expm1(log_i) + c  # expm1: no loss of digits when p ≈ q
    return ExactResult(math.inf if infinite else value, 0.0, "closed-form")


# Divergences that are not E_Q[f(p/q)], by name: (p, q, d, bounds) -> ExactResult.
def _w2(p, q, d, bounds) -> ExactResult:
    mp, mq = _gaussian_moments(p), _gaussian_moments(q)
    if mp is None or mq is None:
        raise InputError("wasserstein-2 has a closed form only between Gaussians; use wasserstein_empirical on samples")
    from ot.gaussian import bures_wasserstein_distance

    value = bures_wasserstein_distance(mp[0].numpy(), mq[0].numpy(), mp[1].numpy(), mq[1].numpy())
    return ExactResult(float(value), 0.0, "closed-form")


def _w1(p, q, d, bounds) -> ExactResult:
    if d != 1:
        raise InputError("exact wasserstein (W1) between densities is available in 1-D; use wasserstein_empirical on samples")
    from scipy import integrate

    (lo, hi), = bounds or box([p, q])

    def integrand(t):
        x = torch.tensor([t], dtype=torch.float64)
        return float((_cdf_1d(p, x) - _cdf_1d(q, x)).abs()[0])

    value, err = integrate.quad(integrand, lo, hi, points=_breakpoints([p, q], lo, hi), limit=500, epsabs=1e-11, epsrel=1e-10)
    return ExactResult(value, err, "quadrature")


EXACT_METHODS: dict[str, Callable[..., ExactResult]] = {"wasserstein": _w1, "wasserstein-2": _w2}
# D(δ₀‖δ_θ) for the names that are not f-divergences (the f-divergences are singular off θ = 0)
POINT_MASS: dict[str, Callable[[float], float]] = {"wasserstein": abs}


def _breakpoints(dists, lo, hi) -> list[float]:
    """Component means of 1-D mixtures and means of the densities: where quad should split."""
    points = []
    for dist in dists:
        for candidate in (getattr(dist, "component_distribution", None), dist):
            try:
                points += candidate.mean.double().reshape(-1).tolist()
            except (AttributeError, NotImplementedError):
                pass
    return sorted({round(t, 12) for t in points if lo < t < hi and math.isfinite(t)})


# The integrand is negligible where it is below this fraction of its peak: quadrature's
# interval, and the edge of the grid's box (what lies beyond the box is counted in the error).
NEGLIGIBLE = 1e-25
NEGLIGIBLE_EDGE = 1e-10


def _integrand_fn(div, p, q):
    def h(x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N,)
        with torch.no_grad():
            return exact_integrand(div, log_density(p, x), log_density(q, x))
    return h


def _diverges(h_far: torch.Tensor) -> bool:
    """Whether the integrand, sampled at points going out to 10⁹ box widths, fails to decay."""
    h_far = h_far.abs()
    if bool(torch.isinf(h_far).any()) or bool(torch.isnan(h_far[-1])):
        return True
    return bool(h_far[-1] > 0 and h_far[-1] >= h_far[-2] >= h_far[-3])


def _quadrature_1d(div, p, q, bounds) -> ExactResult:
    """∫ q f(p/q) over the line: quad on the interval where the integrand lives, plus both tails to ±∞."""
    from scipy import integrate

    (lo, hi), = bounds or box([p, q])
    h = _integrand_fn(div, p, q)
    width = hi - lo
    # scan outwards: finely to 16 box widths, then geometrically to 10⁹
    steps = torch.cat([torch.linspace(0, 16, 257, dtype=torch.float64)[1:],
                       torch.logspace(math.log10(16), 9, 60, dtype=torch.float64)[1:]]) * width
    inside = torch.linspace(lo, hi, 2001, dtype=torch.float64)
    up, down = hi + steps, lo - steps
    h_in, h_up, h_down = (h(x[:, None]) for x in (inside, up, down))
    if _diverges(h_up) or _diverges(h_down):
        return ExactResult(math.inf, 0.0, "quadrature")
    peak = float(torch.cat([h_in, h_up, h_down]).abs().max())
    if peak == 0:
        return ExactResult(0.0, 0.0, "quadrature")
    alive_up, alive_down = up[h_up.abs() > NEGLIGIBLE * peak], down[h_down.abs() > NEGLIGIBLE * peak]
    a = float(alive_down.min()) if len(alive_down) else lo
    b = float(alive_up.max()) if len(alive_up) else hi
    xs = torch.cat([down, inside, up])
    hs = torch.cat([h_down, h_in, h_up]).abs()
    top = xs[torch.argsort(hs, descending=True)[:3]].tolist()  # the integrand's peak, wherever it is
    # a heavy tail (a Student t's p·log(p/q) falls like x⁻⁴) keeps [a, b] millions of box widths wide; quad's
    # first rule on such a piece never sees the box, so the line is cut at the box's edges and at 1, 3, 7, …
    # box widths beyond them, each piece at most as wide as everything nearer the box
    far = [width * (2 ** k - 1) for k in range(1, 64) if width * (2 ** k - 1) < max(b - hi, lo - a)]
    edges = [lo, hi] + [hi + g for g in far] + [lo - g for g in far]
    points = sorted({round(t, 12) for t in _breakpoints([p, q], a, b) + top + edges if a < t < b})
    f1 = lambda t: float(h(torch.tensor([[t]], dtype=torch.float64))[0])  # noqa: E731
    value, err = integrate.quad(f1, a, b, points=points or None, limit=1000 + 2 * len(points), epsabs=1e-11, epsrel=1e-10)
    # the truncation: both tails, integrated rather than ignored, and counted in the error
    tail_hi, e_hi = integrate.quad(f1, b, math.inf, limit=200)
    tail_lo, e_lo = integrate.quad(f1, -math.inf, a, limit=200)
    return ExactResult(value + tail_hi + tail_lo, err + abs(tail_hi) + abs(tail_lo) + e_hi + e_lo, "quadrature")


def _grid(div, p, q, bounds, n) -> ExactResult:
    """Trapezoid sums on a box grown (by doubling about its centre) until the integrand is negligible on its edge."""
    n = n + 1 - n % 2  # odd, so every other node is a grid of its own
    bounds = list(bounds or box([p, q]))
    h = _integrand_fn(div, p, q)
    for _ in range(12):
        points, weights = trapezoid_grid(bounds, n)
        values = torch.cat([h(c) for c in points.split(200_000)])
        if bool(torch.isnan(values).any() | torch.isinf(values).any()):
            return ExactResult(math.inf, 0.0, "grid")
        grid = values.reshape((n,) * len(bounds))
        edge = _edge(grid)
        peak = float(values.abs().max())
        if peak == 0 or float(edge.abs().max()) <= NEGLIGIBLE_EDGE * peak:
            break
        bounds = [(a - (b - a) / 2, b + (b - a) / 2) for a, b in bounds]
    else:
        return ExactResult(math.inf, 0.0, "grid")  # still not negligible 4096 box widths out
    fine = float((values * weights).sum())
    coarse_h = values[::2] if len(bounds) == 1 else grid[::2, ::2].reshape(-1)
    _, coarse_w = trapezoid_grid(bounds, (n + 1) // 2)
    coarse = float((coarse_h * coarse_w).sum())
    # truncation: the mass in the outer tenth of the box
    k = max(1, n // 20)
    ring = torch.ones_like(grid, dtype=torch.bool)
    inner = (slice(k, n - k),) * len(bounds)
    ring[inner] = False
    outer = float((values.abs() * weights)[ring.reshape(-1)].sum())
    return ExactResult(fine, abs(fine - coarse) + outer, "grid")


def _edge(grid: torch.Tensor) -> torch.Tensor:
    """The values of a 1-D or 2-D grid on its boundary."""
    if grid.ndim == 1:
        return grid[[0, -1]]
    return torch.cat([grid[0], grid[-1], grid[:, 0], grid[:, -1]])


def _monte_carlo(div, p, q, n, seed) -> ExactResult:
    half = max(n // 2, 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xp = p.sample((half,)).double().reshape(half, -1)
        xq = q.sample((half,)).double().reshape(half, -1)
    parts = []
    with torch.no_grad():
        for x in (xp, xq):
            lp, lq = log_density(p, x), log_density(q, x)
            log_r = torch.logaddexp(lp, lq) - math.log(2)  # the proposal ½(p + q)
            parts.append(exact_integrand(div, lp, lq, log_r))
    # stratified: exactly half the draws from each component of the proposal
    value = 0.5 * (parts[0].mean() + parts[1].mean())
    se = 0.5 * torch.sqrt(parts[0].var() / half + parts[1].var() / half)
    return ExactResult(float(value), float(se), "monte-carlo")
