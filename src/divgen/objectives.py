"""Losses as pure functions of critic outputs. No optimizers, no logging.

Shapes: `v_real` (B,) is the raw critic output V(x) on data, `v_fake` (B',) on
model samples. Every loss is a scalar to *minimize*.
"""

from __future__ import annotations

from typing import Callable

import torch

from divgen.divergences import Divergence


# Critic outputs are passed through `bounded` before g_f unless the divergence's
# g_f and f*∘g_f are stable by themselves (`capped`). It is the identity on
# [−V_LINEAR, V_LINEAR] — where every trained critic lives — and saturates
# smoothly at ±2·V_LINEAR, so exp-type conjugates (KL, Hellinger, α) stay
# finite, with finite gradients, for every critic output a float32 can hold.
V_LINEAR = 30.0


def bounded(v: torch.Tensor) -> torch.Tensor:
    """Identity on |v| ≤ 30, then 30 + 30·tanh((|v| − 30)/30): C¹ and |out| < 60."""
    a = v.abs()
    tail = V_LINEAR + V_LINEAR * torch.tanh((a - V_LINEAR) / V_LINEAR)
    return torch.where(a <= V_LINEAR, v, torch.sign(v) * tail)


def capped(div: Divergence, v: torch.Tensor) -> torch.Tensor:
    """The critic output that g_f receives: v itself where div is stable for any float32, else
    bounded(growth·v)/growth, the identity on |v| ≤ 30/growth and below 60/growth everywhere.

    g_f and f*∘g_f grow like exp(growth·|v|) (Pearson: e^{2v}, α: e^{max(|α|, |α−1|)·|v|}), so
    this keeps them finite in float32; where v is the log-ratio (Pearson, α, gan) the cap
    falls on log p/q.

    Skipping the cap where it is not needed (gan, js, tv) saves about a dozen
    elementwise kernels per loss, which is most of a small network's step.
    """
    if div.stable:
        return v
    return bounded(v) if div.growth == 1.0 else bounded(v * div.growth) / div.growth


def fgan_bound(div: Divergence, v_real: torch.Tensor, v_fake: torch.Tensor) -> torch.Tensor:
    """The variational lower bound E_P[g_f(V)] − E_Q[f*(g_f(V))] ≤ D_f(P‖Q).

    Nowozin, Cseke & Tomioka, "f-GAN", NeurIPS 2016, eq. (6).
    """
    return div.g(capped(div, v_real)).mean() - div.f_star_g(capped(div, v_fake)).mean()


def fgan_critic_loss(div: Divergence, v_real: torch.Tensor, v_fake: torch.Tensor) -> torch.Tensor:
    """−(E_P[g_f(V)] − E_Q[f*(g_f(V))]): the critic maximizes the bound.

    For `gan` this is the discriminator's cross-entropy
    −E_P[log D(x)] − E_Q[log(1 − D(x))] with D = sigmoid(V).
    """
    return -fgan_bound(div, v_real, v_fake)


