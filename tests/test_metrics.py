"""metrics.py: dequantized pixels and their bits, the exact Gaussian KDE, the likelihood bounds of
conditional models (log p(x) and log p(x | y)), and the per-class metrics of conditional samplers."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

from divgen import data, families, metrics
from divgen.models import Standardize


# ---------------------------------------------------------------- pixels ---
def test_pixel_levels_of_digits_8_bit_images_and_other_data():
    digits = torch.arange(17, dtype=torch.float32).repeat(3) / 16  # as data.load("digits") scales 0..16
    eight_bit = torch.from_numpy(np.arange(256, dtype=np.uint8).astype(np.float32) / 255)  # as a uint8 file
    assert metrics.pixel_levels(digits) == 17
    assert metrics.pixel_levels(eight_bit) == 256
    assert metrics.pixel_levels(torch.tensor([0.0, 1.0, 1.0, 0.0])) is None  # binary: on every grid
    assert metrics.pixel_levels(torch.tensor([0.0, 0.3, 1.0])) is None  # on neither grid
    assert metrics.pixel_levels(torch.tensor([0.0, 0.5, 2.0])) is None  # outside [0, 1]
    assert metrics.pixel_levels(data.load("digits").holdout) == 17


def test_dequantized_pixels_stay_in_their_level_bin():
    k = torch.arange(17, dtype=torch.float32).repeat(200)
    x = metrics.dequantized(k / 16, 17, seed=3)
    assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) < 1
    torch.testing.assert_close(torch.floor(x.double() * 17), k.double())  # level k lies in [k/17, (k+1)/17)
    u = x.double() * 17 - k.double()  # the noise: uniform on [0, 1)
    assert abs(float(u.mean()) - 0.5) < 0.02 and abs(float(u.var()) - 1 / 12) < 0.005
    assert torch.equal(x, metrics.dequantized(k / 16, 17, seed=3))
    assert not torch.equal(x, metrics.dequantized(k / 16, 17, seed=4))


def test_bits_per_dim_by_hand():
    # the uniform density on [0, 1)^d (log p = 0) codes 17-level pixels in log₂ 17 bits each
    assert metrics.bits_per_dim(0.0, 64, 17) == pytest.approx(math.log2(17))
    # a density of e^-10 on 5 dimensions, no levels: 10/(5 ln 2) bits each
    assert metrics.bits_per_dim(-10.0, 5) == pytest.approx(2 / math.log(2))
    assert metrics.bits_per_dim(-10.0, 5, 256) == pytest.approx(2 / math.log(2) + 8)


# ------------------------------------------------------------------- KDE ---
def test_kde_matches_a_mixture_of_three_gaussians():
    centres = np.array([[0.0, 0.0], [1.0, 2.0], [-1.5, 0.5]])
    h = 0.7
    x = np.array([[0.2, -0.1], [1.0, 1.0], [5.0, 5.0], [-1.5, 0.5]])
    by_hand = np.log(sum(multivariate_normal(c, h**2 * np.eye(2)).pdf(x) for c in centres) / 3)
    np.testing.assert_allclose(metrics.kde_log_density(x, centres, h), by_hand, rtol=1e-12)
    # one block per row gives the same numbers
    np.testing.assert_allclose(metrics.kde_log_density(x, centres, h, block_elements=1), by_hand, rtol=1e-12)


def test_kde_never_exceeds_its_largest_kernel_in_64_dimensions():
    """A mixture's density lies between its largest component over n and its largest component:
    the bound scikit-learn's KernelDensity broke (by up to 158 nats) on 64-D digits at small bandwidths."""
    ds = data.load("digits")
    train = metrics.dequantized(ds.train, 17, 0).double().numpy()
    test = metrics.dequantized(ds.holdout, 17, 1).double().numpy()[:100]
    for h in (0.02, 0.05, 0.087):
        log_p = metrics.kde_log_density(test, train, h)
        sq = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1)  # (100, n), directly
        largest = (-sq / (2 * h**2)).max(1) - 32 * math.log(2 * math.pi * h**2)  # log of the largest kernel
        assert np.all(log_p <= largest + 1e-9)
        assert np.all(log_p >= largest - math.log(len(train)) - 1e-9)


def test_kde_bandwidth_is_chosen_on_training_rows():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 1))
    assert metrics.kde_bandwidth(train, (1e-3, 0.4, 50.0)) == 0.4  # too narrow and too wide both lose
    # the data set's scale sets the choice: the same candidates on data 100× wider choose the widest
    assert metrics.kde_bandwidth(100 * train, (1e-3, 0.4, 50.0)) == 50.0


