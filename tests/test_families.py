"""Model families with latents and labels: conv nets, conditional GAN, BiGAN, VAE and CVAE,
their networks, views and objectives, the classifier metrics, and the likelihood bounds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_clean_failure, metrics_without_timing
from divgen import catalog, config, data, families, metrics, models, objectives, recipes, runs, sample_files, train
from divgen.config import Config
from divgen.errors import InputError
from divgen.results import load_run

FAST = dict(steps=4, width=16, batch_size=32, log_every=2, checkpoint_every=4, n_samples=64, figures=False, noise_dim=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small labelled data the tests write: 8×8 images in [0, 1] and 3-D vectors, 3 classes each."""
    root = tmp_path_factory.mktemp("families")
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    images = np.clip(rng.normal(0.3 + 0.2 * y[:, None, None], 0.1, size=(150, 8, 8)), 0, 1).astype(np.float32)
    vectors = (rng.normal(size=(150, 3)) + 3 * y[:, None]).astype(np.float32)
    np.savez(root / "images.npz", x=images, y=y)
    np.savez(root / "vectors.npz", x=vectors, y=y)
    np.save(root / "unlabelled.npy", vectors)
    return {name: str(root / f"{name}.{'npy' if name == 'unlabelled' else 'npz'}") for name in ("images", "vectors", "unlabelled")}


# every family on both kinds of data it can train on (mlp and gaussian: on vectors, their own tests)
CASES = [(m, d) for m, f in catalog.FAMILIES.items() if m not in ("mlp", "gaussian")
         for d in ("images", "vectors") if not (f.images_only and d == "vectors")]


@pytest.mark.parametrize("model, kind", CASES)
def test_every_family_trains_on_images_and_vectors(model, kind, files, tmp_path):
    result = train.train(Config(data=files[kind], model=model, **FAST), tmp_path / "run", quiet=True)
    spec = data.load(files[kind]).spec
    samples = np.load(result.run / "samples.npy")
    assert samples.shape == (64, *sample_files.stored_shape(spec.event_shape)) and np.isfinite(samples).all()
    rows = runs.read_metrics(result.run)
    assert [r["step"] for r in rows] == [2, 4] and all(math.isfinite(r["estimate"]) for r in rows)
    family = catalog.FAMILIES[model]
    assert ("critic" in result.nets) == (family.compares is not None)
    assert ("encoder" in result.nets) == (family.encoder is not None) == (model in ("bigan", "vae", "cvae", "aae"))
    # conv networks for images, MLPs for vectors
    assert any(isinstance(m, torch.nn.Conv2d) for m in result.nets.modules()) == (kind == "images")
    loaded = load_run(result.run)
    for key, value in result.nets.state_dict().items():
        assert torch.equal(value, loaded.nets.state_dict()[key]), key
    if family.conditional:  # the training labels' frequencies are kept for sampling
        torch.testing.assert_close(loaded.nets["generator"].class_probs, torch.full((3,), 1 / 3))


def test_auto_model_is_conv_for_images_and_mlp_for_vectors(files, tmp_path):
    for kind, expected in (("images", "conv"), ("vectors", "mlp")):
        result = train.train(Config(data=files[kind], **FAST), tmp_path / kind, quiet=True)
        assert result.config.model == expected
        assert json.loads((result.run / "config.json").read_text())["model"] == expected


def test_vae_likelihood_auto_follows_the_data_range(files, tmp_path):
    for kind, expected in (("images", "bernoulli"), ("vectors", "gaussian")):
        cfg = train.train(Config(data=files[kind], model="vae", **FAST), tmp_path / kind, quiet=True).config
        assert cfg.likelihood == expected and cfg.divergence == "kl"


