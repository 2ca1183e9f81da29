"""Metrics that need more than two sample arrays.

- A classifier trained on the data set's own training split (cached on disk),
  whose penultimate layer is the feature space of the Fréchet distance and of
  precision / recall / density / coverage, and whose predictions give class
  coverage and, for conditional models, conditional accuracy.
- The likelihood bounds of latent-variable models on held-out data: the ELBO
  and the importance-weighted bound (IWAE, Burda et al. 2016), on dequantized
  pixels, and for a conditional model of log p(x) as well as log p(x | y).
- Exact baselines: a Gaussian kernel density estimate, log-sum-exp in float64.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from divgen import data as datasets
from divgen import families, files, sample_metrics
from divgen.errors import InputError
from divgen.models import ConvDown, Standardize, mlp
from divgen.progress import Progress

ARCHITECTURE = "classifier-v1"  # part of the cache key: a change of architecture retrains


# --------------------------------------------------------------- classifier ---
class Classifier(nn.Module):
    """Logits (B, K) of x (B, d), through 128 features: conv features for images, an MLP for vectors."""

    FEATURES = 128

    def __init__(self, spec: datasets.Spec, scaler: Standardize, width: int = 64):
        super().__init__()
        self.scaler = scaler
        if spec.image:
            trunk = ConvDown(spec.event_shape, max(8, width // 2))
            self.trunk = nn.Sequential(trunk, nn.Linear(trunk.features, self.FEATURES), nn.ReLU())
        else:
            self.trunk = nn.Sequential(mlp(spec.dim, self.FEATURES, 4 * width, 1), nn.ReLU())
        self.head = nn.Linear(self.FEATURES, spec.n_classes)

    def features(self, x):  # (B, d) -> (B, 128)
        return self.trunk(self.scaler(x))

    def forward(self, x):
        return self.head(self.features(x))


@dataclass(frozen=True)
class Trained:
    """A data set's classifier and what it scored on the held-out split."""

    model: Classifier
    test_accuracy: float
    cache: Path


def _key(ds: datasets.Dataset) -> str:
    h = hashlib.sha256(ARCHITECTURE.encode())
    for t in (ds.train, ds.train_labels, ds.holdout, ds.holdout_labels):
        h.update(t.contiguous().numpy().tobytes())
    h.update(repr(ds.spec).encode())
    return h.hexdigest()[:16]


def classifier(ds: datasets.Dataset, quiet: bool = True) -> Trained:
    """The classifier of a labelled data set: loaded from the cache when its key (data, labels,
    split, architecture) matches, else trained on the training split and cached."""
    if not ds.n_classes:
        raise InputError(f"data {ds.name!r} has no labels: the image metrics need a labelled data set")
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(ds.name).name)[:40]
    path = files.cache_dir() / "classifiers" / f"{name}-{_key(ds)}.pt"
    with torch.random.fork_rng(devices=[]):  # the same initial weights whatever ran before
        torch.manual_seed(0)
        model = Classifier(ds.spec, Standardize.of(ds.train, pooled=ds.spec.image))
    if path.is_file():
        try:
            state = files.load_checked(path, ("model", "test_accuracy"), what="classifier cache")
            model.load_state_dict(state["model"])
            return Trained(model.eval(), float(state["test_accuracy"]), path)
        except (InputError, RuntimeError, KeyError):
            pass  # damaged or stale: train again
    accuracy = _fit(model, ds, quiet)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.save_checked(path, {"model": model.state_dict(), "test_accuracy": accuracy})
    return Trained(model.eval(), accuracy, path)


def _fit(model: Classifier, ds: datasets.Dataset, quiet: bool, epochs: int = 60, batch: int = 128,
         max_steps: int = 1500) -> float:
    """Adam on cross-entropy over the training split for `epochs` epochs, or as many as fit in `max_steps`
    steps on a large set (digits and mnist1d take all 60; a 60,000-image set 4, which reach 99.9% on
    syndigits: docs/images.md), keeping the weights that scored best on a tenth of it set aside; returns
    the accuracy on the held-out split."""
    import copy

    rng = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(ds.train), generator=rng)
    n_val = max(1, len(perm) // 10)
    val, fit = perm[:n_val], perm[n_val:]
    x, y = ds.train, ds.train_labels
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    best, best_state = -1.0, copy.deepcopy(model.state_dict())
    epochs = min(epochs, max(1, math.ceil(max_steps / math.ceil(len(fit) / batch))))
    progress = Progress(epochs * math.ceil(len(fit) / batch),
                        "evaluate: training the image metrics' classifier (once per data set)", quiet, "steps")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for epoch in range(epochs):
            model.train()
            order = fit[torch.randperm(len(fit), generator=rng)]
            for i in range(0, len(order), batch):
                idx = order[i : i + batch]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                progress.update()
            acc = accuracy(model, x[val], y[val])
            if acc > best:
                best, best_state = acc, copy.deepcopy(model.state_dict())
    progress.close()
    model.load_state_dict(best_state)
    return accuracy(model, ds.holdout, ds.holdout_labels) if len(ds.holdout) else best


@torch.no_grad()
def accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).double().mean())


