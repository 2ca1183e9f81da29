"""Built-in data sets, user files, and the held-out split.

Built-in toy sets are explicit densities (see densities.py) so that exact
divergences and mode statistics are available. Any other `--data` value is a
path to the user's own data, in any format data_files.py reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch.distributions import Distribution, constraints

from divgen import data_files, limits
from divgen.densities import gaussian_mixture
from divgen.errors import InputError


class CurveMixture(Distribution):
    """x = c_k(s) + σ ε, with curve k chosen uniformly, s ~ U[0, 1], ε ~ N(0, I₂).

    p(x) = (1/K) Σ_k ∫₀¹ N(x; c_k(s), σ²I) ds, evaluated by the midpoint rule on
    `n_grid` points per curve; the grid spacing along the curve is far below
    σ, so the rule's error is negligible next to sampling error.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, curves: Sequence[Callable[[torch.Tensor], torch.Tensor]], sigma: float, n_grid: int = 4000):
        self.curves = list(curves)
        self.sigma = sigma
        s = (torch.arange(n_grid, dtype=torch.float32) + 0.5) / n_grid
        self.grid = torch.cat([c(s) for c in self.curves])  # (K·n_grid, 2)
        super().__init__(event_shape=torch.Size([2]), validate_args=False)

    def sample(self, sample_shape=torch.Size()):
        n = int(torch.Size(sample_shape).numel())
        k = torch.randint(len(self.curves), (n,))
        s = torch.rand(n)
        points = torch.empty(n, 2)
        for i, c in enumerate(self.curves):
            points[k == i] = c(s[k == i])
        x = points + self.sigma * torch.randn(n, 2)
        return x.reshape(*torch.Size(sample_shape), 2)

    def log_prob(self, x):
        flat = x.reshape(-1, 2).to(self.grid.dtype)
        sq = torch.cdist(flat, self.grid).pow(2)  # (N, K·n_grid)
        log_kernel = -sq / (2 * self.sigma**2) - math.log(2 * math.pi * self.sigma**2)
        out = torch.logsumexp(log_kernel, dim=1) - math.log(self.grid.shape[0])
        return out.reshape(x.shape[:-1])


class Batch(NamedTuple):
    """One batch of data: samples and, for labelled data, their class labels."""

    x: torch.Tensor  # (B, d) float32, flat features (images flattened; see Dataset.event_shape)
    y: torch.Tensor | None = None  # (B,) int64 labels in 0..n_classes-1


@dataclass(frozen=True)
class Spec:
    """What a model needs to know about the data to be built: its shape and its classes."""

    event_shape: tuple[int, ...]  # one sample: (2,), (40,), (8, 8), (1, 28, 28)
    n_classes: int = 0  # 0 for unlabelled data

    @property
    def dim(self) -> int:
        return math.prod(self.event_shape)

    @property
    def image(self) -> bool:
        """(H, W) or (C, H, W) with C ∈ {1, 3}: convolutional networks, pictures in figures."""
        s = self.event_shape
        return len(s) == 2 or (len(s) == 3 and s[0] in (1, 3))


@dataclass(frozen=True)
class Dataset:
    """Training samples, held-out samples the trainer never sees, and what is known.

    Samples are stored flat, (N, d) with d = prod(event_shape); models that
    need the image shape (conv nets, figures) reshape with `event_shape`.
    """

    name: str
    train: torch.Tensor  # (N, d) float32
    holdout: torch.Tensor  # (M, d) float32, for evaluation only
    event_shape: tuple[int, ...] = ()  # () means (d,)
    train_labels: torch.Tensor | None = None  # (N,) int64, when the data has labels
    holdout_labels: torch.Tensor | None = None  # (M,) int64
    density: Distribution | None = None  # exact data density, when known
    modes: torch.Tensor | None = None  # (K, d) mode centres of the toy mixtures
    mode_std: float | None = None  # their common standard deviation
    mode_weights: torch.Tensor | None = None  # (K,) mixture weights of the modes

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    @property
    def n_classes(self) -> int:
        """Number of classes (labels are 0..n_classes-1), 0 without labels."""
        if self.train_labels is None:
            return 0
        return int(torch.cat([self.train_labels, self.holdout_labels]).max()) + 1

    @property
    def spec(self) -> Spec:
        return Spec(tuple(self.event_shape) or (self.dim,), self.n_classes)

    def split(self, which: str = "train") -> Batch:
        """All of one split as a Batch: "train" or "holdout"."""
        if which == "train":
            return Batch(self.train, self.train_labels)
        return Batch(self.holdout, self.holdout_labels)


