"""The bad-input table: hostile or mistaken commands against every subcommand, and the contract.

Each case is a command line run in-process through `divgen.cli.main` in a
workspace of prepared files (`build`). The contract (DESIGN.md): exit code 2,
exactly one `divgen: error:` line on stderr, nothing on stdout, no traceback,
no warning, and no file or folder created, changed or deleted. Memory and disk
are fixed at 8 GB and 50 GB while a case runs, so that the size estimates
refuse the same requests on every machine.

    python tests/fuzz.py        # prints "N of N bad inputs met the contract" and each one that did not

tests/test_fuzz.py runs the same table under pytest, one test per case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np

MEMORY, DISK = 8 * 10**9, 50 * 10**9
TINY = ["--steps", "10", "--width", "16", "--n-data", "500", "--batch-size", "64", "--log-every", "5",
        "--n-samples", "1000", "--no-figures"]


# ------------------------------------------------------------- workspace ---
class Payload:
    """Unpickling this creates the file `pwned`: what a malicious checkpoint would do."""

    def __reduce__(self):
        return (open, ("pwned", "w"))


def build(root: Path) -> None:
    """Every file and run the table refers to, under `root` (the cases run with it as the working directory)."""
    from divgen import cli

    root.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        _files(np.random.default_rng(0))
        _format_files(np.random.default_rng(1))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for out, extra in (("run", []), ("run32", ["--width", "32"]), ("run-mine", ["--data", "mine.npy"]),
                               ("run-cd", ["--data", "cd.npy"]), ("run-cgan", ["--data", "labelled.npz", "--model", "cgan"])):
                argv = ["train", "--data", "mog1d", *TINY, *extra, "--out", out]
                assert cli.main(argv) == 0, argv
        _variants()
        _run_files()
    finally:
        os.chdir(cwd)


def _files(rng) -> None:
    x = rng.normal(size=(300, 2))
    np.save("a.npy", x)
    np.save("wide.npy", rng.normal(size=(4, 200_000)).astype(np.float32))  # a d × d scale matrix of 160 GB
    np.save("far.npy", rng.normal(size=(300, 2)) * 1e37)  # squared distances beyond float32
    np.save("b.npy", rng.normal(size=(300, 2)) + 1)
    np.save("three.npy", rng.normal(size=(300, 3)))
    np.save("small.npy", rng.normal(size=(10, 2)))
    np.save("mine.npy", x)
    np.save("cd.npy", x)
    np.savez("labelled.npz", x=x, y=np.arange(300) % 3)
    np.savez("images.npz", x=rng.integers(0, 256, size=(40, 8, 8)).astype(np.uint8), y=np.arange(40) % 2)
    np.save("channels-last.npy", rng.random((10, 8, 8, 3)))
    np.save("tiny-images.npy", rng.random((10, 2, 2)))
    np.savez("const-images.npz", x=np.full((10, 8, 8), 200, dtype=np.uint8))
    np.save("outside.npy", x * 5)
    np.save("const.npy", np.ones((300, 2)))
    Path("const.csv").write_text("a,b\n" + "1.5,2\n" * 50)
    np.savez("const.npz", x=np.full((50, 3), 7.0))
    np.save("constcol.npy", np.c_[x[:, :1], np.ones(300)])
    np.save("dup.npy", np.concatenate([x[:150], x[:150]]))
    np.save("nan.npy", np.where(np.arange(600).reshape(300, 2) == 7, np.nan, x))
    np.save("inf.npy", np.where(np.arange(600).reshape(300, 2) == 9, -np.inf, x))
    Path("nan.csv").write_text("a,b\n1,2\nnan,3\n4,5\n")
    Path("inf.csv").write_text("1,2\n3,inf\n4,5\n")
    np.save("big.npy", np.full((50, 2), 1e300))
    Path("big.csv").write_text("1,2\n1e300,3\n4,5\n")
    Path("words.csv").write_text("a,b\n1,2\n3,four\n")
    Path("comments.csv").write_text("# only comments\n# nothing else\n")
    Path("empty.csv").write_text("")
    Path("blank.csv").write_text("\n\n  \n")
    Path("header.csv").write_text("a,b\n")
    Path("ragged.csv").write_text("1,2\n3\n4,5\n")
    Path("binary.csv").write_bytes(bytes(range(256)) * 4)
    np.save("onerow.npy", np.ones((1, 3)))
    np.save("zerorows.npy", np.ones((0, 3)))
    np.save("zerocols.npy", np.ones((5, 0)))
    np.save("fived.npy", np.ones((4, 2, 2, 2, 2)))
    np.save("strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save("complex.npy", x + 1j)
    np.save("object.npy", np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    Path("corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    Path("corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    Path("truncated.npy").write_bytes(Path("a.npy").read_bytes()[:1000])
    np.savez("nox.npz", a=x, b=x)
    np.savez("badlabels.npz", x=x, y=np.linspace(0, 1, 300))
    np.savez("shortlabels.npz", x=x, y=np.arange(10))
    Path("folder.npy").mkdir()
    Path("data.txt").write_text("1,2\n3,4\n")
    Path("afile").write_text("a regular file")
    Path("userdir").mkdir()
    Path("userdir/notes.txt").write_text("the user's notes")


def _variants() -> None:
    """Copies of `run`, each damaged or edited in one way."""

    def copy(name: str) -> Path:
        shutil.copytree("run", name)
        return Path(name)

    config = json.loads(Path("run/config.json").read_text())
    edits = {
        "run-types": '{"data": 5, "divergence": ["x"], "steps": "many"}',
        "run-badjson": '{"data": "mog1d", ',
        "run-list": "[1, 2, 3]",
        "run-model": json.dumps({**config, "model": "flow"}),
        "run-seed": json.dumps({**config, "seed": -1}),
        "run-nanlr": json.dumps({**config, "lr_critic": float("nan")}),  # Python writes NaN: not JSON, but parsed
        "run-holdout0": json.dumps({**config, "holdout": 0.0}),
        "run-bigwidth": json.dumps({**config, "width": 10**7}),
    }
    for name, text in edits.items():
        (copy(name) / "config.json").write_text(text)
    width = copy("run-width")
    for p in (width / "checkpoints").iterdir():
        p.unlink()
    shutil.copy(sorted(Path("run32/checkpoints").iterdir())[-1], width / "checkpoints")
    corrupt = copy("run-corrupt")
    for p in (corrupt / "checkpoints").iterdir():
        p.write_bytes(p.read_bytes()[:200])
    evil = copy("run-evil")
    for p in (evil / "checkpoints").iterdir():
        p.unlink()
    import torch

    torch.save({"step": 99, "generator": Payload()}, evil / "checkpoints" / "step-00000099.pt")
    with open(evil / "checkpoints" / "step-00000100.pt", "wb") as fh:
        pickle.dump({"step": 100, "generator": Payload()}, fh)
    half = Path("run-half")
    half.mkdir()
    shutil.copy("run/config.json", half)
    np.save("mine.npy", np.load("b.npy"))  # run-mine's data file changed after training
    np.save("cd.npy", np.ones((300, 2)))  # run-cd's data became constant; a run from before data_sha256 existed
    cd = json.loads(Path("run-cd/config.json").read_text())
    Path("run-cd/config.json").write_text(json.dumps({**cd, "data_sha256": ""}))


# ----------------------------------------------------------------- cases ---
def _numeric_cases() -> list[tuple[str, list[str]]]:
    """Out-of-range, non-finite and malformed values for every number a command takes."""
    from divgen.config import Config, flag_name
    from divgen.limits import AT_LEAST_1, NON_NEGATIVE, PROBABILITY, SEED

    def bad(kind, bounds) -> list[str]:
        values = ["x", "", "nan", "inf"] + (["-inf", "1e999"] if kind is float else ["1.5", "1e3"])
        if bounds.low is not None:
            values.append(f"{bounds.low:g}" if bounds.open_low else f"{bounds.low - (1 if kind is int else 0.001):g}")
        if bounds.high is not None:
            values.append(f"{bounds.high:g}" if bounds.open_high else str(int(bounds.high) + 1) if kind is int else f"{bounds.high + 0.001:g}")
        return values

    cases = []
    for f in fields(Config):
        kind = f.metadata["kind"]
        if kind in (int, float) and f.metadata["flag"]:
            flag = flag_name(f.name)
            cases += [(f"train {flag}={v}", ["train", "--data", "mog1d", *TINY, "--out", "new", f"{flag}={v}"])
                      for v in bad(kind, f.metadata["bounds"])]
    others = {
        ("sample", "-n"): (["sample", "run", "-o", "s.npy"], int, AT_LEAST_1),
        ("sample", "--seed"): (["sample", "run", "-o", "s.npy"], int, SEED),
        ("test", "--seed"): (["test", "a.npy", "b.npy"], int, SEED),
        ("test", "--alpha"): (["test", "a.npy", "b.npy"], float, PROBABILITY),
        ("test", "--permutations"): (["test", "a.npy", "b.npy", "--method", "mmd"], int, AT_LEAST_1),
        ("estimate", "--seed"): (["estimate", "a.npy", "b.npy", "--divergence", "kl"], int, SEED),
        ("estimate", "--confidence"): (["estimate", "a.npy", "b.npy", "--divergence", "kl"], float, PROBABILITY),
        ("evaluate", "--seed"): (["evaluate", "run"], int, SEED),
        ("compare", "--seed"): (["compare", "--data", "mog1d", "--methods", "mle", "--out", "new"], int, SEED),
        ("compare", "--steps"): (["compare", "--data", "mog1d", "--methods", "mle", "--out", "new"], int, AT_LEAST_1),
        ("sample", "--label"): (["sample", "run-cgan", "-o", "s.npy"], int, NON_NEGATIVE),
    }
    for (command, flag), (argv, kind, bounds) in others.items():
        cases += [(f"{command} {flag}={v}", [*argv, f"{flag}={v}"]) for v in bad(kind, bounds)]
    return cases


def _train(*flags, data="mog1d", out="new"):
    return ["train", "--data", data, *TINY, "--out", out, *flags]


DATA_FILES = ["tiny-images.npy", "const-images.npz", "nothing.npy", "folder.npy", "userdir", "data.txt", "const.npy", "const.csv", "const.npz", "nan.npy",
              "inf.npy", "nan.csv", "inf.csv", "big.npy", "big.csv", "words.csv", "comments.csv", "empty.csv",
              "blank.csv", "header.csv", "ragged.csv", "binary.csv", "onerow.npy", "zerorows.npy", "zerocols.npy",
              "fived.npy", "strings.npy", "complex.npy", "object.npy", "corrupt.npy", "corrupt.npz", "truncated.npy",
              "nox.npz", "badlabels.npz", "shortlabels.npz"]


def _data_cases() -> list[tuple[str, list[str]]]:
    """Every bad data file through every command that reads one."""
    cases = []
    for name in DATA_FILES:
        cases += [(f"train --data {name}", _train(data=name)),
                  (f"test {name}", ["test", name, "a.npy"]),
                  (f"estimate {name}", ["estimate", "a.npy", name, "--divergence", "kl"]),
                  (f"compare --data {name}", ["compare", "--data", name, "--methods", "mle", "--out", "new"])]
    return cases


# ------------------------------------------------- data formats, misreads ---
def idx_bytes(a: np.ndarray) -> bytes:
    """An array as a uint8 IDX file: 0, 0, type code 0x08, number of dimensions, each dimension as a
    big-endian uint32, the bytes."""
    return bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.astype(np.uint8).tobytes()


def _format_files(rng) -> None:
    """Under formats/: files of every format data_files.py reads, each wrong in one way that a reader could
    misread silently (or allocate for) rather than refuse."""
    import gzip
    import zipfile

    from PIL import Image

    root = Path("formats")
    root.mkdir()
    for name, text in {"comment.csv": "1,2 # first sample\n3,4\n5,6\n", "underscore.csv": "1_000,2\n3,4\n5,6\n",
                       "fullwidth.csv": "１,2\n3,4\n5,6\n", "gap.csv": "1,,3\n4,5,6\n7,8,9\n",
                       "longfield.csv": "1,2\n" + "9" * 200_000 + ",1\n"}.items():
        (root / name).write_text(text, encoding="utf-8")
    np.savez(root / "only-y.npz", y=np.arange(300) % 3)
    np.savez(root / "huge-labels.npz", x=rng.normal(size=(300, 2)), y=np.r_[np.zeros(299, int), 10**12])
    np.savez(root / "keras-shapes.npz", x_train=rng.random((20, 6, 6)), x_test=rng.random((5, 7, 6)))
    np.save(root / "alpha.npy", rng.random((10, 8, 8, 4)))  # channels last, a varying alpha channel
    with open(root / "lying.npy", "wb") as fh:  # a header promising 10¹¹ rows, 4 rows behind it
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**11, 2)})
        fh.write(np.zeros(8).tobytes())
    with zipfile.ZipFile(root / "lying.npz", "w") as z:
        z.write(root / "lying.npy", "x.npy")
    images, labels = rng.integers(0, 256, (30, 6, 6)), np.arange(30) % 3
    files = {"train-images-idx3-ubyte": idx_bytes(images), "train-labels-idx1-ubyte": idx_bytes(labels),
             "t10k-images-idx3-ubyte": idx_bytes(images[:10]), "t10k-labels-idx1-ubyte": idx_bytes(labels[:10])}
    lying = files["train-images-idx3-ubyte"][:4] + (10**9).to_bytes(4, "big") + files["train-images-idx3-ubyte"][8:]
    damaged = {"idx-cut": {"t10k-images-idx3-ubyte": files["t10k-images-idx3-ubyte"][:200]},
               "idx-lying": {"train-images-idx3-ubyte": lying},  # 10⁹ images of 6×6 promised
               "idx-count": {"train-labels-idx1-ubyte": idx_bytes(labels[:29])},
               "idx-no-t10k-labels": {"t10k-labels-idx1-ubyte": None}}
    for folder, changes in damaged.items():
        (root / folder).mkdir()
        for name, content in {**files, **changes}.items():
            if content is not None:
                (root / folder / name).write_bytes(content)
    (root / "idx-gz-cut").mkdir()
    for name, content in files.items():
        packed = gzip.compress(content)
        (root / "idx-gz-cut" / f"{name}.gz").write_bytes(packed[:-30] if "train-images" in name else packed)
    (root / "labels-file").mkdir()
    (root / "labels-file" / "train-labels-idx1-ubyte").write_bytes(files["train-labels-idx1-ubyte"])
    grey = rng.integers(0, 256, (6, 6)).astype(np.uint8)
    folders = {"images-sizes": {"a.png": grey, "b.png": grey[:, :5]},
               "images-modes": {"a.png": grey, "b.png": np.stack([grey] * 3, axis=-1)},
               "images-mixed": {"a.png": grey, "k/b.png": grey},
               "images-empty-class": {"j/a.png": grey, "k/b.png": grey, "empty/notes.txt": None},
               "images-bmp": {"a.png": grey, "b.bmp": grey},
               "images-broken": {"a.png": grey, "b.png": b"\x89PNG\r\n\x1a\n broken"}}
    for folder, layout in folders.items():
        for name, content in layout.items():
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if content is None:
                path.write_text("notes")
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                Image.fromarray(content).save(path)


FORMAT_FILES = ["comment.csv", "underscore.csv", "fullwidth.csv", "gap.csv", "longfield.csv", "only-y.npz",
                "huge-labels.npz", "keras-shapes.npz", "alpha.npy", "lying.npy", "lying.npz", "idx-cut", "idx-lying",
                "idx-count", "idx-gz-cut", "idx-no-t10k-labels", "labels-file/train-labels-idx1-ubyte",
                "images-sizes", "images-modes", "images-mixed", "images-empty-class", "images-bmp", "images-broken"]


def _format_cases() -> list[tuple[str, list[str]]]:
    """Each misread-prone file through train and test; the names of data sets divgen does not ship; numbers
    that only Python's int() and float() read, or that overflow float32."""
    cases = []
    for name in FORMAT_FILES:
        cases += [(f"train --data formats/{name}", _train(data=f"formats/{name}")),
                  (f"test formats/{name}", ["test", f"formats/{name}", "a.npy"])]
    cases += [(f"train --data {name} (not shipped)", _train(data=name)) for name in ("mnist", "Fashion-MNIST", "cifar10")]
    cases += [("train --steps full-width", _train("--steps", "２０")),
              ("train --steps 1_000", _train("--steps", "1_000")),
              ("train --penalty-weight 1e308", _train("--penalty-weight", "1e308")),
              ("train --lr-critic 1e39", _train("--lr-critic", "1e39")),
              ("sample --label full-width", ["sample", "run-cgan", "-n", "10", "--label", "２", "-o", "s.npy"]),
              ("test --alpha full-width", ["test", "a.npy", "b.npy", "--alpha", "０.5"]),
              ("evaluate --seed Arabic-Indic", ["evaluate", "run", "--seed", "٣"])]
    return cases


