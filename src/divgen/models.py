"""Networks and parametric models: nn.Modules that map tensors to tensors.

Samples are flat everywhere outside this file, (B, d) with d = prod(event
shape); the convolutional networks reshape to (B, C, H, W) inside. Labels are
int64 (B,), latent codes float (B, k). Every network sees its data through the
data's own statistics (Standardize on the way in, an Affine or Squash map on
the way out), so data of any scale trains with the same learning rates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
    return _spectral(nn.Sequential(*layers), spectral_norm)


def _spectral(module: nn.Module, on: bool) -> nn.Module:
    """Spectral normalization (Miyato et al. 2018) of every linear, conv and embedding layer, if `on`; a layer
    already normalized (ConvOperatorNorm) is left as it is."""
    if on:
        for name, child in list(module.named_children()):
            if nn.utils.parametrize.is_parametrized(child):
                continue
            if isinstance(child, (nn.Linear, nn.Conv2d, nn.Embedding)):
                setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
            else:
                _spectral(child, True)
    return module


class ConvOperatorNorm(nn.Module):
    """A Conv2d's weight divided by the norm of the convolution itself, as a map of (C, H, W) inputs.

    Miyato et al.'s spectral normalization divides a conv kernel by the norm of the kernel reshaped to a
    (out, in·k·k) matrix, which bounds the convolution's slope only up to a factor of about the kernel's
    width (Tsuzuku et al. 2018). Here the power iteration runs on the operator: u ↦ conv(u) ↦ convᵀ(conv(u)),
    with conv_transpose2d as the adjoint (Gouk et al. 2021), one step per training forward, so σ converges
    to the largest singular value of the linear map x ↦ conv2d(x, W) (its bias does not change the slope).
    """

    def __init__(self, conv: nn.Conv2d, in_shape: tuple[int, int, int], eps: float = 1e-12):
        super().__init__()
        self.stride, self.padding, self.dilation, self.eps = conv.stride, conv.padding, conv.dilation, eps
        out_hw = F.conv2d(torch.zeros(1, *in_shape), conv.weight.detach(), None, self.stride, self.padding,
                          self.dilation).shape[2:]
        k = conv.weight.shape[2:]
        # conv_transpose2d's output size falls short of the input's by these rows and columns
        self.output_padding = tuple(int(n - ((m - 1) * s - 2 * p + d * (kk - 1) + 1))
                                    for n, m, s, p, d, kk in zip(in_shape[1:], out_hw, self.stride, self.padding,
                                                                 self.dilation, k))
        u = torch.randn(1, *in_shape, generator=torch.Generator().manual_seed(0))
        self.register_buffer("u", u / u.norm())
        with torch.no_grad():  # a start near the top singular vector, as torch's spectral_norm makes one
            for _ in range(15):
                self(conv.weight)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                v = self._conv(self.u, weight)
                u = F.conv_transpose2d(v, weight, None, self.stride, self.padding, self.output_padding, 1,
                                       self.dilation)
                self.u.copy_(u / (u.norm() + self.eps))
        # ‖conv(u)‖ for a unit u, differentiable in the weight; a copy of u, which the next forward updates
        sigma = self._conv(self.u.clone(), weight).norm()
        return weight / (sigma + self.eps)


def conv_operator_norm(module: nn.Sequential, in_shape: tuple[int, int, int]) -> nn.Sequential:
    """Every Conv2d of `module`, a sequence of layers that takes (C, H, W) inputs, normalized by ConvOperatorNorm."""
    shape = in_shape
    for layer in module:
        if isinstance(layer, nn.Conv2d):
            nn.utils.parametrize.register_parametrization(layer, "weight", ConvOperatorNorm(layer, shape))
        with torch.no_grad():
            out = layer(torch.zeros(1, *shape))
        if out.dim() == 4:
            shape = tuple(out.shape[1:])
    return module


def floored_std(x: torch.Tensor, floor: float = 1e-6) -> torch.Tensor:
    """Per-coordinate sd of x (N, d), with 1 where the coordinate is constant (or the sd undefined): where
    the sd is at most `floor` times its mean |x|, which float32 rounding alone can give. The floor is
    relative, so data measured in tiny units (an sd of 1e-7) keep their own sd."""
    std = x.std(0) if len(x) > 1 else torch.ones(x.shape[1], dtype=x.dtype)
    return torch.where(std > floor * x.abs().mean(0), std, torch.ones_like(std))


def image_chw(event_shape) -> tuple[int, int, int]:
    """(C, H, W) of an image event shape (H, W) or (C, H, W)."""
    shape = tuple(event_shape)
    return (1, *shape) if len(shape) == 2 else shape


def one_hot(y: torch.Tensor, n_classes: int, dtype=torch.float32) -> torch.Tensor:
    return F.one_hot(y, n_classes).to(dtype)


# ------------------------------------------------------------------ maps ---
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
    def of(cls, *samples: torch.Tensor, pooled: bool = False) -> "Standardize":
        """The scaler of the pooled samples (N, d); a constant coordinate gets sd 1, not 0.

        `pooled`: one mean and one sd for all coordinates (images: every pixel alike).
        """
        x = torch.cat(samples)
        if pooled:
            flat = x.reshape(-1, 1)
            return cls(flat.mean(0).expand(x.shape[1]).clone(), floored_std(flat).expand(x.shape[1]).clone())
        return cls(x.mean(0), floored_std(x))

    def forward(self, x):  # (x − mean)/std as one fused multiply-add
        return torch.addcmul(self.shift, x, self.scale)

    @property
    def spread(self) -> float:
        """One length for the data: the root mean square of the coordinates' sd."""
        return float(self.std.double().square().mean().sqrt())

    def isotropic(self) -> "Standardize":
        """The same centre, and one sd for every coordinate, the spread: x ↦ (x − mean)/spread scales every
        direction alike, so a network 1-Lipschitz in its input is 1/spread-Lipschitz in x. A per-coordinate
        sd would make it up to 1/min sd in the narrowest direction instead."""
        return Standardize(self.mean, torch.full_like(self.std, self.spread))

    def inverse(self, x):
        return torch.addcmul(self.mean, x, self.std)


