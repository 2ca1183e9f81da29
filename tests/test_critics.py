"""Critics fitted to fixed samples: early stopping, the classifier candidates, the objectives."""

from __future__ import annotations

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


def test_best_candidate_takes_the_least_regularized_within_one_standard_error():
    """Candidates come least regularized first: the first one within a paired standard error of the best
    validation log-likelihood wins, not the best itself."""
    g = torch.Generator().manual_seed(0)
    noise_a, noise_b = torch.randn(400, generator=g).double(), torch.randn(400, generator=g).double()
    best = (noise_a - 1.0, noise_b - 1.0)
    jitter = 0.1 * torch.randn(400, generator=g).double()
    close = (noise_a - 1.0 - 1e-3, noise_b - 1.0 - 1e-3 + jitter - jitter.mean())  # 0.002 below best, se ≈ 0.005
    far = (noise_a - 2.0, noise_b - 2.0)
    assert critics.best_candidate([[far, close, best]]) == 1  # close is within 1 se of best
    assert critics.best_candidate([[far, best, close]]) == 1
    assert critics.best_candidate([[best, far]]) == 0
    assert critics.best_candidate([[far, best], [far, best]]) == 1  # summed over folds


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