CASES: list[tuple[str, list[str]]] = [
    # ---- usage
    ("no command", []),
    ("unknown command", ["fly"]),
    ("json without a command", ["--json"]),
    ("unknown train flag", _train("--colour", "red")),
    ("train without --out", ["train", "--data", "mog1d"]),
    ("sample without -o", ["sample", "run"]),
    ("test with one file", ["test", "a.npy"]),
    ("unknown divergence in the table", ["divergences", "nope"]),
    ("alpha:1 in the table", ["divergences", "alpha:1"]),
    # ---- names and choices
    *[(f"train --divergence {d}", _train("--divergence", d)) for d in
      ("nope", "alpha:1", "alpha:0", "alpha:abc", "alpha:inf", "alpha:nan", "js-weighted:0", "js-weighted:1.5",
       "js-weighted:half", "", "KL")],
    *[(f"train {flag} {v}", _train(flag, v)) for flag, v in
      (("--model", "flow"), ("--generator-loss", "saturating"), ("--lipschitz", "none"), ("--device", "tpu"),
       ("--on-nan", "maybe"), ("--data", "ring9"))],
    # ---- memory and disk, estimated before anything is allocated
    ("train --batch-size 1e8", _train("--batch-size", "100000000")),
    ("train --width 1e7", _train("--width", "10000000")),
    ("train --depth 1e6", _train("--depth", "1000000")),
    ("train --noise-dim 1e9", _train("--noise-dim", "1000000000")),
    ("train --n-data 1e9", _train("--n-data", "1000000000")),
    ("train --n-data 1e9 grid25", _train("--n-data", "1000000000", data="grid25")),
    ("train --n-samples 1e11", _train("--n-samples", "100000000000")),
    ("train --keep-checkpoints 1e9 --width 2048", _train("--keep-checkpoints", "1000000000", "--width", "2048")),
    ("train --width 1e30", _train("--width", str(10**30))),
    ("test --permutations 1e9", ["test", "a.npy", "b.npy", "--method", "mmd", "--permutations", "1000000000"]),
    ("sample -n 1e11 npy", ["sample", "run", "-n", "100000000000", "-o", "s.npy"]),
    ("sample -n 1e11 npz", ["sample", "run", "-n", "100000000000", "-o", "s.npz"]),
    ("sample -n 1e11 csv", ["sample", "run", "-n", "100000000000", "-o", "s.csv"]),
    ("sample -n 1e30", ["sample", "run", "-n", str(10**30), "-o", "s.npy"]),
    ("evaluate a run of width 1e7", ["evaluate", "run-bigwidth"]),
    # ---- the run directory and the user's files
    ("train --out an existing run", _train(out="run")),
    ("train --out a folder of the user's", _train(out="userdir")),
    ("train --out a file", _train(out="afile")),
    ("train --out inside a file", _train(out="afile/sub")),
    ("train --out a half-created run", _train(out="run-half")),
    ("train --resume a folder of the user's", ["train", "--resume", "userdir"]),
    ("train --resume a missing folder", ["train", "--resume", "nowhere"]),
    ("train --resume a file", ["train", "--resume", "afile"]),
    ("train --resume with another --out", ["train", "--resume", "run", "--out", "elsewhere"]),
    ("train --resume --overwrite", ["train", "--resume", "run", "--steps", "20", "--overwrite"]),
    ("train --resume --steps below", ["train", "--resume", "run", "--steps", "5"]),
    ("train --resume --steps equal", ["train", "--resume", "run", "--steps", "10"]),
    ("train --resume conflicting settings", ["train", "--resume", "run", "--divergence", "kl", "--width", "32", "--steps", "20"]),
    ("train --resume other data", ["train", "--resume", "run", "--data", "a.npy", "--steps", "20"]),
    ("train --resume wrong types", ["train", "--resume", "run-types", "--steps", "20"]),
    ("train --resume bad JSON", ["train", "--resume", "run-badjson", "--steps", "20"]),
    ("train --resume a JSON list", ["train", "--resume", "run-list", "--steps", "20"]),
    ("train --resume unknown model", ["train", "--resume", "run-model", "--steps", "20"]),
    ("train --resume seed -1", ["train", "--resume", "run-seed", "--steps", "20"]),
    ("train --resume NaN learning rate", ["train", "--resume", "run-nanlr", "--steps", "20"]),
    ("train --resume width mismatch", ["train", "--resume", "run-width", "--steps", "20"]),
    ("train --resume all corrupt", ["train", "--resume", "run-corrupt", "--steps", "20"]),
    ("train --resume malicious", ["train", "--resume", "run-evil", "--steps", "200"]),
    ("train --resume changed data", ["train", "--resume", "run-mine", "--steps", "20"]),
    ("train --data constant column, gaussian compare", ["compare", "--data", "constcol.npy", "--methods", "mle", "--out", "new"]),
    # ---- sample
    ("sample -o missing folder", ["sample", "run", "-n", "10", "-o", "missing/dir/s.npy"]),
    ("sample -o unknown extension", ["sample", "run", "-n", "10", "-o", "s.txt"]),
    ("sample -o no extension", ["sample", "run", "-n", "10", "-o", "s"]),
    ("sample -o an existing file", ["sample", "run", "-n", "10", "-o", "a.npy"]),
    ("sample -o a folder", ["sample", "run", "-n", "10", "-o", "folder.npy"]),
    ("sample -o inside a file", ["sample", "run", "-n", "10", "-o", "afile/s.npy"]),
    ("sample png of vectors", ["sample", "run", "-n", "10", "-o", "s.png"]),
    ("sample a missing run", ["sample", "nowhere", "-n", "10", "-o", "s.npy"]),
    ("sample a file", ["sample", "afile", "-n", "10", "-o", "s.npy"]),
    ("sample a folder of the user's", ["sample", "userdir", "-n", "10", "-o", "s.npy"]),
    ("sample a half-created run", ["sample", "run-half", "-n", "10", "-o", "s.npy"]),
    ("sample wrong types", ["sample", "run-types", "-n", "10", "-o", "s.npy"]),
    ("sample bad JSON", ["sample", "run-badjson", "-n", "10", "-o", "s.npy"]),
    ("sample width mismatch", ["sample", "run-width", "-n", "10", "-o", "s.npy"]),
    ("sample all corrupt", ["sample", "run-corrupt", "-n", "10", "-o", "s.npy"]),
    ("sample malicious", ["sample", "run-evil", "-n", "10", "-o", "s.npy"]),
    ("sample unknown model", ["sample", "run-model", "-n", "10", "-o", "s.npy"]),
    ("sample --label of an unconditional model", ["sample", "run", "-n", "10", "--label", "1", "-o", "s.npy"]),
    ("sample --label the model never saw", ["sample", "run-cgan", "-n", "10", "--label", "7", "-o", "s.npy"]),
    ("sample --label huge", ["sample", "run-cgan", "-n", "10", "--label", str(10**30), "-o", "s.npy"]),
    ("sample -n 1e11 with labels", ["sample", "run-cgan", "-n", "100000000000", "-o", "s.npz"]),
    # ---- families and the data they need
    ("train conv on vectors", _train("--model", "conv")),
    ("train cgan without labels", _train("--model", "cgan")),
    ("train vae by js", _train("--model", "vae", "--divergence", "js")),
    ("train bernoulli vae outside [0, 1]", _train("--model", "vae", "--likelihood", "bernoulli", data="outside.npy")),
    ("train conv --batch-size 1e6", _train("--batch-size", "1000000", data="images.npz")),
    ("train conv --width 1e5", _train("--width", "100000", data="images.npz")),
    ("train cgan on images --batch-size 1e6", _train("--model", "cgan", "--batch-size", "1000000", data="images.npz")),
    # ---- encode
    ("encode a missing run", ["encode", "nowhere", "a.npy", "-o", "codes.npy"]),
    ("encode with a model without an encoder", ["encode", "run", "a.npy", "-o", "codes.npy"]),
    ("encode -o not .npy", ["encode", "run", "a.npy", "-o", "codes.csv"]),
    ("encode -o missing folder", ["encode", "run", "a.npy", "-o", "missing/codes.npy"]),
    ("encode -o an existing file", ["encode", "run", "a.npy", "-o", "b.npy"]),
    ("encode constant data", ["encode", "run", "const.npy", "-o", "codes.npy"]),
    ("encode a missing data file", ["encode", "run", "nothing.npy", "-o", "codes.npy"]),
    # ---- test and estimate
    ("test dimensions differ", ["test", "a.npy", "three.npy"]),
    ("test too few rows", ["test", "a.npy", "small.npy"]),
    ("test unknown method", ["test", "a.npy", "b.npy", "--method", "ks"]),
    ("test constant pair mmd", ["test", "const.npy", "const.npy", "--method", "mmd", "--json"]),
    ("estimate unknown divergence", ["estimate", "a.npy", "b.npy", "--divergence", "nope"]),
    ("estimate mmd", ["estimate", "a.npy", "b.npy", "--divergence", "mmd"]),
    ("estimate knn js", ["estimate", "a.npy", "b.npy", "--divergence", "js", "--method", "knn"]),
    ("estimate knn same file", ["estimate", "a.npy", "a.npy", "--divergence", "kl", "--method", "knn"]),
    ("estimate knn duplicated rows", ["estimate", "dup.npy", "b.npy", "--divergence", "kl", "--method", "knn"]),
    ("estimate knn duplicated B", ["estimate", "b.npy", "dup.npy", "--divergence", "reverse-kl", "--method", "knn"]),
    ("estimate dimensions differ", ["estimate", "a.npy", "three.npy", "--divergence", "kl"]),
    ("estimate unknown method", ["estimate", "a.npy", "b.npy", "--divergence", "kl", "--method", "histogram"]),
    # ---- compare
    ("compare unknown method", ["compare", "--data", "mog1d", "--methods", "mle,bogus", "--out", "new"]),
    ("compare empty methods", ["compare", "--data", "mog1d", "--methods", ",", "--out", "new"]),
    ("compare a method twice", ["compare", "--data", "mog1d", "--methods", "mle,mle", "--out", "new"]),
    ("compare exact on a file", ["compare", "--data", "a.npy", "--methods", "exact:kl", "--out", "new"]),
    ("compare exact wasserstein", ["compare", "--data", "mog1d", "--methods", "exact:wasserstein", "--out", "new"]),
    ("compare unknown model", ["compare", "--data", "mog1d", "--methods", "mle", "--model", "mlp", "--out", "new"]),
    ("compare --out a folder of the user's", ["compare", "--data", "mog1d", "--methods", "mle", "--out", "userdir"]),
    ("compare --out a file", ["compare", "--data", "mog1d", "--methods", "mle", "--out", "afile"]),
    ("compare adversarial unknown", ["compare", "--data", "mog1d", "--methods", "adversarial:nope", "--out", "new"]),
    # ---- evaluate
    ("evaluate a missing run", ["evaluate", "nowhere"]),
    ("evaluate a folder of the user's", ["evaluate", "userdir"]),
    ("evaluate a half-created run", ["evaluate", "run-half"]),
    ("evaluate changed data", ["evaluate", "run-mine"]),
    ("evaluate data now constant", ["evaluate", "run-cd"]),
    ("evaluate too few held-out rows", ["evaluate", "run-holdout0"]),
    ("evaluate all corrupt", ["evaluate", "run-corrupt"]),
    ("evaluate malicious", ["evaluate", "run-evil"]),
    ("evaluate wrong types", ["evaluate", "run-types"]),
    # ---- demo
    ("demo --out a folder of the user's", ["demo", "--out", "userdir"]),
    ("demo --out a file", ["demo", "--out", "afile"]),
    ("demo --out an existing run", ["demo", "--out", "run"]),
]


