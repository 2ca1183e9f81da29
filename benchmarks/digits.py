"""Generative models of scikit-learn's 8×8 digits, side by side, in one classifier's feature space.

Rows: the unconditional GAN, the conditional GAN, BiGAN, the adversarial autoencoder (a latent critic
matches its codes to the prior under js), the VAE and the CVAE
(each with its family's defaults, `divgen train --data digits --model M`), a peer
written here, the textbook MLP VAE, and two classic density baselines fitted to
the same training split: scikit-learn's GaussianMixture (number of components
chosen on a validation split) and an exact Gaussian kernel density estimate
(metrics.kde_log_density, bandwidth chosen on a validation split). Validation
rows are always carved from the training split, never from the test rows.

Columns, all on the held-out split (359 images) and as many samples:
- Fréchet distance in the feature space of a classifier trained on the
  training split (metrics.classifier), beside the real-train vs real-test
  distance in the same space; both are means over --draws draws (default 10)
  of 359 samples and of 359 training rows, the other columns of the first draw;
- for conditional models, the intra-class Fréchet distance (metrics.conditional_metrics):
  per class k, samples of class k against the held-out rows of class k (about 36
  each, strongly biased at that count), averaged over classes, beside the same
  figure for as many real training rows of class k;
- classes covered (a class covered when the classifier gives it ≥ a quarter of
  its training share) and KL(generated labels ‖ training labels);
- conditional accuracy: samples drawn for class k that the classifier calls k;
- precision / recall (k = 5, the `prdc` package) in the same feature space;
- data copying (sample_metrics.data_copying, in pixels): a sign test of whether the samples lie
  nearer a random set of training rows than an equal number of held-out rows; a row fails (copies) when Z < −3;
- density models: test log-likelihood in bits per pixel on dequantized pixels
  (metrics.dequantized and metrics.held_out_likelihood, as `divgen evaluate`
  scores them): the 17 grey levels k ∈ {0..16} as x = (k + u)/17, u ~ U(0, 1),
  a density on [0, 1)^64, the test noise fixed (metrics.HOLDOUT_NOISE_SEED);
  bits per pixel = −log₂ p(x)/64 + log₂ 17, an upper bound on the cost of
  coding the 17-level pixels (the uniform density gives log₂ 17 = 4.09). The
  VAE and CVAE are trained twice: with every default on the pixels as divgen
  loads them (k/16; a Bernoulli decoder, whose samples are its means) for the
  classifier's columns, and on this representation with a Gaussian decoder
  (`--likelihood gaussian`) so that their IWAE bound (k = 1,000) is a bound on
  the same quantity as the baselines' log-likelihood. Every row's bits are of
  log p(x); the CVAE's are log Σ_y π_y p(x | y) (metrics.marginal_likelihood_bounds),
  and its log p(x | y), given the true label, stands in a column of its own.
  The GAN rows are trained on the pixels.
- wall-clock and CPU seconds (time.process_time: every thread's time) of fitting.

The peer VAE (Kingma & Welling 2014's MLP VAE as pytorch/examples writes it: 400
ReLU units in one hidden layer of encoder and decoder, a 20-D latent, a Bernoulli
decoder on the [0, 1] pixels, Adam at lr 1e-3 with default betas, batches of 128)
trains for as many epochs as divgen's VAE default and is scored by divgen's own
likelihood_bounds on the same dequantized test pixels, beside divgen's default VAE:
under a Bernoulli likelihood this is no density, so those bits compare only
between these two rows.

The encoders of BiGAN and the adversarial autoencoder are judged by a linear probe (logistic regression from
codes to labels, test accuracy) against a random encoder of the same shape and
raw pixels, and by reconstructions G(E(x)): how often the classifier gives
them the label of x.

    python benchmarks/digits.py            # each model ≤ 10 minutes on 2 CPU cores
    python benchmarks/digits.py --quick    # a few steps each: checks that the script runs
    python benchmarks/digits.py --seeds 0 1 2 --threads 1 2   # each (seed, threads) in a fresh process:
                                           # mean ± sd and the worst run of every number
    python benchmarks/digits.py --models vae cvae baselines --seeds 0 1 2 --threads 1 2   # some rows only
    python benchmarks/digits.py --out R    # keep the runs in R; then draw their samples:
    python benchmarks/digits.py --figure docs/figures/digits.png --runs R
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from divgen import data, families, metrics, recipes, sample_metrics
from divgen.config import Config
from divgen.results import load_run
from divgen.tables import environment, markdown
from divgen.train import train

LEVELS = 17  # digits' grey levels 0..16
GANS = {"GAN (conv, js)": "conv", "conditional GAN": "cgan", "BiGAN": "bigan", "adversarial autoencoder (js)": "aae"}
VAES = {"VAE": "vae", "CVAE": "cvae"}
PEER = "textbook MLP VAE (400 ReLU, 20-D)"
DRAWS = 10  # the Fréchet distances are means over this many draws of samples (and of real training rows)
BASELINES = "baselines"  # --models: the GaussianMixture and the exact KDE
MODELS = (*GANS.values(), *VAES.values(), BASELINES)

# (key, header, format, worse): worse = +1 when a higher value is the bad direction, −1 when a lower one is
SAMPLE_COLUMNS = [
    ("fd", "Fréchet distance", ".2f", +1), ("fd_ratio", "× real", ".1f", +1),
    ("intra_fd", "intra-class Fréchet", ".1f", +1), ("intra_fd_ratio", "× real, same counts", ".1f", +1),
    ("covered", "classes covered", ".0f", -1), ("kl", "label KL", ".3f", +1),
    ("cond", "conditional accuracy", ".3f", -1), ("precision", "precision", ".2f", -1),
    ("recall", "recall", ".2f", -1), ("copy_z", "data copying Z (fails < −3)", ".1f", -1),
]
COST_COLUMNS = [
    ("bpd", "test bits/pixel, log p(x)", ".3f", +1), ("bpd_given_y", "bits/pixel, log p(x given y)", ".3f", +1),
    ("seconds", "wall s", ".0f", +1), ("cpu_seconds", "CPU s", ".0f", +1),
]
PEER_COLUMNS = [
    ("bernoulli_bpd", "IWAE bits/pixel under the Bernoulli decoder", ".3f", +1), ("fd", "Fréchet distance", ".2f", +1),
    ("train_seconds", "training wall s", ".1f", +1), ("train_cpu_seconds", "training CPU s", ".1f", +1),
]
ENCODER_COLUMNS = [
    ("probe", "codes E(x)", ".3f", -1), ("random", "random encoder, same shape", ".3f", -1),
    ("pixels", "raw pixels", ".3f", -1), ("reconstruction", "reconstructions keep the class", ".3f", -1),
]


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """The inverse of metrics.dequantized in expectation (u = ½), so that one classifier reads every model's samples."""
    return (x * LEVELS - 0.5) / (LEVELS - 1)


