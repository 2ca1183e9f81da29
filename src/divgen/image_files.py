"""Image files as other tools leave them: IDX (MNIST's format) and folders of PNG/JPEG images.

Each reader returns uint8 (or the IDX type's) arrays and labels, with every header read and compared
(counts, sizes, modes, the bytes on disk, the memory available) before any pixel is decoded; anything
wrong is one InputError line. data_files.py validates and scales what they return.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from divgen import limits
from divgen.errors import InputError, first_line

IMAGE_TYPES = (".png", ".jpg", ".jpeg")
OTHER_IMAGE_TYPES = (".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")  # images divgen does not read


# -------------------------------------------------------------------- IDX ---
# IDX (LeCun's MNIST format): two zero bytes, a type code, the number of dimensions, each dimension as a
# big-endian uint32, then the values, big-endian, in C order.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte, emnist-balanced-test-images-idx3-ubyte, and
# Kaggle's train-images.idx3-ubyte
_IDX_NAME = re.compile(r"(?P<prefix>.*?)(?P<split>train|t10k|test)-(?P<kind>images|labels)[-.]idx[0-9]-ubyte"
                       r"(?:\.gz)?", re.IGNORECASE)


def is_idx_name(name: str) -> bool:
    return bool(re.fullmatch(r".*idx[0-9]-ubyte(?:\.gz)?", name, re.IGNORECASE))


def _idx_header(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The type and dimensions an IDX file's header declares; InputError unless the file (for .gz, its
    uncompressed size, from the gzip trailer) holds exactly that many values."""
    import gzip

    where = str(path)
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as fh:
            head = fh.read(4)
            ok = len(head) == 4 and head[:2] == b"\0\0" and head[2] in IDX_TYPES and head[3] >= 1
            raw = fh.read(4 * head[3]) if ok else b""
        if not ok or len(raw) != 4 * head[3]:
            raise InputError(f"data file {where!r} is not an IDX file (it lacks the IDX header: two zero bytes, a "
                             "type code, the number of dimensions)")
        dtype, dims = np.dtype(IDX_TYPES[head[2]]), tuple(int(d) for d in np.frombuffer(raw, ">u4"))
        total = 4 + 4 * len(dims) + math.prod(dims) * dtype.itemsize
        if path.name.lower().endswith(".gz"):
            with open(path, "rb") as fh:
                fh.seek(-4, 2)
                size = int.from_bytes(fh.read(4), "little")  # ISIZE: the uncompressed size mod 2³²
            if size != total % 2**32:
                raise InputError(f"data file {where!r} is truncated or damaged: its IDX header promises {dims} values "
                                 f"of type {dtype.name} ({total} bytes uncompressed), its gzip trailer says {size}")
        elif path.stat().st_size != total:
            raise InputError(f"data file {where!r} is truncated or not what its IDX header says: the header "
                             f"promises {dims} values of type {dtype.name} ({total} bytes), the file holds "
                             f"{path.stat().st_size}")
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise InputError(f"data file {where!r} could not be read: {first_line(e)}") from None
    return dtype, dims