def fgan_generator_loss(div: Divergence, v_fake: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """The generator's loss on its own samples.

    `minimax`: minimize the bound itself, i.e. −E_Q[f*(g_f(V))] (E_P[·] does not
    depend on the generator). `nonsaturating`: maximize E_Q[g_f(V)], which for
    `gan` is −E_Q[log D(G(z))] (Goodfellow et al. 2014, section 3). `ratio`: V is
    a logistic classifier's estimate of l = log p/q (the `gan` critic), and the
    loss is the minimax one at the critic that l implies, T = f'(e^l):
    −E_Q[f*(f'(e^l))] = −E_Q[r f'(r) − f(r)], r = e^l. Its gradient with l held
    fixed is the gradient of D_f(P‖Q) when l is exact (for kl: −∇E_Q[r] =
    −E_P[∇ log q] = ∇KL(P‖Q)), as the density-ratio view of GANs has it (Uehara
    et al. 2016).
    """
    if kind == "ratio":  # v_fake is a logistic classifier's log p/q: the optimal critic's v_f(log p/q)
        return -div.f_star_g(capped(div, div.v_opt(v_fake))).mean()
    v = capped(div, v_fake)
    if kind == "minimax":
        return -div.f_star_g(v).mean()
    if kind == "nonsaturating":
        return -div.g(v).mean()
    raise ValueError(f"unknown generator loss {kind!r}; valid: nonsaturating, minimax, ratio")


def wasserstein_critic_loss(v_real: torch.Tensor, v_fake: torch.Tensor) -> torch.Tensor:
    """−(E_P[V] − E_Q[V]); with V 1-Lipschitz the bound is W1(P, Q) (Arjovsky et al. 2017)."""
    return v_fake.mean() - v_real.mean()


def wasserstein_generator_loss(v_fake: torch.Tensor) -> torch.Tensor:
    """−E_Q[V(G(z))]."""
    return -v_fake.mean()


def _views(v) -> tuple:
    return (v,) if torch.is_tensor(v) else tuple(v)


def _input_gradient(critic: Callable, views: tuple, unit: torch.Tensor | None = None) -> torch.Tensor:
    """∇V at `views` with respect to its float inputs (samples, and latent codes of BiGAN), one row per
    critic input: (B/M, M·D) for a critic that gives B/M outputs for B rows; integer inputs (labels) are
    held fixed. The graph is kept, so a penalty of it trains.

    A packed critic (PacGAN, M > 1) judges rows i·M … (i + 1)·M − 1 together as one input, so its slope
    is that of V_i in all M of them at once: the gradient of ΣV with respect to those rows is ∇V_i,
    and they are concatenated into one row before any norm is taken.
    `unit` (d,): the length of one unit of each sample coordinate, e.g. the data's sd; the slope
    along the samples is then per such unit, ∂V/∂x · unit (the codes keep theirs)."""
    inputs = [t.detach().requires_grad_(True) if t.is_floating_point() else t for t in views]
    wrt = [t for t in inputs if t.is_floating_point()]
    v = critic(*inputs)  # (B/M,)
    grads = [g.reshape(len(g), -1) for g in torch.autograd.grad(v.sum(), wrt, create_graph=True)]  # (B, D_k) each
    if unit is not None:
        grads[0] = grads[0] * unit
    return torch.cat(grads, dim=1).reshape(len(v), -1)  # (B/M, M·D): a norm's sum of squares ignores the order


def gradient_penalty(critic: Callable, real, fake, generator: torch.Generator | None = None,
                     one_sided: bool = False, unit: torch.Tensor | None = None) -> torch.Tensor:
    """E[(‖∇V(x̂)‖ − 1)²] on random interpolates x̂ = εx + (1 − ε)x̃, one ε ~ U(0, 1) per
    example (Gulrajani et al. 2017, WGAN-GP). The norm and the mean are per critic input: a packed
    critic's gradient with respect to its M samples together (_input_gradient).

    `real`, `fake`: tensors (B, d) or views (x, c): float components are
    interpolated with the same ε (BiGAN's codes with its samples), labels are
    the real ones (a conditional model's generated samples carry them too).
    `one_sided`: E[max(0, ‖∇V(x̂)‖ − 1)²], which penalizes only slopes above 1
    (Petzka et al. 2018, WGAN-LP). A critic trained from scratch to estimate
    W1 needs it: the two-sided penalty makes a slope of 0 a barrier, so a
    critic that starts with the wrong sign locks in the wrong direction.
    `unit`: slopes per this length of each coordinate (_input_gradient).
    """
    real, fake = _views(real), _views(fake)
    x = real[0]
    eps = torch.rand(len(x), generator=generator, device=x.device, dtype=x.dtype)
    mixed = tuple(torch.lerp(b, a, eps.view(-1, *[1] * (a.dim() - 1))) if a.is_floating_point() else a
                  for a, b in zip(real, fake))
    excess = _input_gradient(critic, mixed, unit).norm(dim=1) - 1
    return ((excess.clamp(min=0) if one_sided else excess) ** 2).mean()


def r1_penalty(critic: Callable, real, unit: torch.Tensor | None = None) -> torch.Tensor:
    """½ E_P[‖∇_x V(x)‖²] on real data (Mescheder, Geiger & Nowozin 2018, "Which training methods for
    GANs do actually converge?"): it pulls the critic flat on the data, which makes the
    equilibrium locally stable. Times the weight γ it is their (γ/2)·E‖∇V‖². Per critic input, as
    gradient_penalty: a packed critic's x is its M samples together.
    `unit`: slopes per this length of each coordinate (_input_gradient)."""
    return 0.5 * _input_gradient(critic, _views(real), unit).square().sum(1).mean()


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The median heuristic: median pairwise distance of the pooled sample (≤ 1,000 rows of each side)."""
    z = torch.cat([x[:1000], y[:1000]])
    d = torch.cdist(z, z)
    d = d[d > 0]
    return d.median().clamp(min=1e-6) if len(d) else torch.tensor(1.0)


def gaussian_kl_to_standard(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) per row, (B,)."""
    return 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(-1)


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, bandwidth: torch.Tensor | float) -> torch.Tensor:
    """k(a, b) = exp(−‖a − b‖² / (2h²)) for every pair of rows of x (N, d) and y (M, d): (N, M)."""
    gamma = 1.0 / (2 * torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device) ** 2)
    return torch.exp(-gamma * torch.cdist(x, y).pow(2))


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: torch.Tensor | float) -> torch.Tensor:
    """Unbiased MMD² with the Gaussian kernel of bandwidth h (Gretton et al. 2012, eq. 3)."""
    kxx, kyy, kxy = gaussian_kernel(x, x, bandwidth), gaussian_kernel(y, y, bandwidth), gaussian_kernel(x, y, bandwidth)
    m, n = x.shape[0], y.shape[0]
    return (
        (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
        - 2 * kxy.mean()
    )
