"""Metrics that need more than two sample arrays.

- A classifier trained on the data set's own training split (cached on disk),
  whose penultimate layer is the feature space of the Fréchet distance and of
  precision / recall / density / coverage, and whose predictions give class
  coverage and, for conditional models, conditional accuracy.
- The likelihood bounds of latent-variable models on held-out data: the ELBO
  and the importance-weighted bound (IWAE, Burda et al. 2016).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from divgen import data as datasets
from divgen import files, sample_metrics
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


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/divgen (default ~/.cache/divgen), or $DIVGEN_CACHE if set."""
    if os.environ.get("DIVGEN_CACHE"):
        return Path(os.environ["DIVGEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "divgen"


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
    path = cache_dir() / "classifiers" / f"{name}-{_key(ds)}.pt"
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


def _fit(model: Classifier, ds: datasets.Dataset, quiet: bool, epochs: int = 60, batch: int = 128) -> float:
    """Adam on cross-entropy over the training split, keeping the weights that scored best on a
    tenth of it set aside; returns the accuracy on the held-out split."""
    import copy

    rng = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(ds.train), generator=rng)
    n_val = max(1, len(perm) // 10)
    val, fit = perm[:n_val], perm[n_val:]
    x, y = ds.train, ds.train_labels
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    best, best_state = -1.0, copy.deepcopy(model.state_dict())
    progress = Progress(epochs, "evaluate: training the image metrics' classifier (once per data set)", quiet, "epochs")
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
            acc = accuracy(model, x[val], y[val])
            if acc > best:
                best, best_state = acc, copy.deepcopy(model.state_dict())
            progress.update()
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


def image_metrics(ds: datasets.Dataset, nets, seed: int = 0, quiet: bool = True) -> dict:
    """Everything the data set's classifier says about a model's samples, with the real baselines."""
    from divgen import families

    trained = classifier(ds, quiet)
    model, n = trained.model, len(ds.holdout)
    fake, _ = families.draw_labelled(nets, n, seed)
    f_test, f_fake = features(model, ds.holdout), features(model, fake)
    take = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(seed))[:n]
    f_train = features(model, ds.train[take])
    out = {
        "classifier": {"test_accuracy": trained.test_accuracy, "cache": str(trained.cache)},
        "frechet": {"model_vs_test": frechet_distance(f_fake, f_test), "train_vs_test": frechet_distance(f_train, f_test),
                    "n": n},
        "prdc": asdict(sample_metrics.prdc(f_test, f_fake, max_samples=None)),
        "prdc_train_vs_test": asdict(sample_metrics.prdc(f_test, f_train, max_samples=None)),
        "classes": vars(class_coverage(predictions(model, fake), ds.train_labels, ds.n_classes)),
        "conditional_accuracy": None,
    }
    g = nets["generator"]
    if g.n_classes:
        per = max(1, n // ds.n_classes)
        hits, total = 0, 0
        for k in range(g.n_classes):
            if float(g.class_probs[k]) > 0:
                xk = families.draw(nets, per, seed + 1 + k, label=k)
                hits += int((predictions(model, xk) == k).sum())
                total += per
        out["conditional_accuracy"] = hits / total
    return out


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


@dataclass(frozen=True)
class LikelihoodBounds:
    """Lower bounds on the held-out log-likelihood, nats per sample and bits per dimension."""

    elbo: float  # E_q[log w]: the ELBO, estimated with the same k draws
    iwae: float  # E_x[log (1/k) Σ_j w_j] ≥ ELBO, → log p(x) as k → ∞
    k: int
    elbo_bits_per_dim: float
    iwae_bits_per_dim: float
    n: int


def likelihood_bounds(nets, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1000, seed: int = 0,
                      batch: int = 256) -> LikelihoodBounds:
    """The ELBO and the IWAE bound with k importance samples on held-out data x (N, d).

    Bits per dimension are −bound / (d·ln 2): for a Bernoulli decoder they are
    under its own likelihood of the values as given, not a density.
    """
    enc, dec = nets["encoder"].eval(), nets["generator"].eval()
    elbo, iwae = [], []
    for i in range(0, len(x), batch):
        w = log_weights(enc, dec, x[i : i + batch], None if y is None else y[i : i + batch], k, seed + i)
        elbo.append(w.mean(0))
        iwae.append(torch.logsumexp(w, 0) - math.log(k))
    e, b = float(torch.cat(elbo).mean()), float(torch.cat(iwae).mean())
    per_dim = x.shape[1] * math.log(2)
    return LikelihoodBounds(e, b, k, -e / per_dim, -b / per_dim, len(x))
