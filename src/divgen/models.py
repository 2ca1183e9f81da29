"""Networks and parametric models: nn.Modules that map tensors to tensors."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import MultivariateNormal


def mlp(in_dim: int, out_dim: int, width: int, depth: int, spectral_norm: bool = False,
        activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """`depth` hidden layers of `width` units with `activation` (ReLU), then a linear output."""
    dims = [in_dim] + [width] * depth
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), activation()]
    layers.append(nn.Linear(dims[-1], out_dim))
    if spectral_norm:
        layers = [nn.utils.parametrizations.spectral_norm(m) if isinstance(m, nn.Linear) else m for m in layers]
    return nn.Sequential(*layers)


class Standardize(nn.Module):
    """x ↦ (x − mean)/std with the data's statistics, kept as buffers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        # x ↦ x·scale + shift, precomputed so that a forward pass is one fused kernel
        self.register_buffer("scale", 1 / std)
        self.register_buffer("shift", -mean / std)

    @classmethod
    def of(cls, *samples: torch.Tensor) -> "Standardize":
        """The scaler of the pooled samples (N, d); a constant coordinate gets sd 1, not 0."""
        x = torch.cat(samples)
        return cls(x.mean(0), floored_std(x))

    def forward(self, x):  # (x − mean)/std as one fused multiply-add
        return torch.addcmul(self.shift, x, self.scale)

    def inverse(self, x):
        return torch.addcmul(self.mean, x, self.std)


def floored_std(x: torch.Tensor, floor: float = 1e-6) -> torch.Tensor:
    """Per-coordinate sd of x (N, d), with 1 where it is below `floor` (or undefined)."""
    std = x.std(0) if len(x) > 1 else torch.ones(x.shape[1], dtype=x.dtype)
    return torch.where(std > floor, std, torch.ones_like(std))


class MLPGenerator(nn.Module):
    """x = G(z), z ~ N(0, I_noise_dim); the network works in standardized units."""

    def __init__(self, noise_dim: int, scaler: Standardize, width: int, depth: int):
        super().__init__()
        self.noise_dim = noise_dim
        self.net = mlp(noise_dim, scaler.mean.shape[0], width, depth)
        self.scaler = scaler

    def forward(self, z, y=None):  # (B, noise_dim) -> (B, d)
        return self.scaler.inverse(self.net(z))


class GaussianModel(nn.Module):
    """Q_θ = N(μ, LLᵀ) with L lower triangular and a positive diagonal.

    Sampling is reparametrized, x = μ + L z with z ~ N(0, I), so every
    divergence can train it adversarially; `log_prob` makes it usable by
    maximum likelihood and exact divergences too.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.noise_dim = mean.shape[0]
        self.mean = nn.Parameter(mean.clone())
        self.tril = nn.Parameter(torch.zeros(self.noise_dim, self.noise_dim))
        # softplus(raw) = std on the diagonal at the start
        self.raw_diag = nn.Parameter(torch.log(torch.expm1(std.clone())))

    @property
    def scale_tril(self) -> torch.Tensor:  # (d, d)
        return torch.tril(self.tril, -1) + torch.diag(nn.functional.softplus(self.raw_diag))

    def forward(self, z, y=None):  # (B, d) -> (B, d)
        return self.mean + z @ self.scale_tril.T

    def distribution(self) -> MultivariateNormal:
        return MultivariateNormal(self.mean, scale_tril=self.scale_tril)

    def log_prob(self, x):
        return self.distribution().log_prob(x)

    def params(self) -> dict:
        """Mean and covariance as nested lists, for params.json."""
        L = self.scale_tril.detach()
        return {"mean": self.mean.detach().tolist(), "cov": (L @ L.T).tolist()}


class Critic(nn.Module):
    """The raw critic output V(x) or V(x, c) ∈ ℝ, shape (B,).

    `cond_dim` > 0: the critic also sees a condition c (B, cond_dim), concatenated
    to the standardized x: one-hot labels (conditional GAN) or latent codes (BiGAN).
    """

    def __init__(self, scaler: Standardize, width: int, depth: int, spectral_norm: bool = False,
                 activation: type[nn.Module] = nn.ReLU, cond_dim: int = 0, quadratic: bool = False):
        super().__init__()
        self.scaler = scaler
        in_dim = scaler.mean.shape[0] + cond_dim
        self.net = mlp(in_dim, 1, width, depth, spectral_norm, activation)
        # `quadratic` adds hᵀAh, a quadratic form in the standardized input (A starts at 0, so the
        # critic starts as the MLP alone): log-density ratios of Gaussians are exactly quadratic,
        # which an MLP fits only slowly. The form is linear in A, so its part of the fit is convex.
        self.quadratic = nn.Parameter(torch.zeros(in_dim, in_dim)) if quadratic else None

    def forward(self, x, c=None):  # (B, d), (B, cond_dim) -> (B,), float32 even under bf16 autocast
        h = self.scaler(x)
        if c is not None:
            h = torch.cat([h, c.to(h.dtype)], dim=1)
        v = self.net(h).squeeze(-1)
        if self.quadratic is not None:
            v = v + ((h @ self.quadratic) * h).sum(-1)  # (B, d) @ (d, d) -> (B,)
        return v.float()


Views = tuple[torch.Tensor, ...]  # what a critic sees of one batch: (x,), (x, labels) or (x, z)


def critic_pair(critic, a: torch.Tensor | Views, b: torch.Tensor | Views) -> tuple[torch.Tensor, torch.Tensor]:
    """V(a) (N,) and V(b) (M,) from one forward pass: a single larger matmul is faster than two.

    `a` and `b` are tensors or views, tuples (x, c...) of the critic's inputs.
    """
    a, b = (a,) if torch.is_tensor(a) else a, (b,) if torch.is_tensor(b) else b
    if len(a) == 1:  # the common case, without the generality's overhead
        return critic(torch.cat([a[0], b[0]])).split([len(a[0]), len(b[0])])
    joint = [torch.cat([u, v]) for u, v in zip(a, b)]
    return critic(*joint).split([len(a[0]), len(b[0])])
