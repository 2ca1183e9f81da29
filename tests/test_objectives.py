"""Losses as pure functions of critic outputs: hand-computed values, stability, and the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from torch.testing import assert_close

from conftest import ALL_F
from divgen import divergences, objectives

V_REAL = torch.tensor([-2.0, 0.0, 0.5, 3.0], dtype=torch.float64)
V_FAKE = torch.tensor([-1.0, 1.5, 4.0], dtype=torch.float64)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# -------------------------------------------------------- hand-computed values ---
def test_gan_critic_loss_is_binary_cross_entropy():
    gan = divergences.get("gan")
    by_hand = -np.mean([math.log(sigmoid(v)) for v in V_REAL.tolist()]) - np.mean([math.log(1 - sigmoid(v)) for v in V_FAKE.tolist()])
    got = objectives.fgan_critic_loss(gan, V_REAL, V_FAKE)
    assert float(got) == pytest.approx(by_hand, rel=1e-12)
    bce = F.binary_cross_entropy_with_logits(V_REAL, torch.ones_like(V_REAL)) + F.binary_cross_entropy_with_logits(V_FAKE, torch.zeros_like(V_FAKE))
    assert_close(got, bce)


def test_gan_generator_losses():
    gan = divergences.get("gan")
    nonsat = -np.mean([math.log(sigmoid(v)) for v in V_FAKE.tolist()])
    minimax = np.mean([math.log(1 - sigmoid(v)) for v in V_FAKE.tolist()])
    assert float(objectives.fgan_generator_loss(gan, V_FAKE, "nonsaturating")) == pytest.approx(nonsat, rel=1e-12)
    assert float(objectives.fgan_generator_loss(gan, V_FAKE, "minimax")) == pytest.approx(minimax, rel=1e-12)
    # nonsaturating is the default (Goodfellow et al. 2014, section 3)
    assert float(objectives.fgan_generator_loss(gan, V_FAKE)) == pytest.approx(nonsat, rel=1e-12)


def test_kl_critic_loss_by_hand():
    kl = divergences.get("kl")  # g(v) = v, f*(t) = exp(t − 1)
    by_hand = -(np.mean(V_REAL.tolist()) - np.mean([math.exp(v - 1) for v in V_FAKE.tolist()]))
    assert float(objectives.fgan_critic_loss(kl, V_REAL, V_FAKE)) == pytest.approx(by_hand, rel=1e-12)
    assert float(objectives.fgan_bound(kl, V_REAL, V_FAKE)) == pytest.approx(-by_hand, rel=1e-12)


def test_reverse_kl_and_pearson_losses_by_hand():
    rkl = divergences.get("reverse-kl")  # g(v) = −exp(−v), f*(g(v)) = v − 1
    by_hand = -(np.mean([-math.exp(-v) for v in V_REAL.tolist()]) - np.mean([v - 1 for v in V_FAKE.tolist()]))
    assert float(objectives.fgan_critic_loss(rkl, V_REAL, V_FAKE)) == pytest.approx(by_hand, rel=1e-12)
    pearson = divergences.get("pearson")  # g(v) = 2(e^v − 1), f*(g(v)) = e^{2v} − 1
    v_fake = torch.tensor([-5.0, -2.0, 1.0], dtype=torch.float64)
    fake_terms = [math.expm1(2 * v) for v in v_fake.tolist()]
    by_hand = -(np.mean([2 * math.expm1(v) for v in V_REAL.tolist()]) - np.mean(fake_terms))
    assert float(objectives.fgan_critic_loss(pearson, V_REAL, v_fake)) == pytest.approx(by_hand, rel=1e-12)
    assert float(objectives.fgan_generator_loss(pearson, v_fake, "minimax")) == pytest.approx(-np.mean(fake_terms))


def test_wasserstein_losses_by_hand():
    assert float(objectives.wasserstein_critic_loss(V_REAL, V_FAKE)) == pytest.approx(np.mean([-1.0, 1.5, 4.0]) - np.mean([-2.0, 0.0, 0.5, 3.0]))
    assert float(objectives.wasserstein_generator_loss(V_FAKE)) == pytest.approx(-np.mean([-1.0, 1.5, 4.0]))


def test_unknown_generator_loss_is_rejected():
    with pytest.raises(ValueError):
        objectives.fgan_generator_loss(divergences.get("kl"), V_FAKE, "saturating")


# ----------------------------------------------------------------- bounded() ---
def test_bounded_is_identity_where_critics_live_and_saturates_beyond():
    inner = torch.linspace(-30, 30, 601, dtype=torch.float64)
    assert torch.equal(objectives.bounded(inner), inner)
    outer = torch.tensor([-1e30, -1e4, -100.0, -31.0, 31.0, 100.0, 1e4, 1e30, 3e38], dtype=torch.float32)
    out = objectives.bounded(outer)
    assert (out.abs() <= 60).all() and (out.abs() > 30).all()  # < 60 exactly, up to rounding of tanh
    assert torch.equal(torch.sign(out), torch.sign(outer))
    # increasing and odd
    v = torch.linspace(-200, 200, 4001, dtype=torch.float64)
    b = objectives.bounded(v)
    assert (torch.diff(b) > 0).all()
    assert_close(objectives.bounded(-v), -b)


def test_bounded_is_continuously_differentiable_at_the_joint():
    v = torch.tensor([29.999, 30.0, 30.001, -30.001], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(objectives.bounded(v).sum(), v)
    assert_close(grad, torch.ones_like(grad), atol=1e-3, rtol=0)


# ----------------------------------------------------------------- stability ---
EXTREME = torch.cat([
    torch.linspace(-1e4, 1e4, 4001),
    torch.tensor([-3e38, -1e30, -1e10, -100.0, -45.0, -31.0, 0.0, 31.0, 45.0, 100.0, 1e10, 1e30, 3e38]),
]).float()


@pytest.mark.parametrize("kind", ("nonsaturating", "minimax"))
@pytest.mark.parametrize("name", ALL_F)
def test_losses_finite_with_finite_gradients_in_float32(name, kind):
    div = divergences.get(name)
    v_real = EXTREME.clone().requires_grad_(True)
    v_fake = EXTREME.flip(0).clone().requires_grad_(True)
    critic = objectives.fgan_critic_loss(div, v_real, v_fake)
    generator = objectives.fgan_generator_loss(div, v_fake, kind)
    assert critic.dtype == torch.float32 and torch.isfinite(critic), float(critic)
    assert torch.isfinite(generator), float(generator)
    g_real, g_fake = torch.autograd.grad(critic, [v_real, v_fake])
    assert torch.isfinite(g_real).all(), f"critic gradient not finite at v_real = {EXTREME[~torch.isfinite(g_real)][:5].tolist()}"
    assert torch.isfinite(g_fake).all(), f"critic gradient not finite at v_fake = {EXTREME.flip(0)[~torch.isfinite(g_fake)][:5].tolist()}"
    (g_gen,) = torch.autograd.grad(generator, v_fake)
    assert torch.isfinite(g_gen).all(), f"generator gradient not finite at v_fake = {EXTREME.flip(0)[~torch.isfinite(g_gen)][:5].tolist()}"


@pytest.mark.parametrize("kind", ("nonsaturating", "minimax"))
@pytest.mark.parametrize("name", ALL_F)
def test_generator_loss_pushes_critic_output_up(name, kind):
    """Both generator losses decrease as the critic scores fakes more like data (g_f and f* increase)."""
    div = divergences.get(name)
    v = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(objectives.fgan_generator_loss(div, v, kind), v)
    assert (grad <= 0).all()
    assert (grad < 0).any()


@pytest.mark.parametrize("name", ALL_F)
def test_critic_loss_in_float32_matches_float64(name):
    div = divergences.get(name)
    v = torch.linspace(-8, 8, 161, dtype=torch.float64)
    lo = objectives.fgan_critic_loss(div, v.float(), v.flip(0).float())
    hi = objectives.fgan_critic_loss(div, v, v.flip(0))
    assert float(lo) == pytest.approx(float(hi), rel=1e-4, abs=1e-5)


# ---------------------------------------------- the bound through the critic ---
def _quantile_sample(dist, n=200_000) -> np.ndarray:
    """A deterministic 'sample': the quantiles at (i − ½)/n, whose mean converges like a quadrature."""
    return dist.ppf((np.arange(n) + 0.5) / n)


P, Q = stats.norm(0.0, 1.0), stats.norm(0.5, 1.1)
XP, XQ = _quantile_sample(P), _quantile_sample(Q)


def _log_ratio(x):
    return torch.from_numpy(P.logpdf(x) - Q.logpdf(x))


def test_gan_bound_with_optimal_logits():
    """V* = logit D* = log(p/q): the critic's bound is 2·JS − log 4, and its loss is its negative."""
    gan = divergences.get("gan")

    def m(x):
        return 0.5 * (P.pdf(x) + Q.pdf(x))

    js = 0.5 * integrate.quad(lambda x: P.pdf(x) * math.log(P.pdf(x) / m(x)), -15, 15)[0] \
        + 0.5 * integrate.quad(lambda x: Q.pdf(x) * math.log(Q.pdf(x) / m(x)), -15, 15)[0]
    value = objectives.fgan_bound(gan, _log_ratio(XP), _log_ratio(XQ))
    assert abs(float(value) - (2 * js - math.log(4))) < 1e-3
    assert float(objectives.fgan_critic_loss(gan, _log_ratio(XP), _log_ratio(XQ))) == pytest.approx(-float(value))


