"""The user's data files, every format DESIGN.md lists, read and checked before anything large is allocated.

`.npy`, `.npz` (`x` with labels `y`, its only array, or Keras' `x_train`, `y_train`, `x_test`, `y_test`),
`.csv`, IDX (MNIST's format, gzipped or not: a directory of the four standard files or one images file),
and a folder of PNG/JPEG images (one sub-folder per class, or the images directly inside; those two
readers are image_files.py). Each reader
compares what a header claims (shapes, types, counts) with the bytes on disk and with the memory available
before it reads the values; anything wrong is one InputError line. Only numpy at import time: PIL, gzip
and csv are imported by the readers that need them.
"""

from __future__ import annotations

import hashlib
import math
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from divgen import catalog, image_files, limits
from divgen.errors import InputError, first_line, warn

FILE_TYPES = (".npy", ".npz", ".csv")
FORMATS = "a .npy, .npz or .csv file, an IDX file or directory (MNIST's format), or a folder of PNG/JPEG images"
# names an array of labels goes by: an .npz holding one of these alone holds no samples
LABEL_NAMES = ("y", "label", "labels", "target", "targets", "class", "classes", "y_train", "y_test")
MAX_FIELD = 1000  # characters in one CSV cell: a number needs fewer than 30, a column name rarely 100
# The names people type first. None of them is built in (nothing is downloaded); each says where a copy
# usually sits, in a format divgen reads.
KNOWN_SETS = {
    "mnist": "an IDX directory such as torchvision's <root>/MNIST/raw/, or Keras' ~/.keras/datasets/mnist.npz",
    "fashionmnist": "an IDX directory such as torchvision's <root>/FashionMNIST/raw/ or Keras' "
                    "~/.keras/datasets/fashion-mnist/",
    "emnist": "one images file in torchvision's <root>/EMNIST/raw/ (e.g. emnist-balanced-train-images-idx3-ubyte; "
              "its labels file is found beside it)",
    "cifar10": "CIFAR-10's own files are Python pickles, which divgen never reads: save the arrays as a .npz "
               "(x_train, y_train, x_test, y_test, as Keras' cifar10.load_data() returns them) or the images as "
               "PNG files in one folder per class",
}


class UserData(NamedTuple):
    """A user's data: samples, labels, the event shape, and the file's own held-out split."""

    x: np.ndarray  # (N, d) float32, images flattened
    y: np.ndarray | None  # (N,) int64 labels in 0..N-1, or None
    event_shape: tuple[int, ...]  # (d,), or an image's (H, W) or (C, H, W)
    n_test: int = 0  # the last n_test rows are the file's test split (IDX t10k, Keras x_test); 0: none


