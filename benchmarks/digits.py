"""Generative models of scikit-learn's 8×8 digits, side by side, in one classifier's feature space.

Rows: the unconditional GAN, the conditional GAN, BiGAN, the adversarial autoencoder (a latent critic
matches its codes to the prior under js), the VAE and the CVAE
(each with its family's defaults, `divgen train --data digits --model M`), and
two classic density baselines fitted to the same training split:
scikit-learn's GaussianMixture (number of components chosen on a validation
split) and a Gaussian kernel density estimate (bandwidth chosen on a
validation split).

Columns, all on the held-out split (359 images) and as many samples:
- Fréchet distance in the feature space of a classifier trained on the
  training split (metrics.classifier), beside the real-train vs real-test
  distance in the same space;
- classes covered (a class covered when the classifier gives it ≥ a quarter of
  its training share) and KL(generated labels ‖ training labels);
- conditional accuracy: samples drawn for class k that the classifier calls k;
- precision / recall (k = 5, the `prdc` package) in the same feature space;
- density models: test log-likelihood in bits per pixel on one dequantized
  representation of the pixels: the 17 grey levels k ∈ {0..16} as
  x = (k + u)/17, u ~ U(0, 1), a density on [0, 1)^64; bits per pixel =
  −log₂ p(x)/64 + log₂ 17, the cost of coding the 17-level pixels (the uniform
  density gives log₂ 17 = 4.09). The VAE and CVAE are trained twice: with
  every default on the pixels as divgen loads them (k/16; a Bernoulli decoder,
  whose samples are its means) for the classifier's columns, and on this
  representation with a Gaussian decoder (`--likelihood gaussian`) so that
  their IWAE bound (k = 1,000) is a bound on the same quantity as the
  baselines' log-likelihood. The GAN rows are trained on the pixels.

The encoders of BiGAN and the adversarial autoencoder are judged by a linear probe (logistic regression from
codes to labels, test accuracy) against a random encoder of the same shape and
raw pixels, and by reconstructions G(E(x)): how often the classifier gives
them the label of x.

    python benchmarks/digits.py            # each model ≤ 10 minutes on 2 CPU cores
    python benchmarks/digits.py --quick    # a few steps each: checks that the script runs
    python benchmarks/digits.py --out R    # keep the runs in R; then draw their samples:
    python benchmarks/digits.py --figure docs/figures/digits.png --runs R
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from divgen import catalog, data, families, metrics, recipes, sample_metrics
from divgen.config import Config
from divgen.results import load_run
from divgen.tables import environment, markdown
from divgen.train import train

LEVELS = 17  # digits' grey levels 0..16
GANS = {"GAN (conv, js)": "conv", "conditional GAN": "cgan", "BiGAN": "bigan", "adversarial autoencoder (js)": "aae"}
VAES = {"VAE": "vae", "CVAE": "cvae"}


def dequantized(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Pixels k/16 as (k + u)/17 with u ~ U(0, 1): a sample of a density on [0, 1)^d."""
    k = torch.round(x * 16)
    return (k + torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))) / LEVELS


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """The inverse map in expectation (u = ½), so that one classifier reads every model's samples."""
    return (x * LEVELS - 0.5) / 16


def bits_per_pixel(log_px: float, d: int = 64) -> float:
    return -log_px / (d * math.log(2)) + math.log2(LEVELS)


def classifier_row(trained, ds, samples: torch.Tensor, conditional_accuracy: float | None) -> dict:
    model = trained.model
    f_test, f_fake = metrics.features(model, ds.holdout), metrics.features(model, samples)
    cover = metrics.class_coverage(metrics.predictions(model, samples), ds.train_labels, ds.n_classes)
    pr = sample_metrics.prdc(f_test, f_fake, max_samples=None)
    return {"fd": metrics.frechet_distance(f_fake, f_test), "covered": cover.covered, "kl": cover.kl,
            "cond": conditional_accuracy, "precision": pr.precision, "recall": pr.recall}