@pytest.mark.parametrize("name, inverse_g", [
    ("kl", lambda u, pi: torch.log(u) + 1),  # g(v) = v = f'(u)
    ("js", lambda u, pi: torch.log(pi * u / (1 - pi))),  # σ(v) = πu/(πu + 1 − π)
    ("js-weighted:0.25", lambda u, pi: torch.log(pi * u / (1 - pi))),
    ("hellinger", lambda u, pi: 0.5 * torch.log(u)),  # 1 − e^{−v} = 1 − u^{−½}
])
def test_bound_with_optimal_critic_output(name, inverse_g):
    """With V = g⁻¹(f'(p/q)) the critic's bound equals D_f(P‖Q), computed by quadrature."""

    div = divergences.get(name)
    pi = float(name.split(":")[1]) if ":" in name else 0.5
    exact = integrate.quad(lambda x: Q.pdf(x) * float(div.f(torch.tensor(P.pdf(x) / Q.pdf(x), dtype=torch.float64))), -15, 15)[0]
    v_real, v_fake = inverse_g(torch.exp(_log_ratio(XP)), pi), inverse_g(torch.exp(_log_ratio(XQ)), pi)
    assert_close(div.g(v_real), div.f_prime(torch.exp(_log_ratio(XP))))  # V really is optimal
    assert abs(float(objectives.fgan_bound(div, v_real, v_fake)) - exact) < 1e-3


