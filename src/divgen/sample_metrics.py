"""What generated samples captured, from the samples alone: precision, recall, density and coverage,
and on the toy mixtures, mode statistics.

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