@torch.no_grad()
def features(model: Classifier, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model.features(c) for c in x.split(4096)]).double().numpy()


@torch.no_grad()
def predictions(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(c).argmax(1) for c in x.split(4096)])


# ------------------------------------------------------------ feature metrics ---
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^{1/2}) between Gaussians fitted to features (N, F), (M, F).

    The Fréchet (2-Wasserstein) distance of Heusel et al. 2017, here in the
    data set's own classifier's feature space. It is biased upward at finite N:
    compare it with the real-vs-real baseline at the same sample sizes.
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr (Σ_a Σ_b)^{1/2} = Σ √λ over the eigenvalues λ of the symmetric S Σ_b S, S = Σ_a^{1/2}:
    # exact, and stable for singular covariances (collapsed samples), unlike sqrtm of the product
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
    return max(value, 0.0)


@dataclass(frozen=True)
class ClassCoverage:
    """The classifier's labels of generated samples against the training label frequencies."""

    histogram: list[float]  # fraction of samples given each class
    covered: int  # classes given at least a quarter of their training share
    n_classes: int
    kl: float  # KL(generated label histogram ‖ training label frequencies), nats


def class_coverage(predicted: torch.Tensor, train_labels: torch.Tensor, n_classes: int) -> ClassCoverage:
    q = torch.bincount(predicted, minlength=n_classes).double() / len(predicted)
    p = torch.bincount(train_labels, minlength=n_classes).double() / len(train_labels)
    present = p > 0
    covered = int((q[present] >= 0.25 * p[present]).sum())
    kl = float(torch.xlogy(q, q).sum() - torch.xlogy(q, p.clamp(min=1e-300)).sum())
    return ClassCoverage(q.tolist(), covered, int(present.sum()), kl)


@dataclass(frozen=True)
class ConditionalMetrics:
    """A conditional model's samples of each class k against the held-out rows of class k.

    The intra-class Fréchet distance is the mean over classes of the Fréchet
    distance between the n_k samples drawn for class k and the n_k held-out
    rows of class k, in the classifier's feature space; beside it, the same mean
    with n_k training rows of class k in place of the samples. With a few dozen
    rows per class and 128 features the distance is strongly biased upward,
    and the more so the fewer the rows: only the real baseline at the same
    counts says what a perfect model would score.
    """

    accuracy: float  # fraction of the samples drawn for class k that the classifier calls k
    frechet_model_vs_test: float  # mean over the classes of FD(samples of k, held-out rows of k)
    frechet_train_vs_test: float  # the same with n_k training rows of class k
    counts: list[int]  # n_k per class: held-out rows scored (0: the class was skipped)
    note: str = ""  # which classes were scored, when not all of them


# Classes scored by conditional_metrics at most: each costs a draw and two 128-D Fréchet distances (a
# matrix square root), about 10 ms; above this, a random subset of the classes, stated in the note.
MAX_CLASSES = 100