# ------------------------------------------------ penalty, kernel, bandwidth ---
def test_gradient_penalty_of_linear_critic():
    """V(x) = a·x has ‖∇V‖ = ‖a‖ everywhere, so the penalty is (‖a‖ − 1)²."""
    a = torch.tensor([1.2, -1.6], dtype=torch.float64)  # ‖a‖ = 2
    x_real = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x_fake = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gp = objectives.gradient_penalty(lambda x: x @ a, x_real, x_fake, torch.Generator().manual_seed(2))
    assert float(gp) == pytest.approx(1.0, rel=1e-12)
    # differentiable in the critic's parameters (create_graph=True)
    w = a.clone().requires_grad_(True)
    gp = objectives.gradient_penalty(lambda x: x @ w, x_real, x_fake, torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad(gp, w)
    assert_close(grad, 2 * (2 - 1) * a / 2)


def packed_linear(x):
    """A critic of packs of 2 samples in 2-D: V = 3·x1[0] + 4·x2[1], x1 and x2 the pack's two rows."""
    pairs = x.reshape(-1, 4)  # (B/2, 2·d)
    return 3 * pairs[:, 0] + 4 * pairs[:, 3]


def test_penalties_of_a_packed_critic_take_the_gradient_of_each_pack():
    """The packed input (x1, x2) has ‖∇V‖ = ‖(3, 0, 0, 4)‖ = 5: the gradient penalty is (5 − 1)² = 16 and R1
    ½·5² = 12.5. Per sample (norms 3 and 4) they would be 6.5 and 6.25."""
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    assert float(objectives.gradient_penalty(packed_linear, real, fake, g)) == pytest.approx(16.0)
    assert float(objectives.r1_penalty(packed_linear, real)) == pytest.approx(12.5)
    assert float(objectives.gradient_penalty(packed_linear, real, fake, g, one_sided=True)) == pytest.approx(16.0)
    # `unit` scales each sample's coordinates before the pack's norm: (3·2, 0, 0, 4·0.5) has norm √40
    unit = torch.tensor([2.0, 0.5])
    assert float(objectives.r1_penalty(packed_linear, real, unit)) == pytest.approx(0.5 * 40)


def test_penalties_of_a_packed_critic_of_pairs_count_the_codes_of_the_pack():
    """BiGAN's critic sees (x, z): V = 3·x1[0] + 4·z2[0] over a pack of 2 has ‖∇V‖ = 5 in (x1, z1, x2, z2);
    labels are held fixed, so a conditional critic's slope is that of its samples alone."""
    def pairs(x, z):
        return 3 * x.reshape(-1, 4)[:, 0] + 4 * z.reshape(-1, 2)[:, 1]

    def labelled(x, y):
        return packed_linear(x) + y.reshape(-1, 2).sum(1).float()

    g = torch.Generator().manual_seed(1)
    x, z, y = torch.randn(6, 2, generator=g), torch.randn(6, 1, generator=g), torch.arange(6)
    assert float(objectives.r1_penalty(pairs, (x, z))) == pytest.approx(12.5)
    assert float(objectives.gradient_penalty(pairs, (x, z), (x.flip(0), z.flip(0)), g)) == pytest.approx(16.0)
    assert float(objectives.r1_penalty(labelled, (x, y))) == pytest.approx(12.5)
    assert float(objectives.gradient_penalty(labelled, (x, y), (x.flip(0), y), g)) == pytest.approx(16.0)


def _per_pack_slopes(critic, views) -> torch.Tensor:
    """‖∇V_i‖ for each output V_i, one backward pass per output, over the rows of every float view."""
    views = tuple(t.detach().requires_grad_(True) if t.is_floating_point() else t for t in views)
    v = critic(*views)
    floats = [t for t in views if t.is_floating_point()]
    norms = []
    for i in range(len(v)):
        grads = torch.autograd.grad(v[i], floats, retain_graph=True)
        norms.append(torch.sqrt(sum(g.square().sum() for g in grads)))
    return torch.stack(norms)


@pytest.mark.parametrize("kind", ["mlp", "mlp-labels", "mlp-codes", "conv", "conv-labels", "conv-codes"])
def test_r1_of_packed_networks_is_half_the_mean_squared_slope_of_each_output(kind):
    """Every packed critic divgen builds: R1 = ½ mean_i ‖∇V_i‖², V_i one output, differentiated on its own."""
    from divgen.models import ConvCritic, MLPCritic, Standardize

    torch.manual_seed(0)
    image = kind.startswith("conv")
    d = 64 if image else 3
    scaler = Standardize(torch.zeros(d), torch.full((d,), 0.5))
    n_classes, latent = (3 if "labels" in kind else 0), (2 if "codes" in kind else 0)
    if image:
        critic = ConvCritic(scaler, (8, 8), 4, n_classes=n_classes, latent_dim=latent, pack=2)
    else:
        critic = MLPCritic(scaler, 16, 2, n_classes=n_classes, latent_dim=latent, pack=2)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, d, generator=g)
    views = (x, torch.randint(3, (6,), generator=g)) if n_classes else (x, torch.randn(6, 2, generator=g)) if latent else (x,)
    slopes = _per_pack_slopes(critic, views)
    assert len(slopes) == 3
    assert float(objectives.r1_penalty(critic, views).detach()) == pytest.approx(0.5 * float(slopes.detach().square().mean()), rel=1e-5)


