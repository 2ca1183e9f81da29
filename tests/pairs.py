"""Sample pairs and critics with known answers, shared by the tests of the estimators, two-sample tests and critics."""

from __future__ import annotations

import math

import torch
from torch.distributions import MultivariateNormal


def gaussian_pair(n, d=1, shift=1.0, var_b=1.5, seed=0):
    """A ~ N(0, I), B ~ N(shift·e1, var_b·I), and both densities."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(d)
    mu[0] = shift
    p = MultivariateNormal(torch.zeros(d), torch.eye(d))
    q = MultivariateNormal(mu, var_b * torch.eye(d))
    a = torch.randn(n, d, generator=g)
    b = mu + math.sqrt(var_b) * torch.randn(n, d, generator=g)
    return a, b, p, q


def ring(n, sd, g, modes=8):
    """n points of a ring of 8 Gaussians of radius 2 and sd `sd`, drawn from the first `modes` of them."""
    k = torch.randint(modes, (n,), generator=g)
    angle = k * (2 * math.pi / 8)
    return torch.stack([2 * torch.cos(angle), 2 * torch.sin(angle)], 1) + sd * torch.randn(n, 2, generator=g)


class FirstCoordinate(torch.nn.Module):
    """A critic whose logit is the first coordinate."""

    def forward(self, x):
        return x[:, 0]
