"""What a request may ask for, checked before anything is allocated or written.

Two kinds of limit, one refusal (InputError, which the command line prints as
one line and exit code 2):

- the range of every number the user gives (`Bounds`): Config fields carry
  theirs in their metadata (config.validate), the other flags get theirs
  through `number`, an argparse type;
- the memory and disk a request needs (`require`): estimated from the flags
  (`training_memory`, `training_disk`, `mmd_test_memory`, ...) and compared
  with what the machine has now. The message names the flag behind the largest
  part of the estimate, the estimate, and what is available.

Light on purpose (standard library only): `divgen --help` imports it.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from divgen.errors import InputError

FLOAT32 = 4  # bytes
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32


# ------------------------------------------------------------------ ranges ---
@dataclass(frozen=True)
class Bounds:
    """The allowed values of a number: low ≤ x ≤ high, either end strict (`open_*`) or absent (None)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def check(self, flag: str, value) -> None:
        """InputError naming `flag` unless `value` is a finite number within the bounds."""
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{flag} must be a finite number, got {value}")
        if isinstance(value, float) and abs(value) > FLOAT32_MAX:  # every float setting ends up in float32 tensors
            raise InputError(f"{flag} must be finite in float32 (|x| ≤ 3.4e38), got {value:g}")
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if too_low or too_high:
            raise InputError(f"{flag} must be {self.text()}, got {value}")

    def text(self) -> str:
        low, high = _text(self.low), _text(self.high)
        if self.high is None:
            if self.low is None:
                return "a finite number"
            return f"> {low}" if self.open_low else f"at least {low}" if self.low >= 1 else f"≥ {low}"
        return f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


def _text(x) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


AT_LEAST_1 = Bounds(1)
POSITIVE = Bounds(0, open_low=True)
NON_NEGATIVE = Bounds(0)
FRACTION = Bounds(0, 1, open_high=True)  # [0, 1)
PROBABILITY = Bounds(0, 1, open_low=True, open_high=True)  # (0, 1)
# torch and numpy accept seeds in [0, 2⁶⁴); divgen adds offsets of up to a few million
# (held-out draws, evaluation noise), so seeds stay well inside: [0, 2³²).
SEED = Bounds(0, 2**32 - 1)
FINITE = Bounds()


# Plain ASCII decimal numbers. Python's int() and float() also read '1_000', full-width digits ('２０')
# and other Unicode digits and spaces, which no one types as a number on purpose; nan and inf are read
# so that the range check can name them.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)", re.IGNORECASE)


def ascii_number(text: str, kind: type = float):
    """`text` as an int or a float when it is a plain ASCII decimal number (a float may also be nan or inf),
    else None."""
    if not (_INTEGER if kind is int else _REAL).fullmatch(text):
        return None
    try:
        return kind(text)
    except ValueError:  # an int of more than 4300 digits (sys.get_int_max_str_digits)
        return None


def number(kind: type, flag: str, bounds: Bounds = FINITE):
    """An argparse `type` that reads an int or a float (plain ASCII, see ascii_number) and checks it against
    `bounds`."""

    def parse(text: str):
        value = ascii_number(text, kind)
        if value is None:
            digits = "ASCII digits 0-9" if kind is int else "ASCII digits 0-9, '.', 'e'"
            shown = text if len(text) <= 40 else text[:40] + "…"
            raise argparse.ArgumentTypeError(f"{shown!r} is not a valid {kind.__name__} (plain {digits})")
        try:
            bounds.check(flag, value)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{flag} ")) from None
        return value

    parse.__name__ = kind.__name__
    return parse


