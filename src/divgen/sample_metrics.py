"""What generated samples captured, from the samples alone: precision, recall, density and coverage,
on the toy mixtures mode statistics, and whether the samples copy training rows (data copying).

metrics.py applies the same PRDC in the feature space of a data set's classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from divgen import offload
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
    (offload.prdc), of real (N, d) and fake (M, d) samples or features.

    At most `max_samples` rows of each (a random subset drawn with `seed`) are
    used: the package forms the full distance matrices. None: every row, in order.
    """
    real, fake = as_samples(real, fake)
    if k >= min(len(real), len(fake)):
        raise InputError(f"prdc with k = {k} needs more than {k} samples on each side")
    if max_samples is not None:
        rng = torch.Generator().manual_seed(seed)
        real = real[torch.randperm(len(real), generator=rng)[:max_samples]]
        fake = fake[torch.randperm(len(fake), generator=rng)[:max_samples]]
    out = offload.run("prdc", real.numpy(), fake.numpy(), k)
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
    # median distance of the samples to their nearest mode over the median a sample of the mixture has
    # (σ times the median of the χ distribution with d degrees of freedom): 1 at the data's spread,
    # < 1 when every mode is squeezed towards its centre, > 1 when samples stray
    spread: float = math.nan


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
    sample, so read them beside prdc's coverage. A sampler that squeezes every
    mode to its centre scores well on all three; `spread` shows it.
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
    from scipy.special import gammaincinv  # scipy.stats' chi.median is the same number, and its import takes 1-2 s

    chi_median = math.sqrt(2 * gammaincinv(x.shape[1] / 2, 0.5))  # of ‖ε‖, ε ~ N(0, I_d): χ²_d's median is 2·P⁻¹(d/2, ½)
    spread = float(dist.median()) / (mode_std * chi_median)
    return ModeStats(int((counts > 0).sum()), k, float(good.double().mean()), reverse_kl, len(x), spread)


# ------------------------------------------------------------ data copying ---
COPYING_Z = -3.0  # below this Z the samples sit nearer the training rows than fresh rows of the data


@dataclass(frozen=True)
class DataCopying:
    """Whether a model's samples sit nearer the rows it was trained on than fresh rows of the data.

    Distances are Euclidean, in the data's own units (pixels for images): a copy
    of a training row is a copy pixel for pixel, and this space needs no
    labels or trained features (a classifier's features are fitted to the
    training rows, so they would not treat training and held-out rows alike).
    """

    z: float  # sign-test Z: (samples nearer the held-out rows − nearer the training rows) / √n; ≪ 0: copying
    p_value: float  # one-sided P(Z ≤ z) for a model whose samples lie as near either set
    distance_ratio: float  # median distance of the samples to their nearest training row / nearest held-out row
    copying: bool  # z < COPYING_Z: the samples fail the check
    n_fake: int
    n_heldout: int  # rows in each of the two reference sets (training rows drawn to match)
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


def data_copying(train, heldout, fake, seed: int = 0) -> DataCopying:
    """Do generated samples sit nearer the training rows than fresh rows of the data?

    Two reference sets of one size come from the data distribution: the held-out
    rows, and as many training rows drawn at random with `seed` (or all the
    training rows and as many held-out rows, when the held-out rows are more).
    The model saw one of them. Each sample (M, d) is given its distance to the
    nearest row of each. A model that does not copy, however blurred or poor
    its samples, lies as near one set as the other: each sample is nearer the
    training set with probability ½. A model that copies training rows lies
    nearer it. Z = (# nearer the held-out set − # nearer the training set) /
    √(# not tied), the sign test's normal approximation; ≪ 0 means copying.
    Rule: a model fails when Z < COPYING_Z = −3 (a 0.13% false alarm rate).

    Meehan, Chaudhuri and Dasgupta (AISTATS 2020) compare the samples' distances to
    the training rows with the held-out rows' distances instead; in pixels that
    calls blurred samples (a VAE's means, which lie near many rows) copies.
    """
    train, heldout, fake = (torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in (train, heldout, fake))
    if not (train.ndim == heldout.ndim == fake.ndim == 2) or len({train.shape[1], heldout.shape[1], fake.shape[1]}) > 1:
        raise InputError("the data-copying test needs training rows, held-out rows and samples of one dimension")
    if min(len(train), len(heldout), len(fake)) < 2:
        raise InputError("the data-copying test needs at least 2 training rows, held-out rows and samples")
    n = min(len(train), len(heldout))
    rng = torch.Generator().manual_seed(seed)
    seen = train[torch.randperm(len(train), generator=rng)[:n]]
    fresh = heldout[torch.randperm(len(heldout), generator=rng)[:n]]
    d_seen, d_fresh = nearest_distances(fake, seen), nearest_distances(fake, fresh)
    nearer_seen, nearer_fresh = int((d_seen < d_fresh).sum()), int((d_fresh < d_seen).sum())
    untied = nearer_seen + nearer_fresh
    z = (nearer_fresh - nearer_seen) / math.sqrt(untied) if untied else 0.0
    p = 0.5 * math.erfc(-z / math.sqrt(2))
    fresh_median = float(np.median(d_fresh.numpy()))
    ratio = float(np.median(d_seen.numpy())) / fresh_median if fresh_median > 0 else math.inf
    return DataCopying(float(z), p, ratio, bool(z < COPYING_Z), len(fake), n, len(train))