def test_kde_samples_are_centres_plus_gaussian_noise():
    x = metrics.kde_sample(np.array([[3.0, -1.0]]), 0.5, 20_000, seed=0)
    np.testing.assert_allclose(x.mean(0), [3.0, -1.0], atol=0.02)
    np.testing.assert_allclose(x.std(0), [0.5, 0.5], atol=0.01)


# ------------------------------------------------------------ likelihood ---
class _ClassGaussian(nn.Module):
    """p(z) = N(0, I₂), p(x | z, y) = N(Wz + b_y, s²I₃), W with orthogonal columns: the posterior
    q(z | x, y) is an exact diagonal Gaussian, so every importance weight equals p(x | y)."""

    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    B = torch.tensor([[0.0, 0.0, 0.0], [3.0, -1.0, 2.0]], dtype=torch.float64)  # b_y for y = 0, 1
    s = 0.5
    n_classes = 2

    def __init__(self, probs):
        super().__init__()
        self.class_probs = torch.tensor(probs)

    def log_likelihood(self, x, z, y=None):  # z (S, B, 2), y (B,)
        return torch.distributions.Normal(z @ self.W.T + self.B[y], self.s).log_prob(x).sum(-1)

    def posterior(self, x, y):
        cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + self.W.T @ self.W / self.s**2)
        mean = (x - self.B[y]) @ self.W @ cov.T / self.s**2
        return mean, torch.log(torch.diagonal(cov)).expand_as(mean)

    def log_p(self, x, y):  # log p(x | y), closed form
        cov = self.W @ self.W.T + self.s**2 * torch.eye(3, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.B[y], cov).log_prob(x)


class _Encoder(nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, x, y):
        return self.decoder.posterior(x, y)


def test_cvae_bounds_of_log_p_x_mix_the_classes_by_their_frequencies():
    dec = _ClassGaussian([0.25, 0.75])
    nets = {"encoder": _Encoder(dec), "generator": dec}
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + torch.tensor([1.5, 0, 1])
    y = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    given_y = metrics.likelihood_bounds(nets, x, y, k=20)
    assert given_y.iwae == pytest.approx(float(dec.log_p(x, y).mean()), rel=1e-9)
    marginal = metrics.marginal_likelihood_bounds(nets, x, k=20)
    # log p(x) = log(¼ p(x | 0) + ¾ p(x | 1)), with scipy's densities
    cov = (dec.W @ dec.W.T + dec.s**2 * torch.eye(3, dtype=torch.float64)).numpy()
    p = sum(pi * multivariate_normal(dec.B[c].numpy(), cov).pdf(x.numpy()) for c, pi in ((0, 0.25), (1, 0.75)))
    assert marginal.iwae == pytest.approx(float(np.log(p).mean()), rel=1e-9)
    assert marginal.elbo == pytest.approx(marginal.iwae, rel=1e-9)  # exact posterior: the ELBO is exact too
    assert (marginal.n, marginal.k) == (7, 20)
    # a class the model never saw adds nothing
    only_one = _ClassGaussian([0.0, 1.0])
    alone = metrics.marginal_likelihood_bounds({"encoder": _Encoder(only_one), "generator": only_one}, x, k=5)
    assert alone.iwae == pytest.approx(float(only_one.log_p(x, torch.ones(7, dtype=torch.int64)).mean()), rel=1e-9)


def test_likelihood_bounds_score_the_decoders_moving_average_when_the_run_keeps_one():
    # under --ema the samples come from the averaged decoder, so the likelihood must be that model's
    average, live = _ClassGaussian([0.5, 0.5]), _ClassGaussian([0.5, 0.5])
    live.s = 2.0  # the live decoder is another model
    nets = {"encoder": _Encoder(average), "generator": live, families.EMA: average}
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 1, 0, 1])
    bounds = metrics.likelihood_bounds(nets, x, y, k=10)
    assert bounds.iwae == pytest.approx(float(average.log_p(x, y).mean()), rel=1e-9)
    assert bounds.iwae != pytest.approx(float(live.log_p(x, y).mean()), rel=1e-3)


class _PriorEncoder(nn.Module):
    def forward(self, x, y=None):  # q(z | x) = p(z) = N(0, 1): log w = log p(x | z)
        return torch.zeros(len(x), 1, dtype=x.dtype), torch.zeros(len(x), 1, dtype=x.dtype)