@pytest.mark.parametrize("model, kind, extra, words", [
    ("cgan", "unlabelled", {}, "labelled data"),
    ("cvae", "unlabelled", {}, "labelled data"),
    ("conv", "vectors", {}, "image data"),
    ("vae", "vectors", {"divergence": "js"}, "divergence kl"),
    ("vae", "vectors", {"likelihood": "bernoulli"}, "data in \\[0, 1\\]"),
])
def test_families_refuse_data_they_cannot_train_on(model, kind, extra, words, files, tmp_path):
    with pytest.raises(InputError, match=words):
        train.train(Config(data=files[kind], model=model, **{**FAST, **extra}), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_bigan_resumes_bit_for_bit(files, tmp_path):
    # extended by a resume: a rate that needs no plan; with its cycle loss, off by default on vectors
    cfg = dict(FAST, checkpoint_every=4, lr_schedule="constant", cycle_weight=0.5)
    full = train.train(Config(data=files["vectors"], model="bigan", **{**cfg, "steps": 8}), tmp_path / "full", quiet=True).run
    part = train.train(Config(data=files["vectors"], model="bigan", **{**cfg, "steps": 4}), tmp_path / "part", quiet=True).run
    train.train(Config(data=files["vectors"], model="bigan", **{**cfg, "steps": 8}), part, resume=True, quiet=True)
    assert metrics_without_timing(part) == metrics_without_timing(full)
    a, b = runs.latest_checkpoint(part)["nets"], runs.latest_checkpoint(full)["nets"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_conditional_generator_uses_its_labels_and_draws_them_by_frequency():
    probs = torch.tensor([0.7, 0.0, 0.3])
    nets = torch.nn.ModuleDict({"generator": models.mlp_generator(2, models.Standardize(torch.zeros(3), torch.ones(3)),
                                                                 8, 1, n_classes=3, class_probs=probs)})
    z = torch.randn(10, 2)
    with torch.no_grad():
        assert not torch.equal(nets["generator"](z, torch.zeros(10, dtype=torch.long)), nets["generator"](z, torch.full((10,), 2)))
    _, y = families.draw_labelled(nets, 20_000, seed=0)
    freq = torch.bincount(y, minlength=3).double() / len(y)
    torch.testing.assert_close(freq, probs.double(), atol=0.02, rtol=0)
    _, y2 = families.draw_labelled(nets, 50, seed=0, label=2)
    assert (y2 == 2).all()
    for bad in (1, 3, -1):  # a class never seen in training, or none at all
        with pytest.raises(InputError, match="--label"):
            families.draw(nets, 5, 0, label=bad)


@pytest.mark.parametrize("model, divergence, squares", [("gaussian", "jeffrey", True), ("gaussian", "kl", True),
                                                       ("gaussian", "neyman", False), ("gaussian", "wasserstein", False),
                                                       ("mlp", "jeffrey", False)])
def test_only_a_density_models_log_ratio_critic_reads_the_squares(files, model, divergence, squares):
    """The gaussian family's logistic critic (the `ratio` loss of kl and jeffrey) extrapolates quadratically
    beyond the data; a minimax critic (neyman) and a Wasserstein critic (bounded slope) do not."""
    ds = data.load(files["unlabelled"])
    cfg = config.resolve(Config(data=files["unlabelled"], model=model, divergence=divergence, **FAST), ds)
    nets = families.networks(cfg, ds.spec, ds.train, None, recipes.build(cfg, ds.train), 0)
    assert nets["critic"].squares is squares
    assert nets["critic"].net[0].in_features == (6 if squares else 3)


def test_bigan_generator_step_trains_the_encoder_and_the_critic_step_does_not(files):
    ds = data.load(files["vectors"])
    cfg = config.resolve(Config(data=files["vectors"], model="bigan", **FAST), ds)
    recipe = recipes.build(cfg, ds.train)
    nets = families.networks(cfg, ds.spec, ds.train, None, recipe, 0)
    view, batch, z = families.view(cfg), data.Batch(ds.train[:16]), torch.randn(16, cfg.noise_dim)
    assert view is families.VIEWS["pairs"] and view.real_moves
    pair = view.pair(nets, batch, z)
    loss = recipe.adversarial.generator_loss(nets["critic"](*pair.real), nets["critic"](*pair.fake))
    grads = torch.autograd.grad(loss, list(nets["encoder"].parameters()) + list(nets["generator"].parameters()))
    assert all(float(g.abs().sum()) > 0 for g in grads)
    with torch.no_grad():  # the critic step sees detached views
        real = view.pair(nets, batch, z).real
    assert not any(t.requires_grad for t in real)


def test_bigans_cycle_loss_trains_the_encoder_and_the_generator_and_not_the_critic(files):
    ds = data.load(files["images"])
    cfg = config.resolve(Config(data=files["images"], model="bigan", **FAST), ds)
    assert cfg.cycle_weight > 0 and cfg.objective == "cycle + f-gan"  # on by default on images
    recipe = recipes.build(cfg, ds.train)
    nets = families.networks(cfg, ds.spec, ds.train, None, recipe, 0)
    batch, z = data.Batch(ds.train[:8]), torch.randn(8, cfg.noise_dim)
    draw = train.Draw(batch, z, families.view(cfg).pair(nets, batch, z))
    loss = recipe.sample_losses[0](nets, draw)
    sides = [nets["encoder"], nets["generator"]]
    grads = torch.autograd.grad(loss, [p for net in sides for p in net.parameters()], retain_graph=True)
    assert all(float(g.abs().sum()) > 0 for g in grads)
    assert all(g is None for g in torch.autograd.grad(loss, list(nets["critic"].parameters()), allow_unused=True))


# --------------------------------------------------------------------- VAE ---
def test_elbo_recipe_is_the_negative_elbo_by_hand(files):
    ds = data.load(files["images"])
    cfg = config.resolve(Config(data=files["images"], model="vae", **FAST), ds)
    recipe = recipes.build(cfg, ds.train)
    nets = families.networks(cfg, ds.spec, ds.train, None, recipe, 0)
    x, z = ds.train[:8], torch.randn(8, nets["generator"].noise_dim)
    with torch.no_grad():
        mean, log_var = nets["encoder"](x)
        code = mean + torch.exp(0.5 * log_var) * z[:, : cfg.noise_dim]
        h = nets["generator"].body(code)
        log_px = (x * torch.nn.functional.logsigmoid(h) + (1 - x) * torch.nn.functional.logsigmoid(-h)).sum(1)
        kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(1)
        draw = train.Draw(data.Batch(x), z, None)
        torch.testing.assert_close(recipe.sample_losses[0](nets, draw), (kl - log_px).mean())
    assert not recipe.uses_critic and recipe.objective == "elbo"


def test_gaussian_kl_to_standard_matches_torch_distributions():
    mean, log_var = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    q = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(objectives.gaussian_kl_to_standard(mean, log_var),
                               torch.distributions.kl_divergence(q, p).sum(-1))


class _LinearGaussian:
    """p(z) = N(0, I₂), p(x | z) = N(Wz + b, s²I₃): log p(x) and the exact posterior in closed form."""

    W = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, 0.0]], dtype=torch.float64)
    b, s = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), 0.4
    n_classes = 0

    def log_likelihood(self, x, z, y=None):
        mean = z @ self.W.T + self.b
        return torch.distributions.Normal(mean, self.s).log_prob(x).sum(-1)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(3, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def posterior(self, x, shift=0.0):
        prec = torch.eye(2, dtype=torch.float64) + self.W.T @ self.W / self.s**2
        cov = torch.linalg.inv(prec)
        mean = (x - self.b) @ self.W @ cov.T / self.s**2 + shift
        # a diagonal Gaussian encoder: exact only when the posterior covariance is diagonal, so
        # the exact case below uses W with orthogonal columns
        return mean, torch.log(torch.diagonal(cov)).expand_as(mean)


def test_iwae_is_exact_with_the_true_posterior_and_below_and_rising_in_k_otherwise():
    model = _LinearGaussian()
    model.W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)  # posterior covariance diagonal
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = model.log_px(x)
    w = metrics.log_weights(lambda x, y: model.posterior(x), model, x, None, k=50)
    torch.testing.assert_close(w, exact.expand_as(w))  # every importance weight is p(x)
    off = lambda x, y: model.posterior(x, shift=0.8)  # noqa: E731
    bounds = [float(torch.logsumexp(metrics.log_weights(off, model, x, None, k, seed=1), 0).sub(math.log(k)).mean())
              for k in (1, 30, 3000)]
    assert bounds[0] < bounds[1] < bounds[2] < float(exact.mean()) + 1e-3
    assert float(exact.mean()) - bounds[2] < 0.2 * (float(exact.mean()) - bounds[0])


