"""What generated samples captured, from the samples alone: precision, recall, density and coverage,
on the toy mixtures mode statistics, and whether the samples copy training rows (data copying).

metrics.py applies the same PRDC in the feature space of a data set's classifier.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
import torch

from divgen.errors import InputError
from divgen.samples import as_samples


# --------------------------------------------------------------------- prdc ---
@dataclass(frozen=True)
class PRDC:
    """Precision, recall, density and coverage of generated samples against real ones (Naeem et al., ICML 2020)."""

    precision: float  # fraction of generated samples inside some real sample's k-NN ball
    recall: float  # fraction of real samples inside some generated sample's k-NN ball
    density: float  # mean number of real k-NN balls per generated sample, divided by k (1 when matched)
    coverage: float  # fraction of real samples whose k-NN ball holds a generated sample
    k: int
    n_real: int
    n_fake: int


def prdc(real, fake, k: int = 5, max_samples: int | None = 5000, seed: int = 0) -> PRDC:
    """Precision, recall, density and coverage with k nearest neighbours, by the authors' `prdc` package
    (its progress print silenced), of real (N, d) and fake (M, d) samples or features.

    At most `max_samples` rows of each (a random subset drawn with `seed`) are
    used: the package forms the full distance matrices. None: every row, in order.
    """
    from prdc import compute_prdc

    real, fake = as_samples(real, fake)
    if k >= min(len(real), len(fake)):
        raise InputError(f"prdc with k = {k} needs more than {k} samples on each side")
    if max_samples is not None:
        rng = torch.Generator().manual_seed(seed)
        real = real[torch.randperm(len(real), generator=rng)[:max_samples]]
        fake = fake[torch.randperm(len(fake), generator=rng)[:max_samples]]
    with contextlib.redirect_stdout(io.StringIO()):
        out = compute_prdc(real.numpy(), fake.numpy(), nearest_k=k)
    return PRDC(float(out["precision"]), float(out["recall"]), float(out["density"]), float(out["coverage"]),
                k, len(real), len(fake))


# ---------------------------------------------------------- mode statistics ---
@dataclass(frozen=True)
class ModeStats:
    """VEEGAN/PacGAN mode statistics of generated samples on a Gaussian mixture."""

    modes_captured: int  # modes that are the nearest mode of ≥ 1 high-quality sample
    n_modes: int
    high_quality: float  # fraction of samples within 3 σ of their nearest mode
    reverse_kl: float  # KL(histogram of high-quality samples over modes ‖ uniform), nats
    n: int


def mode_stats(samples, modes, mode_std: float, weights=None, n_std: float = 3.0) -> ModeStats:
    """Modes captured, high-quality fraction and mode-histogram reverse KL (VEEGAN, PacGAN).

    A sample is high quality if it lies within `n_std` standard deviations of
    its nearest mode; a mode is captured if it is the nearest mode of at least
    one high-quality sample. The reverse KL is KL(q ‖ w), with q the histogram of
    high-quality samples over their nearest modes and w the true mixture weights
    (`weights`, (K,); uniform if None), as PacGAN defines it: 0 for a sampler
    that hits the modes in their true proportions, −log w_k when a single mode k
    takes everything (NaN when no sample is of high quality). These are the
    published tables' definitions; a mode counts as captured after a single
    sample, so read them beside prdc's coverage.
    """
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    modes = torch.as_tensor(np.asarray(modes, dtype=np.float32))
    k = len(modes)
    w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.shape != (k,) or not bool((w > 0).all()):
        raise InputError(f"mode weights must be {k} positive numbers")
    w = w / w.sum()
    dist, nearest = torch.cdist(x, modes).min(dim=1)  # (N,), (N,)
    good = dist <= n_std * mode_std
    counts = torch.bincount(nearest[good], minlength=k).double()
    if counts.sum() > 0:
        q = counts / counts.sum()
        reverse_kl = float(torch.xlogy(q, q / w).sum())
    else:
        reverse_kl = math.nan
    return ModeStats(int((counts > 0).sum()), k, float(good.double().mean()), reverse_kl, len(x))


# ------------------------------------------------------------ data copying ---
COPYING_Z = -3.0  # below this Z the samples sit closer to the training rows than fresh data do


@dataclass(frozen=True)
class DataCopying:
    """The data-copying test of Meehan, Chaudhuri and Dasgupta (AISTATS 2020), over the whole space.

    Distances are Euclidean, in the data's own units (pixels for images): a copy
    of a training row is a copy pixel for pixel, and this space needs no
    labels or trained features (a classifier's features are fitted to the
    training rows, so they would not treat training and held-out rows alike).
    """

    z: float  # Mann–Whitney Z of the samples' nearest-training distances against the held-out rows'; ≪ 0: copying
    p_value: float  # one-sided P(Z ≤ z) when samples and held-out rows lie as far from the training rows
    distance_ratio: float  # median nearest-training distance of the samples / of the held-out rows
    copying: bool  # z < COPYING_Z: the samples fail the check
    n_fake: int
    n_heldout: int
    n_train: int


def nearest_distances(x: torch.Tensor, rows: torch.Tensor, block_elements: int = 1 << 24) -> torch.Tensor:
    """Euclidean distance of each row of x (M, d) to its nearest row of `rows` (N, d): (M,).

    In float32 through a matrix product (torch.cdist), for speed on 60,000 × 784
    training sets: a distance near 0 carries an error near √(1e-7·‖x‖²), far
    below the distance between two different images. A block of x at a time
    keeps the (block, N) distance matrix near 64 MB.
    """
    x, rows = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(rows, dtype=torch.float32)
    step = max(1, block_elements // max(1, len(rows)))
    return torch.cat([torch.cdist(part, rows).min(dim=1).values for part in x.split(step)])


def data_copying(train, heldout, fake) -> DataCopying:
    """Do generated samples sit closer to the training rows than fresh data do?

    Each generated sample (M, d) and each held-out row (L, d) is given the
    distance to its nearest training row (N, d); the Mann–Whitney U statistic of
    the samples' distances against the held-out rows' is standardized,
    Z = (U − ML/2) / √(ML(M + L + 1)/12) with the variance corrected for ties.
    A model that draws from the data distribution gives Z ≈ N(0, 1); one that
    copies training rows, even with small noise, gives Z ≪ 0; one that has not
    fitted the data gives Z > 0 (this checks copying, not quality). Rule: a
    model fails when Z < COPYING_Z = −3 (a 0.13% false alarm rate for a model
    that does not copy). This is the test's one-cell form: Meehan et al. also
    average Z over cells of a partition, which sees copying in one region that
    underfitting elsewhere would hide.
    """
    from scipy.stats import rankdata

    train, heldout, fake = (torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in (train, heldout, fake))
    if not (train.ndim == heldout.ndim == fake.ndim == 2) or len({train.shape[1], heldout.shape[1], fake.shape[1]}) > 1:
        raise InputError("the data-copying test needs training rows, held-out rows and samples of one dimension")
    if min(len(train), len(heldout), len(fake)) < 2:
        raise InputError("the data-copying test needs at least 2 training rows, held-out rows and samples")
    d_fake, d_held = nearest_distances(fake, train).numpy(), nearest_distances(heldout, train).numpy()
    m, n = len(d_fake), len(d_held)
    ranks = rankdata(np.concatenate([d_fake, d_held]))  # ties share their mean rank
    u = ranks[:m].sum() - m * (m + 1) / 2
    _, counts = np.unique(ranks, return_counts=True)
    ties = (counts**3 - counts).sum() / ((m + n) * (m + n - 1))
    sd = math.sqrt(m * n / 12 * ((m + n + 1) - ties))
    z = (u - m * n / 2) / sd if sd > 0 else 0.0  # every distance equal: nothing tells the two apart
    p = 0.5 * math.erfc(-z / math.sqrt(2))
    ratio = float(np.median(d_fake) / np.median(d_held)) if np.median(d_held) > 0 else math.inf
    return DataCopying(float(z), p, ratio, bool(z < COPYING_Z), m, n, len(train))