class _StandardNormal(nn.Module):
    """p(x | z) = N(x; 0, I) whatever z: every importance weight is N(x; 0, I)."""

    n_classes = 0

    def log_likelihood(self, x, z, y=None):
        return torch.distributions.Normal(0.0, 1.0).log_prob(x.double()).sum(-1).expand(z.shape[:-1])


def test_held_out_likelihood_scores_dequantized_pixels_and_names_the_unit():
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 17, size=(40, 64)).astype(np.float32) / 16)
    ds = data.Dataset("grid", pixels[:30], pixels[30:], event_shape=(8, 8))
    nets = {"encoder": _PriorEncoder(), "generator": _StandardNormal()}
    out = asdict(metrics.held_out_likelihood(ds, nets, k=3))
    x = metrics.dequantized(ds.holdout, 17, metrics.HOLDOUT_NOISE_SEED).double()  # what the benchmark scores
    log_p = float(torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1).mean())
    b = out["marginal"]
    assert b["levels"] == 17 and out["conditional"] is None
    assert b["iwae"] == pytest.approx(log_p, rel=1e-6)
    assert b["iwae_bits_per_dim"] == pytest.approx(-log_p / (64 * math.log(2)) + math.log2(17), rel=1e-6)
    # data on no grid (or not images) are scored as they are, with no levels
    vectors = data.Dataset("vectors", pixels[:30] + 0.01, pixels[30:] + 0.01, event_shape=(64,))
    plain = asdict(metrics.held_out_likelihood(vectors, nets, k=3).marginal)
    log_p = float(torch.distributions.Normal(0.0, 1.0).log_prob(vectors.holdout.double()).sum(1).mean())
    assert plain["levels"] is None and plain["iwae"] == pytest.approx(log_p, rel=1e-6)
    assert plain["iwae_bits_per_dim"] == pytest.approx(-log_p / (64 * math.log(2)), rel=1e-6)


# ------------------------------------------------------ conditional samples ---
class _ClassSampler(nn.Module):
    """A conditional 'generator' drawing class y from N(μ_{shift(y)}, 0.3²I): shift 0 is right, 1 swaps classes."""

    def __init__(self, means, shift: int):
        super().__init__()
        self.means, self.shift = means, shift
        self.n_classes, self.noise_dim = len(means), means.shape[1]
        self.class_probs = torch.full((len(means),), 1 / len(means))
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for families.draw

    def forward(self, z, y):
        return self.means[(y + self.shift) % self.n_classes] + 0.3 * z


def test_intra_class_frechet_sees_swapped_classes_that_the_overall_distance_does_not():
    means = torch.tensor([[0.0, 0, 0, 0], [4.0, 0, 0, 0], [0.0, 4, 0, 0]])
    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.arange(n) % 3
        return means[y] + 0.3 * torch.randn(n, 4, generator=g), y

    (train, y_train), (hold, y_hold) = split(300), split(90)
    ds = data.Dataset("blobs", train, hold, event_shape=(4,), train_labels=y_train, holdout_labels=y_hold)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = metrics.Classifier(ds.spec, Standardize.of(train)).eval()  # random features see the blobs apart
    right = metrics.conditional_metrics(model, ds, {"generator": _ClassSampler(means, 0)}, seed=1)
    swapped = metrics.conditional_metrics(model, ds, {"generator": _ClassSampler(means, 1)}, seed=1)
    assert right.counts == swapped.counts == [30, 30, 30]  # held-out rows per class, as many samples and train rows
    assert right.frechet_train_vs_test == swapped.frechet_train_vs_test  # the real baseline: same rows, same seed
    assert right.frechet_model_vs_test < 2 * right.frechet_train_vs_test
    assert swapped.frechet_model_vs_test > 10 * right.frechet_model_vs_test
    # over all classes at once the swapped sampler draws the same mixture: the overall distance is no worse
    f_hold = metrics.features(model, hold)
    overall = [metrics.frechet_distance(metrics.features(model, families.draw({"generator": _ClassSampler(means, s)},
                                                                             900, seed=2)), f_hold) for s in (0, 1)]
    assert overall[1] < 1.5 * overall[0] + 0.05 * right.frechet_train_vs_test
    unconditional = _ClassSampler(means, 0)
    unconditional.n_classes = 0
    assert metrics.conditional_metrics(model, ds, {"generator": unconditional}) is None