@dataclass(frozen=True)
class Toy:
    """A built-in data set: its density, and its modes when it is a mixture."""

    density: Callable[[], Distribution]
    modes: Callable[[], torch.Tensor] | None = None
    mode_std: float | None = None

    def mode_weights(self) -> torch.Tensor | None:
        """The mixture weights of the modes (a Gaussian mixture's own), None for curves."""
        dist = self.density()
        return dist.mixture_distribution.probs if self.modes else None


def _ring8(radius: float = 2.0):
    angles = torch.arange(8) * (2 * math.pi / 8)
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def _grid25():
    g = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(g, g)


def _swissroll(s):
    t = 1.5 * math.pi * (1 + 2 * s)  # the usual swiss-roll angle range, scaled to |x| ≲ 2.8
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 5


def _moon_upper(s):
    t = math.pi * s
    return torch.stack([torch.cos(t) - 0.5, torch.sin(t) - 0.25], dim=1)


def _moon_lower(s):
    t = math.pi * s
    return torch.stack([0.5 - torch.cos(t), 0.25 - torch.sin(t)], dim=1)


_MOG2D_MEANS = [[-2.0, 0.0], [2.0, 0.0]]

TOYS: dict[str, Toy] = {
    # two unequal, well separated modes: the 1-D mode-covering vs mode-seeking example
    "mog1d": Toy(lambda: gaussian_mixture([[-2.0], [2.0]], [0.5, 0.5], [0.4, 0.6]), lambda: torch.tensor([[-2.0], [2.0]]), 0.5),
    # two well separated 2-D modes: the seeds' forward vs reverse KL picture
    "mog2d": Toy(lambda: gaussian_mixture(_MOG2D_MEANS, [0.5, 0.5]), lambda: torch.tensor(_MOG2D_MEANS), 0.5),
    "ring8": Toy(lambda: gaussian_mixture(_ring8(), [0.05]), _ring8, 0.05),
    # PacGAN's ring (Lin et al. 2018, after VEEGAN): radius 1, sd 0.01, so sharp that a sample
    # counts as high quality only within 0.03 of a mode
    "ring8-pacgan": Toy(lambda: gaussian_mixture(_ring8(1.0), [0.01]), lambda: _ring8(1.0), 0.01),
    # 25 modes on {−4, −2, 0, 2, 4}², sd 0.05: also PacGAN's grid
    "grid25": Toy(lambda: gaussian_mixture(_grid25(), [0.05]), _grid25, 0.05),
    "swissroll": Toy(lambda: CurveMixture([_swissroll], sigma=0.1)),
    "moons": Toy(lambda: CurveMixture([_moon_upper, _moon_lower], sigma=0.1)),
}


def toy_density(name: str) -> Distribution:
    """The exact density of a built-in toy set."""
    return TOYS[name].density()


