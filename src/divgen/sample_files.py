"""Files of generated samples: `divgen sample -o FILE` and a run's samples.npy.

The format follows the extension: `.npy` (float32, one sample per row, images
flattened), `.npz` (the same array under the key `x`), `.csv` (one sample per
row, no header), `.png` (a grid of images, for image data only). Samples are
drawn and written in chunks of at most CHUNK_BYTES (a few rows of large images),
so a large `-n` needs disk space, not memory; the disk space is checked first.
The file is written under a temporary name and renamed when complete: an
interrupted (Ctrl-C, SIGTERM) or failed write leaves no partial file and an
existing file (with --overwrite) intact.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from divgen import families, files, limits
from divgen.errors import InputError
from divgen.progress import Progress

FORMATS = (".npy", ".npz", ".csv", ".png")
CSV_BYTES = 16  # per value: "%.9g" and a separator, at most
CHUNK_BYTES = 64 << 20  # the samples drawn at a time (float32), whatever their size: -n costs disk, not memory
CHUNK_ROWS = 8192  # at most, for small samples: a vector generator's hidden layers are wider than its output


def chunk_rows(dim: int) -> int:
    """Rows drawn at a time for samples of dimension `dim`: CHUNK_BYTES of them, at least one."""
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // (limits.FLOAT32 * dim)))


def check_output(path: Path | str, overwrite: bool, flag: str = "-o", formats: tuple[str, ...] = FORMATS,
                 reads: Path | str | None = None) -> Path:
    """InputError unless `path` can be written: a known extension, not a folder or a named pipe, not clobbering
    unasked (a symbolic link, even a broken one, counts as existing), not the file the command `reads`, in an
    existing folder that takes new files."""
    path = Path(path)
    where = f"{flag} {str(path)!r}"
    if path.suffix.lower() not in formats:
        raise InputError(f"{where}: the output must be a {', '.join(formats)} file")
    st = files.lstat(path, flag)
    if st is not None:
        if files.is_folder(path):
            raise InputError(f"{where} is a directory; give a file name")
        if not files.replaceable(st):
            raise InputError(f"{where} is a {files.kind(st)}, not a file; give the name of a file")
        if not overwrite:
            raise InputError(f"{where} exists; pass --overwrite to replace it")
        if reads is not None and os.path.exists(path) and os.path.exists(reads) and os.path.samefile(path, reads):
            raise InputError(f"{where} is the file this command reads; write to another file")
    folder = path.parent
    if not files.is_folder(folder):
        raise InputError(f"{where}: {str(folder)!r} {'is not a folder' if os.path.lexists(folder) else 'does not exist'}")
    files.require_folder(folder, flag)
    return path


def write(path: Path, nets, n: int, seed: int, event_shape, label: int | None = None, quiet: bool = True,
          flag: str = "-n") -> None:
    """Draw n samples (families.draw_chunks with `seed`, class `label` of a conditional model) and write
    them to `path` in its format: .npy and .npz keep the event shape (N×C×H×W images, N×d vectors), a .csv
    has one flattened sample per row; an .npz also holds a conditional model's labels under `y`."""
    path = Path(path)
    dim = math.prod(event_shape)
    ext = path.suffix.lower()
    # a conditional model draws its n labels up front (families.draw_chunks): 8 bytes each, in memory
    held = 8 * n if getattr(nets["generator"], "n_classes", 0) else 0
    if ext == ".png":
        from divgen import plots  # matplotlib, for image grids only

        if not plots.is_image(event_shape):
            raise InputError(f"-o {str(path)!r}: a .png grid needs image data (H×W or C×H×W); this run's samples are "
                             f"vectors of dimension {dim}: write .npy, .npz or .csv")
        held += 3 * limits.FLOAT32 * n * dim
    else:
        per_value = CSV_BYTES if ext == ".csv" else limits.FLOAT32
        limits.require_disk([(f"{flag} {n}", per_value * n * dim)], path)
    rows = chunk_rows(dim)
    stored = stored_shape(event_shape)
    held += 2 * limits.FLOAT32 * min(rows, n) * dim  # a chunk, and its bytes as they are written
    limits.require([(f"{flag} {n}", held)], limits.memory_available())
    progress = Progress(n, f"sample {path.name}", quiet, unit="samples")
    labels = []

    def chunks():
        for x, y in families.draw_chunks(nets, n, seed, label, chunk=rows):
            labels.append(y)
            yield x.float().reshape(len(x), dim).numpy()
            progress.update(len(x))

    try:
        if ext == ".png":
            images = np.concatenate(list(chunks()))
            files.atomic_write(path, lambda fh: plots.image_grid(fh, images, event_shape))
        elif ext == ".csv":
            files.atomic_write(path, lambda fh: [np.savetxt(fh, part, delimiter=",", fmt="%.9g") for part in chunks()])
        elif ext == ".npz":
            files.atomic_write(path, lambda fh: _npz(fh, chunks(), (n, *stored), labels))
        else:
            files.atomic_write(path, lambda fh: _npy(fh, chunks(), (n, *stored)))
    finally:
        progress.close()


def stored_shape(event_shape) -> tuple[int, ...]:
    """One sample's shape in an .npy or .npz: vectors (d,), images C×H×W (an H×W image gains its channel)."""
    shape = tuple(event_shape)
    return (1, *shape) if len(shape) == 2 else shape


def _npy(fh, chunks, shape: tuple[int, ...]) -> None:
    """The .npy format of an array of `shape`, header first, then the rows (flattened, C order) as they come."""
    np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
    for part in chunks:
        fh.write(np.ascontiguousarray(part, dtype="<f4").tobytes())


def _npz(fh, chunks, shape: tuple[int, ...], labels: list) -> None:
    """An .npz archive (uncompressed, as np.savez): x.npy streamed, then y.npy when the chunks came with labels."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            _npy(member, chunks, shape)
        if labels and labels[0] is not None:
            with archive.open("y.npy", "w", force_zip64=True) as member:
                np.save(member, np.concatenate([y.numpy() for y in labels]).astype(np.int64))
