"""Explicit densities: anything with `log_prob(x)` and `sample(shape)`.

`torch.distributions` objects are the interface. Gaussian mixtures are
`MixtureSameFamily`; the noisy curves (swiss roll, moons) are `CurveMixture`,
whose density is an exact integral over the curve parameter, computed on a
fine grid.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch.distributions import Categorical, Distribution, MixtureSameFamily, MultivariateNormal, constraints


def gaussian_mixture(means, stds, weights=None) -> MixtureSameFamily:
    """Σ_k w_k N(means[k], stds[k]² I). means (K, d); stds (K,) isotropic."""
    means = torch.as_tensor(means, dtype=torch.float32)
    stds = torch.as_tensor(stds, dtype=torch.float32).expand(means.shape[0])
    k, d = means.shape
    weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    scale = stds[:, None, None] * torch.eye(d)
    return MixtureSameFamily(Categorical(probs=weights), MultivariateNormal(means, scale_tril=scale))


class CurveMixture(Distribution):
    """x = c_k(s) + σ ε, with curve k chosen uniformly, s ~ U[0, 1], ε ~ N(0, I₂).

    p(x) = (1/K) Σ_k ∫₀¹ N(x; c_k(s), σ²I) ds, evaluated by the midpoint rule on
    `n_grid` points per curve; the grid spacing along the curve is far below
    σ, so the rule's error is negligible next to sampling error.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, curves: Sequence[Callable[[torch.Tensor], torch.Tensor]], sigma: float, n_grid: int = 4000):
        self.curves = list(curves)
        self.sigma = sigma
        s = (torch.arange(n_grid, dtype=torch.float32) + 0.5) / n_grid
        self.grid = torch.cat([c(s) for c in self.curves])  # (K·n_grid, 2)
        super().__init__(event_shape=torch.Size([2]), validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        n = int(torch.Size(sample_shape).numel())
        k = torch.randint(len(self.curves), (n,))
        s = torch.rand(n)
        points = torch.empty(n, 2)
        for i, c in enumerate(self.curves):
            points[k == i] = c(s[k == i])
        x = points + self.sigma * torch.randn(n, 2)
        return x.reshape(*torch.Size(sample_shape), 2)

    def log_prob(self, x):
        flat = x.reshape(-1, 2).to(self.grid.dtype)
        sq = torch.cdist(flat, self.grid).pow(2)  # (N, K·n_grid)
        log_kernel = -sq / (2 * self.sigma**2) - math.log(2 * math.pi * self.sigma**2)
        out = torch.logsumexp(log_kernel, dim=1) - math.log(self.grid.shape[0])
        return out.reshape(x.shape[:-1])
