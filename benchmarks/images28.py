"""Generative models of the built-in 28×28 syndigits, side by side, in the classifier's feature space and against
the factors that drew each image.

Rows: every image family with every default (`Config(data="syndigits", model=M, seed=S)`; figures off): the
convolutional GAN, the conditional GAN, BiGAN, the VAE, the CVAE and the adversarial autoencoder; and a
GaussianMixture baseline (scikit-learn, full covariances) fitted to GMM_ROWS training rows drawn at random, its
number of components chosen on a fifth of them set aside (validation rows are always training rows, never test
rows), then refitted on all of them.

Columns, on the held-out split (10,000 images) and as many samples:
- Fréchet distance in the feature space of the syndigits classifier (metrics.classifier, as `divgen evaluate`
  trains it), beside the distance between as many real training rows and the held-out rows;
- classes covered (≥ a quarter of a class's training share) and KL(generated labels ‖ training labels);
- for the conditional models, conditional accuracy and the intra-class Fréchet distance beside the same
  figure for real training rows at the same counts (metrics.conditional_metrics);
- precision / recall / density / coverage (sample_metrics.prdc, k = 5, at most 5,000 rows a side);
- data copying (sample_metrics.data_copying, in pixels): a sign test of whether COPY_ROWS samples lie nearer
  a random set of training rows than an equal number of held-out rows; a row fails (copies) when Z < −3;
- likelihood models: held-out bits per pixel of log p(x) on dequantized pixels (metrics.held_out_likelihood,
  as `divgen evaluate` scores them: the 256 levels k as (k + u)/256, the noise fixed), the IWAE bound with
  LIKELIHOOD_K draws on the first LIKELIHOOD_ROWS held-out images; the CVAE's log p(x) is
  log Σ_y π_y p(x | y), its log p(x | y) in a column of its own. As in benchmarks/digits.py, the VAE and the
  CVAE are trained twice: with every default on the pixels as divgen loads them (a Bernoulli decoder, whose
  samples are its means) for every other column, and with `--likelihood gaussian` on the dequantized training
  pixels, whose IWAE bound is a bound on the same log p(x) as the GaussianMixture's. The default run's bits
  stand in a column of their own: a Bernoulli term integrates to at most ½ over a pixel's [0, 1), so they
  bound no code length of the pixels and are at least 1 bit/pixel looser than a normalized decoder;
- wall-clock and CPU seconds (time.process_time: every thread's time) of training or fitting.

Factor probes: every model with an encoder (BiGAN, VAE, CVAE, AAE) encodes PROBE_FIT training rows and
PROBE_TEST held-out rows (results.encode: E(x), or the posterior mean; the CVAE given the true label). A
linear probe on the standardized codes is fitted to the training rows and scored on the held-out rows:
logistic regression for the digit and the font (test accuracy; chance 0.1 and 1/22), ridge regression for
angle, scale, thickness and shift x / y (test R²; 0 is the mean's; the penalty chosen by leave-one-out on the
fitted rows). Beside each model, the same probes on a random encoder of the same shape (the family's networks
at their initial weights), and once on raw pixels. The CVAE's encoder is given the true label, so its codes,
and a random CVAE encoder's even more, can carry the digit without having learned it from x.

    python benchmarks/images28.py                       # every model, seed 0: the VAE alone trains ~20 min on 1 thread (two runs)
    python benchmarks/images28.py --models vae --seeds 0 1 2 --out R --json R/vae.json
    python benchmarks/images28.py --quick               # 1,000 + 200 images, 3 steps each: checks that it runs
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from divgen import catalog, data, families, jsonout, metrics, recipes, results, sample_metrics, syndigits
from divgen.config import Config
from divgen.tables import environment
from divgen.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import Clock, cell, table  # noqa: E402  (the digits benchmark's timing and mean ± sd (worst) cells)

LEVELS = 256  # syndigits' grey levels k/255
MODELS = {"conv": "GAN (conv, js)", "cgan": "conditional GAN", "bigan": "BiGAN", "vae": "VAE", "cvae": "CVAE",
          "aae": "adversarial autoencoder (js)"}
GMM = "GaussianMixture"
CLASSES = ("digit", "font")  # factor -> logistic regression, test accuracy
REGRESSED = ("angle", "scale", "thickness", "shift_x", "shift_y")  # factor -> ridge regression, test R²


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much of the split each measurement uses: the full run, or --quick's small split and few steps."""

    steps: int | None  # None: the family's default
    batch_size: int | None  # None: the family's default
    n_samples: int | None  # samples.npy of each run; None: the default (10,000)
    n_train: int  # syndigits.N_TRAIN for the run (the held-out split: n_test)
    n_test: int
    copy_rows: int  # samples and held-out rows of the data-copying check (against every training row)
    likelihood_rows: int  # held-out rows scored in bits per pixel
    likelihood_k: int  # IWAE draws per image
    gmm_rows: int  # training rows the GaussianMixture sees
    gmm_components: tuple[int, ...]
    probe_fit: int  # training rows the factor probes are fitted to
    probe_test: int  # held-out rows they are scored on
    classifier_steps: int | None  # None: as `divgen evaluate` trains it


