"""Critics fitted to fixed samples: early stopping, the classifier candidates, the objectives."""

from __future__ import annotations

import math

import pytest
import torch
from pairs import gaussian_pair, ring

from divgen import critics, divergences
from divgen.critics import CriticFit
from divgen.densities import exact_divergence
from divgen.estimators import _se, fgan_terms
from divgen.models import critic_pair


def test_early_stopping_waits_for_min_steps():
    """No early stop before min_steps, whatever the held-out objective does; after it, patience applies."""
    g = torch.Generator().manual_seed(0)
    a, b = ring(400, 0.05, g), ring(400, 0.05, g)
    for min_steps in (0, 300):
        calls = []

        def objective(critic, x, y, rng):
            calls.append(len(x))
            return critics.logistic_objective(critic, x, y)

        critic = critics.new_critic(a, b, 16, 1, seed=0)
        critics.fit_critic(critic, objective, a, b, torch.Generator().manual_seed(0), steps=1000,
                            check_every=10, patience=2, min_steps=min_steps)
        steps = calls.count(len(a) - int(len(a) * 0.2))  # training calls, not held-out checks
        assert (steps < 300) if min_steps == 0 else (300 <= steps < 1000)


@pytest.mark.parametrize("name", ["kl", "js", "pearson", "hellinger"])
def test_the_bound_of_any_fitted_classifier_is_below_the_truth(name):
    """Whatever classifier is fitted, E_P[f'(e^l)] − E_Q[f*(f'(e^l))] ≤ D_f: checked for every candidate
    on 200,000 fresh points of each density (the held-out mean of these terms, minus its margin,
    is the lower bound; its coverage is measured in benchmarks/evaluation.py)."""
    a, b, p, q = gaussian_pair(400, d=2, shift=1.0, var_b=1.5, seed=10)
    exact = exact_divergence(p, q, name).value
    candidates, _ = critics.classifier_candidates(a, b, torch.Generator().manual_seed(0), fit=CriticFit(steps=300))
    big_a, big_b = p.sample((200_000,)), q.sample((200_000,))
    div = divergences.get(name)
    for critic in candidates:
        with torch.no_grad():
            t_a, t_b = fgan_terms(div, *critic_pair(critic, big_a, big_b))
        assert float(t_a.mean() - t_b.mean()) <= exact + 3 * _se(t_a, t_b)


@pytest.mark.parametrize("slope", [0.5, 2.0, 3.0])
def test_the_wasserstein_objective_penalizes_only_slopes_above_one(slope):
    """A linear critic has slope |w| everywhere, so the penalty on any subset of pairs is weight·max(0, |w| − 1)²."""
    a, b, _, _ = gaussian_pair(1000, d=2, shift=1.0, var_b=1.0, seed=2)
    w = torch.tensor([slope * 0.6, slope * 0.8])

    def critic(x):
        return x @ w

    value = critics.wasserstein_objective(10.0, penalty_points=64)(critic, a, b, torch.Generator().manual_seed(0))
    expected = float((a @ w).mean() - (b @ w).mean()) - 10.0 * max(0.0, slope - 1) ** 2
    assert float(value) == pytest.approx(expected, abs=1e-4)


def test_best_candidate_takes_the_least_regularized_within_the_margin():
    """Candidates come least regularized first: the first one within SE_MARGIN (1/√2) paired standard errors
    of the best validation log-likelihood wins, not the best itself."""
    g = torch.Generator().manual_seed(0)
    noise_a, noise_b = torch.randn(400, generator=g).double(), torch.randn(400, generator=g).double()
    best = (noise_a - 1.0, noise_b - 1.0)
    jitter = 0.1 * torch.randn(400, generator=g).double()
    jitter = jitter - jitter.mean()
    se = float(jitter.std()) / math.sqrt(400)  # of the paired difference: on A it is constant

    def below(margin):  # a candidate margin·se below the best, on average
        return (noise_a - 1.0 - margin * se / 2, noise_b - 1.0 - margin * se / 2 + jitter)

    far = (noise_a - 2.0, noise_b - 2.0)
    assert critics.best_candidate([far, below(0.6), best]) == 1  # within 0.71 se of the best
    assert critics.best_candidate([far, below(0.8), best]) == 2  # within one se, not within 0.71
    assert critics.best_candidate([far, best, below(0.6)]) == 1
    assert critics.best_candidate([best, far]) == 0


