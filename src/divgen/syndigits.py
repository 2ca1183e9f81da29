"""SynDigits: 28×28 labelled digits rendered offline from the fonts matplotlib ships.

In the spirit of the SynDigits set of Ganin & Lempitsky (2015): the digits
0–9 of 22 fonts (DejaVu Sans, Sans Mono and Serif in their four weights and
slants, STIX General in four, and six Computer Modern faces), each drawn
under a random rotation, scale, shear, shift and stroke thickness, white on
black like MNIST (uint8 0–255, N×1×28×28), the digit's longer side filling a
20-pixel box centred in the frame at scale 1.

Each (font, digit) glyph is rendered once, by FreeType through matplotlib's
FT2Font, and kept as a signed distance field (SDF): the distance of every
pixel from the glyph's outline, negative inside. A sample is then one
bilinear look-up of that field per sub-pixel through the sample's inverse
affine map, for the whole batch at once (grid_sample); a stroke is thickened
by moving the threshold of the field, and the edges are antialiased by a
one-pixel ramp averaged over 2×2 sub-pixels. The generating factors of
every image are kept beside it, so an encoder can be judged against them.

The fixed split (60,000 train, 10,000 test, from seed 0) is cached under
files.cache_dir(), named by a hash of everything that shapes its bytes.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from divgen import files
from divgen.errors import InputError, warn
from divgen.progress import announce

VERSION = "syndigits-v1"  # part of the cache key: a change of the generator makes a new file
# (file in matplotlib's mpl-data/fonts/ttf, name). The other files there draw no digits (STIXNonUni,
# the STIXSiz* delimiters, the Display subsets), draw symbols at the digits' code points (cmex10,
# cmsy10), or a placeholder for every character (LastResortHE).
FONTS = (
    ("DejaVuSans.ttf", "DejaVu Sans"),
    ("DejaVuSans-Bold.ttf", "DejaVu Sans Bold"),
    ("DejaVuSans-Oblique.ttf", "DejaVu Sans Oblique"),
    ("DejaVuSans-BoldOblique.ttf", "DejaVu Sans Bold Oblique"),
    ("DejaVuSansMono.ttf", "DejaVu Sans Mono"),
    ("DejaVuSansMono-Bold.ttf", "DejaVu Sans Mono Bold"),
    ("DejaVuSansMono-Oblique.ttf", "DejaVu Sans Mono Oblique"),
    ("DejaVuSansMono-BoldOblique.ttf", "DejaVu Sans Mono Bold Oblique"),
    ("DejaVuSerif.ttf", "DejaVu Serif"),
    ("DejaVuSerif-Bold.ttf", "DejaVu Serif Bold"),
    ("DejaVuSerif-Italic.ttf", "DejaVu Serif Italic"),
    ("DejaVuSerif-BoldItalic.ttf", "DejaVu Serif Bold Italic"),
    ("STIXGeneral.ttf", "STIX General"),
    ("STIXGeneralBol.ttf", "STIX General Bold"),
    ("STIXGeneralItalic.ttf", "STIX General Italic"),
    ("STIXGeneralBolIta.ttf", "STIX General Bold Italic"),
    ("cmr10.ttf", "Computer Modern Roman"),
    ("cmb10.ttf", "Computer Modern Bold"),
    ("cmti10.ttf", "Computer Modern Text Italic"),
    ("cmmi10.ttf", "Computer Modern Math Italic (old-style figures)"),
    ("cmss10.ttf", "Computer Modern Sans"),
    ("cmtt10.ttf", "Computer Modern Typewriter"),
)
SIZE = 28  # output frame, pixels
BOX = 20  # MNIST's box: at scale 1 the glyph's longer side spans this many pixels, centred in the frame
GLYPH = 96  # source pixels along a glyph's longer side: the field's resolution, 4.8 per output pixel
MARGIN = 24  # source pixels of background around a glyph: its field there exceeds any thickening
TILE = GLYPH + 2 * MARGIN + 2  # an atlas tile, source pixels square (+ 2: the ± 1 of a glyph's size)
SUPERSAMPLE = 2  # sub-pixels per output pixel along each axis
# The factors' ranges, each drawn uniformly and independently. angle: degrees, counterclockwise as seen;
# scale: of the 20-pixel box; shear: x moves right by shear × height above the glyph's centre (a
# forward slant); shift: pixels, right and down; thickness: pixels added to each side of a stroke
# (negative thins it). Chosen so that the digit stays inside the frame: of 3,000 images none has ink
# (> 64) on the outermost ring of pixels and 0.7% on the second (tests/test_syndigits.py).
RANGES = {
    "angle": (-15.0, 15.0),
    "scale": (0.8, 1.0),
    "shear": (-0.2, 0.2),
    "shift_x": (-1.0, 1.0),
    "shift_y": (-1.0, 1.0),
    "thickness": (-0.2, 1.2),
}
N_TRAIN, N_TEST, SEED = 60_000, 10_000, 0  # the fixed split


@dataclass(frozen=True)
class Factors:
    """What made each image: one entry per image, the same order as the images."""

    digit: np.ndarray  # (N,) int64, 0–9: the label
    font: np.ndarray  # (N,) int64, an index of FONTS
    angle: np.ndarray  # (N,) float32, degrees counterclockwise
    scale: np.ndarray  # (N,) float32, the longer side is BOX × scale pixels
    shear: np.ndarray  # (N,) float32, horizontal shear before the rotation
    shift_x: np.ndarray  # (N,) float32, pixels right of the frame's centre
    shift_y: np.ndarray  # (N,) float32, pixels below it
    thickness: np.ndarray  # (N,) float32, pixels added to each side of a stroke

    def __len__(self) -> int:
        return len(self.digit)

    def __getitem__(self, rows) -> Factors:
        return Factors(**{k: v[rows] for k, v in self.arrays().items()})

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def font_names(self) -> list[str]:
        return [FONTS[i][1] for i in self.font]


@dataclass(frozen=True)
class SynDigits:
    """The fixed split: images (N, 1, 28, 28) uint8, labels (N,) int64, and their factors."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    factors_train: Factors
    factors_test: Factors
    cache: Path | None = None  # the file it was read from or written to; None when nothing is cached