FULL = Sizes(None, None, None, 60_000, 10_000, 1_000, 2_000, 100, 2_000, (1, 2, 5), 5_000, 2_000, None)
QUICK = Sizes(3, 16, 200, 1_000, 200, 100, 50, 4, 300, (1, 2), 200, 100, 5)

SAMPLE_COLUMNS = [
    ("fd", "Fréchet distance", ".2f", +1), ("fd_ratio", "× real", ".1f", +1),
    ("intra_fd", "intra-class Fréchet", ".1f", +1), ("intra_fd_ratio", "× real, same counts", ".1f", +1),
    ("covered", "classes covered", ".0f", -1), ("kl", "label KL", ".3f", +1),
    ("cond", "conditional accuracy", ".3f", -1), ("precision", "precision", ".2f", -1),
    ("recall", "recall", ".2f", -1), ("density", "density", ".2f", -1), ("coverage", "coverage", ".2f", -1),
    ("copy_z", "data copying Z (fails < −3)", ".1f", -1),
]
COST_COLUMNS = [
    ("bpd", "test bits/pixel, log p(x)", ".3f", +1), ("bpd_given_y", "bits/pixel, log p(x given y)", ".3f", +1),
    ("bpd_bernoulli", "default Bernoulli decoder (no density)", ".3f", +1),
    ("seconds", "wall s", ".0f", +1), ("cpu_seconds", "CPU s", ".0f", +1),
]
PROBE_COLUMNS = [
    ("digit", "digit (accuracy)", ".3f", -1), ("font", "font (accuracy)", ".3f", -1),
    ("angle", "angle (R²)", ".2f", -1), ("scale", "scale (R²)", ".2f", -1),
    ("thickness", "thickness (R²)", ".2f", -1), ("shift_x", "shift x (R²)", ".2f", -1),
    ("shift_y", "shift y (R²)", ".2f", -1),
]


# ------------------------------------------------------------------ samples ---
def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """The inverse of metrics.dequantized in expectation (u = ½): the classifier reads the mixture's samples."""
    return (x * LEVELS - 0.5) / (LEVELS - 1)


def sample_row(trained, ds, samples: torch.Tensor, baseline: float, sizes: Sizes, nets=None, seed: int = 0) -> dict:
    """The sample columns of one row; `nets`, a conditional model's networks, adds its per-class columns."""
    model = trained.model
    f_test, f_fake = metrics.features(model, ds.holdout), metrics.features(model, samples)
    cover = metrics.class_coverage(metrics.predictions(model, samples), ds.train_labels, ds.n_classes)
    pr = sample_metrics.prdc(f_test, f_fake, seed=seed)
    copying = sample_metrics.data_copying(ds.train, ds.holdout[: sizes.copy_rows], samples[: sizes.copy_rows])
    fd = metrics.frechet_distance(f_fake, f_test)
    row = {"fd": fd, "fd_ratio": fd / baseline, "covered": cover.covered, "kl": cover.kl,
           "precision": pr.precision, "recall": pr.recall, "density": pr.density, "coverage": pr.coverage,
           "copy_z": copying.z, "cond": None, "intra_fd": None, "intra_fd_ratio": None}
    per_class = None if nets is None else metrics.conditional_metrics(model, ds, nets, seed)
    if per_class is not None:
        row.update(cond=per_class.accuracy, intra_fd=per_class.frechet_model_vs_test,
                   intra_fd_ratio=per_class.frechet_model_vs_test / per_class.frechet_train_vs_test)
    return row


