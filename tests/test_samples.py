"""Checks on two sample arrays before any estimator or test looks at them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divgen import estimators, two_sample
from divgen.errors import InputError
from divgen.samples import as_samples, duplicate_rows


@pytest.mark.parametrize("a, b, message", [
    (np.zeros((50, 2)), np.zeros((50, 3)), "dimension"),
    (np.zeros((50, 2)), np.zeros((19, 2)), "at least 20"),
    (np.full((50, 2), np.nan), np.zeros((50, 2)), "NaN"),
    (np.zeros((50, 2)), np.full((50, 2), np.inf), "NaN"),
])
def test_bad_samples_are_rejected(a, b, message):
    for call in (lambda: two_sample.two_sample_test(a, b, "mmd"), lambda: estimators.estimate(a, b, "kl", method="knn")):
        with pytest.raises(InputError, match=message):
            call()


def test_samples_become_float32_columns():
    a, b = as_samples(np.arange(30, dtype=np.float64), [[float(i)] for i in range(25)])
    assert a.dtype == b.dtype == torch.float32 and a.shape == (30, 1) and b.shape == (25, 1)
    assert a[:, 0].tolist() == list(range(30))
    with pytest.raises(InputError, match="same point"):
        as_samples(np.ones((30, 2)), np.ones((40, 2)))


def test_duplicate_rows_counts_repeats_within_and_across():
    x = np.array([[0, 0], [1, 1], [0, 0], [2, 2], [0, 0]])
    assert duplicate_rows(x) == 2  # two repeats of the first row
    assert duplicate_rows(x, np.array([[0, 0], [5, 5]])) == 3  # every copy of [0, 0] in x occurs in y
    assert duplicate_rows(x, np.array([[7, 7]])) == 0


def test_samples_whose_squared_distances_overflow_float32_are_refused():
    """Points 1e37 apart have squared distances beyond float32's 3.4e38: a kernel would be 0 or NaN and a test
    silently blind; a common factor keeps every f-divergence and p-value, so 1e14 apart is still accepted."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) + 1
    with pytest.raises(InputError, match="overflow float32"):
        as_samples(a * 1e37, b * 1e37)
    x, y = as_samples(a * 1e14, b * 1e14)
    assert torch.isfinite(torch.cdist(x, y).square()).all()