def test_mmd2_unbiased_by_hand():
    x = np.array([[0.0], [1.0], [3.0]])
    y = np.array([[0.5], [2.0]])
    h = 1.3

    def k(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * h * h))

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    got = objectives.mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y), h)
    assert float(got) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-6)


def test_mmd2_is_near_zero_for_same_distribution_and_positive_otherwise():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(400, 2, generator=gen, dtype=torch.float64)
    z = torch.randn(400, 2, generator=gen, dtype=torch.float64) + 1.0
    h = objectives.median_bandwidth(x, y)
    same, diff = float(objectives.mmd2_unbiased(x, y, h)), float(objectives.mmd2_unbiased(x, z, h))
    assert abs(same) < 0.01 < diff


def test_median_bandwidth():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    y = torch.tensor([[0.0, 1.0]])
    # pooled distances (off-diagonal, each pair twice): 5, 1, √18 → median of [1, 1, √18, √18, 5, 5] = √18
    assert float(objectives.median_bandwidth(x, y)) == pytest.approx(math.sqrt(18), rel=1e-6)


@pytest.mark.parametrize("name", ALL_F)
def test_float32_agrees_with_float64_over_the_whole_bounded_range(name):
    """Catches cancellation in a stable form (e.g. Jeffrey's f* far below t = 0) and float32
    overflow of exp-type forms below the cap (Pearson's e^{2v}, α = 3's e^{3v})."""
    div = divergences.get(name)
    v = torch.cat([torch.linspace(-1e4, 1e4, 2001, dtype=torch.float64), torch.linspace(-70, 70, 1401, dtype=torch.float64)])
    v = v.float().double()  # the same inputs in both precisions
    b64, b32 = objectives.capped(div, v), objectives.capped(div, v.float())
    for fn in (div.g, div.f_star_g):
        torch.testing.assert_close(fn(b32).double(), fn(b64), rtol=1e-4, atol=1e-4)


