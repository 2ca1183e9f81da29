"""Precision, recall, density, coverage and mode statistics of samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from divgen import sample_metrics
from divgen.errors import InputError


def test_mode_statistics_on_hand_built_samples():
    angles = torch.arange(8) * (2 * math.pi / 8)
    modes = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    std = 0.05
    samples = torch.cat([
        modes[0].repeat(10, 1),  # 10 exactly on mode 0
        (modes[1] + torch.tensor([2.9 * std, 0.0])).repeat(5, 1),  # 5 just inside 3σ of mode 1
        modes[2:3] + torch.tensor([0.0, 3.1 * std]),  # just outside 3σ of mode 2: not high quality
        torch.zeros(4, 2),  # the centre: far from every mode
    ])
    s = sample_metrics.mode_stats(samples, modes, std)
    assert (s.modes_captured, s.n_modes, s.n) == (2, 8, 20)
    assert s.high_quality == pytest.approx(15 / 20)
    q = np.array([10, 5]) / 15
    assert s.reverse_kl == pytest.approx(float((q * np.log(q * 8)).sum()))
    even = sample_metrics.mode_stats(modes.repeat(3, 1), modes, std)
    assert (even.modes_captured, even.high_quality, even.reverse_kl) == (8, 1.0, pytest.approx(0.0, abs=1e-12))
    assert math.isnan(sample_metrics.mode_stats(torch.zeros(3, 2), modes, std).reverse_kl)


def test_mode_kl_is_taken_against_the_true_weights():
    """mog1d has weights 0.4/0.6: a sampler that hits them in those proportions scores 0 (PacGAN)."""
    from divgen.data import load

    ds = load("mog1d", n=1000, seed=0)
    modes, w = ds.modes, ds.mode_weights
    assert torch.allclose(w.double(), torch.tensor([0.4, 0.6], dtype=torch.float64), atol=1e-6)
    right = torch.cat([modes[0].repeat(40, 1), modes[1].repeat(60, 1)])
    assert sample_metrics.mode_stats(right, modes, ds.mode_std, w).reverse_kl == pytest.approx(0.0, abs=1e-9)
    even = torch.cat([modes[0].repeat(50, 1), modes[1].repeat(50, 1)])
    expected = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    assert sample_metrics.mode_stats(even, modes, ds.mode_std, w).reverse_kl == pytest.approx(expected, rel=1e-6)
    # a perfect sampler: true draws of the density, KL ≈ 0 up to sampling noise
    perfect = ds.density.sample((20_000,)).reshape(-1, 1)
    assert sample_metrics.mode_stats(perfect, modes, ds.mode_std, w).reverse_kl < 1e-3


def test_prdc_by_hand():
    # real points on a line 0..9, k = 1: each real ball has radius 1 (its nearest neighbour)
    real = torch.arange(30, dtype=torch.float32)[:, None]
    inside, outside = real[:10] + 0.25, real[:10] + 100.0
    r = sample_metrics.prdc(real, torch.cat([inside, outside]), k=1)
    assert r.precision == pytest.approx(0.5)  # half the fakes are inside some real ball
    assert r.coverage == pytest.approx(11 / 30)  # real balls 0..10 hold a fake (10 holds 9.25)
    assert r.k == 1 and (r.n_real, r.n_fake) == (30, 20)
    same = sample_metrics.prdc(real, real.clone(), k=3)
    assert (same.precision, same.recall, same.coverage) == (1.0, 1.0, 1.0)


# ------------------------------------------------------------ data copying ---
def _gaussian(n, seed, d=8):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_a_model_that_returns_jittered_training_rows_fails_the_copying_check():
    train, heldout = _gaussian(500, 0), _gaussian(200, 1)
    copies = train[:200] + 0.05 * _gaussian(200, 2)  # nearest-row distances near 0.05·√8, against ~1.5 for fresh data
    r = sample_metrics.data_copying(train, heldout, copies)
    assert r.copying and r.z < -10 and r.distance_ratio < 0.2
    assert (r.n_fake, r.n_heldout, r.n_train) == (200, 200, 500)


def test_fresh_draws_of_the_data_distribution_pass_the_copying_check():
    train, heldout = _gaussian(500, 0), _gaussian(200, 1)
    fresh = sample_metrics.data_copying(train, heldout, _gaussian(300, 3))
    assert not fresh.copying and abs(fresh.z) < 3 and 0.8 < fresh.distance_ratio < 1.25
    same = sample_metrics.data_copying(train, heldout, heldout)  # the held-out rows themselves: no difference at all
    assert same.z == 0.0 and same.p_value == 0.5 and same.distance_ratio == 1.0
    # a model that has not fitted the data is far from every training row: Z > 0, no copying
    assert sample_metrics.data_copying(train, heldout, 3 + _gaussian(200, 4)).z > 10


def test_copying_z_is_the_normal_approximation_of_mann_whitney_u():
    from scipy.stats import mannwhitneyu

    train, heldout = _gaussian(100, 0, d=3), _gaussian(40, 1, d=3)
    fake = torch.cat([train[:10], 0.9 * _gaussian(30, 2, d=3)])  # 10 exact copies: tied distances 0
    r = sample_metrics.data_copying(train, heldout, fake)
    d_fake = torch.cdist(fake.double(), train.double()).min(1).values.numpy()
    d_held = torch.cdist(heldout.double(), train.double()).min(1).values.numpy()
    d_fake[:10] = 0.0
    ref = mannwhitneyu(d_fake, d_held, alternative="less", method="asymptotic", use_continuity=False)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    u = sum((a > b) + 0.5 * (a == b) for a in d_fake for b in d_held)  # U of the samples, pair by pair
    sd = math.sqrt(40 * 40 * 81 / 12)  # the variance without ties ...
    assert r.z == pytest.approx((u - 40 * 40 / 2) / sd, rel=0.02)  # ... up to the ties among the copies
    assert -3 < r.z < -1 and not r.copying  # a quarter of copies among 40 samples pulls Z down, not yet past −3


def test_copying_check_rejects_mismatched_shapes():
    with pytest.raises(InputError):
        sample_metrics.data_copying(torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(5, 2))