def _objective_cases() -> list[tuple[str, list[str]]]:
    """Families, objectives and flags that cannot work together, and parameters a float32 run cannot hold."""
    flags = {
        "mmd with cgan": ("--model", "cgan", "--divergence", "mmd"),
        "mmd with bigan": ("--model", "bigan", "--divergence", "mmd"),
        "vae with critic flags": ("--model", "vae", "--spectral-norm", "--critic-penalty", "gp", "--pack", "4"),
        "mmd with r1": ("--divergence", "mmd", "--critic-penalty", "r1"),
        "mmd with --critic-steps": ("--divergence", "mmd", "--critic-steps", "3"),
        "--clip 0": ("--divergence", "wasserstein", "--lipschitz", "clip", "--clip", "0"),
        "--clip without clipping": ("--divergence", "wasserstein", "--lipschitz", "gp", "--clip", "0.1"),
        "--lipschitz with js": ("--divergence", "js", "--lipschitz", "sn"),
        "--likelihood on an mlp": ("--likelihood", "gaussian"),
        "--init-std on an mlp": ("--init-std", "3"),
        "--init-at on an mlp": ("--init-at", "densest"),
        "--cycle-weight on an mlp": ("--cycle-weight", "0.5"),
        "--penalty-weight without a penalty": ("--critic-penalty", "none", "--penalty-weight", "5"),
        "--generator-loss with wasserstein": ("--divergence", "wasserstein", "--generator-loss", "minimax"),
        "alpha:1e300": ("--divergence", "alpha:1e300"),
        "alpha:1e-300": ("--divergence", "alpha:1e-300"),
        "js-weighted:1e-300": ("--divergence", "js-weighted:1e-300"),
    }
    data = {"mmd with cgan": "labelled.npz"}
    cases = [(f"train {name}", _train(*f, data=data.get(name, "mog1d"))) for name, f in flags.items()]
    cases += [(f"estimate {d}", ["estimate", "a.npy", "b.npy", "--divergence", d]) for d in ("alpha:1e300", "alpha:-1e-300")]
    cases.append(("train a gaussian in 200,000 dimensions", _train("--model", "gaussian", data="wide.npy")))
    cases += [("estimate samples 1e37 apart", ["estimate", "far.npy", "b.npy", "--divergence", "kl"]),
              ("test samples 1e37 apart", ["test", "far.npy", "b.npy"])]
    return cases