def sample_toy(name: str, n: int, seed: int) -> torch.Tensor:
    """n samples (n, d) of a toy set, reproducible from `seed`, leaving the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return toy_density(name).sample((n,)).float()


SPLIT_SEED = 0  # the held-out rows of a fixed data set do not depend on a run's --seed


def load(name: str, n: int = 10_000, seed: int = 0, holdout: float = 0.2) -> Dataset:
    """A built-in data set (n training samples) or a user's data (`name` is its path).

    Toy densities: n training samples drawn with `seed` and an independent
    held-out sample. Fixed data (digits, mnist1d, files): a fixed split, the
    same for every run: a random `holdout` fraction of the rows, chosen by a
    permutation with seed SPLIT_SEED, is held out; labels follow their rows.
    Data that comes split (IDX t10k files, Keras' x_test) holds out its test
    rows instead, whatever `holdout` says.
    """
    if name in TOYS:
        toy = TOYS[name]
        limits.require([(f"--n-data {n}", _toy_bytes(name, n, holdout))], limits.memory_available())
        x = sample_toy(name, n, seed)
        return Dataset(
            name=name,
            train=x,
            holdout=sample_toy(name, max(2, int(n * holdout)), seed + 7919),
            event_shape=(x.shape[1],),
            density=toy.density(),
            modes=toy.modes() if toy.modes else None,
            mode_std=toy.mode_std,
            mode_weights=toy.mode_weights(),
        )
    if name == "syndigits":  # a fixed split of its own: its test set is the held-out rows, whatever `holdout`
        from divgen import syndigits

        split = syndigits.load()
        # uint8 (N, 1, 28, 28) -> flat float32 in [0, 1]
        train, hold = (torch.from_numpy(x).reshape(len(x), -1).float().div_(255) for x in (split.x_train, split.x_test))
        return Dataset(name=name, train=train, holdout=hold, event_shape=(1, 28, 28),
                       train_labels=torch.from_numpy(split.y_train), holdout_labels=torch.from_numpy(split.y_test))
    keep = hold = None  # the rows trained on and held out, when the data fixes them
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # pixel intensities 0..16 rescaled to [0, 1]
        x, y, shape = bunch.data.astype(np.float32) / 16.0, bunch.target.astype(np.int64), (8, 8)
    elif name == "mnist1d":
        (x, y), shape = _mnist1d(), (40,)
    else:
        x, y, shape, n_test = data_files.read(name)
        if n_test:  # the file's own test split (IDX t10k, Keras x_test) is held out, whatever `holdout` says
            keep, hold = slice(0, len(x) - n_test), slice(len(x) - n_test, None)
    if keep is None:
        perm = np.random.default_rng(SPLIT_SEED).permutation(len(x))
        n_hold = int(round(len(x) * holdout)) if len(x) >= 10 else 0
        if len(x) - n_hold < 2:
            raise InputError(f"--holdout {holdout:g} keeps {n_hold} of the {len(x)} rows of {name!r} aside and leaves "
                             f"{len(x) - n_hold} to train on; at least 2 are needed")
        hold, keep = perm[:n_hold], perm[n_hold:]
    labels = (None, None) if y is None else (torch.from_numpy(y[keep]), torch.from_numpy(y[hold]))
    return Dataset(
        name=name,
        train=torch.from_numpy(x[keep]),
        holdout=torch.from_numpy(x[hold]),
        event_shape=shape,
        train_labels=labels[0],
        holdout_labels=labels[1],
    )


def _toy_bytes(name: str, n: int, holdout: float) -> int:
    """Memory to draw n + n·holdout samples of a toy set: a Gaussian mixture draws every component
    for every sample (K, d) before it picks one."""
    toy = TOYS[name]
    dim = toy.density().event_shape[0]
    per_sample = (len(toy.modes()) if toy.modes else 4) + 2
    return 2 * limits.FLOAT32 * int(n * (1 + holdout) + 2) * dim * per_sample


def _mnist1d() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D (Greydanus 2020): 5,000 length-40 signals in 10 classes, generated
    procedurally by the mnist1d package; nothing is downloaded."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    saved = np.random.get_state(), random.getstate()
    try:  # make_dataset reseeds numpy and random globally; leave the caller's streams alone
        with torch.random.fork_rng(devices=[]):
            d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(saved[0])
        random.setstate(saved[1])
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return x, y