# ------------------------------------------------------------------ glyphs ---
def font_path(file: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / file


def _render(path: Path, digit: int, size: float) -> np.ndarray:
    """FreeType's coverage (H, W) in [0, 1] of one digit at `size` pixels per em, cropped to its ink.
    Unhinted, so that the outline scales with `size` alone."""
    from matplotlib.ft2font import FT2Font, LoadFlags

    font = FT2Font(str(path))
    font.set_size(size, 72)  # 72 dpi: one point is one pixel
    font.set_text(str(digit), 0.0, flags=LoadFlags.NO_HINTING)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image(), dtype=np.float32) / 255
    rows, cols = np.nonzero(image > 0)
    if not len(rows):
        raise RuntimeError(f"font {path.name} draws no ink for the digit {digit}")
    return image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def glyph(path: Path, digit: int) -> np.ndarray:
    """The digit's coverage (H, W), its longer side GLYPH pixels (± 1): drawn once to measure, once to size."""
    first = _render(path, digit, 100.0)
    return _render(path, digit, 100.0 * GLYPH / max(first.shape))


def signed_distance(coverage: np.ndarray) -> np.ndarray:
    """Distance (H, W) float32 in pixels from each pixel centre to the outline: positive outside the
    ink (coverage < 1/2), negative inside. The outline lies half a pixel beyond the last pixel
    centre on its side, hence the ½ taken off each distance transform."""
    from scipy.ndimage import distance_transform_edt

    ink = coverage >= 0.5
    outside = distance_transform_edt(~ink) - 0.5  # at outside pixels, to the nearest ink pixel centre
    inside = distance_transform_edt(ink) - 0.5
    return np.where(ink, -inside, outside).astype(np.float32)


@dataclass(frozen=True)
class Atlas:
    """Every glyph's field, tiled: tile g = font · 10 + digit."""

    field: torch.Tensor  # (1, 1, H, W) float32, the signed distances of all tiles
    centre: torch.Tensor  # (G, 2) float32, each glyph's ink-box centre (x, y) in atlas pixels
    lo: torch.Tensor  # (G, 2) float32, the first pixel centre (x, y) of each tile
    pixels: torch.Tensor  # (G,) float32, source pixels per output pixel at scale 1 (longer side / BOX)