class Unstandardize(nn.Module):
    """h ↦ h·std + mean: a network's output in the data's units."""

    def __init__(self, scaler: Standardize):
        super().__init__()
        self.scaler = scaler

    def forward(self, h):
        return self.scaler.inverse(h)


class Squash(nn.Module):
    """h ↦ lo + (hi − lo)·σ(h): outputs inside the data's range (images: [0, 1] pixels)."""

    def __init__(self, lo: float, hi: float):
        super().__init__()
        self.register_buffer("lo", torch.tensor(float(lo)))
        self.register_buffer("span", torch.tensor(float(hi - lo)))

    def forward(self, h):
        return torch.addcmul(self.lo, torch.sigmoid(h), self.span)


# ----------------------------------------------------------------- bodies ---
class ConvUp(nn.Module):
    """(B, k) -> (B, C·H·W): a linear map to a (2w, ⌈H/4⌉, ⌈W/4⌉) grid, two ×2 upsampling
    3×3 conv blocks, a 3×3 conv to C channels, cropped to (H, W). No normalization
    layers: samples do not depend on the batch, nor on train/eval mode."""

    def __init__(self, in_dim: int, event_shape, width: int):
        super().__init__()
        self.chw = image_chw(event_shape)
        c, h, w = self.chw
        self.grid = (2 * width, math.ceil(h / 4), math.ceil(w / 4))
        self.fc = nn.Linear(in_dim, math.prod(self.grid))
        self.body = nn.Sequential(
            nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, width, 3, padding=1),
            nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(), nn.Conv2d(width, c, 3, padding=1),
        )

    def forward(self, z):  # (B, k) -> (B, C·H·W)
        c, h, w = self.chw
        out = self.body(self.fc(z).view(-1, *self.grid))  # (B, C, 4⌈H/4⌉, 4⌈W/4⌉)
        return out[:, :, :h, :w].reshape(len(z), -1)


