"""Built-in data sets, user files, and the held-out split.

Built-in toy sets are explicit densities (see densities.py) so that exact
divergences and mode statistics are available. Any other `--data` value is a
path to the user's own `.npy`, `.npz` or `.csv` file.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch.distributions import Distribution

from divgen import catalog, limits
from divgen.densities import CurveMixture, gaussian_mixture
from divgen.errors import InputError, warn


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
FILE_TYPES = (".npy", ".npz", ".csv")


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
    """A built-in data set (n training samples) or a user file (`name` is its path).

    Toy densities: n training samples drawn with `seed` and an independent
    held-out sample. Fixed data (digits, mnist1d, files): a fixed split, the
    same for every run: a random `holdout` fraction of the rows, chosen by a
    permutation with seed SPLIT_SEED, is held out; labels follow their rows.
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
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # pixel intensities 0..16 rescaled to [0, 1]
        x, y, shape = bunch.data.astype(np.float32) / 16.0, bunch.target.astype(np.int64), (8, 8)
    elif name == "mnist1d":
        (x, y), shape = _mnist1d(), (40,)
    else:
        x, y, shape = read_file(name)
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


def fingerprint(name: str, expected: str = "") -> str:
    """SHA-256 of a data file's bytes ("" for a built-in set). InputError if it differs from
    `expected` (a run's config.json): the file changed since the run was trained."""
    if name in catalog.DATASETS:
        return ""
    h = hashlib.sha256()
    try:
        with open(name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise InputError(f"data file {name!r} cannot be read: {e.strerror or e}") from None
    if expected and h.hexdigest() != expected:
        raise InputError(f"data file {name!r} has changed since the run was trained (its SHA-256 is not the one in "
                         "config.json); restore the original file, or train a new run on this one")
    return h.hexdigest()


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


def read_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and validate a user's sample file: (N, d) float32 (images flattened) and optional labels."""
    x, y, _ = read_file(path)
    return x, y


def read_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """Read and validate a user's sample file: (N, d) float32, optional labels (N,) int64, and
    the event shape of one sample: (d,), or an image's (H, W) or (C, H, W).

    Images are N×H×W or N×C×H×W arrays (C = 1 or 3) in a .npz (or .npy);
    uint8 pixels are scaled to [0, 1], floats are kept as they are.
    Raises InputError with one line for everything DESIGN.md rejects.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if path.is_dir():
        raise InputError(f"data {str(path)!r} is a directory; give a .npy, .npz or .csv file")
    if ext not in FILE_TYPES:
        raise InputError(
            f"data {str(path)!r}: not a built-in data set ({', '.join(catalog.DATASETS)}) "
            f"nor a {'/'.join(FILE_TYPES)} file"
        )
    if not path.is_file():
        raise InputError(f"data file {str(path)!r} does not exist")
    labels = None
    try:
        if ext == ".npy":
            with open(path, "rb") as fh:
                if fh.read(6) != b"\x93NUMPY":  # else numpy takes it for a pickle and suggests allow_pickle
                    raise InputError(f"data file {str(path)!r} is not a .npy file (it lacks numpy's header); "
                                     "write it with numpy.save")
            x = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # fh: closed even when the zip is bad
                keys = list(z.keys())
                if "x" in z:
                    x = z["x"]
                    labels = z["y"] if "y" in z else None
                elif len(keys) == 1:
                    x = z[keys[0]]
                else:
                    raise InputError(f"data file {str(path)!r}: no array 'x' among {keys}")
        else:
            x = _read_csv(path)
    except InputError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # an array of Python objects
            raise InputError(f"data file {str(path)!r} holds Python objects, not numbers; divgen never unpickles "
                             "a file: save a numeric array") from None
        raise InputError(f"data file {str(path)!r} could not be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"data file {str(path)!r} could not be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    x, shape = _validate(x, str(path))
    return x, _validate_labels(labels, len(x), str(path)), shape


def _read_csv(path: Path) -> np.ndarray:
    """Numbers, one sample per row. Blank lines and lines starting with # are skipped; a first row
    that is not numeric is a header. A header whose first name is empty or `Unnamed: 0` marks a
    row index (pandas' `to_csv`): that column is dropped, with a warning."""
    import csv

    with open(path, newline="") as fh:
        kept = [(i, line) for i, line in enumerate(fh, 1) if line.strip() and not line.lstrip().startswith("#")]
    rows = [(i, cells) for i, cells in ((i, next(csv.reader([line]))) for i, line in kept) if any(c.strip() for c in cells)]
    if not rows:
        raise InputError(f"data file {str(path)!r} is empty")

    def parse(row, line):
        try:
            return [float(c) for c in row]
        except ValueError:
            bad = next(c for c in row if not _is_float(c))
            raise InputError(f"data file {str(path)!r}, line {line}: non-numeric value {bad.strip()!r}") from None

    header = None if all(_is_float(c) for c in rows[0][1]) else rows.pop(0)[1]  # optional header row
    if not rows:
        raise InputError(f"data file {str(path)!r} has a header but no rows")
    drop = 0
    if header is not None and len(header) > 1 and header[0].strip() in ("", "Unnamed: 0"):
        drop = 1
        warn(f"data file {str(path)!r}: the first column has no name in the header, the mark of a row index "
             "(pandas' to_csv); it is not used as a feature")
    values = [parse(r[drop:], line) for line, r in rows]
    widths = {len(r) for r in values}
    if len(widths) > 1:
        raise InputError(f"data file {str(path)!r}: rows have different numbers of columns {sorted(widths)}")
    return np.array(values, dtype=np.float64).reshape(len(values), len(values[-1]))


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _validate(x, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise InputError(f"data {where!r}: array of type {x.dtype} is not numeric")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3):
        hint = "; channels last? transpose to N×C×H×W" if x.shape[3] in (1, 3) else ""
        raise InputError(f"data {where!r}: images must be N×H×W or N×C×H×W with C = 1 or 3, got shape {x.shape}{hint}")
    if x.ndim not in (2, 3, 4):
        raise InputError(f"data {where!r}: expected samples × features (2-D) or images N×H×W / N×C×H×W, got shape {x.shape}")
    shape = tuple(int(s) for s in x.shape[1:])
    if x.ndim > 2:
        if min(shape[-2:]) < 4:
            raise InputError(f"data {where!r}: images of {shape[-2]}×{shape[-1]} pixels are too small (at least 4×4)")
        x = x.astype(np.float32) / 255 if x.dtype == np.uint8 else x
        x = x.reshape(len(x), -1)
    if x.shape[1] == 0:
        raise InputError(f"data {where!r} has 0 columns")
    if x.shape[0] < 2:
        raise InputError(f"data {where!r} has {x.shape[0]} rows; at least 2 are needed")
    bad = ~np.isfinite(x) if x.dtype.kind == "f" else np.zeros(x.shape, bool)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"data {where!r} contains NaN or infinite values ({int(bad.sum())} cells, first at row {row}, "
                         f"column {col}, counting from 0)")
    with np.errstate(over="ignore"):  # beyond float32's range: refused below, not warned about
        x = x.astype(np.float32)
    big = ~np.isfinite(x)
    if big.any():
        row, col = np.argwhere(big)[0]
        raise InputError(f"data {where!r} has values too large for float32 (|x| > 3.4e38; {int(big.sum())} cells, "
                         f"first at row {row}, column {col}, counting from 0)")
    check_varies(x, where)
    return np.ascontiguousarray(x), shape


def check_varies(x, where: str) -> None:
    """InputError if every row of x (N, d) is the same point: a constant sample is no distribution
    that a model can be fitted to or compared with (its variance is 0)."""
    if len(x) and (x == x[:1]).all():
        raise InputError(f"data {where!r} is constant: all {len(x)} rows are the same point, so there is no "
                         "distribution to fit or compare (zero variance)")


def _validate_labels(y, n: int, where: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"data {where!r}: labels 'y' must be one integer per row ({n}), got shape {y.shape}")
    integral = y.dtype.kind in "biu" or (y.dtype.kind == "f" and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y))))
    if not integral:
        raise InputError(f"data {where!r}: labels 'y' must be integers, got {y.dtype} values such as {y.flat[0]!r}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise InputError(f"data {where!r}: labels 'y' must be ≥ 0, found {int(y.min())}")
    return y