# -------------------------------------------------------------- classifier ---
def test_frechet_distance_of_gaussian_samples_matches_the_closed_form():
    from ot.gaussian import bures_wasserstein_distance

    rng = np.random.default_rng(0)
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0, 2.5])
    c1 = np.diag([1.0, 2.0, 0.5])
    a = rng.normal(size=(3, 3))
    c2 = a @ a.T + 0.5 * np.eye(3)
    x, y = rng.multivariate_normal(m1, c1, 200_000), rng.multivariate_normal(m2, c2, 200_000)
    expected = bures_wasserstein_distance(m1, m2, c1, c2) ** 2
    assert metrics.frechet_distance(x, y) == pytest.approx(expected, rel=0.02)
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_class_coverage_on_hand_built_predictions():
    train_labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    balanced = metrics.class_coverage(train_labels, train_labels, 3)
    assert balanced.covered == 3 and balanced.kl == pytest.approx(0.0, abs=1e-12)
    collapsed = metrics.class_coverage(torch.tensor([0] * 96 + [1] * 4), train_labels, 3)
    assert collapsed.covered == 1  # class 1 gets 4% of the samples, under a quarter of its 30%
    assert collapsed.kl == pytest.approx(0.96 * math.log(0.96 / 0.5) + 0.04 * math.log(0.04 / 0.3))


