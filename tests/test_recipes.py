"""The terms of every objective: critic and generator losses, sample losses, penalties, constraints."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import ALL_F
from divgen import catalog, config, data, families, objectives, recipes, train
from divgen.config import Config
from divgen.models import critic_pair


def tiny(**kw) -> Config:
    base = dict(data="mog1d", steps=10, width=16, n_data=500, batch_size=64, log_every=5, n_samples=1000, figures=False)
    return Config(**{**base, **kw})


# --------------------------------------------------------- the recipe table ---
@pytest.mark.parametrize("name", [n for n in catalog.DIVERGENCES if ":" not in n] + ["alpha:0.5", "js-weighted:0.3"])
def test_every_divergence_name_has_a_recipe(name):
    cfg = config.resolve(Config(divergence=name))
    recipe = recipes.build(cfg, torch.randn(100, 2))
    assert recipe.objective == cfg.objective == recipes.row(name).kind
    assert recipe.uses_critic != bool(recipe.sample_losses)  # an mlp's objective has one term
    assert recipe.uses_critic == (recipes.row(name).estimator is not None)


def _one_step_gradients(name: str, kind: str):
    """One critic loss and one generator loss of the recipe on a batch: gradients of both sides."""
    cfg = config.resolve(tiny(divergence=name, generator_loss=kind))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)) + 1
    recipe = recipes.build(cfg, x)
    nets = families.networks(cfg, data.Spec((2,)), x, None, recipe, seed=0)
    g, c = nets["generator"], nets["critic"]
    fake = g(torch.randn(64, cfg.noise_dim, generator=torch.Generator().manual_seed(1)))
    loss_c = recipe.adversarial.critic_loss(*critic_pair(c, x, fake.detach()))
    loss_g = recipe.adversarial.generator_loss(None, c(fake))
    grads_c = torch.autograd.grad(loss_c, list(c.parameters()))
    grads_g = torch.autograd.grad(loss_g, list(g.parameters()))
    return loss_c, loss_g, grads_c, grads_g


@pytest.mark.parametrize("kind", ("minimax", "nonsaturating"))
@pytest.mark.parametrize("name", ALL_F)
def test_every_f_divergence_gives_finite_nonzero_gradients_to_both_sides(name, kind):
    loss_c, loss_g, grads_c, grads_g = _one_step_gradients(name, kind)
    assert torch.isfinite(loss_c) and torch.isfinite(loss_g)
    for grads in (grads_c, grads_g):
        assert all(torch.isfinite(t).all() for t in grads)
        assert sum(float(t.abs().sum()) for t in grads) > 0


def test_minimax_generator_loss_is_the_bound_and_nonsaturating_is_not():
    """kl: T = g(V) = V and f*(t) = exp(t − 1). With V = 1 on the model's samples and V = 2 on the data:
    minimax loss_g = −E_Q[f*(T)] = −1, and with real views that move (BiGAN) the bound itself,
    E_P[T] − E_Q[f*(T)] = 2 − 1 = 1; nonsaturating −E_Q[T] = −1, and with moving real views its roles
    flipped, −E_Q[T] + E_P[f*(T)] = −1 + e."""
    v_fake, v_real = torch.ones(4), torch.full((4,), 2.0)
    for kind, alone, with_real in (("minimax", -1.0, 1.0), ("nonsaturating", -1.0, math.e - 1)):
        recipe = recipes.build(config.resolve(Config(divergence="kl", generator_loss=kind)), torch.zeros(4, 1))
        torch.testing.assert_close(recipe.adversarial.generator_loss(None, v_fake), torch.tensor(alone))
        torch.testing.assert_close(recipe.adversarial.generator_loss(v_real, v_fake), torch.tensor(with_real))


def test_a_ratio_runs_logged_estimate_is_the_named_divergences_bound():
    """With ratio the critic is a logistic classifier of l = log p/q; the log reports kl's bound at the critic
    l implies, T = f'(e^l) = 1 + l, f*(T) = e^l: with l = (0, 1) on the data and (0, −1) on the model's samples,
    E_P[1 + l] − E_Q[e^l] = 1.5 − (1 + e⁻¹)/2. The critic itself trains on the gan loss, and a run's log says so."""
    cfg = config.resolve(Config(model="gaussian", data="mog1d", divergence="kl"))
    assert cfg.generator_loss == "ratio"
    adversarial = recipes.build(cfg, torch.zeros(4, 1)).adversarial
    v_real, v_fake = torch.tensor([0.0, 1.0]), torch.tensor([0.0, -1.0])
    torch.testing.assert_close(adversarial.estimate_loss(v_real, v_fake), torch.tensor(-(1.5 - (1 + math.exp(-1)) / 2)))
    # −E_P log σ(l) − E_Q log σ(−l): each side averages log 2 and log(1 + e⁻¹)
    gan = math.log(2) + math.log1p(math.exp(-1.0))
    torch.testing.assert_close(adversarial.critic_loss(v_real, v_fake), torch.tensor(gan))
    assert recipes.build(config.resolve(Config(model="gaussian", data="mog1d", divergence="reverse-kl")),
                         torch.zeros(4, 1)).adversarial.estimate_loss is None