def conditional_accuracy(trained, nets, n: int, seed: int, transform=lambda x: x) -> float | None:
    g = nets["generator"]
    if not g.n_classes:
        return None
    hits = total = 0
    for k in range(g.n_classes):
        x = transform(families.draw(nets, n // g.n_classes, seed + k, label=k))
        hits += int((metrics.predictions(trained.model, x) == k).sum())
        total += len(x)
    return hits / total


def gan_rows(ds, trained, root: Path, steps: int | None, seed: int, results: dict, extra: dict) -> None:
    for label, model in GANS.items():
        t0 = time.perf_counter()
        cfg = Config(data="digits", model=model, seed=seed, figures=False, **({"steps": steps} if steps else {}))
        result = train(cfg, root / model, quiet=True)
        seconds = time.perf_counter() - t0
        samples = families.draw(result.nets, len(ds.holdout), seed + 11)
        row = classifier_row(trained, ds, samples, conditional_accuracy(trained, result.nets, len(ds.holdout), seed + 100))
        results[label] = {**row, "bpd": None, "seconds": seconds}
        if "encoder" in result.nets:
            extra[label] = encoder_probe(ds, trained, result, seed)


def encoder_probe(ds, trained, result, seed: int) -> dict:
    """A model's encoder (BiGAN, AAE): a linear probe of its codes, of a random encoder's and of the pixels, and
    how often the classifier gives a reconstruction G(E(x)) the label of x."""
    from sklearn.linear_model import LogisticRegression

    def probe(train_x, test_x) -> float:
        clf = LogisticRegression(max_iter=3000).fit(train_x, ds.train_labels.numpy())
        return float(clf.score(test_x, ds.holdout_labels.numpy()))

    nets = result.nets
    with torch.no_grad():
        codes = {name: nets["encoder"](split).numpy() for name, split in (("train", ds.train), ("test", ds.holdout))}
        recipe = recipes.build(result.config, ds.train)
        fresh = families.networks(result.config, ds.spec, ds.train, None, recipe, seed + 999)
        random_codes = {name: fresh["encoder"](split).numpy() for name, split in (("train", ds.train), ("test", ds.holdout))}
        recon = nets["generator"](nets["encoder"](ds.holdout))
    agree = float((metrics.predictions(trained.model, recon) == ds.holdout_labels).double().mean())
    return {"probe": probe(codes["train"], codes["test"]), "random": probe(random_codes["train"], random_codes["test"]),
            "pixels": probe(ds.train.numpy(), ds.holdout.numpy()), "reconstruction": agree}


def vae_rows(ds, trained, root: Path, steps: int | None, seed: int, results: dict) -> None:
    """VAE and CVAE, twice each: with every default on the pixels (a Bernoulli decoder, whose
    samples are its means) for the classifier's columns, and with a Gaussian decoder on the
    dequantized pixels for the IWAE bound in bits per pixel."""
    deq_train, deq_test = dequantized(ds.train, seed), dequantized(ds.holdout, seed + 1)
    path = root / "digits-dequantized.npz"
    # every row is training data: the held-out split is scored below, with its own dequantization
    np.savez(path, x=deq_train.reshape(-1, 8, 8).numpy(), y=ds.train_labels.numpy())
    for label, model in VAES.items():
        t0 = time.perf_counter()
        extra = {"steps": steps} if steps else {}
        default = train(Config(data="digits", model=model, seed=seed, figures=False, **extra), root / model, quiet=True)
        cfg = Config(data=str(path), model=model, seed=seed, likelihood="gaussian", holdout=0.0, figures=False, **extra)
        gaussian = train(cfg, root / f"{model}-gaussian", quiet=True)
        seconds = time.perf_counter() - t0
        conditional = catalog.FAMILIES[model].conditional
        bounds = metrics.likelihood_bounds(gaussian.nets, deq_test, ds.holdout_labels if conditional else None, k=1000, seed=seed)
        samples = families.draw(default.nets, len(ds.holdout), seed + 11)
        acc = conditional_accuracy(trained, default.nets, len(ds.holdout), seed + 100)
        results[label] = {**classifier_row(trained, ds, samples, acc), "bpd": bits_per_pixel(bounds.iwae),
                          "seconds": seconds}


def density_rows(ds, trained, seed: int, results: dict, quick: bool) -> None:
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import KernelDensity

    x = dequantized(ds.train, seed).double().numpy()
    test = dequantized(ds.holdout, seed + 1).double().numpy()
    perm = np.random.default_rng(seed).permutation(len(x))
    val, fit = x[perm[: len(x) // 5]], x[perm[len(x) // 5 :]]
    candidates = {
        "GaussianMixture": [GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed, max_iter=200)
                            for k in ((1, 5) if quick else (1, 2, 5, 10, 20, 40))],
        "Gaussian KDE": [KernelDensity(bandwidth=h) for h in ((0.05, 0.1) if quick else np.geomspace(0.01, 0.3, 12))],
    }
    for label, models_ in candidates.items():
        t0 = time.perf_counter()
        best = max(models_, key=lambda m: m.fit(fit).score_samples(val).mean())
        best.fit(fit)
        log_px = float(best.score_samples(test).mean())
        samples = best.sample(len(ds.holdout), random_state=seed) if label == "Gaussian KDE" else best.sample(len(ds.holdout))[0]
        samples = to_pixels(torch.as_tensor(np.asarray(samples), dtype=torch.float32))
        choice = f"{best.n_components} components" if label == "GaussianMixture" else f"bandwidth {best.bandwidth:.3g}"
        results[f"{label} ({choice})"] = {**classifier_row(trained, ds, samples, None), "bpd": bits_per_pixel(log_px),
                                          "seconds": time.perf_counter() - t0}


def figure(root: Path, ds, path: Path, seed: int = 0) -> None:
    """Sample grids of the runs in `root`: data, GAN, conditional GAN (one class per row), VAE,
    and BiGAN reconstructions (columns alternate x and G(E(x)))."""
    from divgen import plots

    nets = {model: load_run(root / model).nets for model in ("conv", "cgan", "vae", "bigan")}  # vae: Bernoulli
    cgan = torch.cat([families.draw(nets["cgan"], 10, seed + k, label=k) for k in range(10)])
    x = torch.cat([ds.holdout[ds.holdout_labels == k][:5] for k in range(10)])
    with torch.no_grad():
        recon = nets["bigan"]["generator"](nets["bigan"]["encoder"](x))
    pairs = torch.stack([x, recon], 1).reshape(-1, x.shape[1])
    panels = [("held-out data", ds.holdout[:100].numpy()), ("GAN (conv)", families.draw(nets["conv"], 100, seed).numpy()),
              ("conditional GAN, a class per row", cgan.numpy()),
              ("VAE (decoder means)", families.draw(nets["vae"], 100, seed).numpy()),
              ("BiGAN: x, G(E(x)) in turn", pairs.numpy())]
    fig, axes = plots.subplots(1, len(panels), 3.2 * len(panels), 3.6)
    plots.image_panels(axes[0], panels, ds.spec.event_shape, rows=10, cols=10)
    plots.save(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="keep the run directories here (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true", help="20 steps per model: checks that the script runs")
    ap.add_argument("--figure", type=Path, help="with --runs: draw the sample grids of those runs to this PNG, and stop")
    ap.add_argument("--runs", type=Path, help="a directory an earlier --out wrote")
    args = ap.parse_args(argv)
    steps = 20 if args.quick else None
    torch.manual_seed(args.seed)
    ds = data.load("digits")
    if args.figure:
        figure(args.runs, ds, args.figure, args.seed)
        return 0
    trained = metrics.classifier(ds)
    f_test = metrics.features(trained.model, ds.holdout)
    take = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(args.seed))[: len(ds.holdout)]
    baseline = metrics.frechet_distance(metrics.features(trained.model, ds.train[take]), f_test)
    root = Path(args.out or tempfile.mkdtemp(prefix="divgen-digits-"))
    root.mkdir(parents=True, exist_ok=True)
    results, extra = {}, {}
    gan_rows(ds, trained, root, steps, args.seed, results, extra)
    vae_rows(ds, trained, root, steps, args.seed, results)
    density_rows(ds, trained, args.seed, results, args.quick)

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    print(environment())
    print(f"digits: {len(ds.train)} training, {len(ds.holdout)} held-out images; classifier held-out accuracy "
          f"{100 * trained.test_accuracy:.1f}%; Fréchet distance real train vs real test: {baseline:.2f}\n")
    rows = [[label, f"{r['fd']:.2f} ({r['fd'] / baseline:.1f}×)", f"{r['covered']}/10", f"{r['kl']:.3f}",
             fmt(None if r["cond"] is None else 100 * r["cond"], ".1f") + ("%" if r["cond"] is not None else ""),
             f"{r['precision']:.2f}", f"{r['recall']:.2f}", fmt(r["bpd"], ".3f"), f"{r['seconds']:.0f}"]
            for label, r in results.items()]
    print(markdown(["model", "Fréchet distance (× real baseline)", "classes covered", "label KL", "conditional accuracy",
                    "precision", "recall", "test bits/pixel (dequantized)", "seconds"], rows))
    if extra:
        print("\nEncoders, on the held-out split: linear probe accuracy of the codes E(x), and reconstructions G(E(x)) "
              "given the label of x by the classifier (chance 10%):\n")
        print(markdown(["model", "codes E(x)", "random encoder, same shape", "raw pixels", "reconstructions keep the class"],
                       [[label, *(f"{100 * b[k]:.1f}%" for k in ("probe", "random", "pixels", "reconstruction"))]
                        for label, b in extra.items()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