def read(path: str | Path) -> UserData:
    """Read and validate a user's data (a file or a directory); InputError with one line for everything
    DESIGN.md rejects."""
    path = Path(path)
    where = str(path)
    if not path.exists():
        known = KNOWN_SETS.get(re.sub(r"[-_ ]", "", path.name.lower()))
        if known and len(path.parts) == 1:
            raise InputError(f"data {where!r} is not built in and divgen downloads nothing; point --data at the "
                             f"files you have: {known}")
        if path.suffix.lower() not in FILE_TYPES and not image_files.is_idx_name(path.name):
            raise InputError(f"data {where!r}: not a built-in data set ({', '.join(catalog.DATASETS)}) nor {FORMATS}")
        raise InputError(f"data file {where!r} does not exist")
    if not (path.is_dir() or path.is_file()):  # never opened: reading a named pipe waits for a writer forever
        raise InputError(f"data {where!r} is not a file (a named pipe, socket or device); give a data file or folder")
    try:
        if path.is_dir():
            if image_files.idx_set(path):
                x, y, n_test = image_files.idx_dir(path)
                return _user(x, y, where, n_test)
            return _user(*image_files.read_image_folder(path), where)
        if image_files.is_idx_name(path.name):
            return _user(*image_files.idx_file(path), where)
        ext = path.suffix.lower()
        if ext not in FILE_TYPES:
            raise InputError(f"data {where!r}: not a built-in data set ({', '.join(catalog.DATASETS)}) nor {FORMATS}")
        if ext == ".npy":
            return _user(_read_npy(path), None, where)
        if ext == ".npz":
            return _read_npz(path)
        return _user(_read_csv(path), None, where)
    except InputError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # an array of Python objects
            raise InputError(f"data file {where!r} holds Python objects, not numbers; divgen never unpickles "
                             "a file: save a numeric array") from None
        raise InputError(f"data file {where!r} could not be read: {first_line(e)}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"data {where!r} could not be read: {first_line(e)}") from None


def read_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """Every row of a user's data (a test split included): (N, d) float32 samples, labels (N,) int64 or
    None, and the event shape of one sample: (d,), or an image's (H, W) or (C, H, W).

    Images are N×H×W, N×C×H×W or channels-last N×H×W×C arrays (C = 1 or 3, or 4 with a constant alpha),
    IDX files or image folders; uint8 pixels are scaled to [0, 1], floats are kept as they are.
    """
    data = read(path)
    return data.x, data.y, data.event_shape


def read_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A user's sample file as (N, d) float32 (images flattened) and its labels, if any."""
    data = read(path)
    return data.x, data.y


def _user(x, y, where: str, n_test: int = 0) -> UserData:
    if n_test and len(x) - n_test < 2:
        raise InputError(f"data {where!r}: its training split has {len(x) - n_test} rows; at least 2 are needed")
    x, shape = _validate(x, where)
    return UserData(x, _validate_labels(y, len(x), where), shape, n_test)


# -------------------------------------------------------------- npy, npz ---
def _npy_header(fh, where: str, available: int) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype in a .npy header, read from `fh` (positioned at the start) without the values;
    InputError if the `available` bytes of the file cannot hold the values the header promises, the
    mark of a truncated file or a lying header, before anything of that size is allocated."""
    start = fh.tell()
    if fh.read(6) != b"\x93NUMPY":  # else numpy takes it for a pickle and suggests allow_pickle
        raise InputError(f"data file {where!r} is not a .npy file (it lacks numpy's header); write it with numpy.save")
    fh.seek(start)
    version = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(fh)
    if dtype.hasobject:
        raise InputError(f"data file {where!r} holds Python objects, not numbers; divgen never unpickles a file: "
                         "save a numeric array")
    need, have = math.prod(shape) * dtype.itemsize, available - (fh.tell() - start)
    if need > have:
        raise InputError(f"data file {where!r} is truncated: its header promises an array of shape {shape} "
                         f"({dtype}, {need} bytes) but {max(have, 0)} bytes follow the header")
    return shape, dtype


def _read_npy(path: Path) -> np.ndarray:
    where = str(path)
    with open(path, "rb") as fh:
        shape, dtype = _npy_header(fh, where, path.stat().st_size)
    limits.require_values(where, math.prod(shape), dtype.itemsize)
    return np.load(path, allow_pickle=False)


def _npz_arrays(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz, each header checked (size, type, memory) before any is read."""
    where = str(path)
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as z:
        members = {info.filename.removesuffix(".npy"): info for info in z.infolist()}
        heads = {}
        for key in keys:
            with z.open(members[key]) as member:
                heads[key] = _npy_header(member, f"{where}[{key}]", members[key].file_size)
    limits.require_values(where, sum(math.prod(s) for s, _ in heads.values()), max(d.itemsize for _, d in heads.values()))
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # fh: closed even when the zip is bad
        return {key: z[key] for key in keys}


def _npz_keys(path: Path) -> list[str]:
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as z:
        return [info.filename.removesuffix(".npy") for info in z.infolist() if info.filename.endswith(".npy")]


def _read_npz(path: Path) -> UserData:
    """`x` (labels `y`), Keras' `x_train`/`y_train` with `x_test`/`y_test` as the test split, or the only
    array, unless that is named like labels."""
    where = str(path)
    keys = _npz_keys(path)
    if "x" in keys:
        a = _npz_arrays(path, ["x", *(["y"] if "y" in keys else [])])
        return _user(a["x"], a.get("y"), where)
    if "x_train" in keys:
        return _read_keras(path, keys)
    if len(keys) == 1 and keys[0].lower() not in LABEL_NAMES:
        return _user(_npz_arrays(path, keys)[keys[0]], None, where)
    if len(keys) == 1:
        raise InputError(f"data file {where!r} holds only labels {keys[0]!r} and no samples; save the samples "
                         "under 'x' (and their labels under 'y')")
    raise InputError(f"data file {where!r}: no array 'x' (or Keras' 'x_train') among {keys}")


def _read_keras(path: Path, keys: list[str]) -> UserData:
    """Keras' layout (keras.datasets.*.load_data() saved with np.savez): the test arrays are the held-out split."""
    where = str(path)
    if "y_test" in keys and "x_test" not in keys:
        raise InputError(f"data file {where!r} has 'y_test' but no 'x_test'; save both (or neither)")
    if "x_test" in keys and ("y_train" in keys) != ("y_test" in keys):
        given, missing = ("y_train", "y_test") if "y_train" in keys else ("y_test", "y_train")
        raise InputError(f"data file {where!r} has labels {given!r} but no {missing!r}; label both splits (or neither)")
    names = [k for k in ("x_train", "y_train", "x_test", "y_test") if k in keys]
    a = _npz_arrays(path, names)
    if "x_test" not in a:
        return _user(a["x_train"], a.get("y_train"), where)
    x_train, x_test = a["x_train"], a["x_test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InputError(f"data file {where!r}: x_train's samples have shape {x_train.shape[1:]} but x_test's "
                         f"have {x_test.shape[1:]}")
    y = None
    if "y_train" in a:
        y = np.concatenate([_label_vector(a["y_train"], len(x_train), f"{where}[y_train]"),
                            _label_vector(a["y_test"], len(x_test), f"{where}[y_test]")])
    return _user(np.concatenate([x_train, x_test]), y, where, n_test=len(x_test))


# -------------------------------------------------------------------- CSV ---
def _read_csv(path: Path) -> np.ndarray:
    """Plain ASCII decimal numbers, one sample per row (float64 (N, d)). The text is UTF-8, with or without
    the byte-order mark Excel's "CSV UTF-8" writes; line ends may be CRLF; quoted numbers ("1.5") are
    numbers. Blank lines and lines starting with # are skipped; a # after values is refused, not dropped.
    A first row with a name in it (a cell that is not a number) is a header; a header whose first name is
    empty or `Unnamed: 0` marks a row index (pandas' `to_csv`): that column is dropped, with a warning."""
    import csv
    from array import array

    where = str(path)
    # each value takes at least 2 bytes of text (a digit and a comma) and 8 + 2·4 bytes in memory
    limits.require([(f"data {where!r}", 8 * path.stat().st_size)], limits.memory_available())
    values, width, header, drop, first = array("d"), None, None, 0, 0
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for line_no, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if len(line) > MAX_FIELD and max(map(len, line.split(","))) > MAX_FIELD:
                raise InputError(f"data file {where!r}, line {line_no}: a field of "
                                 f"{max(map(len, line.split(',')))} characters; a number has at most {MAX_FIELD}")
            try:
                cells = [c.strip(" \t\r\n") for c in next(csv.reader([line], skipinitialspace=True))]
            except csv.Error as e:
                raise InputError(f"data file {where!r}, line {line_no}: {e}") from None
            if not any(cells):
                continue
            if _comment_after_numbers(cells):
                raise InputError(f"data file {where!r}, line {line_no}: a # comment after the values; divgen skips "
                                 "only whole lines that start with #, so move the comment to its own line")
            numbers = [limits.ascii_number(c) for c in cells]
            if width is None and header is None and _is_header(cells, numbers):
                header, first = cells, line_no
                drop = int(len(cells) > 1 and cells[0] in ("", "Unnamed: 0"))
                continue
            bad = next((c for c, v in zip(cells[drop:], numbers[drop:]) if v is None), None)
            if bad is not None:
                hint = "; values separated by ';'? divgen reads commas" if ";" in bad else ""
                raise InputError(f"data file {where!r}, line {line_no}: non-numeric value {bad!r} (plain ASCII "
                                 f"decimal numbers only){hint}")
            if width is None and header is not None and len(cells) != len(header):
                raise InputError(f"data file {where!r}: rows have different numbers of columns: line {line_no} "
                                 f"has {len(cells)}, the header (line {first}) names {len(header)}")
            if width is None:
                width, first = len(cells) - drop, line_no
            elif len(cells) - drop != width:
                raise InputError(f"data file {where!r}: rows have different numbers of columns: line {line_no} "
                                 f"has {len(cells) - drop}, line {first} has {width}")
            values.extend(numbers[drop:])
    if width is None:
        raise InputError(f"data file {where!r} has a header but no rows" if header else f"data file {where!r} is empty")
    if drop:
        warn(f"data file {where!r}: the first column has no name in the header, the mark of a row index "
             "(pandas' to_csv); it is not used as a feature")
    return np.frombuffer(values, np.float64).reshape(-1, width)


def _is_header(cells: list[str], numbers: list) -> bool:
    """A first row is a header when it names something (a cell that is not empty and not a number, not even
    one that only Python's float() reads, such as '1_000' or '１'), or when only its first cell is empty
    (pandas' index mark over numbered columns: ",0,1"). Any other row is data: a row of numbers with a gap
    ("1,,3") or an odd number is refused for that cell, never dropped as a header."""
    named = any(v is None and c and not _python_float(c) for c, v in zip(cells, numbers))
    return named or (len(cells) > 1 and cells[0] == "" and all(cells[1:]))


def _python_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _comment_after_numbers(cells: list[str]) -> bool:
    """Whether a row is numbers followed by a # comment ("1,2 # note"), which a header test would take for
    a row of names and drop."""
    text = ",".join(cells)
    if "#" not in text:
        return False
    before = [c.strip(" \t") for c in text[: text.index("#")].split(",")]
    return any(before) and all(c == "" or limits.ascii_number(c) is not None for c in before)


# ------------------------------------------------------------- validation ---
def _channels_first(x: np.ndarray, where: str) -> np.ndarray:
    """Images as N×C×H×W with C ∈ {1, 3}: channels-last arrays (N×H×W×C, C ∈ {1, 3, 4}, as Keras and PIL
    store them; the second axis is not a channel count) are transposed, and a constant alpha channel, which
    tells nothing about the picture, is dropped."""
    if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] == 4:
        alpha = x[:, 3]
        if not (alpha == alpha.flat[0]).all():
            raise InputError(f"data {where!r}: 4 channels whose 4th (alpha) varies; divgen models grey (C = 1) or "
                             "RGB (C = 3) images: composite them onto a background first")
        x = x[:, :3]
    if x.ndim == 4 and x.shape[1] not in (1, 3):
        raise InputError(f"data {where!r}: images must be N×H×W or N×C×H×W with C = 1 or 3 (channels last: "
                         f"N×H×W×C), got shape {x.shape}")
    return x