def test_held_out_likelihood_of_a_conditional_model_names_both_bounds():
    dec = _ClassGaussian([0.25, 0.75])
    nets = {"encoder": _Encoder(dec), "generator": dec}
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.arange(12) % 2
    ds = data.Dataset("vectors", x, x, event_shape=(3,), train_labels=y, holdout_labels=y)
    out = asdict(metrics.held_out_likelihood(ds, nets, k=20))
    assert out["conditional"]["k"] == 20 and out["marginal"]["k"] == 10  # 20 draws in all: 10 per class
    assert out["marginal"]["levels"] is None  # vectors: scored as given
    assert out["conditional"]["iwae"] == pytest.approx(float(dec.log_p(x, y).mean()), rel=1e-9)
    both = torch.stack([dec.log_p(x, torch.zeros(12, dtype=torch.int64)), dec.log_p(x, torch.ones(12, dtype=torch.int64))])
    log_px = torch.logsumexp(both + torch.tensor([0.25, 0.75], dtype=torch.float64).log()[:, None], 0)
    assert out["marginal"]["iwae"] == pytest.approx(float(log_px.mean()), rel=1e-9)


@pytest.mark.slow
def test_evaluate_scores_a_cvae_on_dequantized_pixels_with_per_class_and_copying_checks(tmp_path, monkeypatch):
    from divgen import evaluate, train
    from divgen.config import Config
    from divgen.results import load_run

    monkeypatch.setenv("DIVGEN_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    levels = (rng.integers(0, 17, size=(150, 8, 8)) * (y[:, None, None] + 1) // 3).clip(0, 16)
    np.savez(tmp_path / "img.npz", x=(levels / 16).astype(np.float32), y=y)  # 17 grey levels, as digits
    cfg = Config(data=str(tmp_path / "img.npz"), model="cvae", steps=4, width=16, batch_size=32, log_every=2,
                 checkpoint_every=4, n_samples=64, figures=False, noise_dim=4)
    run = train.train(cfg, tmp_path / "run", quiet=True).run
    result = evaluate.evaluate_run(run)
    ds = data.load(str(tmp_path / "img.npz"))
    # the bound is taken on the dequantized held-out pixels, with the benchmark's fixed noise
    x = metrics.dequantized(ds.holdout, 17, metrics.HOLDOUT_NOISE_SEED)
    given_y = metrics.likelihood_bounds(load_run(run).nets, x, ds.holdout_labels, k=1000, levels=17)
    assert result["likelihood"]["conditional"]["iwae"] == pytest.approx(given_y.iwae, rel=1e-9)
    assert result["likelihood"]["marginal"]["levels"] == 17
    intra = result["classifier_metrics"]["intra_class_frechet"]
    assert intra["counts"] == [10, 10, 10] and intra["train_vs_test"] >= 0
    assert result["copying"]["n_fake"] == result["copying"]["n_heldout"] == 30
    table = evaluate.report(result)
    for words in ("bits per dimension (dequantized 17-level pixels)", "log p(x given y): IWAE, k = 1000",
                  "log p(x), summed over the classes, k per class: IWAE, k = 333", "intra-class Fréchet distance",
                  "data copying"):
        assert words in table


def test_conditional_metrics_score_a_stated_random_subset_of_many_classes(monkeypatch):
    """Above MAX_CLASSES classes, a random subset is scored and the note says so; below, every class."""
    from divgen import config, recipes

    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 6
    x = torch.randn(120, 3, generator=g) + y[:, None].float()
    ds = data.Dataset(name="t", train=x[:60], holdout=x[60:], event_shape=(3,), train_labels=y[:60],
                      holdout_labels=y[60:])
    cfg = config.resolve(config.Config(data="mog1d", model="cgan", width=8))
    nets = families.networks(cfg, ds.spec, ds.train, ds.train_labels, recipes.build(cfg, ds.train), 0).eval()
    model = metrics.Classifier(ds.spec, Standardize.of(ds.train)).eval()
    every = metrics.conditional_metrics(model, ds, nets)
    assert every.note == "" and sum(c > 0 for c in every.counts) == 6
    monkeypatch.setattr(metrics, "MAX_CLASSES", 4)
    some = metrics.conditional_metrics(model, ds, nets)
    assert sum(c > 0 for c in some.counts) == 4 and some.note.startswith("4 of the 6 classes")