def test_classifier_is_cached_by_content_and_retrained_when_stale(files, tmp_path, monkeypatch):
    monkeypatch.setenv("DIVGEN_CACHE", str(tmp_path / "cache"))
    ds = data.load(files["images"])
    first = metrics.classifier(ds)
    assert first.cache.is_file() and first.test_accuracy > 0.8  # three well separated grey levels
    monkeypatch.setattr(metrics, "_fit", lambda *a, **k: pytest.fail("a cached classifier was retrained"))
    again = metrics.classifier(ds)
    assert again.cache == first.cache and again.test_accuracy == first.test_accuracy
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key])
    monkeypatch.undo()
    monkeypatch.setenv("DIVGEN_CACHE", str(tmp_path / "cache"))
    first.cache.write_bytes(b"damaged")  # a damaged cache file is trained again
    assert metrics.classifier(ds).cache == first.cache
    other = data.load(files["vectors"])
    assert metrics.classifier(other).cache != first.cache


# --------------------------------------------------------------------- CLI ---
def test_cli_sample_label_and_encode(divgen, files, tmp_path):
    cgan = train.train(Config(data=files["images"], model="cgan", **FAST), tmp_path / "cgan", quiet=True).run
    result = divgen("sample", cgan, "-n", 7, "-o", tmp_path / "s.npy", "--label", 2)
    assert result.code == 0, result.err
    assert np.load(tmp_path / "s.npy").shape == (7, 1, 8, 8)  # images keep their event shape, N×C×H×W
    assert divgen("sample", cgan, "-n", 7, "-o", tmp_path / "s.npz", "--label", 2).code == 0
    assert divgen("sample", cgan, "-n", 7, "-o", tmp_path / "s.csv", "--label", 2).code == 0
    with np.load(tmp_path / "s.npz") as z:  # the same draws in every format; a CSV row is one flattened image
        np.testing.assert_array_equal(z["x"], np.load(tmp_path / "s.npy"))
        assert z["y"].tolist() == [2] * 7
    np.testing.assert_allclose(np.loadtxt(tmp_path / "s.csv", delimiter=","), np.load(tmp_path / "s.npy").reshape(7, 64),
                               rtol=1e-6)
    assert np.load(cgan / "samples.npy").shape[1:] == (1, 8, 8)
    assert_clean_failure(divgen("sample", cgan, "-n", 7, "-o", tmp_path / "t.npy", "--label", 5))
    assert not (tmp_path / "t.npy").exists()

    cvae = train.train(Config(data=files["images"], model="cvae", **FAST), tmp_path / "cvae", quiet=True).run
    result = divgen("encode", cvae, files["images"], "-o", tmp_path / "z.npy")
    assert result.code == 0, result.err
    assert np.load(tmp_path / "z.npy").shape == (150, FAST["noise_dim"])
    np.save(tmp_path / "x.npy", np.load(files["images"])["x"].reshape(150, -1))
    failures = [
        divgen("encode", cvae, tmp_path / "x.npy", "-o", tmp_path / "z2.npy"),  # a cvae needs labels
        divgen("encode", cgan, files["images"], "-o", tmp_path / "z3.npy"),  # no encoder
        divgen("encode", cvae, files["vectors"], "-o", tmp_path / "z4.npy"),  # other shape
        divgen("encode", cvae, files["images"], "-o", tmp_path / "z.npy"),  # exists
    ]
    for failure in failures:
        assert_clean_failure(failure)
    assert not any((tmp_path / f"z{i}.npy").exists() for i in (2, 3, 4))


