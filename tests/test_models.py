"""Networks: nn.Modules mapping tensors to tensors, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from divgen import models


# ---------------------------------------------------------------- networks ---
def test_projection_critic_adds_the_class_embedding_inner_product():
    scaler = models.Standardize(torch.zeros(64), torch.ones(64))
    critic = models.ConvCritic(scaler, (8, 8), 4, n_classes=3)
    x, y = torch.rand(5, 64), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        phi = critic.features(x)
        expected = critic.head(phi).squeeze(-1) + (critic.embed(y) * phi).sum(1)
        torch.testing.assert_close(critic(x, y), expected)
        assert not torch.equal(critic(x, y), critic(x, (y + 1) % 3))


@pytest.mark.parametrize("shape", [(8, 8), (1, 28, 28), (3, 10, 12), (1, 9, 7)])
def test_conv_networks_handle_any_image_size(shape):
    d = math.prod(shape)
    g = models.conv_generator(5, shape, 8, 0.0, 1.0)
    x = g(torch.randn(4, 5))
    assert x.shape == (4, d) and (x >= 0).all() and (x <= 1).all()
    critic = models.ConvCritic(models.Standardize(torch.zeros(d), torch.ones(d)), shape, 8, latent_dim=5)
    assert critic(x, torch.randn(4, 5)).shape == (4,)
    enc = models.conv_encoder(models.Standardize(torch.zeros(d), torch.ones(d)), shape, 8, 6, gaussian=True)
    mean, log_var = enc(x)
    assert mean.shape == log_var.shape == (4, 6)


def test_standardize_maps_the_data_to_mean_0_sd_1_and_back():
    x = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])  # the second coordinate is constant: sd 1, not 0
    scaler = models.Standardize.of(x)
    torch.testing.assert_close(scaler(x), torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(scaler.inverse(scaler(x)), x)
    # pooled (images): one mean, 3.5, and one sd, for every coordinate; spread = rms of the coordinates' sd
    pooled = models.Standardize.of(torch.tensor([[1.0, 4.0], [3.0, 6.0]]), pooled=True)
    torch.testing.assert_close(pooled.mean, torch.full((2,), 3.5))
    assert models.Standardize(torch.zeros(2), torch.tensor([3.0, 4.0])).spread == pytest.approx(math.sqrt(12.5))


def test_mlp_generator_outputs_in_the_datas_units_and_squash_in_its_range():
    scaler = models.Standardize(torch.tensor([100.0]), torch.tensor([10.0]))
    g = models.mlp_generator(2, scaler, 8, 1)
    with torch.no_grad():
        g.body[-1].weight.zero_()
        g.body[-1].bias.fill_(0.5)  # half a standard deviation above the mean
        torch.testing.assert_close(g(torch.randn(3, 2)), torch.full((3, 1), 105.0))
    squash = models.Squash(-1.0, 3.0)
    torch.testing.assert_close(squash(torch.tensor([0.0, -1e9, 1e9])), torch.tensor([1.0, -1.0, 3.0]))


def test_a_packed_critic_judges_rows_in_packs_and_critic_pair_splits_by_pack():
    """pack 2: rows (0, 1) and (2, 3) are one input each; a linear critic gives w·[x0, x1] per pack."""
    critic = models.MLPCritic(models.Standardize(torch.zeros(1), torch.ones(1)), 4, 1, pack=2)
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 10.0]]))
        net.bias.zero_()
    critic.net = net
    a, b = torch.tensor([[1.0], [2.0], [3.0], [4.0]]), torch.tensor([[5.0], [6.0]])
    torch.testing.assert_close(critic(a), torch.tensor([21.0, 43.0]))
    v_a, v_b = models.critic_pair(critic, a, b)
    torch.testing.assert_close(v_a, torch.tensor([21.0, 43.0]))
    torch.testing.assert_close(v_b, torch.tensor([65.0]))


def test_a_squares_critic_reads_each_packed_input_and_its_square():
    """squares, pack 2, standardized by mean 1 and sd 2: a linear net sees (h1, h2, h1², h2²)."""
    critic = models.MLPCritic(models.Standardize(torch.ones(1), torch.full((1,), 2.0)), 4, 1, pack=2, squares=True)
    net = torch.nn.Linear(4, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0]]))
        net.bias.zero_()
    critic.net = net
    # x = 3, 5: h = 1, 2; 1 + 20 + 100 + 4000
    torch.testing.assert_close(critic(torch.tensor([[3.0], [5.0]])), torch.tensor([4121.0]))
    with pytest.raises(ValueError, match="slope"):
        models.MLPCritic(models.Standardize(torch.zeros(1), torch.ones(1)), 4, 1, squares=True, lipschitz=True)


def _max_slope(critic, x: torch.Tensor) -> float:
    """The largest ‖∇V(x)‖ over the rows of x, in x's own units."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    return float(grad.norm(dim=1).max())


def _maximize_mean_difference(critic, p: torch.Tensor, q: torch.Tensor, steps: int) -> None:
    """Train a W1 critic on E_P[V] − E_Q[V] alone (nothing but its normalization holds its slope), let the power
    iterations settle each layer's norm, and leave it in eval mode."""
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    for _ in range(steps):
        v_p, v_q = models.critic_pair(critic, p, q)
        loss = v_q.mean() - v_p.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for _ in range(50):
            critic(p)
    critic.eval()