def conditional_metrics(model: Classifier, ds: datasets.Dataset, nets, seed: int = 0) -> ConditionalMetrics | None:
    """ConditionalMetrics of a conditional generator (None for an unconditional one). A class is skipped
    when the model never saw it, or when it has fewer than 2 held-out or training rows (no covariance)."""
    from divgen import families

    g = nets["generator"]
    if not g.n_classes:
        return None
    rng = torch.Generator().manual_seed(seed)
    held_n = torch.bincount(ds.holdout_labels, minlength=g.n_classes)[: g.n_classes]
    train_n = torch.bincount(ds.train_labels, minlength=g.n_classes)[: g.n_classes]
    eligible = [k for k in range(g.n_classes)
                if float(g.class_probs[k]) > 0 and min(int(held_n[k]), int(train_n[k])) >= 2]
    note = ""
    if len(eligible) > MAX_CLASSES:
        pick = torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))[:MAX_CLASSES]
        note = (f"{MAX_CLASSES} of the {len(eligible):,} classes with 2 or more rows on each side, drawn at random "
                f"(seed {seed}): each class costs a draw and two Fréchet distances")
        eligible = sorted(eligible[int(i)] for i in pick)
    chosen = set(eligible)
    hits = total = 0
    fd_model, fd_train, counts = [], [], []
    for k in range(g.n_classes):
        if k not in chosen:
            counts.append(0)
            continue
        held, train = ds.holdout[ds.holdout_labels == k], ds.train[ds.train_labels == k]
        n_k = min(len(held), len(train))
        fake = families.draw(nets, n_k, seed + 1 + k, label=k)
        hits += int((predictions(model, fake) == k).sum())
        total += n_k
        f_held = features(model, held[:n_k])
        f_train = features(model, train[torch.randperm(len(train), generator=rng)[:n_k]])
        fd_model.append(frechet_distance(features(model, fake), f_held))
        fd_train.append(frechet_distance(f_train, f_held))
        counts.append(n_k)
    if not total:
        return None
    return ConditionalMetrics(hits / total, float(np.mean(fd_model)), float(np.mean(fd_train)), counts, note)


def image_metrics(ds: datasets.Dataset, nets, seed: int = 0, quiet: bool = True) -> dict:
    """Everything the data set's classifier says about a model's samples, with the real baselines."""
    from divgen import families

    trained = classifier(ds, quiet)
    model, n = trained.model, len(ds.holdout)
    fake, _ = families.draw_labelled(nets, n, seed)
    f_test, f_fake = features(model, ds.holdout), features(model, fake)
    take = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(seed))[:n]
    f_train = features(model, ds.train[take])
    conditional = conditional_metrics(model, ds, nets, seed)
    return {
        "classifier": {"test_accuracy": trained.test_accuracy, "cache": str(trained.cache)},
        "frechet": {"model_vs_test": frechet_distance(f_fake, f_test), "train_vs_test": frechet_distance(f_train, f_test),
                    "n": n},
        # at most 5,000 rows a side (sample_metrics.prdc): the package forms full distance matrices
        "prdc": asdict(sample_metrics.prdc(f_test, f_fake, seed=seed)),
        "prdc_train_vs_test": asdict(sample_metrics.prdc(f_test, f_train, seed=seed)),
        "classes": vars(class_coverage(predictions(model, fake), ds.train_labels, ds.n_classes)),
        "conditional_accuracy": None if conditional is None else conditional.accuracy,
        "intra_class_frechet": None if conditional is None else {
            "model_vs_test": conditional.frechet_model_vs_test, "train_vs_test": conditional.frechet_train_vs_test,
            "counts": conditional.counts, "note": conditional.note},
    }


# ------------------------------------------------------------- likelihoods ---
@torch.no_grad()
def log_weights(encoder, decoder, x: torch.Tensor, y: torch.Tensor | None, k: int, seed: int = 0,
                chunk: int = 100) -> torch.Tensor:
    """log w = log p(x | z) + log p(z) − log q(z | x) for k draws z ~ q(z | x): (k, B), float64."""
    gen = torch.Generator().manual_seed(seed)
    mean, log_var = encoder(x, y)
    std = torch.exp(0.5 * log_var)
    out = []
    for i in range(0, k, chunk):
        eps = torch.randn(min(chunk, k - i), *mean.shape, generator=gen, dtype=mean.dtype)
        z = mean + std * eps  # (S, B, latent)
        log_pz = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)
        log_qz = -0.5 * (eps.square() + math.log(2 * math.pi)).sum(-1) - 0.5 * log_var.sum(-1)
        out.append((decoder.log_likelihood(x, z, y) + log_pz - log_qz).double())
    return torch.cat(out)


# Pixel grids divgen's loaders produce: scikit-learn's digits k/16 (17 levels) and 8-bit images k/255 (256 levels).
PIXEL_LEVELS = (17, 256)
HOLDOUT_NOISE_SEED = 1  # the dequantization noise of the held-out pixels: the same in every run and benchmark


def pixel_levels(x: torch.Tensor, tolerance: float = 1e-3) -> int | None:
    """L when every value of x is k/(L − 1), k ∈ {0, …, L − 1}, for L in PIXEL_LEVELS (the coarsest such
    grid); None for data on no such grid, and for binary data (0 and 1 only, on every grid)."""
    if not len(x) or float(x.min()) < 0 or float(x.max()) > 1 or bool(((x == 0) | (x == 1)).all()):
        return None
    for levels in PIXEL_LEVELS:
        k = x.double() * (levels - 1)  # float32 k/255 is within 2e-5 of an integer after the product
        if float((k - k.round()).abs().max()) < tolerance:
            return levels
    return None