# ------------------------------------------------------------------- sizes ---
def size_text(n: float) -> str:
    """Bytes as text: 512 B, 3.2 MB, 51 GB, 16 TB (powers of 1000, as `df -H`)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError


def require(terms: list[tuple[str, float]], have: int, what: str = "memory") -> None:
    """Refuse a request whose estimate, the sum of `terms` (flag text, bytes), exceeds `have` bytes.

    The message names the flag of the largest term: that is the one to lower.
    """
    total = sum(b for _, b in terms)
    if total <= have:
        return
    flag = max(terms, key=lambda t: t[1])[0]
    raise InputError(f"{flag}: needs about {size_text(total)} of {what} (estimate), but {size_text(have)} is available")


# Bytes of memory per value a data reader reads, besides the file's own values (itemsize): their float32
# copy, the quotient when uint8 pixels are scaled, and the training rows when the split is made.
READ_BYTES_PER_VALUE = 3 * FLOAT32


def require_values(where: str, n_values: int, itemsize: int) -> None:
    """Refuse, before a reader reads them, values of data `where` that would not fit in the memory available."""
    require([(f"data {where!r}", n_values * (itemsize + READ_BYTES_PER_VALUE))], memory_available())


def memory_available(device=None) -> int:
    """Bytes that can be allocated now: free memory of a CUDA device, else the host's available memory
    (MemAvailable, within a cgroup's limit)."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    have = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
    except OSError:
        pass
    if have is None:
        try:
            have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 2**62  # unknown: nothing is refused
    try:  # a container's limit (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            have = min(have, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(int(have), 0)


def disk_free(path: Path | str) -> int:
    """Free bytes on the file system that `path` is (or would be created) on."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def require_disk(terms: list[tuple[str, float]], path: Path | str) -> None:
    require(terms, disk_free(path), f"disk space in {str(Path(path).absolute().parent)!r}")


# ------------------------------------------------------------- estimates ---
# Bytes per network parameter while training: the parameter, its gradient, Adam's two
# moments, and a checkpoint being written or read (torch.save, the SHA-256 pass).
BYTES_PER_PARAMETER = 6 * FLOAT32
# Bytes of activations per unit counted by activation_units, per sample and float: autograd keeps
# about one value per layer output for the backward pass, which frees them as it goes. Measured
# peak memory of a step (ring8, --batch-size 200000: 1.0 GB with js, 1.25 GB with a gradient
# penalty; conv on digits, 8192: 1.0 GB) was 0.55–0.8 of this estimate at 1.5 copies; with the 3×128
# GAN defaults, ring8's wasserstein step at --batch-size 60000 adds 0.76–0.82 GB over one at 1000,
# against 0.82 GB estimated at 1.5 (tests/test_hostile.py), too close for a bound, so 2.
ACTIVATION_COPIES = 2.0


def _chw(event_shape) -> tuple[int, int, int] | None:
    """(C, H, W) of image data ((H, W) or (C, H, W) with C ∈ {1, 3}), None for vectors."""
    shape = tuple(event_shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3 and shape[0] in (1, 3):
        return shape
    return None


def network_sizes(cfg, event_shape, networks: int = 2, n_classes: int = 0) -> dict[str, int]:
    """Parameters of a family's `networks` (the generator first, then the critic and/or an encoder),
    by the flags that set them, as models.py builds them: MLPs of `--width` × `--depth` for vectors,
    the conv nets of max(4, width/4) channels (three conv layers each) for images; the Gaussian
    family's generator is its mean and d × d scale; `n_classes` labels enter every network
    (one-hot inputs, or an embedding of the critic's features)."""
    w, depth, z = cfg.width, cfg.depth, cfg.noise_dim
    others = networks - 1
    chw = _chw(event_shape)
    if chw is None:
        d = math.prod(event_shape)
        if cfg.model == "gaussian":  # N(μ, LLᵀ): μ, L and L's diagonal; one MLP critic, of x and x² at most
            return {f"data dimension {d} (a {d} × {d} scale matrix)": d * d + 2 * d,
                    f"--width {w} --depth {depth}": others * ((depth - 1) * (w * w + w) + 2 * d * w + 2 * w + 1)}
        return {
            f"--noise-dim {z}": z * w + w + others * (w * z + z),  # the generator's input, an encoder's output
            f"--width {w} --depth {depth}": networks * (depth - 1) * (w * w + w),  # hidden layers
            f"--width {w}": (w * d + d) + others * (d * w + 2 * w + 1),  # data-sized layers, critic output
        } | ({f"{n_classes} classes": networks * n_classes * w} if n_classes else {})  # one-hot inputs
    c_in, h, wd = chw
    c = max(4, w // 4)
    grid = 2 * c * math.ceil(h / 4) * math.ceil(wd / 4)  # the coarsest feature map: the generator's start
    return {
        f"--noise-dim {z}": (z + 1) * grid + others * (grid + 1) * 2 * z,
        f"--width {w}": (27 * c * c + 9 * c * c_in) + others * (9 * c_in * c + 96 * c * c + grid + 1),
    } | ({f"{n_classes} classes": networks * n_classes * grid} if n_classes else {})  # one-hot in, embedded features


def activation_units(cfg, event_shape, networks: int = 2) -> dict[str, int]:
    """Values one sample leaves in the networks' layers (kept for the backward pass), by flag; every
    network but the generator sees twice the batch (the critic: real and generated samples)."""
    w, depth, z = cfg.width, cfg.depth, cfg.noise_dim
    weight = 1 + 2 * (networks - 1)
    chw = _chw(event_shape)
    if chw is None:
        d = math.prod(event_shape)
        return {f"--width {w} --depth {depth}": 2 * weight * depth * w, f"--noise-dim {z}": z, "": weight * (d + 1)}
    c_in, h, wd = chw
    c = max(4, w // 4)
    return {f"--width {w}": h * wd * (8 * c + (weight - 1) * 4 * c), f"--noise-dim {z}": z, "": weight * h * wd * c_in}


def training_memory(cfg, event_shape, n_rows: int, networks: int = 2, n_classes: int = 0) -> list[tuple[str, float]]:
    """Memory of a training run (bytes by flag): networks and optimizer state, a batch's activations,
    the noise drawn ahead, the data."""
    b, z = cfg.batch_size, cfg.noise_dim
    terms = [(flag, n * BYTES_PER_PARAMETER) for flag, n in network_sizes(cfg, event_shape, networks, n_classes).items()]
    act = ACTIVATION_COPIES * FLOAT32 * b
    terms += [(f"--batch-size {b} {flag}".strip(), act * n) for flag, n in activation_units(cfg, event_shape, networks).items()]
    terms.append((f"--batch-size {b} --noise-dim {z}", FLOAT32 * b * z + (8 << 20)))  # Stream's noise drawn ahead
    terms.append((f"--n-data {n_rows}", FLOAT32 * n_rows * math.prod(event_shape)))
    return terms


def training_disk(cfg, event_shape, networks: int = 2, n_classes: int = 0) -> list[tuple[str, float]]:
    """Disk space of a run directory: checkpoints (networks and Adam state, one more while one is
    written) and samples.npy."""
    params = sum(network_sizes(cfg, event_shape, networks, n_classes).values())
    return [(f"--keep-checkpoints {cfg.keep_checkpoints}", (cfg.keep_checkpoints + 1) * 3 * FLOAT32 * params),
            (f"--n-samples {cfg.n_samples}", FLOAT32 * cfg.n_samples * math.prod(event_shape))]


def mmd_test_memory(n: int, m: int, permutations: int, block: int) -> list[tuple[str, float]]:
    """A permutation MMD test holds the (N, P + 1) membership matrix in float32 and float64, and per pair
    of `block`-row blocks their distances (float64 and float32), one kernel block and K·S."""
    big_n = n + m
    return [(f"--permutations {permutations}", (FLOAT32 + 8) * big_n * (permutations + 1)),
            (f"samples ({n} + {m} rows)", (8 + 2 * FLOAT32) * block * block + FLOAT32 * block * (permutations + 1))]