class Clock:
    """Wall-clock and CPU seconds since it was made."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> dict:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu}


def real_baseline(trained, ds, seed: int, draws: int = 1) -> float:
    """The Fréchet distance of as many real training rows as there are held-out rows against the held-out rows,
    averaged over `draws` random subsets of the training rows (the first is the subset of earlier versions)."""
    f_test = metrics.features(trained.model, ds.holdout)
    fds = []
    for i in range(draws):
        take = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(seed + 7919 * i))
        fds.append(metrics.frechet_distance(metrics.features(trained.model, ds.train[take[: len(ds.holdout)]]), f_test))
    return float(np.mean(fds))


def classifier_row(trained, ds, samples: torch.Tensor, baseline: float, nets=None, seed: int = 0) -> dict:
    """The sample columns of one row; `nets`, a conditional model's networks, adds its per-class columns.

    `samples` may hold several draws of as many rows as the held-out split: the Fréchet distance is then the
    mean over the draws (for one network, one draw of 359 moved the ratio to the real baseline by an sd of about
    0.3; docs/modes.md), every other column is of the first draw."""
    model = trained.model
    n = len(ds.holdout)
    f_test, f_all = metrics.features(model, ds.holdout), metrics.features(model, samples)
    fds = [metrics.frechet_distance(f_all[i : i + n], f_test) for i in range(0, len(samples) - n + 1, n)]
    samples, f_fake = samples[:n], f_all[:n]
    cover = metrics.class_coverage(metrics.predictions(model, samples), ds.train_labels, ds.n_classes)
    pr = sample_metrics.prdc(f_test, f_fake, max_samples=None)
    per_class = None if nets is None else metrics.conditional_metrics(model, ds, nets, seed)
    fd = float(np.mean(fds))
    row = {"fd": fd, "fd_ratio": fd / baseline, "covered": cover.covered, "kl": cover.kl,
           "precision": pr.precision, "recall": pr.recall,
           "copy_z": sample_metrics.data_copying(ds.train, ds.holdout, samples).z,
           "cond": None, "intra_fd": None, "intra_fd_ratio": None, "intra_counts": None}
    if per_class is not None:
        row.update(cond=per_class.accuracy, intra_fd=per_class.frechet_model_vs_test,
                   intra_fd_ratio=per_class.frechet_model_vs_test / per_class.frechet_train_vs_test,
                   intra_counts=per_class.counts)
    return row


def gan_rows(ds, trained, baseline: float, root: Path, quick: dict, seed: int, results: dict, extra: dict,
             models=MODELS, draws: int = 1) -> None:
    for label, model in GANS.items():
        if model not in models:
            continue
        clock = Clock()
        cfg = Config(data="digits", model=model, seed=seed, figures=False, **quick)
        result = train(cfg, root / model, quiet=True)
        cost = clock.seconds()
        samples = families.draw(result.nets, draws * len(ds.holdout), seed + 11)
        results[label] = {**classifier_row(trained, ds, samples, baseline, result.nets, seed + 100), **cost}
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


def vae_rows(ds, trained, baseline: float, root: Path, quick: dict, seed: int, k: int, results: dict,
             peers: dict, models=MODELS, draws: int = 1) -> None:
    """VAE and CVAE, twice each: with every default on the pixels (a Bernoulli decoder, whose
    samples are its means) for the classifier's columns, and with a Gaussian decoder on the
    dequantized pixels for the IWAE bound in bits per pixel; then the textbook VAE beside the default VAE."""
    path = root / "digits-dequantized.npz"
    # every row is training data: the held-out split is scored by held_out_likelihood, with its own noise
    np.savez(path, x=metrics.dequantized(ds.train, LEVELS, seed).reshape(-1, 8, 8).numpy(), y=ds.train_labels.numpy())
    for label, model in VAES.items():
        if model not in models:
            continue
        clock = Clock()
        default = train(Config(data="digits", model=model, seed=seed, figures=False, **quick), root / model, quiet=True)
        default_cost = clock.seconds()
        cfg = Config(data=str(path), model=model, seed=seed, likelihood="gaussian", holdout=0.0, figures=False, **quick)
        gaussian = train(cfg, root / f"{model}-gaussian", quiet=True)
        cost = clock.seconds()
        bounds = metrics.held_out_likelihood(ds, gaussian.nets, k=k, seed=seed)  # as `divgen evaluate`
        samples = families.draw(default.nets, draws * len(ds.holdout), seed + 11)
        results[label] = {**classifier_row(trained, ds, samples, baseline, default.nets, seed + 100),
                          "bpd": bounds.marginal.iwae_bits_per_dim,
                          "bpd_given_y": bounds.conditional.iwae_bits_per_dim if bounds.conditional else None,
                          **cost}
        if model == "vae":
            bernoulli = metrics.held_out_likelihood(ds, default.nets, k=k, seed=seed).marginal
            peers[f"{label} (divgen defaults)"] = {"bernoulli_bpd": bernoulli.iwae_bits_per_dim,
                                                   "fd": results[label]["fd"],
                                                   **{f"train_{key}": v for key, v in default_cost.items()}}
            peer_row(ds, trained, baseline, default.config, seed, k, results, peers, draws)


# ---------------------------------------------------------------- the peer ---
class TextbookVAE(nn.Module):
    """Kingma & Welling's MLP VAE as pytorch/examples writes it: x (B, d) → 400 ReLU → (μ, log σ²) of
    q(z | x), a 20-D diagonal Gaussian; z → 400 ReLU → d Bernoulli logits.

    Called as an encoder it returns (μ, log σ²), and `log_likelihood` is its
    log p(x | z): the two calls divgen's metrics.likelihood_bounds makes.
    """

    n_classes = 0  # unconditional: metrics.held_out_likelihood bounds log p(x)

    def __init__(self, d: int, hidden: int = 400, latent: int = 20):
        super().__init__()
        self.hidden, self.mean, self.log_var = nn.Linear(d, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d))
        self.latent = latent

    def forward(self, x, y=None):  # (B, d) -> (B, 20), (B, 20)
        h = torch.relu(self.hidden(x))
        return self.mean(h), self.log_var(h)

    def log_likelihood(self, x, z, y=None):  # (S, B, 20) or (B, 20) -> (S, B) or (B,)
        h = self.decoder(z)
        return -nn.functional.binary_cross_entropy_with_logits(h, x.expand_as(h), reduction="none").sum(-1)

    def loss(self, x):
        """−ELBO per image: the reconstruction term with one draw of z, the KL to N(0, I) in closed form."""
        mean, log_var = self(x)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        kl = 0.5 * (mean.square() + log_var.exp() - 1 - log_var).sum(-1)
        return (kl - self.log_likelihood(x, z)).mean()

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> torch.Tensor:  # the decoder's means, as divgen's Bernoulli VAE samples
        z = torch.randn(n, self.latent, generator=torch.Generator().manual_seed(seed))
        return torch.sigmoid(self.decoder(z))


def fit_textbook_vae(x: torch.Tensor, epochs: int, seed: int, batch: int = 128) -> TextbookVAE:
    """Adam (lr 1e-3, default betas) on the −ELBO, shuffled batches of 128, `epochs` passes over x."""
    torch.manual_seed(seed)
    vae = TextbookVAE(x.shape[1])
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch):
            loss = vae.loss(x[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return vae.eval()


def peer_row(ds, trained, baseline: float, vae_config, seed: int, k: int, results: dict, peers: dict,
             draws: int = 1) -> None:
    """The textbook VAE, trained for as many epochs as divgen's default VAE (its steps × batch / rows)."""
    epochs = max(1, round(vae_config.steps * vae_config.batch_size / len(ds.train)))
    clock = Clock()
    vae = fit_textbook_vae(ds.train, epochs, seed)
    cost = clock.seconds()
    nets = {"encoder": vae, "generator": vae}
    bernoulli = metrics.held_out_likelihood(ds, nets, k=k, seed=seed).marginal
    row = classifier_row(trained, ds, vae.sample(draws * len(ds.holdout), seed + 11), baseline)
    results[PEER] = {**row, "bpd": None, "bpd_given_y": None, **cost}
    peers[f"{PEER}, {epochs} epochs"] = {"bernoulli_bpd": bernoulli.iwae_bits_per_dim, "fd": row["fd"],
                                         **{f"train_{key}": v for key, v in cost.items()}}