def _read_idx(path: Path, dtype: np.dtype, dims: tuple[int, ...]) -> np.ndarray:
    """The values of an IDX file whose header _idx_header checked (as a native-endian array)."""
    import gzip
    import zlib

    nbytes = math.prod(dims) * dtype.itemsize
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as fh:
            fh.seek(4 + 4 * len(dims))
            raw = fh.read(nbytes)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"data file {str(path)!r} could not be read: {first_line(e)}") from None
    if len(raw) != nbytes:
        raise InputError(f"data file {str(path)!r} is truncated: {len(raw)} of the {nbytes} bytes its header promises")
    return np.frombuffer(raw, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_pair(images: Path, labels: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """An IDX images file and its labels: counts, shapes and memory checked from the headers first."""
    where = str(images)
    dtype, dims = _idx_header(images)
    if len(dims) == 1:
        raise InputError(f"data file {where!r} is one value per row, an IDX labels file; give its images file "
                         "(…-images-idx3-ubyte)")
    label_dims = None
    if labels is not None:
        label_type, label_dims = _idx_header(labels)
        if label_dims[0] != dims[0] or len(label_dims) != 1:
            raise InputError(f"data file {str(labels)!r} holds labels of shape {label_dims} for the {dims[0]} images "
                             f"of {where!r}")
    limits.require_values(where, math.prod(dims), dtype.itemsize)
    x = _read_idx(images, dtype, dims)
    if images.name.lower().startswith("emnist"):
        # EMNIST stores each image transposed (column by column); turned back, its letters read upright
        x = x.transpose(0, 2, 1) if x.ndim == 3 else x
    return x, (None if labels is None else _read_idx(labels, label_type, label_dims))


def labels_beside(images: Path) -> Path | None:
    """The labels file of an IDX images file, by the standard name, gzipped or not."""
    m = re.fullmatch(r"(.*)images([-.])idx3-ubyte(?:\.gz)?", images.name, re.IGNORECASE)
    if not m:
        return None
    for name in (f"{m[1]}labels{m[2]}idx1-ubyte", f"{m[1]}labels{m[2]}idx1-ubyte.gz"):
        if (images.parent / name).is_file():
            return images.parent / name
    return None


def idx_set(folder: Path) -> dict[tuple[str, str], Path]:
    """The IDX files of a directory as {(split, kind): path}, split train/test, kind images/labels; {} when it
    holds none. An uncompressed file is preferred to its .gz (torchvision's raw/ folders hold both)."""
    found: dict[str, dict[tuple[str, str], Path]] = {}
    for p in sorted(folder.iterdir(), key=lambda p: (p.name.lower().endswith(".gz"), p.name)):
        m = _IDX_NAME.fullmatch(p.name)
        if m and p.is_file():
            split = "train" if m["split"].lower() == "train" else "test"
            found.setdefault(m["prefix"].lower(), {}).setdefault((split, m["kind"].lower()), p)
    if len(found) > 1:
        names = ", ".join(f"{prefix or '(no prefix)'}train-…" for prefix in found)
        raise InputError(f"data {str(folder)!r} holds several IDX sets ({names}); point --data at one images file")
    return next(iter(found.values()), {})


def idx_dir(folder: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The four standard files: train for training, t10k (EMNIST: test) held out. (x, y, n_test): the
    train rows, then the test rows, the last n_test of them (0 without a test split)."""
    where = str(folder)
    files = idx_set(folder)
    for split, kind in (("train", "images"), ("train", "labels"), ("test", "images"), ("test", "labels")):
        if (split, kind) not in files and (split == "train" or any(s == "test" for s, _ in files)):
            have = ", ".join(p.name for p in files.values())
            raise InputError(f"data {where!r}: the IDX {split} {kind} file is missing (found {have})")
    x, y = _idx_pair(files["train", "images"], files["train", "labels"])
    if ("test", "images") not in files:
        return x, y, 0
    x_test, y_test = _idx_pair(files["test", "images"], files["test", "labels"])
    if x.shape[1:] != x_test.shape[1:]:
        raise InputError(f"data {where!r}: the train images are {x.shape[1:]}, the test images {x_test.shape[1:]}")
    return np.concatenate([x, x_test]), np.concatenate([y, y_test]), len(x_test)


def idx_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """One IDX images file and the labels file beside it, if there is one."""
    return _idx_pair(path, labels_beside(path))


# ----------------------------------------------------------- image folders ---
# The mode each of PIL's modes is read in: grey, RGB, or RGBA (whose alpha _validate drops when constant)
IMAGE_MODES = {"1": "L", "L": "L", "RGB": "RGB", "RGBA": "RGBA", "LA": "RGBA", "PA": "RGBA"}


def _read_mode(im) -> str | None:
    """The mode an image is read in (None: not read); a palette image is RGB, or RGBA when one of its
    colours is transparent."""
    if im.mode == "P":
        return "RGBA" if "transparency" in im.info else "RGB"
    return IMAGE_MODES.get(im.mode)


def _visible(folder: Path) -> list[Path]:
    """The entries of a folder, sorted, without hidden ones (.DS_Store, .ipynb_checkpoints)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images_in(folder: Path, deep: bool) -> list[Path]:
    """The PNG/JPEG files of a folder (with `deep`, at any depth); InputError for an image format divgen
    does not read, rather than leaving those images out."""
    files = sorted(p for p in (folder.rglob("*") if deep else folder.iterdir())
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    other = next((p for p in files if p.suffix.lower() in OTHER_IMAGE_TYPES), None)
    if other is not None:
        raise InputError(f"image {str(other)!r}: divgen reads PNG and JPEG images only; convert the "
                         f"{other.suffix} files (e.g. with PIL: Image.open(f).save(f.with_suffix('.png')))")
    return [p for p in files if p.suffix.lower() in IMAGE_TYPES]


def image_files(folder: Path) -> tuple[list[Path], list[int] | None]:
    """The images of a folder and their labels: one sub-folder per class, sorted names labelled 0..K−1
    (torchvision's ImageFolder; the images at any depth inside), or the images directly inside, unlabelled."""
    where = str(folder)
    classes = [p for p in _visible(folder) if p.is_dir()]
    loose = _images_in(folder, deep=False)
    per_class = [_images_in(c, deep=True) for c in classes]
    if not loose and not any(per_class):
        raise InputError(f"data {where!r} is a directory with no IDX files and no PNG/JPEG images")
    if loose and any(per_class):
        raise InputError(f"data {where!r} holds images both directly inside (e.g. {loose[0].name!r}) and in class "
                         "sub-folders; put every image in a class folder, or none")
    if loose:
        return loose, None
    empty = next((c for c, files in zip(classes, per_class) if not files), None)
    if empty is not None:
        raise InputError(f"data {where!r}: class folder {empty.name!r} holds no PNG/JPEG images (each sub-folder "
                         "is a class); remove it or add its images")
    return [f for files in per_class for f in files], [k for k, files in enumerate(per_class) for _ in files]


def read_image_folder(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The images as N×H×W (grey) or N×C×H×W uint8, and their labels. Every header is read (size, mode)
    and compared before any image is decoded."""
    import warnings

    from PIL import Image

    files, labels = image_files(folder)

    def header(f: Path) -> tuple[tuple[int, int], str, str | None]:
        with Image.open(f) as im:  # the header only: no pixels are decoded
            return im.size, im.mode, _read_mode(im)

    def decode(f: Path) -> np.ndarray:
        with Image.open(f) as im:
            return np.asarray(im.convert(target))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the memory check below decides
        size, mode, target = _image_call(files[0], header)
        if target is None:
            raise InputError(f"image {str(files[0])!r} has PIL mode {mode}; divgen reads 8-bit grey, RGB or RGBA "
                             "images: convert them")
        for f in files[1:]:
            other = _image_call(f, header)
            if other[0] != size or other[2] != target:
                raise InputError(f"image {str(f)!r} is {other[0][0]}×{other[0][1]} {other[1]}, but "
                                 f"{str(files[0])!r} is {size[0]}×{size[1]} {mode}; every image must have the "
                                 "same size and colours")
        c = len(target)  # "L", "RGB", "RGBA"
        limits.require_values(str(folder), len(files) * size[0] * size[1] * c, 1)
        x = np.empty((len(files), size[1], size[0], c), np.uint8)  # (N, H, W, C); PIL's size is (W, H)
        for i, f in enumerate(files):
            x[i] = _image_call(f, decode).reshape(size[1], size[0], c)
    x = x[..., 0] if c == 1 else x.transpose(0, 3, 1, 2)  # (N, H, W) or (N, C, H, W)
    return x, None if labels is None else np.array(labels, np.int64)


def _image_call(f: Path, read_one):
    """read_one(f), with PIL's errors (a broken or truncated file, a decompression bomb) as one line."""
    from PIL import Image

    try:
        return read_one(f)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise InputError(f"image {str(f)!r} could not be read: {first_line(e)}") from None
