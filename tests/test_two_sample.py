"""Two-sample tests: calibration under the null, power, statistics and exact p-values by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pairs import FirstCoordinate, gaussian_pair, ring
from scipy import stats

from divgen import catalog, objectives, two_sample
from divgen.critics import Candidates
from divgen.errors import InputError
from divgen.estimators import Fold


def test_unknown_test_method_is_rejected():
    a = np.zeros((50, 2))
    with pytest.raises(InputError, match="unknown test"):
        two_sample.two_sample_test(a, a, "ks")


# ------------------------------------------------ calibration and power ---
# the classifier tests train a classifier per pair and per permutation-free split: the slow tier
@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m.startswith("c2st") else m
                                    for m in catalog.TEST_METHODS])
def test_p_values_under_the_null_are_not_small(method):
    """20 pairs from one distribution: few rejections, p-values spread over (0, 1]."""
    p_values = []
    for seed in range(20):
        a, b, _, _ = gaussian_pair(200, d=2, shift=0.0, var_b=1.0, seed=seed)
        result = two_sample.two_sample_test(a, b, method, seed=seed, permutations=200)
        assert result.method == method and (result.n_a, result.n_b) == (200, 200)
        assert 0 < result.p_value <= 1
        p_values.append(result.p_value)
    p_values = np.array(p_values)
    assert (p_values < 0.05).sum() <= 4
    assert 0.3 < p_values.mean() < 0.75


@pytest.mark.parametrize("method", tuple(catalog.TEST_METHODS))
def test_a_large_shift_is_detected(method):
    a, b, _, _ = gaussian_pair(200, d=2, shift=1.0, var_b=1.0, seed=3)
    result = two_sample.two_sample_test(a, b, method, seed=0)
    assert result.p_value < 1e-2
    if method == "c2st":
        assert result.statistic > 0.6  # held-out accuracy


@pytest.mark.slow
def test_unequal_sample_sizes_keep_c2st_calibrated():
    """A classifier that learns only the class sizes must not beat ½ on the balanced test set."""
    rejections = 0
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(100, 2, generator=g), torch.randn(400, 2, generator=g)
        rejections += two_sample.c2st(a, b, seed=seed).p_value < 0.05
    assert rejections <= 2


# ---------------------------------------------------- c2st: exact nulls ---
def test_c2st_null_is_twice_a_hypergeometric():
    """Calls of a classifier that ignores its input, on a balanced test set, exactly half called A."""
    half = 10
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(2 * half) < half
    hits = torch.stack([truth[torch.randperm(2 * half, generator=g)[:half]].sum() for _ in range(40_000)])
    for h in (6, 7, 8):
        simulated = float((hits >= h).double().mean())
        exact = sum(math.comb(half, k) * math.comb(half, half - k) for k in range(h, half + 1)) / math.comb(2 * half, half)
        assert two_sample.balanced_calls_p_value(h, half) == pytest.approx(exact, rel=1e-10)
        assert simulated == pytest.approx(exact, abs=0.006)
    # correct = 2K takes only even values and varies more than Binomial(20, ½): the binomial tail
    # P(correct ≥ 14) = 0.058 is smaller than the true 0.089, so the old null rejected too often
    assert stats.binom.sf(13, 20, 0.5) < 0.7 * two_sample.balanced_calls_p_value(7, half)


def test_c2st_reports_the_hypergeometric_p_value():
    a, b, _, _ = gaussian_pair(120, d=2, shift=0.5, var_b=1.0, seed=1)
    r = two_sample.c2st(a, b, seed=0)
    hits = round(r.statistic * 120 / 2)
    assert hits * 2 == round(r.statistic * 120)  # correct is even
    assert r.p_value == pytest.approx(two_sample.balanced_calls_p_value(hits, 60))


# ----------------------------------------------------------- c2st-logit ---
def test_c2st_logit_detects_a_dropped_mode():
    g = torch.Generator().manual_seed(1)
    r = two_sample.c2st_logit(ring(400, 0.05, g), ring(400, 0.05, g, modes=7), permutations=200, seed=0)
    assert r.method == "c2st-logit" and r.p_value < 0.01 and r.statistic > 0


def test_c2st_logit_is_not_turned_by_a_few_far_held_out_logits():
    """Found on the same digits run: a classifier that separates the samples except for 2 held-out A
    points at logit −10⁷ gave a statistic of −2·10⁷ and p = 0.5. Clipped to the training range and
    |V| ≤ log n, those points cost O(log n / n) of the statistic."""
    n = 100
    test_a = torch.full((n, 1), 50.0)
    test_a[:2] = -1e7
    fold = Fold(torch.full((n, 1), 50.0), torch.full((n, 1), -50.0), test_a, torch.full((n, 1), -50.0))
    one = (torch.zeros(2), torch.zeros(2))  # one candidate's validation scores: it is the one chosen
    r = two_sample.logit_test(Candidates([FirstCoordinate()], [one]), fold, torch.Generator().manual_seed(0), 200)
    assert r.statistic > 1.5 * math.log(n) and r.p_value < 0.01


# ------------------------------------- kernel tests: statistics by hand ---
def test_mmd_statistic_is_the_unbiased_mmd2_and_the_p_value_counts_permutations():
    a, b, _, _ = gaussian_pair(150, d=3, shift=0.3, seed=1)
    result = two_sample.mmd_test(a, b, permutations=99, seed=5)
    # the same pooled subsample the test takes for its bandwidth
    z = torch.cat([a, b])
    sub = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(5))[:1000]]
    h = objectives.median_bandwidth(sub, sub[:0])
    torch.testing.assert_close(result.statistic, float(objectives.mmd2_unbiased(a.double(), b.double(), h.double())),
                               rtol=1e-4, atol=1e-6)
    assert result.p_value * 100 == pytest.approx(round(result.p_value * 100))  # (1 + count) / (1 + 99)


def test_energy_statistic_by_hand():
    a, b, _, _ = gaussian_pair(40, d=3, shift=0.5, seed=2)
    r = two_sample.energy_test(a, b, permutations=19, seed=0)
    a, b = a.double(), b.double()
    d_ab, d_aa, d_bb = torch.cdist(a, b), torch.cdist(a, a), torch.cdist(b, b)
    n = len(a)
    expected = 2 * d_ab.mean() - d_aa.sum() / (n * (n - 1)) - d_bb.sum() / (n * (n - 1))
    assert r.statistic == pytest.approx(float(expected), rel=1e-4)
    assert r.p_value * 20 == pytest.approx(round(r.p_value * 20))


def test_mmd_agg_sees_narrow_modes_that_the_median_heuristic_misses():
    """Ring of 8 Gaussians with sd 0.05 against sd 0.1 (the issue's pair), n = 300 per side."""
    g = torch.Generator().manual_seed(0)
    a, b = ring(300, 0.05, g), ring(300, 0.1, g)
    assert two_sample.mmd_agg_test(a, b, permutations=500, seed=0).p_value < 0.01
    assert two_sample.mmd_test(a, b, permutations=200, seed=0).p_value > 0.05


def test_mmd_agg_p_value_is_a_permutation_rank():
    a, b, _, _ = gaussian_pair(60, d=2, shift=0.0, var_b=1.0, seed=3)
    r = two_sample.mmd_agg_test(a, b, permutations=99, seed=1)
    assert r.p_value * 100 == pytest.approx(round(r.p_value * 100)) and 0 < r.statistic <= 1


def test_permuted_mmd2_matches_the_kernel_matrix_by_hand():
    """Triangular blocks of uneven size, float32 products: every relabelling's unbiased MMD² as the full
    float64 kernel matrix gives it."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(70, 3, generator=g), torch.randn(55, 3, generator=g) + 0.2
    z, n = torch.cat([a, b]), len(a)
    member = two_sample._memberships(len(z), n, 9, g)
    got = two_sample._permuted_mmd2(z, n, [two_sample._gaussian(0.8), two_sample._energy], member, block=32)
    sq = torch.cdist(z.double(), z.double()).square()
    for k, kernel in enumerate([torch.exp(-sq / (2 * 0.64)), -sq.sqrt()]):
        for p in range(member.shape[1]):
            s = member[:, p].bool()
            na, nb = int(s.sum()), int((~s).sum())
            d0 = float(kernel[0, 0])
            want = ((kernel[s][:, s].sum() - na * d0) / (na * (na - 1)) + (kernel[~s][:, ~s].sum() - nb * d0) / (nb * (nb - 1))
                    - 2 * kernel[s][:, ~s].mean())
            assert float(got[k, p]) == pytest.approx(float(want), abs=1e-6)