# ------------------------------------------------ run files and the OS ---
def _run_files() -> None:
    """Copies of `run` with a file where divgen keeps a folder or the reverse, a user's file named like a
    checkpoint; and dl/, a user's folder holding data named like a run's output."""

    def folder_for(run: str, name: str) -> None:
        shutil.copytree("run", run)
        (Path(run) / name).unlink()
        (Path(run) / name).mkdir()

    for run, name in (("run-metricsdir", "metrics.jsonl"), ("run-samplesdir", "samples.npy"),
                      ("run-configdir", "config.json")):
        folder_for(run, name)
    shutil.copytree("run", "run-evaldir")
    Path("run-evaldir/eval.json").mkdir()
    shutil.copytree("run", "run-ckfile")
    shutil.rmtree("run-ckfile/checkpoints")
    Path("run-ckfile/checkpoints").write_text("a file where divgen keeps its checkpoints")
    shutil.copytree("run", "run-tbfile")
    Path("run-tbfile/tensorboard").write_text("a file where divgen keeps its TensorBoard logs")
    shutil.copytree("run", "run-stepmine")
    shutil.rmtree("run-stepmine/checkpoints")
    Path("run-stepmine/checkpoints").mkdir()
    Path("run-stepmine/checkpoints/step-mine.pt").write_text("the user's, not a checkpoint")
    Path("dl").mkdir()
    shutil.copy("a.npy", "dl/samples.npy")
    from PIL import Image

    Path("imgdir").mkdir()  # an unlabelled image folder: good data
    for i, pixels in enumerate(np.random.default_rng(2).integers(0, 256, (10, 8, 8), dtype=np.uint8)):
        Image.fromarray(pixels).save(f"imgdir/{i}.png")