def likelihood_split(ds, rows: int):
    """The dataset with only its first `rows` held-out images, which the likelihood columns score."""
    return dataclasses.replace(ds, holdout=ds.holdout[:rows], holdout_labels=ds.holdout_labels[:rows])


# ------------------------------------------------------------------- probes ---
def standardized(fit_x: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets centred and scaled by the fitted rows' mean and standard deviation, the deviation
    floored at a tenth of the mean feature's: a border pixel almost always black on the fitted rows would
    otherwise turn a faint stroke on a held-out row into a value of hundreds."""
    mean, sd = fit_x.mean(0), fit_x.std(0)
    sd = np.maximum(sd, 0.1 * sd.mean() + 1e-12)
    return (fit_x - mean) / sd, (test_x - mean) / sd


def probe_scores(fit_x: np.ndarray, test_x: np.ndarray, fit_f: dict, test_f: dict, seed: int) -> dict:
    """Linear probes from features to each factor: test accuracy (logistic regression) for CLASSES,
    test R² (ridge regression) for REGRESSED, on the standardized features."""
    from sklearn.linear_model import LogisticRegression, RidgeCV

    fit_x, test_x = standardized(np.asarray(fit_x, np.float64), np.asarray(test_x, np.float64))
    scores = {}
    for name in CLASSES:
        probe = LogisticRegression(max_iter=2000, random_state=seed)
        scores[name] = float(probe.fit(fit_x, fit_f[name]).score(test_x, test_f[name]))
    for name in REGRESSED:
        # the penalty by leave-one-out on the fitted rows: 784 pixels against a few hundred rows overfit without it
        probe = RidgeCV(alphas=np.logspace(-2, 5, 15))
        scores[name] = float(probe.fit(fit_x, fit_f[name]).score(test_x, test_f[name]))
    return scores


def factor_probes(ds, factors, result, sizes: Sizes, seed: int) -> tuple[dict, dict]:
    """The probes of a trained model's codes, and of a random encoder of the same family and shape."""
    fit, test = slice(0, sizes.probe_fit), slice(0, sizes.probe_test)
    recipe = recipes.build(result.config, ds.train)
    fresh = families.networks(result.config, ds.spec, ds.train, ds.train_labels, recipe, seed + 999).eval()
    out = []
    for trained in (result, dataclasses.replace(result, nets=fresh)):
        codes = [results.encode(trained, x[rows], y[rows], ds.spec.event_shape).numpy()
                 for x, y, rows in ((ds.train, ds.train_labels, fit), (ds.holdout, ds.holdout_labels, test))]
        out.append(probe_scores(*codes, factors["fit"], factors["test"], seed))
    return out[0], out[1]


def probe_factors(sizes: Sizes) -> dict:
    """The probed factors of the rows the probes use: {"fit": {factor: (n,)}, "test": ...}."""
    split = syndigits.load()
    return {part: {k: v[:n] for k, v in f.arrays().items() if k in CLASSES + REGRESSED}
            for part, f, n in (("fit", split.factors_train, sizes.probe_fit),
                               ("test", split.factors_test, sizes.probe_test))}


# --------------------------------------------------------------------- rows ---
def model_rows(ds, trained, baseline: float, root: Path, sizes: Sizes, seed: int, models: list[str], factors: dict,
               rows: dict, probes: dict) -> None:
    """Train each family with its defaults, then score its samples, likelihood and codes."""
    scored = likelihood_split(ds, sizes.likelihood_rows)
    for model in models:
        label = MODELS[model]
        clock = Clock()
        quick = {name: getattr(sizes, name) for name in ("steps", "batch_size", "n_samples") if getattr(sizes, name)}
        cfg = Config(data="syndigits", model=model, seed=seed, figures=False, **quick)
        result = train(cfg, root / model, quiet=True)
        cost = clock.seconds()
        samples = families.draw(result.nets, len(ds.holdout), seed + 11)
        row = {**sample_row(trained, ds, samples, baseline, sizes, result.nets, seed + 100), **cost,
               "bpd": None, "bpd_given_y": None}
        if catalog.FAMILIES[model].own_loss == "elbo":  # VAE, CVAE: the IWAE bound is a bound on log p(x)
            second = Clock()
            gaussian = train(dataclasses.replace(cfg, data=str(dequantized_file(ds, root, seed)), likelihood="gaussian",
                                                 holdout=0.0), root / f"{model}-gaussian", quiet=True)
            row.update({key: row[key] + value for key, value in second.seconds().items()})  # both trainings
            bounds = metrics.held_out_likelihood(scored, gaussian.nets, k=sizes.likelihood_k, seed=seed)
            bernoulli = metrics.held_out_likelihood(scored, result.nets, k=sizes.likelihood_k, seed=seed)
            row.update(bpd=bounds.marginal.iwae_bits_per_dim,
                       bpd_given_y=bounds.conditional.iwae_bits_per_dim if bounds.conditional else None,
                       bpd_bernoulli=bernoulli.marginal.iwae_bits_per_dim)
        rows[label] = row
        if "encoder" in result.nets:
            probes[label], probes[f"{label}: random encoder"] = factor_probes(ds, factors, result, sizes, seed)


def dequantized_file(ds, root: Path, seed: int) -> Path:
    """The training images as (k + u)/256 in an .npz with their labels, written once per seed: the data of the
    likelihood rows' Gaussian-decoder runs (every training row; the held-out split keeps its own noise)."""
    path = root / "syndigits-dequantized.npz"
    if not path.exists():
        x = metrics.dequantized(ds.train, LEVELS, seed).reshape(-1, *ds.spec.event_shape[-2:])
        np.savez(path, x=x.numpy(), y=ds.train_labels.numpy())
    return path


def mixture_row(ds, trained, baseline: float, sizes: Sizes, seed: int, rows: dict) -> None:
    """GaussianMixture on dequantized training pixels: components chosen on a validation fifth, refitted on all."""
    from sklearn.mixture import GaussianMixture

    clock = Clock()
    pick = np.random.default_rng(seed).permutation(len(ds.train))[: sizes.gmm_rows]
    x = metrics.dequantized(ds.train[torch.from_numpy(pick)], LEVELS, seed).double().numpy()
    val, fit = x[: len(x) // 5], x[len(x) // 5 :]
    mixtures = [GaussianMixture(c, covariance_type="full", reg_covar=1e-4, random_state=seed, max_iter=100)
                for c in sizes.gmm_components]
    best = max(mixtures, key=lambda m: m.fit(fit).score_samples(val).mean()).fit(x)
    cost = clock.seconds()
    scored = likelihood_split(ds, sizes.likelihood_rows).holdout  # the rows the VAEs' bits are of, the same noise
    test = metrics.dequantized(scored, LEVELS, metrics.HOLDOUT_NOISE_SEED).double().numpy()
    drawn = best.sample(len(ds.holdout))[0]  # ordered by component: shuffled, since some columns take the first rows
    samples = to_pixels(torch.as_tensor(drawn[np.random.default_rng(seed).permutation(len(drawn))], dtype=torch.float32))
    components = f"{best.n_components} component" + ("s" if best.n_components > 1 else "")
    rows[f"{GMM} ({components}, {sizes.gmm_rows:,} rows)"] = {
        **sample_row(trained, ds, samples, baseline, sizes, seed=seed + 100),
        "bpd": metrics.bits_per_dim(float(best.score_samples(test).mean()), x.shape[1], LEVELS), "bpd_given_y": None,
        **cost}


def one_run(seed: int, models: list[str], sizes: Sizes, out: str | None) -> dict:
    """Every row for one seed."""
    torch.manual_seed(seed)
    ds = data.load("syndigits")
    trained = metrics.classifier(ds)
    take = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(seed))[: len(ds.holdout)]
    baseline = metrics.frechet_distance(metrics.features(trained.model, ds.train[take]),
                                        metrics.features(trained.model, ds.holdout))
    root = Path(out) / f"seed{seed}" if out else Path(tempfile.mkdtemp(prefix="divgen-images28-"))
    root.mkdir(parents=True, exist_ok=True)
    factors = probe_factors(sizes)
    rows, probes = {}, {}
    model_rows(ds, trained, baseline, root, sizes, seed, models, factors, rows, probes)
    mixture_row(ds, trained, baseline, sizes, seed, rows)
    if probes:
        fit, test = slice(0, sizes.probe_fit), slice(0, sizes.probe_test)
        probes["raw pixels"] = probe_scores(ds.train[fit].numpy(), ds.holdout[test].numpy(), factors["fit"],
                                            factors["test"], seed)
    return {"seed": seed, "environment": environment(), "sizes": dataclasses.asdict(sizes),
            "n_train": len(ds.train), "n_holdout": len(ds.holdout), "classifier_accuracy": trained.test_accuracy,
            "baseline": baseline, "rows": rows, "probes": probes}


# ------------------------------------------------------------------ tables ---
def report(runs: list[dict]) -> str:
    """The tables of one run, or the mean ± sd and worst run of several seeds."""
    first, sizes = runs[0], runs[0]["sizes"]
    parts = [f"syndigits: {first['n_train']:,} training, {first['n_holdout']:,} held-out images; classifier held-out "
             f"accuracy {100 * first['classifier_accuracy']:.2f}%; Fréchet distance real train vs real test: "
             f"{cell([r['baseline'] for r in runs], '.2f', +1)}; data copying on {sizes['copy_rows']:,} samples and "
             f"held-out rows",
             table([r["rows"] for r in runs], SAMPLE_COLUMNS),
             f"Training cost and held-out likelihood (bits per pixel on dequantized pixels, IWAE k = "
             f"{sizes['likelihood_k']} on the first {sizes['likelihood_rows']:,} held-out images; the VAE rows' bits "
             "are of their Gaussian-decoder runs on the dequantized pixels, their seconds those of both runs):",
             table([r["rows"] for r in runs], COST_COLUMNS)]
    if first["probes"]:
        parts += [f"Factor probes: linear probes fitted on {sizes['probe_fit']:,} training rows, scored on "
                  f"{sizes['probe_test']:,} held-out rows (accuracy: chance 0.1 for the digit, 0.045 for the font; "
                  "R²: 0 is the mean's):", table([r["probes"] for r in runs], PROBE_COLUMNS)]
    return "\n\n".join(parts)


def small_split(sizes: Sizes) -> None:
    """--quick: a small syndigits split in a fresh cache, and a classifier of a few steps (this process only)."""
    syndigits.N_TRAIN, syndigits.N_TEST = sizes.n_train, sizes.n_test
    os.environ["DIVGEN_CACHE"] = tempfile.mkdtemp(prefix="divgen-images28-cache-")
    metrics._fit = functools.partial(metrics._fit, max_steps=sizes.classifier_steps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of every row per seed (default 0)")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                    help="the families to train (default: all); the GaussianMixture row is always fitted")
    ap.add_argument("--out", help="keep the run directories here, one folder per seed (default: a temporary directory)")
    ap.add_argument("--json", type=Path, help="also write the numbers of the run(s) to this file")
    ap.add_argument("--quick", action="store_true",
                    help="1,000 + 200 images, 3 steps of 16 per model, small probes: checks that the script runs")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.quick:
        small_split(sizes)
    runs = [one_run(seed, args.models, sizes, args.out) for seed in args.seeds]
    print(runs[0]["environment"])
    if args.json:
        args.json.write_text(jsonout.dumps(runs if len(runs) > 1 else runs[0]))
    print(report(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