def density_rows(ds, trained, baseline: float, seed: int, results: dict, quick: bool, draws: int = 1) -> None:
    from sklearn.mixture import GaussianMixture

    x = metrics.dequantized(ds.train, LEVELS, seed).double().numpy()
    test = metrics.dequantized(ds.holdout, LEVELS, metrics.HOLDOUT_NOISE_SEED).double().numpy()
    d, n = x.shape[1], len(ds.holdout)

    clock = Clock()
    perm = np.random.default_rng(seed).permutation(len(x))
    val, fit = x[perm[: len(x) // 5]], x[perm[len(x) // 5 :]]
    mixtures = [GaussianMixture(c, covariance_type="full", reg_covar=1e-4, random_state=seed, max_iter=200)
                for c in ((1, 5) if quick else (1, 2, 5, 10, 20, 40))]
    best = max(mixtures, key=lambda m: m.fit(fit).score_samples(val).mean()).fit(x)  # chosen, then fit on every row
    cost = clock.seconds()
    log_px = float(best.score_samples(test).mean())
    drawn = best.sample(draws * n)[0]  # ordered by component: shuffled so that every draw mixes them
    samples = to_pixels(torch.as_tensor(drawn[np.random.default_rng(seed).permutation(len(drawn))], dtype=torch.float32))
    results["GaussianMixture"] = {**classifier_row(trained, ds, samples, baseline),
                                  "bpd": metrics.bits_per_dim(log_px, d, LEVELS), "bpd_given_y": None,
                                  "choice": f"{best.n_components} components", **cost}

    clock = Clock()
    h = metrics.kde_bandwidth(x, (0.05, 0.1) if quick else np.geomspace(0.03, 0.3, 25), seed=seed)
    cost = clock.seconds()  # the KDE's centres are every training row
    log_px = float(metrics.kde_log_density(test, x, h).mean())
    samples = to_pixels(torch.as_tensor(metrics.kde_sample(x, h, draws * n, seed), dtype=torch.float32))
    results["exact Gaussian KDE"] = {**classifier_row(trained, ds, samples, baseline),
                                     "bpd": metrics.bits_per_dim(log_px, d, LEVELS), "bpd_given_y": None,
                                     "choice": f"bandwidth {h:.3g}", **cost}


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


# ------------------------------------------------------------------ tables ---
def cell(values: list, spec: str, worse: int) -> str:
    """One number, or over several runs: mean ± sd and the worst run (the bad direction of the metric)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return format(values[0], spec)
    worst = max(values) if worse > 0 else min(values)
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    return f"{format(mean, spec)} ± {format(sd, spec)} (worst {format(worst, spec)})"


def table(runs: list[dict], columns, labels=None) -> str:
    """Rows (label -> numbers) of one or several runs as a markdown table of `columns`."""
    labels = labels or list(runs[0])
    rows = []
    for label in labels:
        got = [r[label] for r in runs if label in r]
        choices = sorted({r["choice"] for r in got if r.get("choice")})
        name = label + (f" ({', '.join(choices)})" if choices else "")
        rows.append([name, *(cell([r.get(key) for r in got], spec, worse) for key, _, spec, worse in columns)])
    return markdown(["model", *(header for _, header, _, _ in columns)], rows)


def report(runs: list[dict]) -> str:
    """The tables of one run, or the mean ± sd and worst run of several."""
    first = runs[0]
    counts = next((r["intra_counts"] for r in first["rows"].values() if r.get("intra_counts")), None)
    head = (f"digits: {first['n_train']} training, {first['n_holdout']} held-out images; classifier held-out accuracy "
            f"{100 * first['classifier_accuracy']:.1f}%; Fréchet distance real train vs real test: "
            f"{cell([r['baseline'] for r in runs], '.2f', +1)}; every Fréchet distance is a mean over "
            f"{first.get('draws', 1)} draws")
    if counts:
        head += f"; intra-class counts (held-out rows per class, as many samples and training rows): {counts}"
    parts = [head, table([r["rows"] for r in runs], SAMPLE_COLUMNS),
             "Fitting cost and held-out likelihood (bits per pixel on dequantized pixels, log p(x) in every row):",
             table([r["rows"] for r in runs], COST_COLUMNS)]
    if first["peers"]:
        parts += ["A peer: Bernoulli-decoder VAEs on the pixels, the same epochs; IWAE (k = "
                  f"{first['k']}) on the same dequantized test pixels, under the Bernoulli likelihood (no density: "
                  "these bits compare only these rows):", table([r["peers"] for r in runs], PEER_COLUMNS)]
    if first["encoders"]:
        parts += ["Encoders, on the held-out split: linear probe accuracy of the codes E(x), and reconstructions "
                  "G(E(x)) given the label of x by the classifier (chance 0.1):",
                  table([r["encoders"] for r in runs], ENCODER_COLUMNS)]
    return "\n\n".join(parts)


# -------------------------------------------------------------------- runs ---
def one_run(args) -> dict:
    """Every row for one seed, on this process's threads."""
    quick = {"steps": 3, "n_samples": 200} if args.quick else {}  # Config overrides of every row's training
    k = 10 if args.quick else 1000
    torch.manual_seed(args.seed)
    ds = data.load("digits")
    trained = metrics.classifier(ds)
    draws = 2 if args.quick else args.draws
    baseline = real_baseline(trained, ds, args.seed, draws)
    root = Path(args.out or tempfile.mkdtemp(prefix="divgen-digits-"))
    root.mkdir(parents=True, exist_ok=True)
    results, encoders, peers = {}, {}, {}
    gan_rows(ds, trained, baseline, root, quick, args.seed, results, encoders, args.models, draws)
    vae_rows(ds, trained, baseline, root, quick, args.seed, k, results, peers, args.models, draws)
    if BASELINES in args.models:
        density_rows(ds, trained, baseline, args.seed, results, args.quick, draws)
    return {"seed": args.seed, "draws": draws, "threads": torch.get_num_threads(), "environment": environment(), "k": k,
            "n_train": len(ds.train), "n_holdout": len(ds.holdout), "classifier_accuracy": trained.test_accuracy,
            "baseline": baseline, "rows": results, "peers": peers, "encoders": encoders}


def grid(args) -> list[dict]:
    """one_run for every (seed, threads), each in a fresh process with that many threads."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="divgen-digits-grid-") as tmp:
        for seed in args.seeds:
            for threads in args.threads:
                out = Path(tmp) / f"seed{seed}-threads{threads}.json"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--seed", str(seed), "--threads", str(threads),
                       "--json", str(out), "--models", *args.models, "--draws", str(args.draws),
                       *(["--quick"] if args.quick else []),
                       *(["--out", str(Path(args.out) / f"seed{seed}-threads{threads}")] if args.out else [])]
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                print(f"seed {seed}, {threads} thread(s) ...", file=sys.stderr, flush=True)
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"seed {seed}, {threads} threads failed with code {proc.returncode}:\n{proc.stderr[-3000:]}")
                runs.append(json.loads(out.read_text()))
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", help="run every row once per seed, each in a fresh process")
    ap.add_argument("--threads", type=int, nargs="+", help="torch threads; several: one fresh process per count")
    ap.add_argument("--out", help="keep the run directories here (default: a temporary directory)")
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                    help="the rows to run (default: all); vae brings the textbook VAE beside it")
    ap.add_argument("--draws", type=int, default=DRAWS,
                    help=f"draws of as many samples (and training rows) as held-out rows that the Fréchet distances "
                         f"and the real baseline average (default {DRAWS}; 1: the single draw of earlier versions)")
    ap.add_argument("--quick", action="store_true", help="3 steps per model: checks that the script runs")
    ap.add_argument("--json", type=Path, help="also write the numbers of the run(s) to this file")
    ap.add_argument("--figure", type=Path, help="with --runs: draw the sample grids of those runs to this PNG, and stop")
    ap.add_argument("--runs", type=Path, help="a directory an earlier --out wrote")
    args = ap.parse_args(argv)
    if args.figure:
        figure(args.runs, data.load("digits"), args.figure, args.seed)
        return 0
    if args.seeds or (args.threads and len(args.threads) > 1):
        args.seeds = args.seeds or [args.seed]
        args.threads = args.threads or [torch.get_num_threads()]
        runs = grid(args)
        print("\n".join(dict.fromkeys(r["environment"] for r in runs)))
        print(f"{len(runs)} runs: seeds {args.seeds} × threads {args.threads}, each in a fresh process; "
              "mean ± sd (worst run)")
    else:
        if args.threads:
            torch.set_num_threads(args.threads[0])
        runs = [one_run(args)]
        print(runs[0]["environment"])
    if args.json:
        args.json.write_text(json.dumps(runs if len(runs) > 1 else runs[0]))
    print(report(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