@functools.lru_cache(maxsize=1)
def atlas() -> Atlas:
    """The fields of the 220 glyphs, rendered once per process (about a second)."""
    per_row = math.ceil(math.sqrt(len(FONTS) * 10))
    rows = math.ceil(len(FONTS) * 10 / per_row)
    field = np.full((rows * TILE, per_row * TILE), float(MARGIN), np.float32)
    centre, lo, pixels = [], [], []
    for f, (file, _) in enumerate(FONTS):
        path = font_path(file)
        for digit in range(10):
            g = f * 10 + digit
            y0, x0 = (g // per_row) * TILE, (g % per_row) * TILE
            ink = glyph(path, digit)
            h, w = ink.shape
            top, left = (TILE - h) // 2, (TILE - w) // 2
            padded = np.zeros((TILE, TILE), np.float32)
            padded[top : top + h, left : left + w] = ink
            field[y0 : y0 + TILE, x0 : x0 + TILE] = signed_distance(padded)
            centre.append((x0 + left + (w - 1) / 2, y0 + top + (h - 1) / 2))
            lo.append((x0, y0))
            pixels.append(max(h, w) / BOX)
    as_tensor = functools.partial(torch.tensor, dtype=torch.float32)
    return Atlas(torch.from_numpy(field)[None, None], as_tensor(centre), as_tensor(lo), as_tensor(pixels))


# ------------------------------------------------------------------ images ---
def draw_factors(n: int, seed: int) -> Factors:
    """n independent factor draws: digit and font uniform, the rest uniform over RANGES."""
    rng = np.random.default_rng(seed)
    digit = rng.integers(0, 10, n)
    font = rng.integers(0, len(FONTS), n)
    uniform = {k: rng.uniform(a, b, n).astype(np.float32) for k, (a, b) in RANGES.items()}
    return Factors(digit=digit.astype(np.int64), font=font.astype(np.int64), **uniform)


def inverse_maps(f: Factors) -> np.ndarray:
    """(N, 2, 2) float32: from an output offset (x right, y down, pixels from the glyph's centre) back
    to the glyph's frame at scale 1. The forward map is scale · R · S, R the rotation counterclockwise
    as seen (y points down), S the shear x += shear · height above the centre (height = −y)."""
    t = np.radians(f.angle.astype(np.float64))
    c, s, k = np.cos(t), np.sin(t), f.shear.astype(np.float64)
    # R = [[c, s], [−s, c]], S = [[1, −k], [0, 1]]: (scale R S)⁻¹ = S⁻¹ Rᵀ / scale, in closed form
    inverse = np.stack([np.stack([c + k * s, k * c - s], -1), np.stack([s, c], -1)], -2)
    return (inverse / f.scale.astype(np.float64)[:, None, None]).astype(np.float32)


def subpixel_offsets() -> torch.Tensor:
    """(P, 2) float32, P = (28 · SUPERSAMPLE)²: each sub-pixel centre (x, y) from the frame's centre, row by row."""
    axis = (torch.arange(SIZE * SUPERSAMPLE, dtype=torch.float32) + 0.5) / SUPERSAMPLE - SIZE / 2
    grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([grid_x, grid_y], -1).reshape(-1, 2)


def source_points(f: Factors, a: Atlas) -> torch.Tensor:
    """(N, P, 2) float32: where each sub-pixel of each image looks in the atlas, (x, y) in atlas pixels."""
    g = torch.from_numpy(f.font * 10 + f.digit)
    m = torch.from_numpy(inverse_maps(f))[:, None]  # (N, 1, 2, 2)
    d = subpixel_offsets()[None] - torch.from_numpy(np.stack([f.shift_x, f.shift_y], -1))[:, None]  # (N, P, 2)
    # elementwise rather than a matmul: the same bytes whatever the BLAS and the thread count
    local = torch.stack([m[..., 0, 0] * d[..., 0] + m[..., 0, 1] * d[..., 1],
                         m[..., 1, 0] * d[..., 0] + m[..., 1, 1] * d[..., 1]], -1)
    src = a.centre[g][:, None] + a.pixels[g][:, None, None] * local
    # stay inside the glyph's own tile, whose border is background, so that no neighbour shows
    return torch.minimum(torch.maximum(src, a.lo[g][:, None] + 1), a.lo[g][:, None] + TILE - 2)


def render(f: Factors, chunk: int = 2048) -> np.ndarray:
    """The images (N, 1, 28, 28) uint8 of factor rows `f`, white ink on black."""
    a = atlas()
    s = SUPERSAMPLE
    size = torch.tensor(a.field.shape[:-3:-1], dtype=torch.float32)  # (W, H) of the atlas
    out = np.empty((len(f), 1, SIZE, SIZE), np.uint8)
    for start in range(0, len(f), chunk):  # (chunk, P, 2) points at a time: about 50 MB
        part = f[start : start + chunk]
        g = torch.from_numpy(part.font * 10 + part.digit)
        points = (2 * source_points(part, a) + 1) / size - 1  # grid_sample's [-1, 1], align_corners=False
        sdf = torch.nn.functional.grid_sample(a.field, points.reshape(1, -1, 1, 2), mode="bilinear",
                                              align_corners=False).reshape(len(part), 1, SIZE * s, SIZE * s)
        # source pixels -> output pixels; the outline moves out by the thickness, and a ramp 1/s output
        # pixel wide across it antialiases each sub-pixel before the average over s × s
        to_output = torch.from_numpy(part.scale)[:, None, None, None] / a.pixels[g][:, None, None, None]
        thickness = torch.from_numpy(part.thickness)[:, None, None, None]
        cover = torch.nn.functional.avg_pool2d((0.5 - (sdf * to_output - thickness) * s).clamp(0, 1), s)
        out[start : start + len(part)] = (cover * 255).round().to(torch.uint8).numpy()
    return out


# -------------------------------------------------------------- the split ---
def generate(n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = SEED) -> SynDigits:
    """A split of n_train + n_test images, their factors drawn in one stream from `seed` (the first
    n_train rows train, the rest test), in memory."""
    f = draw_factors(n_train + n_test, seed)
    x = render(f)
    train, test = slice(0, n_train), slice(n_train, None)
    return SynDigits(x[train], f.digit[train], x[test], f.digit[test], f[train], f[test])


def cache_key(n_train: int, n_test: int, seed: int) -> str:
    """A hash of everything that shapes the split's bytes: the generator's constants and version, the
    sizes and seed, and the versions of the libraries that draw, render and sample."""
    import matplotlib
    import scipy
    from matplotlib import ft2font

    parts = (VERSION, FONTS, SIZE, BOX, GLYPH, MARGIN, SUPERSAMPLE, sorted(RANGES.items()), n_train, n_test, seed,
             matplotlib.__version__, ft2font.__freetype_version__, np.__version__, scipy.__version__, torch.__version__)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def load(n_train: int | None = None, n_test: int | None = None, seed: int | None = None) -> SynDigits:
    """The split (by default the fixed one: N_TRAIN, N_TEST, SEED), read from the cache when a whole
    file for these parameters is there, else generated (10–20 s for the fixed split on one core) and
    cached. A damaged cache file is generated again; a cache that cannot be written is warned about once
    and the split is returned from memory, nothing cached."""
    n_train, n_test = N_TRAIN if n_train is None else n_train, N_TEST if n_test is None else n_test
    seed = SEED if seed is None else seed
    path = files.cache_dir() / "syndigits" / f"{VERSION}-{cache_key(n_train, n_test, seed)}.pt"
    if path.is_file():
        try:
            return _from_state(files.load_checked(path, _KEYS, what="syndigits cache"), path, n_train, n_test)
        except (InputError, ValueError):
            pass  # damaged or not ours: generate again and replace it
    with announce(f"syndigits: rendering {n_train:,} + {n_test:,} images (once; about 10–20 s on one core), "
                  f"cached in {str(path.parent)!r}", after=2.0):
        split = generate(n_train, n_test, seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.save_checked(path, _state(split))
    except OSError as e:
        warn(f"syndigits: cannot write the cache {str(path.parent)!r} ({e.strerror or e}); the images were "
             "generated in memory and nothing is cached")
        return split
    return replace(split, cache=path)


_FACTORS = tuple(f.name for f in fields(Factors))
_KEYS = ("x_train", "x_test", *(f"{split}_{k}" for split in ("train", "test") for k in _FACTORS))


def _state(split: SynDigits) -> dict:
    """The file's contents: images, factors (the digit is the label) and the font names, as tensors."""
    state = {"x_train": torch.from_numpy(split.x_train), "x_test": torch.from_numpy(split.x_test),
             "fonts": [name for _, name in FONTS]}
    for name, f in (("train", split.factors_train), ("test", split.factors_test)):
        state.update({f"{name}_{k}": torch.from_numpy(v) for k, v in f.arrays().items()})
    return state


def _from_state(state: dict, path: Path, n_train: int, n_test: int) -> SynDigits:
    """A SynDigits from a cache file's state; ValueError if its shapes are not the ones asked for."""
    x = {name: state[f"x_{name}"].numpy() for name in ("train", "test")}
    f = {name: Factors(**{k: state[f"{name}_{k}"].numpy() for k in _FACTORS}) for name in ("train", "test")}
    for name, n in (("train", n_train), ("test", n_test)):
        if x[name].shape != (n, 1, SIZE, SIZE) or x[name].dtype != np.uint8 or any(
                len(v) != n for v in f[name].arrays().values()):
            raise ValueError(f"the cached {name} split does not have {n} images")
    return SynDigits(x["train"], f["train"].digit, x["test"], f["test"].digit, f["train"], f["test"], path)