def dequantized(x: torch.Tensor, levels: int, seed: int) -> torch.Tensor:
    """Pixels k/(L − 1) as (k + u)/L with u ~ U(0, 1) from `seed`: a sample of a density on [0, 1)^d.

    Level k stands for its bin [k/L, (k + 1)/L), so a density p of these
    values is a model of the levels, P(k) = ∫ over the bin of p, and
    −log₂ p(x)/d + log₂ L bounds the model's code length of the L-level pixels
    from above (bits_per_dim). This is the convention of the literature
    (8-bit images as (k + u)/256); a model trained on the pixels as loaded
    (k/(L − 1)) sees its test pixels moved by at most 1/L.
    """
    k = torch.round(x.double() * (levels - 1))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ((k + u) / levels).to(x.dtype)


def bits_per_dim(log_p: float, d: int, levels: int | None = None) -> float:
    """−log₂ p / d, plus log₂ L for dequantized pixels of L levels: the code length of the levels, bits each."""
    return -log_p / (d * math.log(2)) + (math.log2(levels) if levels else 0.0)


@dataclass(frozen=True)
class LikelihoodBounds:
    """Lower bounds on the held-out log-likelihood, nats per sample and bits per dimension (bits_per_dim)."""

    elbo: float  # E_q[log w]: the ELBO, estimated with the same k draws
    iwae: float  # E_x[log (1/k) Σ_j w_j] ≥ ELBO, → log p(x) as k → ∞
    k: int
    elbo_bits_per_dim: float
    iwae_bits_per_dim: float
    n: int
    levels: int | None = None  # the pixels' levels when x was dequantized (bits_per_dim adds log₂ levels)