# ----------------------------------------------------- adversarial autoencoder ---
def test_aae_critic_compares_prior_draws_with_codes_and_the_generator_side_reconstructs(files):
    """The latent critic sees codes, not data: P is the prior N(0, I) (the step's noise), Q the codes E(x). The
    generator side's loss is the reconstruction −log p(x | E(x)) (Bernoulli, by hand) plus the critic term, and
    its gradient reaches the encoder and the decoder."""
    ds = data.load(files["images"])
    cfg = config.resolve(Config(data=files["images"], model="aae", **FAST), ds)
    assert cfg.objective == "reconstruction + f-gan" and cfg.likelihood == "bernoulli"
    recipe = recipes.build(cfg, ds.train)
    nets = families.networks(cfg, ds.spec, ds.train, None, recipe, 0)
    assert nets["critic"].in_features == cfg.noise_dim  # an MLP on the latent space
    batch, z = data.Batch(ds.train[:8], None), torch.randn(8, cfg.noise_dim)
    pair = families.view(cfg).pair(nets, batch, z)
    code = nets["encoder"](batch.x)
    assert torch.equal(pair.real[0], z) and torch.equal(pair.fake[0], code)
    h = nets["generator"].body(code)
    x = batch.x
    recon = -(x * torch.nn.functional.logsigmoid(h) + (1 - x) * torch.nn.functional.logsigmoid(-h)).sum(1).mean()
    torch.testing.assert_close(recipe.sample_losses[0](nets, train.Draw(batch, z, pair)), recon)
    total = train._generator_loss(recipe, families.view(cfg), nets, train.Draw(batch, z, pair))
    adversarial = recipe.adversarial.generator_loss(None, nets["critic"](code))
    torch.testing.assert_close(total, recon + adversarial)
    grads = torch.autograd.grad(total, list(nets["encoder"].parameters()) + list(nets["generator"].parameters()))
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_aae_with_mmd_is_a_wasserstein_autoencoder_without_a_critic(files):
    """--divergence mmd: reconstruction plus the unbiased MMD² between prior draws and codes (WAE-MMD)."""
    ds = data.load(files["vectors"])
    cfg = config.resolve(Config(data=files["vectors"], model="aae", divergence="mmd", **FAST), ds)
    recipe = recipes.build(cfg, ds.train)
    assert cfg.objective == "reconstruction + mmd" and not recipe.uses_critic and len(recipe.sample_losses) == 2
    nets = families.networks(cfg, ds.spec, ds.train, None, recipe, 0)
    assert "critic" not in nets
    batch, z = data.Batch(ds.train[:32], None), torch.randn(32, nets["generator"].noise_dim)
    pair = families.view(cfg).pair(nets, batch, z)
    h = objectives.median_bandwidth(recipes.prior_sample(cfg.noise_dim)[:1000], recipes.prior_sample(cfg.noise_dim)[1000:])
    expected = objectives.mmd2_unbiased(z[:, : cfg.noise_dim], nets["encoder"](batch.x), h)
    torch.testing.assert_close(recipe.sample_losses[1](nets, train.Draw(batch, z, pair)), expected)


@pytest.mark.slow
def test_aae_matches_its_codes_to_the_prior_and_encodes(files, tmp_path, divgen):
    """Trained briefly on 3 clusters, the codes of held-out data are nearer N(0, I) than an untrained encoder's
    (MMD² against prior draws), and `divgen encode` writes them."""
    cfg = Config(data=files["vectors"], model="aae", steps=600, width=32, noise_dim=2, n_samples=64, figures=False)
    result = train.train(cfg, tmp_path / "run", quiet=True)
    ds = data.load(files["vectors"])
    fresh = families.networks(result.config, ds.spec, ds.train, None, recipes.build(result.config, ds.train), 1)
    prior = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = {name: float(objectives.mmd2_unbiased(prior, nets["encoder"](ds.train), 1.0))
               for name, nets in (("trained", result.nets), ("untrained", fresh))}
    assert gap["trained"] < 0.5 * gap["untrained"], gap
    out = tmp_path / "codes.npy"
    assert divgen("encode", result.run, files["unlabelled"], "-o", out).code == 0
    assert np.load(out).shape == (150, 2)
