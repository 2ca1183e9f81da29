"""Exact divergences between explicit densities: closed forms, quadrature, grid, Monte Carlo."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from conftest import ALL_F
from divgen import densities, divergences, exact_divergence
from divgen.data import toy_density
from divgen.densities import gaussian, gaussian_mixture
from divgen.errors import InputError

GAUSSIAN_PAIRS_1D = [((0.0, 1.0), (0.0, 1.0)), ((0.3, 1.2), (-0.5, 0.7)), ((2.0, 0.5), (0.0, 3.0))]


def g1(mean, sd):
    return gaussian([mean], [[sd * sd]])


def f_at_1(name):
    return float(divergences.get(name).f(torch.ones((), dtype=torch.float64)))


# A pair for which every divergence of the table is finite and has a finite
# Monte Carlo variance: p has lighter tails than q² and q than p².
P_MIX = gaussian_mixture([[-1.0], [1.0]], [1.0, 1.0])
Q_WIDE = g1(0.2, 1.1)


@pytest.mark.parametrize("a, b", GAUSSIAN_PAIRS_1D)
@pytest.mark.parametrize("name", ["kl", "reverse-kl", "jeffrey"])
def test_quadrature_matches_closed_form_1d(a, b, name):
    p, q = g1(*a), g1(*b)
    closed = exact_divergence(p, q, name, "closed-form")
    quad = exact_divergence(p, q, name, "quadrature")
    assert closed.method == "closed-form" and quad.method == "quadrature"
    assert abs(quad.value - closed.value) < 1e-6
    assert quad.error < 1e-6


@pytest.mark.parametrize("name", ALL_F)
def test_gaussians_far_apart_reach_the_divergences_maximum(name):
    """Divergence.maximum, f(0) + sup dom f*, is D_f of disjoint supports: two unit Gaussians 30 sd apart come
    within 1e-9 of it where it is finite, and beyond 400 nats where it is not. Pearson's closed form once
    overflowed there (math.expm1 of 900) instead of giving inf."""
    maximum = divergences.get(name).maximum
    value = exact_divergence(g1(-15.0, 1.0), g1(15.0, 1.0), name).value
    if math.isfinite(maximum):
        assert value == pytest.approx(maximum, abs=1e-9)
    else:
        assert value > 400


def test_closed_form_kl_by_hand():
    # KL(N(μ1, σ1²) ‖ N(μ2, σ2²)) = log(σ2/σ1) + (σ1² + (μ1 − μ2)²)/(2σ2²) − ½
    p, q = g1(0.3, 1.2), g1(-0.5, 0.7)
    expected = math.log(0.7 / 1.2) + (1.2**2 + 0.8**2) / (2 * 0.7**2) - 0.5
    assert exact_divergence(p, q, "kl").value == pytest.approx(expected, abs=1e-12)
    assert exact_divergence(p, q, "kl", "quadrature").value == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["kl", "reverse-kl"])
def test_grid_matches_closed_form_2d(name):
    p = gaussian([0.3, 0.1], [[1.0, 0.3], [0.3, 0.8]])
    q = gaussian([-0.5, 0.2], [[0.6, -0.1], [-0.1, 0.9]])
    closed = exact_divergence(p, q, name)
    grid = exact_divergence(p, q, name, "grid", n_grid=401)
    assert grid.method == "grid"
    assert abs(grid.value - closed.value) < 1e-6
    assert abs(grid.value - closed.value) <= grid.error + 1e-9  # the stated error is honest


@pytest.mark.parametrize("name", divergences.EXAMPLES)
def test_monte_carlo_within_three_standard_errors_of_quadrature(name):
    quad = exact_divergence(P_MIX, Q_WIDE, name, "quadrature")
    mc = exact_divergence(P_MIX, Q_WIDE, name, "monte-carlo", n_samples=100_000, seed=1)
    assert math.isfinite(quad.value) and mc.error > 0
    assert abs(mc.value - quad.value) <= 3 * mc.error, (mc, quad)


@pytest.mark.parametrize("name", ["kl", "js", "hellinger", "tv"])
def test_grid_matches_quadrature_1d(name):
    quad = exact_divergence(P_MIX, Q_WIDE, name, "quadrature")
    grid = exact_divergence(P_MIX, Q_WIDE, name, "grid", n_grid=4001)
    assert abs(grid.value - quad.value) < 1e-6 + grid.error


def test_the_symmetric_divergences_are_those_we_expect():
    symmetric = {n for n in divergences.EXAMPLES if divergences.get(n).symmetric}
    assert {"js", "hellinger", "jeffrey", "tv", "gan"} <= symmetric
    assert not symmetric & {"kl", "reverse-kl", "pearson", "neyman"}


@pytest.mark.parametrize("name", [n for n in divergences.EXAMPLES if divergences.get(n).symmetric])
def test_symmetric_divergences_are_symmetric(name):
    forward = exact_divergence(P_MIX, Q_WIDE, name, "quadrature").value
    backward = exact_divergence(Q_WIDE, P_MIX, name, "quadrature").value
    assert forward == pytest.approx(backward, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("name", ["kl", "pearson", "alpha:2"])
def test_asymmetric_divergences_are_not(name):
    forward = exact_divergence(P_MIX, Q_WIDE, name, "quadrature").value
    backward = exact_divergence(Q_WIDE, P_MIX, name, "quadrature").value
    assert abs(forward - backward) > 1e-3


@pytest.mark.parametrize("method", ["quadrature", "grid", "monte-carlo"])
@pytest.mark.parametrize("name", divergences.EXAMPLES)
def test_divergence_of_a_density_to_itself_is_f_of_1(name, method):
    # f(1) = 0 for every divergence but gan = 2·JS − log 4, where it is −log 4
    r = exact_divergence(P_MIX, P_MIX, name, method, n_samples=2000)
    assert r.value == pytest.approx(f_at_1(name), abs=1e-9)
    assert f_at_1(name) == (pytest.approx(-math.log(4)) if name == "gan" else 0.0)


@pytest.mark.parametrize("method", ["closed-form", "quadrature"])
def test_kl_is_reverse_kl_with_the_arguments_swapped(method):
    p, q = g1(0.3, 1.2), g1(-0.5, 0.7)
    assert exact_divergence(p, q, "kl", method).value == pytest.approx(exact_divergence(q, p, "reverse-kl", method).value, abs=1e-8)
    if method == "quadrature":
        a = exact_divergence(P_MIX, Q_WIDE, "kl", method).value
        assert a == pytest.approx(exact_divergence(Q_WIDE, P_MIX, "reverse-kl", method).value, abs=1e-8)


def test_gan_is_two_js_minus_log_4():
    js = exact_divergence(P_MIX, Q_WIDE, "js").value
    assert exact_divergence(P_MIX, Q_WIDE, "gan").value == pytest.approx(2 * js - math.log(4), abs=1e-8)


def test_torch_distributions_are_densities():
    # a scalar torch Normal is a 1-D density like any other
    p, q = Normal(torch.tensor(0.3), torch.tensor(1.2)), Normal(torch.tensor(-0.5), torch.tensor(0.7))
    assert exact_divergence(p, q, "kl").value == pytest.approx(exact_divergence(g1(0.3, 1.2), g1(-0.5, 0.7), "kl").value, abs=1e-6)
    assert exact_divergence(p, q, "js", "quadrature").value == pytest.approx(
        exact_divergence(g1(0.3, 1.2), g1(-0.5, 0.7), "js", "quadrature").value, abs=1e-6)


@pytest.mark.parametrize("name", ["mog1d", "mog2d", "ring8", "grid25"])
def test_toy_densities_integrate_to_one(name):
    p = densities.as_double(toy_density(name))
    bounds = densities.box([p])
    points, weights = densities.trapezoid_grid(bounds, 4001 if densities.dim(p) == 1 else 601)
    mass = float((densities.log_density(p, points).exp() * weights).sum())
    assert mass == pytest.approx(1.0, abs=1e-6)


def test_monte_carlo_in_higher_dimension_matches_closed_form():
    d = 5
    p = gaussian(torch.zeros(d), torch.eye(d))
    q = gaussian(torch.full((d,), 0.3), 1.3 * torch.eye(d))
    closed = exact_divergence(p, q, "kl")
    mc = exact_divergence(p, q, "kl", "monte-carlo", n_samples=100_000)
    assert abs(mc.value - closed.value) <= 3 * mc.error


# ---------------------------------------------------------- wasserstein ---
def test_w2_between_gaussians_closed_form():
    # 1-D: W2² = (μ1 − μ2)² + (σ1 − σ2)²
    r = exact_divergence(g1(0.3, 1.2), g1(-0.5, 0.7), "wasserstein-2")
    assert r.method == "closed-form"
    assert r.value == pytest.approx(math.sqrt(0.8**2 + 0.5**2), abs=1e-9)
    # commuting covariances in 2-D: W2² = ‖Δμ‖² + ‖√Σ1 − √Σ2‖_F²
    r2 = exact_divergence(gaussian([0, 0], [[4.0, 0], [0, 1.0]]), gaussian([1, 1], [[1.0, 0], [0, 9.0]]), "wasserstein-2")
    assert r2.value == pytest.approx(math.sqrt(2 + 1 + 4), abs=1e-8)


def test_w1_in_1d():
    # a shift: W1(N(0, 1), N(m, 1)) = |m|
    assert exact_divergence(g1(0, 1), g1(1.7, 1), "wasserstein").value == pytest.approx(1.7, abs=1e-8)
    # against POT on large samples
    torch.manual_seed(0)
    x, y = P_MIX.sample((1500,)), Q_WIDE.sample((1500,))
    exact = exact_divergence(P_MIX, Q_WIDE, "wasserstein").value
    assert densities.wasserstein_empirical(x, y, 1) == pytest.approx(exact, abs=0.08)


def test_wasserstein_empirical_by_hand():
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    assert densities.wasserstein_empirical(x, y, 1) == pytest.approx(2.0)
    assert densities.wasserstein_empirical(x, y, 2) == pytest.approx(2.0)
    a, b = np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 1.0]])
    assert densities.wasserstein_empirical(a, b, 2) == pytest.approx(1.0)


# ----------------------------------------------------------- point mass ---
def test_point_mass_values():
    for theta in (-1.0, 0.5, 1e-3):
        assert densities.point_mass_divergence(theta, "kl") == math.inf
        assert densities.point_mass_divergence(theta, "js") == pytest.approx(math.log(2))
        assert densities.point_mass_divergence(theta, "wasserstein") == pytest.approx(abs(theta))
    for name in ("kl", "js", "wasserstein"):
        assert densities.point_mass_divergence(0.0, name) == 0.0


@pytest.mark.parametrize("name", [n for n in divergences.EXAMPLES if math.isfinite(densities.singular_divergence(n))])
def test_singular_value_is_the_limit_of_separating_densities(name):
    # two narrow, far-apart Gaussians are nearly mutually singular
    p, q = g1(0.0, 0.05), g1(3.0, 0.05)
    r = exact_divergence(p, q, name, "quadrature")
    assert r.value == pytest.approx(densities.singular_divergence(name), abs=1e-3)


def test_singular_values_by_hand():
    assert densities.singular_divergence("js") == pytest.approx(math.log(2))
    assert densities.singular_divergence("hellinger") == pytest.approx(2.0)
    assert densities.singular_divergence("tv") == pytest.approx(1.0)
    assert densities.singular_divergence("gan") == pytest.approx(0.0)
    assert densities.singular_divergence("kl") == math.inf
    assert densities.singular_divergence("reverse-kl") == math.inf


# ----------------------------------------------------------------- errors ---
def test_bad_input_is_refused():
    with pytest.raises(InputError):
        exact_divergence(g1(0, 1), gaussian([0, 0], torch.eye(2)), "kl")
    with pytest.raises(InputError):
        exact_divergence(g1(0, 1), g1(1, 1), "kl", "simpson")
    with pytest.raises(InputError):
        exact_divergence(g1(0, 1), g1(1, 1), "nonsense")
    with pytest.raises(InputError):
        exact_divergence(gaussian([0, 0], torch.eye(2)), gaussian([1, 0], torch.eye(2)), "wasserstein")
    with pytest.raises(InputError):
        exact_divergence(P_MIX, Q_WIDE, "kl", "closed-form")


# ------------------------------------------- closed forms and their limits ---
CLOSED = [n for n in divergences.EXAMPLES + ("alpha:1.5", "alpha:-0.5") if divergences.get(n).terms]


def test_every_divergence_with_unbounded_f_has_terms():
    """The log-space integrand and the Gaussian closed forms need the terms of f wherever f(u)/u or f(0) is unbounded."""
    assert set(CLOSED) >= {"kl", "reverse-kl", "jeffrey", "pearson", "neyman", "hellinger", "alpha:2", "alpha:3", "alpha:-1"}


@pytest.mark.parametrize("a, b", [((0.3, 1.2), (-0.5, 0.7)), ((0.0, 1.0), (0.5, 1.3)), ((2.0, 0.5), (0.0, 3.0))])
@pytest.mark.parametrize("name", CLOSED)
def test_closed_forms_match_quadrature_1d(a, b, name):
    p, q = g1(*a), g1(*b)
    closed = exact_divergence(p, q, name)
    quad = exact_divergence(p, q, name, "quadrature")
    assert closed.method == "closed-form"
    if math.isinf(closed.value):
        assert quad.value == math.inf
    else:
        assert quad.value == pytest.approx(closed.value, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("name", ["pearson", "neyman", "hellinger", "alpha:3", "alpha:-1", "jeffrey"])
def test_closed_forms_match_the_grid_2d(name):
    p = gaussian([0.3, 0.1], [[1.0, 0.3], [0.3, 0.8]])
    q = gaussian([-0.2, 0.2], [[0.9, -0.1], [-0.1, 1.1]])
    closed = exact_divergence(p, q, name)
    grid = exact_divergence(p, q, name, "grid", n_grid=401)
    assert math.isfinite(closed.value) and closed.method == "closed-form"
    assert abs(grid.value - closed.value) <= grid.error + 1e-7 * abs(closed.value)


def test_closed_forms_by_hand():
    # Pearson χ²(N(0,1) ‖ N(0, σ²)) = σ²/√(2σ² − 1) − 1; squared Hellinger of a shift δ: 2 − 2 exp(−δ²/8)
    assert exact_divergence(g1(0, 1), g1(0, 2), "pearson").value == pytest.approx(4 / math.sqrt(7) - 1, rel=1e-12)
    assert exact_divergence(g1(0, 1), g1(1.5, 1), "hellinger").value == pytest.approx(2 - 2 * math.exp(-1.5**2 / 8), rel=1e-12)
    # Neyman of a unit shift: ∫q²/p − 1 = e^{δ²} − 1
    assert exact_divergence(g1(0, 1), g1(1, 1), "neyman").value == pytest.approx(math.e - 1, rel=1e-12)


# The cases: values that the clipped ±700 log-ratio and the mean ± 8 sd box got wrong.
@pytest.mark.parametrize("a, b, name, exact", [
    ((0, 1), (0, 0.01), "kl", 4994.894829814),  # log(100) + 1/(2·10⁻⁴) − ½
    ((0, 1.2), (1, 1), "alpha:3", 24057898156.90025),  # (∫p³q⁻² − 1)/6, by mpmath
    ((0, 1.2), (1, 1), "pearson", 5.641261806584),
    ((0, 1), (2, 1), "pearson", math.exp(4) - 1),
])
@pytest.mark.parametrize("method", ["closed-form", "quadrature", "grid"])
def test_large_divergences_are_exact(a, b, name, exact, method):
    r = exact_divergence(g1(*a), g1(*b), name, method, n_grid=4001)
    assert r.value == pytest.approx(exact, rel=1e-8)


@pytest.mark.parametrize("a, b, name", [((0, 1), (0.5, 1.5), "neyman"), ((0, 1), (0, 0.5), "pearson"),
                                        ((0, 1), (0, 0.5), "alpha:2"), ((0, 1), (0, 2), "alpha:-1")])
@pytest.mark.parametrize("method", ["closed-form", "quadrature", "grid"])
def test_infinite_divergences_are_inf(a, b, name, method):
    assert exact_divergence(g1(*a), g1(*b), name, method).value == math.inf


def test_infinite_divergence_of_a_mixture_by_quadrature():
    # ∫p²/q with p wider than q in its tails: infinite, and no closed form
    assert exact_divergence(P_MIX, g1(0.0, 0.5), "pearson").value == math.inf
    assert exact_divergence(gaussian_mixture([[-1.0], [1.0]], [0.3, 0.3]), g1(0.0, 2.0), "pearson").value < math.inf


def test_kl_of_a_collapsed_fit_on_ring8():
    p, q = toy_density("ring8"), gaussian([2.0, 0.0], [[0.05**2, 0.0], [0.0, 0.05**2]])
    grid = exact_divergence(p, q, "kl")
    assert grid.method == "grid" and grid.value == pytest.approx(1597.92, abs=0.01)
    mc = exact_divergence(p, q, "kl", "monte-carlo", n_samples=40_000)
    assert abs(mc.value - grid.value) <= 4 * mc.error


def test_the_integration_box_follows_the_integrand():
    # alpha:3 lives near x = −24 (p³/q² ∝ exp(−0.042x² − 2x)), far outside mean ± 8 sd of both densities
    assert densities.box([g1(0, 1.2), g1(1, 1)])[0][0] > -10
    quad = exact_divergence(g1(0, 1.2), g1(1, 1), "alpha:3", "quadrature")
    assert quad.value == pytest.approx(exact_divergence(g1(0, 1.2), g1(1, 1), "alpha:3").value, rel=1e-8)


def test_a_box_that_cuts_the_integrand_is_widened():
    # bounds given by hand that cut off most of the integrand: the grid grows until its edge is negligible
    p, q = gaussian([0.0, 0.0], torch.eye(2)), gaussian([0.5, 0.0], 0.6 * torch.eye(2))
    closed = exact_divergence(p, q, "pearson").value
    cut = exact_divergence(p, q, "pearson", "grid", bounds=[(-1, 1), (-1, 1)], n_grid=401)
    assert abs(cut.value - closed) <= cut.error + 1e-12
    assert cut.value == pytest.approx(closed, rel=1e-6)
    quad = exact_divergence(g1(0, 1), g1(0.5, 0.6**0.5), "pearson", "quadrature", bounds=[(-1, 1)])
    assert quad.value == pytest.approx(exact_divergence(g1(0, 1), g1(0.5, 0.6**0.5), "pearson").value, rel=1e-8)


@pytest.mark.parametrize("name", ["kl", "js", "reverse-kl", "hellinger"])
def test_quadrature_of_a_heavy_tailed_density(name):
    # P a Student t (5 degrees of freedom, unit variance) against N(0, 1): p·log(p/q) falls only like x⁻⁴, so
    # the integrand is alive millions of box widths out, and a single quad call over that range missed the
    # centre (0.0016 for kl). The reference integrates scipy.stats' own densities piece by piece.
    from scipy import integrate, stats

    scale = math.sqrt(3 / 5)
    p = torch.distributions.StudentT(torch.tensor([5.0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                                     torch.full((1,), scale, dtype=torch.float64))
    p = torch.distributions.Independent(p, 1)
    log_p = lambda x: stats.t.logpdf(x, 5, scale=scale)  # noqa: E731
    log_q = stats.norm.logpdf
    f = {"kl": lambda lp, lq: np.exp(lp) * (lp - lq),
         "reverse-kl": lambda lp, lq: np.exp(lq) * (lq - lp),
         "js": lambda lp, lq: 0.5 * (np.exp(lp) * (lp - np.logaddexp(lp, lq) + math.log(2))
                                     + np.exp(lq) * (lq - np.logaddexp(lp, lq) + math.log(2))),
         "hellinger": lambda lp, lq: (np.exp(lp / 2) - np.exp(lq / 2)) ** 2}[name]
    cuts = [-math.inf, -1e4, -1e2, -10, 0, 10, 1e2, 1e4, math.inf]
    truth = sum(integrate.quad(lambda x: f(log_p(x), log_q(x)), lo, hi, limit=500)[0] for lo, hi in zip(cuts, cuts[1:]))
    got = exact_divergence(p, g1(0.0, 1.0), name, "quadrature")
    assert got.value == pytest.approx(truth, rel=1e-7)


def test_normal_components_are_the_constructors_distribution():
    """densities.normal_components skips MultivariateNormal's shape broadcast (which imports sympy), and
    must give the same distribution: the same draws from the same seed, densities, moments and entropy."""
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(5, 3, generator=g)
    scale = torch.tril(torch.randn(5, 3, 3, generator=g)) + 3 * torch.eye(3)  # positive diagonal: a Cholesky factor
    ours, theirs = densities.normal_components(loc, scale), torch.distributions.MultivariateNormal(loc, scale_tril=scale)
    assert ours.batch_shape == theirs.batch_shape == (5,) and ours.event_shape == theirs.event_shape == (3,)
    draws = []
    for dist in (ours, theirs):
        torch.manual_seed(7)
        draws.append(dist.sample((4,)))
    assert torch.equal(draws[0], draws[1])
    x = torch.randn(11, 1, 3, generator=g)
    assert torch.equal(ours.log_prob(x), theirs.log_prob(x))
    for name in ("mean", "covariance_matrix", "precision_matrix", "variance", "entropy"):
        value = getattr(ours, name)
        assert torch.equal(value() if callable(value) else value, getattr(theirs, name)() if callable(value)
                           else getattr(theirs, name)), name
    with pytest.raises(ValueError, match="disagree"):
        densities.normal_components(loc, scale[:4])