class ConvDown(nn.Module):
    """(B, C·H·W) -> (B, F): a 3×3 conv, then two 4×4 stride-2 convs, LeakyReLU(0.2); the features."""

    def __init__(self, event_shape, width: int):
        super().__init__()
        self.chw = image_chw(event_shape)
        c = self.chw[0]
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        with torch.no_grad():
            self.features = self.body(torch.zeros(1, *self.chw)).shape[1]

    def forward(self, x):  # (B, C·H·W) -> (B, F)
        return self.body(x.view(-1, *self.chw))


# -------------------------------------------------------------- generators ---
class Generator(nn.Module):
    """x = out(body([z, one-hot y])): noise z ~ N(0, I) (and a label, for a conditional model) to samples (B, d).

    A conditional generator keeps the training labels' frequencies in
    `class_probs`, from which it draws labels when none are given.
    """

    def __init__(self, body: nn.Module, out: nn.Module, noise_dim: int, n_classes: int = 0,
                 class_probs: torch.Tensor | None = None):
        super().__init__()
        self.body, self.out, self.noise_dim, self.n_classes = body, out, noise_dim, n_classes
        if n_classes:
            probs = class_probs if class_probs is not None else torch.full((n_classes,), 1.0 / n_classes)
            self.register_buffer("class_probs", probs.clone().float())

    def forward(self, z, y=None):  # (B, noise_dim), (B,) -> (B, d)
        if self.n_classes:
            z = torch.cat([z, one_hot(y, self.n_classes, z.dtype)], dim=1)
        return self.out(self.body(z))


def mlp_generator(noise_dim: int, scaler: Standardize, width: int, depth: int, n_classes: int = 0,
                 class_probs: torch.Tensor | None = None) -> Generator:
    """An MLP generator in the data's units (the network works in standardized units)."""
    return Generator(mlp(noise_dim + n_classes, scaler.mean.shape[0], width, depth), Unstandardize(scaler),
                     noise_dim, n_classes, class_probs)


def conv_generator(noise_dim: int, event_shape, width: int, lo: float, hi: float, n_classes: int = 0,
                  class_probs: torch.Tensor | None = None) -> Generator:
    """A convolutional image generator whose pixels stay inside the data's range [lo, hi]."""
    return Generator(ConvUp(noise_dim + n_classes, event_shape, width), Squash(lo, hi), noise_dim, n_classes, class_probs)