def test_a_spectrally_normalized_lipschitz_critic_is_1_lipschitz_in_the_datas_units():
    """On data with sds 1 and 0.05, a per-coordinate scaler made a spectrally normalized W1 critic up to
    s/0.05 ≈ 14 times too steep along the narrow coordinate (s the spread, its output's scale). Trained to
    maximize E_P[V] − E_Q[V] with nothing else holding its slope, on a shift of 0.1 along that coordinate,
    its steepest slope anywhere stays ≤ 1 and E_P[V] − E_Q[V] ≤ W1 = 0.1."""
    g = torch.Generator().manual_seed(0)
    sd = torch.tensor([1.0, 0.05])
    p = torch.randn(1000, 2, generator=g) * sd
    q = torch.randn(1000, 2, generator=g) * sd + torch.tensor([0.0, 0.1])
    torch.manual_seed(0)
    critic = models.MLPCritic(models.Standardize.of(p, q), 32, 2, spectral_norm=True, lipschitz=True)
    _maximize_mean_difference(critic, p, q, 150)
    box = torch.rand(5000, 2, generator=g) * 8 - 4  # a box well around the data, in its sds
    assert _max_slope(critic, box * sd) <= 1.02
    assert _max_slope(critic, p) <= 1.02
    with torch.no_grad():
        v_p, v_q = models.critic_pair(critic, p, q)
    estimate = float(v_p.mean() - v_q.mean())
    assert 0.05 < estimate <= 0.1 * 1.02 + 0.01  # W1 = ‖shift‖ = 0.1; the samples' mean shift is 0.1 ± 0.003


def test_a_spectrally_normalized_conv_critic_is_1_lipschitz_in_the_datas_units():
    """4×4 images whose pixels have sds 1, 0.05, 2 and 0.5, shifted by 0.1 in every pixel: W1 = 0.1·√16 = 0.4.
    Normalizing each conv kernel as a matrix (torch's spectral_norm) let a critic trained on E_P[V] − E_Q[V]
    reach slope 3.2 and report 1.12; normalized as operators on the images, its steepest slope anywhere stays
    ≤ 1 and its E_P[V] − E_Q[V] ≤ W1."""
    g = torch.Generator().manual_seed(0)
    sd = torch.tensor([1.0, 0.05, 2.0, 0.5]).repeat(4)
    p = torch.randn(1000, 16, generator=g) * sd
    q = torch.randn(1000, 16, generator=g) * sd + 0.1
    torch.manual_seed(0)
    critic = models.ConvCritic(models.Standardize.of(p, q), (4, 4), 8, spectral_norm=True, lipschitz=True)
    _maximize_mean_difference(critic, p, q, 200)
    box = (torch.rand(5000, 16, generator=g) * 8 - 4) * sd
    assert _max_slope(critic, box) <= 1.02 and _max_slope(critic, p) <= 1.02
    with torch.no_grad():
        v_p, v_q = models.critic_pair(critic, p, q)
    assert 0.2 < float(v_p.mean() - v_q.mean()) <= 0.4 * 1.02 + 0.02


def test_the_operator_norm_of_a_convolution_by_hand():
    """A 1-channel 3×3 kernel of ones with zero padding on n×n images is (I + A) ⊗ (I + A), A the adjacency of
    the path on n nodes, whose eigenvalues are 2cos(πk/(n + 1)): its norm is (1 + 2cos(π/(n + 1)))², 7.85 at n = 6.
    The kernel's norm as a 1×9 matrix, what torch's spectral_norm divides by, is 3."""
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    norm = models.ConvOperatorNorm(conv, (1, 6, 6))
    for _ in range(200):
        norm(conv.weight)
    expected = (1 + 2 * math.cos(math.pi / 7)) ** 2
    with torch.no_grad():
        sigma = float(conv.weight.norm() / norm(conv.weight).norm())
    assert sigma == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_a_lipschitz_critic_standardizes_every_coordinate_by_its_output_scale(kind):
    """V = s·net((x − μ)/s): one s, the spread, for every coordinate, so the net's slopes are V's in the data's units."""
    sd = torch.tensor([1.0, 0.05, 2.0, 0.5]).repeat(4)  # 16 coordinates: a 4×4 image
    scaler = models.Standardize(torch.zeros(16), sd)
    critic = (models.MLPCritic(scaler, 8, 1, lipschitz=True) if kind == "mlp"
              else models.ConvCritic(scaler, (4, 4), 4, lipschitz=True))
    spread = math.sqrt(float(sd.square().mean()))
    torch.testing.assert_close(critic.scaler.std, torch.full((16,), spread))
    assert critic.out_scale == pytest.approx(spread)
    plain = models.MLPCritic(scaler, 8, 1)  # a log-ratio critic keeps its per-coordinate scaler
    torch.testing.assert_close(plain.scaler.std, sd)
    assert plain.out_scale == 1.0


def test_gaussian_model_density_is_the_multivariate_normal_of_its_parameters():
    g = models.GaussianModel(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 0.5]))
    with torch.no_grad():
        g.tril[1, 0] = 0.3
    L = torch.tensor([[2.0, 0.0], [0.3, 0.5]])
    torch.testing.assert_close(g.scale_tril.detach(), L)
    z = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(g(z).detach(), torch.tensor([[1.0, -1.0]]) + z @ L.T)
    x = torch.tensor([[0.0, 0.0]])
    expected = torch.distributions.MultivariateNormal(torch.tensor([1.0, -1.0]), scale_tril=L).log_prob(x)
    torch.testing.assert_close(g.log_prob(x).detach(), expected)