LONG = "x" * 300  # a name longer than any file system allows (255)


def _file_cases() -> list[tuple[str, list[str]]]:
    """Outputs that would replace the data or a file divgen did not write, run folders with a file where a
    folder belongs (or the reverse), names too long, and outputs where no file can be created."""
    cases = [
        ("train --data an output's name, --out its folder", _train("--overwrite", data="dl/samples.npy", out="dl")),
        ("train --overwrite a folder holding the user's samples.npy", _train("--overwrite", out="dl")),
        ("train --data a run's samples.npy --out the run", _train("--overwrite", data="run/samples.npy", out="run")),
        ("train --out inside the data folder", _train(data="imgdir", out="imgdir/run")),
        ("encode -o its own data file", ["encode", "run", "a.npy", "-o", "a.npy", "--overwrite"]),
        ("evaluate eval.json a folder", ["evaluate", "run-evaldir"]),
        ("evaluate checkpoints a file", ["evaluate", "run-ckfile"]),
        ("evaluate config.json a folder", ["evaluate", "run-configdir"]),
        ("evaluate only a user's step-mine.pt", ["evaluate", "run-stepmine"]),
        ("sample checkpoints a file", ["sample", "run-ckfile", "-n", "10", "-o", "s.npy"]),
        ("sample config.json a folder", ["sample", "run-configdir", "-n", "10", "-o", "s.npy"]),
        ("sample only a user's step-mine.pt", ["sample", "run-stepmine", "-n", "10", "-o", "s.npy"]),
        *[(f"train --resume {run}", ["train", "--resume", run, "--steps", "20"])
          for run in ("run-metricsdir", "run-samplesdir", "run-evaldir", "run-ckfile", "run-configdir", "run-tbfile")],
        ("sample -o a name too long", ["sample", "run", "-n", "10", "-o", f"{LONG}.npy"]),
        ("sample a run name too long", ["sample", LONG, "-n", "10", "-o", "s.npy"]),
        ("train --out a name too long", _train(out=LONG)),
        ("train --resume a name too long", ["train", "--resume", LONG, "--steps", "20"]),
        ("evaluate a name too long", ["evaluate", LONG]),
        ("encode -o a name too long", ["encode", "run", "a.npy", "-o", f"{LONG}.npy"]),
        ("test a name too long", ["test", f"{LONG}.npy", "a.npy"]),
        ("compare --out a name too long", ["compare", "--data", "mog1d", "--methods", "mle", "--out", LONG]),
        ("demo --out a name too long", ["demo", "--out", LONG]),
    ]
    if os.path.isdir("/proc/self"):  # a virtual file system: no file can be created there
        cases += [("sample -o under /proc", ["sample", "run", "-n", "10", "-o", "/proc/divgen-s.npy"]),
                  ("train --out under /proc", _train(out="/proc/divgen-run")),
                  ("encode -o under /proc", ["encode", "run", "a.npy", "-o", "/proc/divgen-codes.npy"]),
                  ("compare --out under /proc", ["compare", "--data", "mog1d", "--methods", "mle", "--out", "/proc/divgen"]),
                  ("demo --out under /proc", ["demo", "--out", "/proc/divgen-demo"])]
    return cases