def test_log_wright_omega_value_and_gradient():
    x = torch.tensor([-80.0, -30.0, -1.0, 0.0, 1.0, 10.0, 80.0], dtype=torch.float64, requires_grad=True)
    log_w = divergences.log_wright_omega(x)
    w = log_w.exp()
    torch.testing.assert_close(w + log_w, x.detach())  # ω + log ω = x
    (grad,) = torch.autograd.grad(log_w.sum(), x)
    torch.testing.assert_close(grad, 1 / (1 + w.detach()))


@pytest.mark.parametrize("name, gradient", [
    ("kl", lambda d: d),  # KL(N(1, 1)‖N(μ, 1)) = δ²/2, δ = μ − 1
    ("jeffrey", lambda d: 2 * d),  # KL both ways: δ²
    ("hellinger", lambda d: d / 2 * math.exp(-d * d / 8)),  # 2(1 − e^{−δ²/8})
    ("pearson", lambda d: 2 * d * math.exp(d * d)),  # e^{δ²} − 1
])
def test_ratio_loss_at_the_exact_log_ratio_has_the_divergences_gradient(name, gradient):
    """--generator-loss ratio: with l = log p/q exact and held fixed, d/dμ of −E_Q[f*(f'(e^l))] over
    x = μ + z is dD_f(P‖Q)/dμ for P = N(1, 1), Q = N(μ, 1); E over z by Gauss–Hermite quadrature."""
    z, w = np.polynomial.hermite_e.hermegauss(80)
    z, w = torch.tensor(z), torch.tensor(w / w.sum())
    div = divergences.get(name)
    for mu0 in (0.0, 0.7, 1.5):
        mu = torch.tensor(mu0, dtype=torch.float64, requires_grad=True)
        x = mu + z
        log_ratio = -0.5 * (x - 1) ** 2 + 0.5 * (x - mu.detach()) ** 2  # log N(x; 1, 1) − log N(x; μ, 1)
        loss = -(w * div.f_star_g(div.v_opt(log_ratio))).sum()
        loss.backward()
        assert float(mu.grad) == pytest.approx(gradient(mu0 - 1), rel=1e-6, abs=1e-9)
        # and objectives' loss is this one, as a mean over samples
        same = objectives.fgan_generator_loss(div, log_ratio.detach()[:5], "ratio")
        assert float(same) == pytest.approx(-float(div.f_star_g(div.v_opt(log_ratio.detach()[:5])).mean()))