class GaussianModel(nn.Module):
    """Q_θ = N(μ, LLᵀ) with L lower triangular and a positive diagonal.

    Sampling is reparametrized, x = μ + L z with z ~ N(0, I), so every
    divergence can train it adversarially; `log_prob` makes it usable by
    maximum likelihood and exact divergences too.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.noise_dim = mean.shape[0]
        self.n_classes = 0
        self.mean = nn.Parameter(mean.clone())
        self.tril = nn.Parameter(torch.zeros(self.noise_dim, self.noise_dim))
        # softplus(raw) = std on the diagonal at the start: raw = log(expm1(s)), which is
        # s + log(−expm1(−s)) where expm1(s) would overflow float32 (s > 88)
        std = std.clone()
        self.raw_diag = nn.Parameter(torch.where(std < 20, torch.log(torch.expm1(std.clamp(max=20))),
                                                 std + torch.log(-torch.expm1(-std))))

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


# ----------------------------------------------------------------- critics ---
class MLPCritic(nn.Module):
    """The raw critic output V(x) or V(x, c) ∈ ℝ, shape (B / pack,).

    The condition c is concatenated to the standardized x: one-hot labels
    (`n_classes`, a conditional GAN) or latent codes (`latent_dim`, BiGAN).
    `pack` (PacGAN, Lin et al. 2018): rows i·pack … (i + 1)·pack − 1 of a batch
    are judged together, as one input of pack·(d + condition) features.
    `lipschitz`: the input is standardized by one scale for every coordinate, the data's spread
    (Standardize.isotropic), and the output multiplied by it: V(x) = s·net((x − μ)/s) has the slopes
    of `net` in the data's own units, where W1 is measured, whatever units the data come in. A
    spectrally normalized net is then 1-Lipschitz in the data's units; per-coordinate standardization
    would have made it up to s/min sd (12 on data with sds 1 and 0.05).
    `squares`: the net also reads the square of each standardized input, (h, h ⊙ h). A ReLU net of h
    extrapolates linearly beyond the data, so its log-ratio falls off too slowly where a Gaussian's tail
    lies beyond them; a net of (h, h²) extrapolates quadratically, as log-ratios between Gaussian-tailed
    densities do (jeffrey's adversarial fit of mog1d: worst excess of 3 seeds from 0.028 to 0.016,
    benchmarks/exact_vs_adversarial.py). Not with `lipschitz`: h² has no bounded slope.
    """

    def __init__(self, scaler: Standardize, width: int, depth: int, spectral_norm: bool = False,
                 activation: type[nn.Module] = nn.ReLU, n_classes: int = 0, latent_dim: int = 0, pack: int = 1,
                 quadratic: bool = False, lipschitz: bool = False, squares: bool = False):
        super().__init__()
        if squares and lipschitz:
            raise ValueError("squares: the squared inputs make the critic's slope unbounded")
        scaler = scaler.isotropic() if lipschitz else scaler
        self.scaler, self.n_classes, self.latent_dim, self.pack = scaler, n_classes, latent_dim, pack
        self.out_scale = scaler.spread if lipschitz else 1.0
        self.in_features = pack * (scaler.mean.shape[0] + n_classes + latent_dim)
        self.squares = squares
        self.net = mlp(self.in_features * (2 if squares else 1), 1, width, depth, spectral_norm, activation)
        # `quadratic` adds hᵀAh, a quadratic form in the standardized input (A starts at 0, so the
        # critic starts as the MLP alone): log-density ratios of Gaussians are exactly quadratic,
        # which an MLP fits only slowly. The form is linear in A, so its part of the fit is convex.
        self.quadratic = nn.Parameter(torch.zeros(self.in_features, self.in_features)) if quadratic else None

    def forward(self, x, c=None):  # (B, d), (B,) or (B, k) -> (B/pack,), float32 even under bf16 autocast
        h = self.scaler(x)
        if c is not None:
            c = one_hot(c, self.n_classes, h.dtype) if self.n_classes else c.to(h.dtype)
            h = torch.cat([h, c], dim=1)
        if self.pack > 1:
            h = h.reshape(-1, self.in_features)
        v = self.net(torch.cat([h, h * h], dim=1) if self.squares else h).squeeze(-1)
        if self.quadratic is not None:
            v = v + ((h @ self.quadratic) * h).sum(-1)  # (B, d) @ (d, d) -> (B,)
        if self.out_scale != 1.0:
            v = v * self.out_scale
        return v.float()


class ConvCritic(nn.Module):
    """V(x), V(x, y) or V(x, z) for images, shape (B,).

    Labels enter by projection (Miyato & Koyama 2018): V = ψ(φ(x)) + ⟨e_y, φ(x)⟩
    with φ the conv features and e_y a learned class embedding. Latent codes
    (BiGAN) are concatenated to φ(x) before a small MLP head.
    `lipschitz`: as MLPCritic's. With spectral normalization each convolution is divided by its norm as an
    operator on the images (ConvOperatorNorm), not by its kernel's norm as a matrix, which bounds the slope
    only up to a factor of about the kernel's width: such a critic trained on a shift of 4×4 images had
    reached slope 2.6, so its E_P[V] − E_Q[V] could exceed W1.
    """

    def __init__(self, scaler: Standardize, event_shape, width: int, spectral_norm: bool = False,
                 n_classes: int = 0, latent_dim: int = 0, pack: int = 1, lipschitz: bool = False):
        super().__init__()
        scaler = scaler.isotropic() if lipschitz else scaler  # as MLPCritic's
        self.scaler, self.n_classes, self.latent_dim, self.pack = scaler, n_classes, latent_dim, pack
        self.out_scale = scaler.spread if lipschitz else 1.0
        c, h, w = image_chw(event_shape)
        self.features = ConvDown((pack * c, h, w), width)  # a pack of images stacked along the channels
        f = self.features.features
        self.head = mlp(f + pack * latent_dim, 1, 2 * width, 1, activation=nn.LeakyReLU) if latent_dim else nn.Linear(f, 1)
        if n_classes:
            self.embed = nn.Embedding(n_classes, f)
            nn.init.normal_(self.embed.weight, std=0.02)
        if spectral_norm:
            conv_operator_norm(self.features.body, (pack * c, h, w))
        _spectral(self, spectral_norm)

    def forward(self, x, c=None):  # (B, d) -> (B / pack,)
        phi = self.features(self.scaler(x).reshape(-1, self.pack * x.shape[1]))  # (B/pack, F)
        if self.latent_dim:
            out = self.head(torch.cat([phi, c.to(phi.dtype).reshape(len(phi), -1)], dim=1)).squeeze(-1)
        else:
            out = self.head(phi).squeeze(-1)
            if self.n_classes:  # a pack's classes enter through the mean of their embeddings
                out = out + (self.embed(c).reshape(len(phi), self.pack, -1).mean(1) * phi).sum(1)
        if self.out_scale != 1.0:
            out = out * self.out_scale
        return out.float()


# ---------------------------------------------------------------- encoders ---
class Encoder(nn.Module):
    """Codes of samples: E(x) (BiGAN) or the parameters of q(z | x[, y]) (VAE).

    `body` maps standardized x (B, d) to features (B, F); labels (CVAE) are
    concatenated to the features; a linear head gives the code (B, k), or
    (mean, log-variance) of a diagonal Gaussian when `gaussian`.
    """

    def __init__(self, scaler: Standardize, body: nn.Module, features: int, latent_dim: int, n_classes: int = 0,
                 gaussian: bool = False):
        super().__init__()
        self.scaler, self.body, self.n_classes, self.gaussian = scaler, body, n_classes, gaussian
        self.latent_dim = latent_dim
        self.head = nn.Linear(features + n_classes, latent_dim * (2 if gaussian else 1))

    def forward(self, x, y=None):  # (B, d) -> (B, k), or ((B, k), (B, k))
        h = self.body(self.scaler(x))
        if self.n_classes:
            h = torch.cat([h, one_hot(y, self.n_classes, h.dtype)], dim=1)
        out = self.head(h)
        if not self.gaussian:
            return out
        mean, log_var = out.chunk(2, dim=1)
        return mean, log_var.clamp(-12.0, 8.0)  # σ between e^-6 and e^4: no overflow in exp

    def code(self, x, y=None):
        """The code of each sample: E(x), or the posterior mean of a Gaussian encoder."""
        out = self(x, y)
        return out[0] if self.gaussian else out


def mlp_encoder(scaler: Standardize, width: int, depth: int, latent_dim: int, n_classes: int = 0,
                gaussian: bool = False) -> Encoder:
    body = nn.Sequential(mlp(scaler.mean.shape[0], width, width, depth - 1), nn.ReLU())
    return Encoder(scaler, body, width, latent_dim, n_classes, gaussian)


def conv_encoder(scaler: Standardize, event_shape, width: int, latent_dim: int, n_classes: int = 0,
                 gaussian: bool = False) -> Encoder:
    body = ConvDown(event_shape, width)
    return Encoder(scaler, body, body.features, latent_dim, n_classes, gaussian)


# ---------------------------------------------------------------- decoders ---
class Decoder(nn.Module):
    """p(x | z[, y]) of a VAE, and its sampler.

    `bernoulli`: p(x | z) = Π Bernoulli(x_i; σ(h_i)), for data in [0, 1]
    (grey levels are used as soft targets); samples are the means σ(h).
    `gaussian`: p(x | z) = N(x; μ(z), diag σ²) with μ in the data's units and a
    learned σ per coordinate; samples are μ + σ·ε, the extra noise ε taking the
    last d coordinates of the generator's noise, so `noise_dim` = latent + d.
    """

    def __init__(self, body: nn.Module, latent_dim: int, likelihood: str, scaler: Standardize, n_classes: int = 0,
                 class_probs: torch.Tensor | None = None):
        super().__init__()
        self.body, self.latent_dim, self.likelihood, self.n_classes = body, latent_dim, likelihood, n_classes
        self.scaler = scaler
        d = scaler.mean.shape[0]
        self.noise_dim = latent_dim + (d if likelihood == "gaussian" else 0)
        if likelihood == "gaussian":
            # start at 0.3 of the data's spread (the residual of a decoder that explains 90% of the variance),
            # never below 1e-3 of it. Adam moves log σ by about the learning rate per step, so a start far
            # from the optimum costs thousands of steps: from a tenth, test IWAE on dequantized digits (32-D code) was
            # 2.64 bits/pixel after 4,000 steps and 2.56 after 6,000; from 0.3, 2.50 after 3,000.
            self.log_sigma = nn.Parameter(torch.log(scaler.std * 0.3))
            self.register_buffer("log_sigma_min", torch.log(scaler.std * 1e-3))
        if n_classes:
            probs = class_probs if class_probs is not None else torch.full((n_classes,), 1.0 / n_classes)
            self.register_buffer("class_probs", probs.clone().float())

    def _h(self, z, y):
        if self.n_classes:
            z = torch.cat([z, one_hot(y, self.n_classes, z.dtype)], dim=1)
        return self.body(z)

    def sigma(self) -> torch.Tensor:
        return torch.maximum(self.log_sigma, self.log_sigma_min).exp()

    def log_likelihood(self, x, z, y=None) -> torch.Tensor:
        """log p(x | z, y) summed over coordinates, (B,); z (B, latent) or (S, B, latent) with x broadcast."""
        h = self._h(z.reshape(-1, z.shape[-1]), None if y is None else y.expand(*z.shape[:-1]).reshape(-1))
        h = h.reshape(*z.shape[:-1], -1)
        if self.likelihood == "bernoulli":
            # log σ(h) for x = 1 and log σ(−h) for x = 0, as −BCE with logits (stable for any h)
            return -F.binary_cross_entropy_with_logits(h, x.expand_as(h), reduction="none").sum(-1)
        mean, log_sigma = self.scaler.inverse(h), torch.maximum(self.log_sigma, self.log_sigma_min)
        return (-0.5 * ((x - mean) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)

    def forward(self, z, y=None):  # samples (B, d) from noise (B, noise_dim)
        h = self._h(z[:, : self.latent_dim], y)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(h)
        return torch.addcmul(self.scaler.inverse(h), z[:, self.latent_dim :], self.sigma())


# ------------------------------------------------------------------ utils ---
Views = tuple[torch.Tensor, ...]  # what a critic sees of one batch: (x,), (x, labels) or (x, z)


def critic_pair(critic, a: torch.Tensor | Views, b: torch.Tensor | Views) -> tuple[torch.Tensor, torch.Tensor]:
    """V(a) (N,) and V(b) (M,) from one forward pass: a single larger matmul is faster than two.

    `a` and `b` are tensors or views, tuples (x, c...) of the critic's inputs.
    """
    a, b = (a,) if torch.is_tensor(a) else a, (b,) if torch.is_tensor(b) else b
    if len(a) == 1:  # the common case, without the generality's overhead
        v = critic(torch.cat([a[0], b[0]]))
    else:
        v = critic(*[torch.cat([u, w]) for u, w in zip(a, b)])
    # a packed critic gives one output per pack: as many packs on each side as rows allow
    n_a = len(v) * len(a[0]) // (len(a[0]) + len(b[0]))
    return v.split([n_a, len(v) - n_a])
