"""Built-in data sets and user files: shapes, seeds, splits, and every rejection DESIGN.md lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divgen import data, data_files
from divgen.errors import InputError

TOY_DIMS = {"mog1d": 1, "mog2d": 2, "ring8": 2, "ring8-pacgan": 2, "grid25": 2, "swissroll": 2, "moons": 2}


# ------------------------------------------------------------------ built-ins ---
@pytest.mark.parametrize("name, dim", TOY_DIMS.items())
def test_toy_sets_shapes_and_density(name, dim):
    ds = data.load(name, n=400, seed=0, holdout=0.25)
    assert ds.train.shape == (400, dim) and ds.train.dtype == torch.float32
    assert ds.holdout.shape == (100, dim)
    assert ds.dim == dim
    assert torch.isfinite(ds.train).all()
    lp = ds.density.log_prob(ds.train[:50])
    assert lp.shape == (50,) and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", TOY_DIMS)
def test_toy_sets_are_seeded(name):
    a, b, c = data.load(name, n=200, seed=3), data.load(name, n=200, seed=3), data.load(name, n=200, seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.holdout, b.holdout)
    assert not torch.equal(a.train, c.train)
    # the held-out set is a different draw, not a copy of training rows
    assert not torch.equal(a.train[: len(a.holdout)], a.holdout)


def test_sampling_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    data.sample_toy("ring8", 100, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_mode_centres():
    ring = data.load("ring8", n=2000, seed=0)
    assert ring.modes.shape == (8, 2)
    assert torch.allclose(ring.modes.norm(dim=1), torch.full((8,), 2.0))
    assert data.load("grid25", n=10, seed=0).modes.shape == (25, 2)
    # every ring8 sample is within a few σ of some mode
    dist = torch.cdist(ring.train, ring.modes).min(dim=1).values
    assert (dist < 6 * ring.mode_std).all()


def test_digits():
    ds = data.load("digits", seed=0)
    assert ds.dim == 64
    assert len(ds.train) + len(ds.holdout) == 1797
    assert 0 <= float(ds.train.min()) and float(ds.train.max()) <= 1
    assert ds.train_labels.shape == (len(ds.train),) and ds.holdout_labels.shape == (len(ds.holdout),)
    assert ds.event_shape == (8, 8) and ds.n_classes == 10 and ds.spec == data.Spec((8, 8), 10)


# ----------------------------------------------------------------- user files ---
def test_npy_2d(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "x.npy", x)
    arr, labels = data_files.read_array(tmp_path / "x.npy")
    assert arr.dtype == np.float32 and labels is None
    np.testing.assert_allclose(arr, x.astype(np.float32))


def test_npy_1d_becomes_column(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(10.0))
    arr, _ = data_files.read_array(tmp_path / "x.npy")
    assert arr.shape == (10, 1)
    np.testing.assert_array_equal(arr[:, 0], np.arange(10.0))


def test_npy_integer_array_is_accepted(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(12).reshape(6, 2))
    arr, _ = data_files.read_array(tmp_path / "x.npy")
    assert arr.dtype == np.float32 and arr.shape == (6, 2)


def test_npz_with_x_and_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 5))
    y = np.arange(20) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    arr, labels = data_files.read_array(tmp_path / "d.npz")
    assert arr.shape == (20, 5)
    np.testing.assert_array_equal(labels, y)
    ds = data.load(str(tmp_path / "d.npz"), seed=0, holdout=0.25)
    assert ds.train_labels.shape == (len(ds.train),) and ds.holdout_labels.shape == (len(ds.holdout),)
    # the split keeps each row with its label
    rows = {tuple(r): int(l) for r, l in zip(x.astype(np.float32), y)}
    for xs, ys in ((ds.train, ds.train_labels), (ds.holdout, ds.holdout_labels)):
        assert [rows[tuple(r)] for r in xs.numpy()] == ys.tolist()


def test_npz_single_array_any_key(tmp_path):
    np.savez(tmp_path / "d.npz", samples=np.arange(8.0).reshape(4, 2))
    arr, labels = data_files.read_array(tmp_path / "d.npz")
    assert arr.shape == (4, 2) and labels is None


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,c\n1,2,3\n4,5,6\n7,8.5,-9e-1\n")
    (tmp_path / "n.csv").write_text("1,2,3\n4,5,6\n7,8.5,-9e-1\n")
    want = np.array([[1, 2, 3], [4, 5, 6], [7, 8.5, -0.9]], dtype=np.float32)
    for name in ("h.csv", "n.csv"):
        arr, _ = data_files.read_array(tmp_path / name)
        np.testing.assert_array_equal(arr, want)


def test_csv_single_column(tmp_path):
    (tmp_path / "c.csv").write_text("x\n1\n2\n3\n")
    arr, _ = data_files.read_array(tmp_path / "c.csv")
    assert arr.shape == (3, 1)


def test_file_split_is_disjoint_and_complete(tmp_path):
    x = np.arange(100, dtype=np.float32).reshape(50, 2)
    np.save(tmp_path / "x.npy", x)
    ds = data.load(str(tmp_path / "x.npy"), seed=1, holdout=0.2)
    assert len(ds.holdout) == 10 and len(ds.train) == 40
    rows = sorted(map(tuple, torch.cat([ds.train, ds.holdout]).tolist()))
    assert rows == sorted(map(tuple, x.tolist()))
    again = data.load(str(tmp_path / "x.npy"), seed=1, holdout=0.2)
    assert torch.equal(ds.holdout, again.holdout)


# ----------------------------------------------------------------- rejections ---
def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


BAD_FILES = {
    "missing": ("nothing.npy", None, "does not exist"),
    "unknown extension": ("x.txt", "1,2\n3,4\n", "not a built-in"),
    "nan npy": ("x.npy", np.array([[1.0, 2.0], [np.nan, 3.0], [4.0, 5.0]]), "NaN"),
    "inf npy": ("x.npy", np.array([[1.0, np.inf], [2.0, 3.0]]), "infinite"),
    "inf csv": ("x.csv", "1,2\n3,inf\n4,5\n", "infinite"),
    "nan csv": ("x.csv", "a,b\n1,2\nnan,3\n4,5\n", "NaN"),
    "non-numeric csv": ("x.csv", "a,b\n1,2\n3,abc\n", "non-numeric"),
    "ragged csv": ("x.csv", "1,2\n3\n", "columns"),
    "empty csv": ("x.csv", "", "empty"),
    "header only csv": ("x.csv", "a,b\n", "rows"),
    "one row": ("x.npy", np.ones((1, 3)), "at least 2"),
    "zero rows": ("x.npy", np.ones((0, 3)), "rows"),
    "zero columns": ("x.npy", np.ones((5, 0)), "0 columns"),
    "tiny images": ("x.npy", np.ones((4, 2, 2)), "too small"),
    "5-d array": ("x.npy", np.ones((4, 1, 5, 5, 2)), "N×C×H×W"),
    "two channels": ("x.npy", np.ones((4, 2, 8, 8)), "C = 1 or 3"),
    "string array": ("x.npy", np.array([["a", "b"], ["c", "d"]]), "not numeric"),
    "corrupt npy": ("x.npy", b"this is not a numpy file at all", "not a .npy file"),  # numpy: "allow_pickle"
    "truncated npy": ("x.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4',", "could not be read"),
    "object npy": ("x.npy", "OBJECTS", "Python objects"),
    "corrupt npz": ("x.npz", b"PK\x03\x04 broken zip", "could not be read"),
    "npz without x": ("x.npz", "SPECIAL", "no array 'x'"),
    "bad labels": ("x.npz", "LABELS", "labels"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_rejected_with_one_line(tmp_path, case):
    name, content, words = BAD_FILES[case]
    path = tmp_path / name
    if isinstance(content, str) and content == "SPECIAL":
        np.savez(path, a=np.ones((3, 2)), b=np.ones((3, 2)))
    elif isinstance(content, str) and content == "OBJECTS":
        np.save(path, np.array([{"a": 1}, 2], dtype=object), allow_pickle=True)
    elif isinstance(content, str) and content == "LABELS":
        np.savez(path, x=np.arange(6.0).reshape(3, 2), y=np.array([0.5, 1.5, 2.5]))
    elif content is not None:
        _write(tmp_path, name, content)
    with pytest.raises(InputError) as info:
        data.load(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert words.lower() in message.lower()
    if content is not None:  # the user's file is left alone
        assert path.exists()


def test_directory_named_like_a_data_file(tmp_path):
    (tmp_path / "x.npy").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        data_files.read_array(tmp_path / "x.npy")


# -------------------------------------------------------------- images, labels ---
@pytest.mark.parametrize("shape, event", [((6, 8, 8), (8, 8)), ((6, 1, 28, 28), (1, 28, 28)), ((6, 3, 10, 12), (3, 10, 12))])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_image_npz_keeps_its_shape_and_scales_uint8(tmp_path, shape, event, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=shape).astype(dtype)
    y = np.arange(shape[0]) % 3
    np.savez(tmp_path / "img.npz", x=x, y=y)
    flat, labels, got = data_files.read_file(tmp_path / "img.npz")
    assert got == event and flat.shape == (shape[0], int(np.prod(event)))
    expected = x.reshape(shape[0], -1).astype(np.float32) / (255 if dtype == "uint8" else 1)
    np.testing.assert_allclose(flat, expected, rtol=1e-6)
    np.testing.assert_array_equal(labels, y)
    ds = data.load(str(tmp_path / "img.npz"), holdout=0.0)
    assert ds.spec == data.Spec(event, 3) and ds.spec.image


@pytest.mark.parametrize("labels, words", [
    (np.array([0, 1, 2]), "one integer per row"),            # 3 labels for 4 rows
    (np.array([0.5, 1.0, 2.0, 1.0]), "integers"),
    (np.array([[0, 1], [1, 0], [0, 0], [1, 1]]), "one integer per row"),
    (np.array([0, -1, 2, 1]), "≥ 0"),
    (np.array(["a", "b", "c", "d"]), "integers"),
])
def test_bad_labels_are_refused_with_one_line(tmp_path, labels, words):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((4, 8, 8)), y=labels)
    with pytest.raises(InputError, match=words) as info:
        data_files.read_file(tmp_path / "d.npz")
    assert "\n" not in str(info.value)


def test_integral_float_labels_are_accepted(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(8.0).reshape(4, 2), y=np.array([0.0, 1.0, 2.0, 1.0]))
    _, y, _ = data_files.read_file(tmp_path / "d.npz")
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 1]


def test_fixed_data_split_does_not_depend_on_the_run_seed(tmp_path):
    a, b = data.load("digits", seed=0), data.load("digits", seed=5)
    assert torch.equal(a.holdout, b.holdout) and torch.equal(a.train_labels, b.train_labels)