def all_cases() -> list[tuple[str, list[str]]]:
    cases = CASES + _numeric_cases() + _data_cases() + _objective_cases() + _format_cases() + _file_cases()
    names = [name for name, _ in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases


# -------------------------------------------------------------- contract ---
def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(Path(root).rglob("*"))}


@contextlib.contextmanager
def fixed_resources():
    """The machine as the table assumes it: MEMORY bytes of memory and DISK bytes of disk free."""
    from divgen import limits

    saved = limits.memory_available, limits.disk_free
    limits.memory_available = lambda device=None: MEMORY
    limits.disk_free = lambda path: DISK
    try:
        yield
    finally:
        limits.memory_available, limits.disk_free = saved


def check(root: Path, argv: list[str]) -> list[str]:
    """Run one case in `root`; the ways it broke the contract (empty: it met it)."""
    from divgen import cli

    before = snapshot(root)
    out, err = io.StringIO(), io.StringIO()
    problems = []
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with fixed_resources(), warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                code = cli.main(list(argv))
            except BaseException as e:  # noqa: BLE001 (a crash is what the table looks for)
                code, problems = None, [f"raised {type(e).__name__}: {e}"]
    finally:
        os.chdir(cwd)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code != 2:
        problems.append(f"exit code {code}")
    if len(lines) != 1 or not lines[0].startswith("divgen: error: "):
        problems.append(f"stderr is not one error line: {err.getvalue()[-500:]!r}")
    if out.getvalue():
        problems.append(f"stdout: {out.getvalue()[:200]!r}")
    if caught:
        problems.append(f"warning: {caught[0].message}")
    after = snapshot(root)
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k, 0) != after.get(k, 0))
        problems.append(f"files created, changed or deleted: {changed[:5]}")
        _restore(root, before, after)
    return problems


def _restore(root: Path, before: dict, after: dict) -> None:
    """Put the workspace back as it was, so that one broken case does not spoil the next."""
    for rel in sorted(set(after) - set(before), reverse=True):
        p = root / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    for rel, content in sorted(before.items()):
        p = root / rel
        if content is None:
            p.mkdir(exist_ok=True)
        elif after.get(rel) != content:
            p.write_bytes(content)


def main() -> int:
    cases = all_cases()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "workspace"
        t0 = time.perf_counter()
        build(root)
        t1 = time.perf_counter()
        failed = []
        for name, argv in cases:
            problems = check(root, argv)
            if problems:
                failed.append((name, argv, problems))
        t2 = time.perf_counter()
    for name, argv, problems in failed:
        print(f"FAILED {name}: divgen {' '.join(argv)}\n    " + "\n    ".join(problems))
    print(f"{len(cases) - len(failed)} of {len(cases)} bad inputs met the contract "
          f"(exit code 2, one error line, nothing written); workspace {t1 - t0:.1f} s, cases {t2 - t1:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