def _sample_bounds(nets, x: torch.Tensor, y: torch.Tensor | None, k: int, seed: int,
                   batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ELBO and IWAE estimates (N,), (N,) of log p(x [| y]), float64, of the model that draws the
    samples: the decoder's moving average under --ema (with the live encoder as the proposal), else the decoder."""
    enc, dec = nets["encoder"].eval(), families.sampler(nets).eval()
    elbo, iwae = [], []
    for i in range(0, len(x), batch):
        w = log_weights(enc, dec, x[i : i + batch], None if y is None else y[i : i + batch], k, seed + i)
        elbo.append(w.mean(0))
        iwae.append(torch.logsumexp(w, 0) - math.log(k))
    return torch.cat(elbo), torch.cat(iwae)


def _summary(elbo: torch.Tensor, iwae: torch.Tensor, k: int, d: int, levels: int | None) -> LikelihoodBounds:
    e, b = float(elbo.mean()), float(iwae.mean())
    return LikelihoodBounds(e, b, k, bits_per_dim(e, d, levels), bits_per_dim(b, d, levels), len(elbo), levels)


def likelihood_bounds(nets, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1000, seed: int = 0,
                      batch: int = 256, levels: int | None = None) -> LikelihoodBounds:
    """The ELBO and the IWAE bound with k importance samples on held-out data x (N, d): of log p(x), or
    with labels y (N,) of a conditional model's log p(x | y).

    `levels`: x are pixels dequantized from that many levels (dequantized), and
    bits per dimension are those of bits_per_dim. For a Bernoulli decoder they
    are under its own likelihood of the values as given, not a density.
    """
    elbo, iwae = _sample_bounds(nets, x, y, k, seed, batch)
    return _summary(elbo, iwae, k, x.shape[1], levels)


def marginal_likelihood_bounds(nets, x: torch.Tensor, k: int = 100, seed: int = 0, batch: int = 256,
                               levels: int | None = None) -> LikelihoodBounds:
    """A conditional model's bounds on log p(x) = log Σ_y π_y p(x | y), π its training class frequencies.

    p(x | y) is estimated for every class by likelihood_bounds' IWAE estimate
    with k draws (the record's k), and the classes combined by log-sum-exp. The IWAE
    estimate of p(x | y) is unbiased, so their π-mixture is an unbiased estimate
    of p(x), and its log a bound in expectation that rises to log p(x) with k;
    the ELBO column mixes the classes' ELBOs the same way, also below log p(x).
    These compare with the log p(x) of unconditional models; log p(x | y) does not.
    """
    probs = nets["generator"].class_probs.double()
    classes = [c for c in range(len(probs)) if float(probs[c]) > 0]
    per_class = [_sample_bounds(nets, x, torch.full((len(x),), c, dtype=torch.int64), k, seed, batch) for c in classes]
    log_pi = probs[classes].log()[:, None]  # (C, 1)
    elbo = torch.logsumexp(log_pi + torch.stack([e for e, _ in per_class]), 0)
    iwae = torch.logsumexp(log_pi + torch.stack([b for _, b in per_class]), 0)
    return _summary(elbo, iwae, k, x.shape[1], levels)


@dataclass(frozen=True)
class HeldOutLikelihood:
    """held_out_likelihood's bounds: of log p(x) for every model, of log p(x | y) for a conditional one."""

    marginal: LikelihoodBounds
    conditional: LikelihoodBounds | None


def held_out_likelihood(ds: datasets.Dataset, nets, k: int = 1000, seed: int = 0) -> HeldOutLikelihood:
    """A VAE's (or CVAE's) bounds on the held-out split, as benchmarks/digits.py scores them.

    Images whose pixels lie on a grid (pixel_levels: digits, 8-bit images) are
    dequantized with the fixed HOLDOUT_NOISE_SEED and scored in bits per
    dimension on dequantized pixels, the unit of the benchmark's table; other
    data are scored as they are (bits per dimension of a density, no levels).
    `marginal` bounds log p(x), the number that compares across models;
    `conditional` bounds a conditional model's log p(x | y) given the true
    labels (None otherwise) with k draws. A conditional model's log p(x) spends
    k draws in all, k / C on each of its C classes (its record's k), so that it
    costs as many decoder passes as log p(x | y) rather than C times as many.
    """
    levels = pixel_levels(ds.holdout) if ds.spec.image else None
    x = ds.holdout if levels is None else dequantized(ds.holdout, levels, HOLDOUT_NOISE_SEED)
    g = nets["generator"]
    if not g.n_classes:
        return HeldOutLikelihood(likelihood_bounds(nets, x, None, k, seed, levels=levels), None)
    per_class = max(1, k // int((g.class_probs > 0).sum()))
    return HeldOutLikelihood(marginal_likelihood_bounds(nets, x, per_class, seed, levels=levels),
                             likelihood_bounds(nets, x, ds.holdout_labels, k, seed, levels=levels))


# ---------------------------------------------------------- exact baselines ---
def kde_log_density(x, centres, bandwidth: float, block_elements: int = 1 << 22) -> np.ndarray:
    """log p(x) (M,) of the Gaussian kernel density estimate on `centres` (n, d), exactly, in float64:

        log p(x) = logsumexp_i(−‖x − x_i‖² / (2h²)) − log n − (d/2)·log(2πh²).

    A block of x at a time keeps the (block, n) distance matrix near 32 MB.
    (scikit-learn's KernelDensity.score_samples, a tree with approximate sums, gave log-densities
    up to 158 nats above the largest single kernel on 64-D digits at bandwidth 0.087; a mixture never
    exceeds its largest component.)
    """
    from scipy.special import logsumexp

    x, centres = np.asarray(x, dtype=np.float64), np.asarray(centres, dtype=np.float64)
    n, d = centres.shape
    c2 = (centres**2).sum(1)
    step = max(1, block_elements // n)
    out = []
    for part in np.array_split(x, range(step, len(x), step)):
        sq = np.maximum((part**2).sum(1)[:, None] + c2[None, :] - 2 * part @ centres.T, 0.0)  # (B, n); ≥ 0 despite rounding
        out.append(logsumexp(-sq / (2 * bandwidth**2), axis=1))
    return np.concatenate(out) - math.log(n) - 0.5 * d * math.log(2 * math.pi * bandwidth**2)


def kde_bandwidth(train, candidates, validation: float = 0.2, seed: int = 0) -> float:
    """The candidate bandwidth whose KDE on the rest of `train` gives the highest mean log-density on a
    random `validation` fraction of its rows: test rows never choose it."""
    train = np.asarray(train, dtype=np.float64)
    perm = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(len(train) * validation))
    val, fit = train[perm[:n_val]], train[perm[n_val:]]
    return float(max(candidates, key=lambda h: kde_log_density(val, fit, h).mean()))


def kde_sample(centres, bandwidth: float, n: int, seed: int = 0) -> np.ndarray:
    """n draws (n, d) of the KDE: a random centre plus N(0, h²I) noise."""
    centres = np.asarray(centres, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return centres[rng.integers(len(centres), size=n)] + bandwidth * rng.standard_normal((n, centres.shape[1]))