def test_the_gaussian_classifier_is_the_log_ratio_of_gaussians():
    """QDA's logit on many Gaussian points is log p/q up to the sampling error of the moments."""
    a, b, p, q = gaussian_pair(20_000, d=2, shift=1.0, var_b=1.5, seed=1)
    critic = critics.gaussian_classifier(a, b)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(critic(x), p.log_prob(x) - q.log_prob(x), atol=0.1, rtol=0.05)


def test_critic_fit_reaches_the_networks_it_builds():
    """CriticFit's width and depth are the MLP candidate's, its steps bound the fit."""
    a, b, _, _ = gaussian_pair(200, d=2, seed=3)
    fit = CriticFit(width=8, depth=1, steps=5)
    found = critics.classifier_candidates(a, b, torch.Generator().manual_seed(0), fit=fit)
    mlp = found.critics[-1]  # the MLP comes last
    assert {m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)} == {8, 1}
    assert len(found.scores) == len(found.critics) == len(critics.SHRINKAGES) + len(critics.RIDGES) + 1


# ------------------------------------------------------- the optimizers ---
def test_adams_first_step_moves_each_parameter_by_lr_against_its_gradient():
    """m̂ = g and v̂ = g² after one step, so the step is lr·g/|g|: −lr·sign(g), whatever |g|."""
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = critics.Adam([p], lr=0.1)
    (3.0 * p[0] - 0.5 * p[1]).backward()
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9]))


def test_adam_is_torch_adam_fused_bit_for_bit():
    """The same kernel: ten steps on a small critic leave the same parameters, bit for bit."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g) + 1
    nets = [critics.new_critic(a, b, 8, 1, seed=3) for _ in range(2)]
    ours = critics.Adam(list(nets[0].parameters()), 0.01, (0.5, 0.99))
    theirs = torch.optim.Adam(nets[1].parameters(), lr=0.01, betas=(0.5, 0.99), fused=True)
    for _ in range(10):
        for net, opt in zip(nets, (ours, theirs)):
            opt.zero_grad()
            (-critics.logistic_objective(net, a, b)).backward()
            opt.step()
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(p, q)


def test_lbfgs_fit_reaches_the_ridge_minimum():
    """−objective + λ·w² = (w − 3)² + (c + 1)² + 0.5·w² is smallest at w = 3/1.5 = 2 and c = −1 (no ridge on biases).
    In float64: in float32 the loss (3 at the minimum) cannot resolve the parameters closer than about 5e-4,
    and from some random starts the fit stopped 3e-4 off."""
    critic = torch.nn.Linear(1, 1, dtype=torch.float64)

    def objective(net, a, b, rng):
        return -((net.weight - 3) ** 2).sum() - ((net.bias + 1) ** 2).sum()

    x = torch.zeros(4, 1, dtype=torch.float64)
    critics.fit_critic(critic, objective, x, x, torch.Generator(), steps=100, weight_decay=0.5, optimizer="lbfgs")
    torch.testing.assert_close(critic.weight.detach(), torch.tensor([[2.0]], dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(critic.bias.detach(), torch.tensor([-1.0], dtype=torch.float64), atol=1e-5, rtol=0)


def test_fitting_critics_imports_no_torch_dynamo():
    """torch.optim's classes import torch._dynamo (0.8 s) on first use: the critics' fits use none of them."""
    import subprocess
    import sys

    code = ("import sys, torch; from divgen import critics; g = torch.Generator().manual_seed(0); "
            "a, b = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g) + 1; "
            "critics.classifier_candidates(a, b, g, fit=critics.CriticFit(steps=30)); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_fit_critic_counts_every_step_even_when_it_stops_early():
    """Early stopping reports the steps it saved, so a fit counts `steps` in all."""
    from divgen.progress import Progress

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)  # the same law: stops early
    progress = Progress(0, "fit", quiet=True)
    progress.expect(1000)
    critics.fit_critic(critics.new_critic(a, b, 8, 1), critics.logistic_objective, a, b, g, steps=1000,
                       check_every=10, patience=2, min_steps=0, progress=progress)
    assert progress.done == progress.total == 1000