def _validate(x, where: str) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise InputError(f"data {where!r}: array of type {x.dtype} is not numeric")
    if x.ndim == 1:
        x = x[:, None]
    x = _channels_first(x, where)
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
        x = x.astype(np.float32, copy=False)
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


def _label_vector(y, n: int, where: str) -> np.ndarray:
    """Labels as an (n,) array: one per row, or an (n, 1) column as Keras' CIFAR labels come."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"data {where!r}: labels 'y' must be one integer per row ({n}), got shape {y.shape}")
    return y


def _validate_labels(y, n: int, where: str) -> np.ndarray | None:
    """Integer labels in 0..n−1. A model has one class per value up to the largest label (n_classes is
    max + 1), so a label of n or more, beyond one class per row, is refused rather than allocated."""
    if y is None:
        return None
    y = _label_vector(y, n, where)
    integral = y.dtype.kind in "biu" or (y.dtype.kind == "f" and bool(np.all(np.isfinite(y))) and bool(np.all(y == np.round(y))))
    if not integral:
        raise InputError(f"data {where!r}: labels 'y' must be integers, got {y.dtype} values such as {y.flat[0]!r}")
    if y.min() < 0:
        raise InputError(f"data {where!r}: labels 'y' must be ≥ 0, found {int(y.min())}")
    if y.max() >= n:
        raise InputError(f"data {where!r}: labels 'y' must lie in 0..{n - 1} (the classes are 0..largest label, at "
                         f"most one per row of the {n}), found {y.max():.0f}; number the classes 0..K−1")
    return y.astype(np.int64)


# ------------------------------------------------------------ fingerprint ---
def source_files(path: Path) -> list[Path]:
    """The files a user's data is read from: the file itself, an IDX images file and its labels, the
    files of an IDX directory, the images of a folder."""
    if path.is_dir():
        files = image_files.idx_set(path)
        return sorted(files.values()) if files else image_files.image_files(path)[0]
    labels = image_files.labels_beside(path) if image_files.is_idx_name(path.name) else None
    return [path] + ([labels] if labels else [])


def fingerprint(name: str, expected: str = "") -> str:
    """SHA-256 of a data file's bytes ("" for a built-in set; for data in several files, of their names and
    digests). InputError if it differs from `expected` (a run's config.json): the data changed since the
    run was trained."""
    if name in catalog.DATASETS:
        return ""
    path = Path(name)
    files = source_files(path)
    digests = []
    for f in files:
        h = hashlib.sha256()
        try:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        except OSError as e:
            raise InputError(f"data file {str(f)!r} cannot be read: {e.strerror or e}") from None
        digests.append((f, h))
    if files == [path]:
        digest = digests[0][1].hexdigest()
    else:
        h = hashlib.sha256()
        for f, d in digests:
            h.update(f.relative_to(path if path.is_dir() else path.parent).as_posix().encode() + b"\0" + d.digest())
        digest = h.hexdigest()
    if expected and digest != expected:
        raise InputError(f"data {name!r} has changed since the run was trained (its SHA-256 is not the one in "
                         "config.json); restore the original files, or train a new run on these")
    return digest
