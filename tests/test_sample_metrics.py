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


def test_spread_is_one_at_the_data_and_scales_with_a_squeezed_sampler():
    """The median distance of a 2-D Gaussian draw from its centre is σ·√(2 ln 2) (Rayleigh), of a 1-D one
    σ·Φ⁻¹(3/4): mixture draws score 1, draws pulled halfway to their modes 1/2, points on the modes 0."""
    angles = torch.arange(8) * (2 * math.pi / 8)
    modes, std = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1), 0.01
    g = torch.Generator().manual_seed(0)
    which = torch.randint(0, 8, (40_000,), generator=g)
    offset = std * torch.randn(40_000, 2, generator=g)
    assert sample_metrics.mode_stats(modes[which] + offset, modes, std).spread == pytest.approx(1.0, abs=0.02)
    assert sample_metrics.mode_stats(modes[which] + offset / 2, modes, std).spread == pytest.approx(0.5, abs=0.01)
    assert sample_metrics.mode_stats(modes[which], modes, std).spread == 0.0
    # by hand in 1-D: |offsets| 1, 2, 3 σ from their modes, median 2σ, against σ·0.6745
    line = torch.tensor([[0.0], [10.0]])
    s = sample_metrics.mode_stats(torch.tensor([[1.0], [8.0], [3.0]]), line, 1.0)
    assert s.spread == pytest.approx(2 / 0.6744897501960817, rel=1e-6)


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
    copies = train[:200] + 0.05 * _gaussian(200, 2)  # each sits 0.05·√8 from a training row, ~1.5 from others
    r = sample_metrics.data_copying(train, heldout, copies)
    # the 200 training rows drawn as the reference set hold ~80 of the originals: those copies are nearer it,
    # the other ~120 go either way: ~140 of 200 nearer the training set, Z ≈ (60 − 140)/√200 ≈ −5.7
    assert r.copying and r.z < -4
    assert (r.n_fake, r.n_heldout, r.n_train) == (200, 200, 500)


def test_fresh_and_blurred_draws_pass_the_copying_check():
    """Fresh draws lie as near the training rows as the held-out rows; so do blurred samples (shrunk toward the
    mean, as a VAE's means are), which comparing distances to the training rows alone would call copies."""
    train, heldout = _gaussian(500, 0), _gaussian(200, 1)
    for fake in (_gaussian(300, 3), 0.3 * _gaussian(300, 3), 3 + _gaussian(300, 4)):  # fresh, blurred, off
        r = sample_metrics.data_copying(train, heldout, fake)
        assert not r.copying and abs(r.z) < 3 and 0.8 < r.distance_ratio < 1.25, r


def test_copying_z_is_the_sign_test_of_nearer_the_training_or_the_held_out_rows():
    """By hand in 1-D: training rows {0, 10}, held-out rows {1, 11}; samples 0.2 and 10.3 are nearer a training
    row, 0.9 nearer a held-out row, 5.5 is tied: Z = (1 − 2)/√3."""
    train, heldout = torch.tensor([[0.0], [10.0]]), torch.tensor([[1.0], [11.0]])
    r = sample_metrics.data_copying(train, heldout, torch.tensor([[0.2], [10.3], [0.9], [5.5]]))
    assert r.z == pytest.approx(-1 / math.sqrt(3))
    assert r.p_value == pytest.approx(0.5 * math.erfc(1 / math.sqrt(6)))
    assert r.distance_ratio == pytest.approx(0.6 / 0.75, rel=1e-6)  # medians of (0.2, 0.3, 0.9, 4.5), (0.8, 0.7, 0.1, 4.5)


def test_copying_check_rejects_mismatched_shapes():
    with pytest.raises(InputError):
        sample_metrics.data_copying(torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(5, 2))