def test_mmd_recipe_has_no_critic_and_its_loss_is_the_unbiased_mmd():
    x = torch.randn(600, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randn(300, 2, generator=torch.Generator().manual_seed(1)) + 0.5
    recipe = recipes.build(config.resolve(Config(divergence="mmd")), x)
    assert not recipe.uses_critic and len(recipe.sample_losses) == 1
    h = objectives.median_bandwidth(x[:1000], x[1000:2000])

    def loss(a, b):  # the recipe's loss of a draw whose views are a (the data) and b (the model)
        draw = train.Draw(data.Batch(a), torch.zeros(len(b), 1), families.Pair((a,), (b,)))
        return recipe.sample_losses[0]({}, draw)

    torch.testing.assert_close(loss(x, y), objectives.mmd2_unbiased(x, y, h))
    assert float(loss(x, y)) > 0.05 > abs(float(loss(x[:300], x[300:])))


def test_wasserstein_lipschitz_methods():
    x = torch.randn(64, 2)
    gp = recipes.build(config.resolve(Config(divergence="wasserstein", lipschitz="gp", penalty_weight=3.0)), x)
    gp = gp.adversarial
    assert gp.penalty is not None and gp.constrain is None and not gp.spectral_norm
    # a linear critic V(x) = w·x has gradient norm ‖w‖ everywhere: penalty = weight · (‖w‖ − 1)²
    w = torch.tensor([3.0, 4.0])
    value = gp.penalty(lambda x, *c: x @ w, (x,), (x + 1,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(value, torch.tensor(3.0 * (5.0 - 1.0) ** 2))

    clip = recipes.build(config.resolve(Config(divergence="wasserstein", lipschitz="clip", clip=0.05)), x)
    critic = torch.nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.fill_(1.0)
    clip.adversarial.constrain(critic)
    assert float(critic.weight.detach().abs().max()) == pytest.approx(0.05)

    sn = recipes.build(config.resolve(Config(divergence="wasserstein", lipschitz="sn")), x)
    nets = families.networks(config.resolve(Config(divergence="wasserstein", lipschitz="sn")), data.Spec((2,)), x, None,
                             sn, seed=0)
    assert sn.adversarial.spectral_norm and any("parametrizations" in k for k in nets["critic"].state_dict())




def test_bigans_cycle_loss_is_the_squared_reconstruction_error_over_the_datas_variance():
    # training data (0, 0) and (2, 4): per-coordinate (unbiased) variances 2 and 8, mean v = 5
    x_train = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    cfg = config.resolve(Config(data="ring8", model="bigan", cycle_weight=0.5))
    assert cfg.objective == "cycle + f-gan"
    recipe = recipes.build(cfg, x_train)
    assert recipe.uses_critic and len(recipe.sample_losses) == 1
    # E(x) = x + 1 and G(z) = 2z: G(E(x)) = 2x + 2; for x = (1, 1), (0, −1) the errors are (3, 3), (2, 1)
    nets = {"encoder": lambda x, y: x + 1, "generator": lambda z: 2 * z}
    batch = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    view = families.VIEWS["pairs"]  # the cycle redraws x from the codes the critic sees
    draw = train.Draw(data.Batch(batch), torch.zeros(2, 2), view.pair(nets, data.Batch(batch), torch.zeros(2, 2)))
    # 0.5 · mean(9 + 9, 4 + 1) / 5 = 0.5 · 11.5 / 5
    assert float(recipe.sample_losses[0](nets, draw)) == pytest.approx(1.15)
    # the weight's units cancel: the data and the errors ten times larger give the same loss
    recipe10 = recipes.build(cfg, 10 * x_train)
    nets10 = {"encoder": lambda x, y: x + 10, "generator": lambda z: 2 * z}
    draw10 = train.Draw(data.Batch(10 * batch), torch.zeros(2, 2), view.pair(nets10, data.Batch(10 * batch), torch.zeros(2, 2)))
    assert float(recipe10.sample_losses[0](nets10, draw10)) == pytest.approx(1.15)


def test_a_bigan_without_its_cycle_trains_by_the_divergence_alone():
    cfg = config.resolve(Config(data="ring8", model="bigan", cycle_weight=0.0))
    assert cfg.objective == "f-gan" and recipes.build(cfg, torch.randn(8, 2)).sample_losses == ()
