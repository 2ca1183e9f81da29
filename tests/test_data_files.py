"""The user's data files (data_files.py): IDX, Keras .npz, image folders, channels-last arrays, CSV as
spreadsheets write it, and every header that promises more than its file holds. Each file is written here
byte by byte or with a library other than the reader's own, and the values read back are compared with
the values written."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, assert_clean_failure, snapshot
from fuzz import idx_bytes
from divgen import data, data_files
from divgen.errors import InputError

RNG = np.random.default_rng(0)


def write_idx(folder, prefix="", gz=False, n_train=12, n_test=4, hw=(5, 6), test=True):
    """MNIST's four files (or the train pair alone) in `folder`; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, *hw), dtype=np.uint8),
              "train-labels-idx1-ubyte": (np.arange(n_train) % 3).astype(np.uint8)}
    if test:
        arrays |= {"t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, *hw), dtype=np.uint8),
                   "t10k-labels-idx1-ubyte": (np.arange(n_test) % 3).astype(np.uint8)}
    for name, a in arrays.items():
        path = folder / (prefix + name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(idx_bytes(a)) if gz else idx_bytes(a))
    return arrays


def flat(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255)


def refused(path, words: str) -> str:
    """data.load(path) raises a one-line InputError containing `words`; the file is left as it was."""
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(InputError) as info:
        data.load(str(path))
    message = str(info.value)
    assert "\n" not in message and words.lower() in message.lower(), message
    assert before is None or path.read_bytes() == before
    return message


# --------------------------------------------------------------------- IDX ---
@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_trains_on_train_and_holds_out_t10k(tmp_path, gz):
    a = write_idx(tmp_path / "raw", gz=gz)
    ds = data.load(str(tmp_path / "raw"), seed=3, holdout=0.5)  # the file's split wins over --holdout
    torch.testing.assert_close(ds.train, flat(a["train-images-idx3-ubyte"]))
    torch.testing.assert_close(ds.holdout, flat(a["t10k-images-idx3-ubyte"]))
    assert ds.train_labels.tolist() == [0, 1, 2] * 4 and ds.holdout_labels.tolist() == [0, 1, 2, 0]
    assert ds.event_shape == (5, 6) and ds.n_classes == 3


def test_idx_directory_prefers_the_uncompressed_copy(tmp_path):
    """torchvision's raw/ folder holds each file twice, .gz and not: one set, read once."""
    a = write_idx(tmp_path / "MNIST" / "raw")
    for name, arr in a.items():
        (tmp_path / "MNIST" / "raw" / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    ds = data.load(str(tmp_path / "MNIST" / "raw"))
    assert len(ds.train) == 12 and len(ds.holdout) == 4
    assert data_files.source_files(tmp_path / "MNIST" / "raw") == sorted(tmp_path / "MNIST" / "raw" / n for n in a)


def test_idx_images_file_finds_its_labels_beside_it(tmp_path):
    a = write_idx(tmp_path, gz=True, test=False, n_train=20)
    x, y, shape = data_files.read_file(tmp_path / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(x, flat(a["train-images-idx3-ubyte"]).numpy())
    assert y.tolist() == (np.arange(20) % 3).tolist() and shape == (5, 6)
    ds = data.load(str(tmp_path / "train-images-idx3-ubyte.gz"), holdout=0.25)  # one file: a random split
    assert len(ds.train) == 15 and len(ds.holdout) == 5


def test_emnist_images_are_turned_upright(tmp_path):
    """EMNIST stores each image transposed; the reader transposes it back."""
    write_idx(tmp_path, prefix="emnist-digits-", test=False)
    (tmp_path / "emnist-digits-test-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 5, 6), np.uint8)))
    (tmp_path / "emnist-digits-test-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    stored = np.frombuffer((tmp_path / "emnist-digits-train-images-idx3-ubyte").read_bytes()[16:], np.uint8)
    ds = data.load(str(tmp_path))  # EMNIST names its held-out files "test", not "t10k"
    assert ds.event_shape == (6, 5) and len(ds.holdout) == 3
    torch.testing.assert_close(ds.train, flat(stored.reshape(12, 5, 6).transpose(0, 2, 1)))


def test_idx_fingerprint_covers_every_file_read(tmp_path):
    a = write_idx(tmp_path / "raw")
    before = data_files.fingerprint(str(tmp_path / "raw"))
    (tmp_path / "raw" / "notes.txt").write_text("not read, not hashed")
    assert data_files.fingerprint(str(tmp_path / "raw")) == before
    labels = a["t10k-labels-idx1-ubyte"].copy()
    labels[0] = 2
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(InputError, match="has changed since the run was trained"):
        data_files.fingerprint(str(tmp_path / "raw"), before)


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("damage, words", [
    ("cut raw", "truncated"),
    ("cut gz", "truncated"),
    ("lying header", "truncated"),
    ("labels count", "labels of shape (11,) for the 12 images"),
    ("t10k labels missing", "test labels file is missing"),
    ("not idx", "not an IDX file"),
])
def test_damaged_idx_is_refused_before_it_is_read(tmp_path, damage, words):
    folder = tmp_path / "raw"
    write_idx(folder, gz=damage == "cut gz")
    images = folder / "train-images-idx3-ubyte"
    if damage == "cut raw":
        _truncate(images, 200)
    elif damage == "cut gz":
        _truncate(folder / "train-images-idx3-ubyte.gz", 120)
    elif damage == "lying header":  # 10⁹ images of 5×6 in a file of 376 bytes
        images.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 10**9, 5, 6) + images.read_bytes()[16:])
    elif damage == "labels count":
        (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    elif damage == "t10k labels missing":
        (folder / "t10k-labels-idx1-ubyte").unlink()
    else:
        images.write_bytes(b"PK\x03\x04" + images.read_bytes()[4:])
    refused(folder, words)


def test_an_idx_labels_file_is_not_data(tmp_path):
    write_idx(tmp_path, test=False)
    refused(tmp_path / "train-labels-idx1-ubyte", "labels file")


def test_several_idx_sets_in_one_folder_are_refused(tmp_path):
    write_idx(tmp_path, prefix="emnist-digits-", test=False)
    write_idx(tmp_path, prefix="emnist-letters-", test=False)
    refused(tmp_path, "several IDX sets")


# -------------------------------------------------------------- Keras .npz ---
def test_keras_npz_holds_out_its_test_arrays(tmp_path):
    x_train, x_test = RNG.integers(0, 256, (10, 6, 6), dtype=np.uint8), RNG.integers(0, 256, (4, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=np.arange(10) % 2, x_test=x_test, y_test=[1, 0, 1, 1])
    for seed, holdout in ((0, 0.2), (7, 0.5)):
        ds = data.load(str(tmp_path / "mnist.npz"), seed=seed, holdout=holdout)
        torch.testing.assert_close(ds.train, flat(x_train))
        torch.testing.assert_close(ds.holdout, flat(x_test))
        assert ds.holdout_labels.tolist() == [1, 0, 1, 1] and ds.event_shape == (6, 6)


def test_keras_cifar_layout_channels_last_and_label_column(tmp_path):
    """keras.datasets.cifar10.load_data(): x (N, 32, 32, 3), y (N, 1)."""
    x_train = RNG.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    x_test = RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", x_train=x_train, y_train=np.array([[0], [1], [2], [3], [4], [5]]),
             x_test=x_test, y_test=np.array([[1], [2], [3]]))
    ds = data.load(str(tmp_path / "c.npz"))
    assert ds.event_shape == (3, 8, 8) and ds.train_labels.tolist() == [0, 1, 2, 3, 4, 5]
    # pixel (row 2, column 5) of image 1: its red value is channel 0 of the stored C×H×W sample
    assert float(ds.train[1].reshape(3, 8, 8)[0, 2, 5]) == pytest.approx(x_train[1, 2, 5, 0] / 255)
    torch.testing.assert_close(ds.holdout, flat(x_test.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("arrays, words", [
    ({"x_train": np.ones((5, 6, 6)), "x_test": np.ones((3, 7, 6))}, "x_test's have (7, 6)"),
    ({"x_train": np.ones((5, 2)), "y_train": np.zeros(5), "x_test": np.ones((3, 2))}, "no 'y_test'"),
    ({"x_train": np.ones((5, 2)), "y_test": np.zeros(3)}, "'y_test' but no 'x_test'"),
])
def test_inconsistent_keras_npz_is_refused(tmp_path, arrays, words):
    np.savez(tmp_path / "k.npz", **arrays)
    refused(tmp_path / "k.npz", words)


# ----------------------------------------------------------- image folders ---
def save_png(path, pixels: np.ndarray, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)


def test_labelled_image_folder_sorted_class_names_are_labels(tmp_path):
    grey = {("cat", "a.png"): 10, ("cat", "b.png"): 20, ("dog", "c.png"): 30, ("ant", "d.png"): 40}
    for (cls, name), v in grey.items():
        save_png(tmp_path / "pics" / cls / name, np.full((5, 7), v, np.uint8))
    (tmp_path / "pics" / "cat" / "notes.txt").write_text("ignored")
    x, y, shape = data_files.read_file(tmp_path / "pics")
    assert shape == (5, 7) and x.shape == (4, 35)
    # ant < cat < dog: labels 0, 1, 2; files in sorted order within each class
    assert y.tolist() == [0, 1, 1, 2]
    np.testing.assert_allclose(x[:, 0], np.array([40, 10, 20, 30]) / 255, rtol=1e-6)


def test_rgb_image_folder_is_channels_first(tmp_path):
    pixels = RNG.integers(0, 256, (3, 6, 8, 3), dtype=np.uint8)  # (N, H, W, RGB)
    for i, p in enumerate(pixels):
        save_png(tmp_path / "u" / f"{i}.png", p)
    x, y, shape = data_files.read_file(tmp_path / "u")
    assert y is None and shape == (3, 6, 8)
    np.testing.assert_allclose(x, pixels.transpose(0, 3, 1, 2).reshape(3, -1) / 255, rtol=1e-6)


def test_jpeg_images_are_read(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.jpg", quality=95)
    x, _, shape = data_files.read_file(tmp_path)
    assert shape == (3, 8, 8)
    np.testing.assert_allclose(x.mean(axis=1), np.array([0, 60, 120]) / 255, atol=3 / 255)


def test_a_constant_alpha_channel_is_dropped_and_a_varying_one_refused(tmp_path):
    rgba = RNG.integers(0, 256, (3, 6, 6, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    for i, p in enumerate(rgba):
        save_png(tmp_path / "opaque" / f"{i}.png", p)
    x, _, shape = data_files.read_file(tmp_path / "opaque")
    assert shape == (3, 6, 6)
    np.testing.assert_allclose(x, rgba[..., :3].transpose(0, 3, 1, 2).reshape(3, -1) / 255, rtol=1e-6)
    rgba[1, 0, 0, 3] = 0
    for i, p in enumerate(rgba):
        save_png(tmp_path / "clear" / f"{i}.png", p)
    refused(tmp_path / "clear", "alpha")


@pytest.mark.parametrize("layout, words", [
    ({"a.png": (6, 6), "b.png": (6, 7)}, "b.png' is 7×6 L, but"),
    ({"a.png": (6, 6), "b.png": (6, 6, 3)}, "b.png' is 6×6 RGB"),
    ({"a.png": (6, 6), "k/b.png": (6, 6)}, "both directly inside"),
    ({"k/a.png": (6, 6), "k/b.png": (6, 6), "empty/notes.txt": None}, "class folder 'empty' holds no"),
    ({"a.png": (6, 6), "b.bmp": (6, 6)}, "PNG and JPEG images only"),
    ({"notes.txt": None}, "no IDX files and no PNG/JPEG images"),
    ({"a.png": (6, 6), "b.png": "broken"}, "could not be read"),
])
def test_bad_image_folders_are_refused_naming_the_file(tmp_path, layout, words):
    for name, shape in layout.items():
        path = tmp_path / "f" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if shape is None:
            path.write_text("notes")
        elif shape == "broken":
            path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        else:
            Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(path)
    refused(tmp_path / "f", words)


# ------------------------------------------------------- channels-last arrays ---
@pytest.mark.parametrize("c, event", [(1, (1, 6, 7)), (3, (3, 6, 7))])
def test_channels_last_arrays_are_transposed(tmp_path, c, event):
    a = RNG.random((5, 6, 7, c)).astype(np.float32)
    np.save(tmp_path / "x.npy", a)
    x, _, shape = data_files.read_file(tmp_path / "x.npy")
    assert shape == event
    np.testing.assert_array_equal(x, a.transpose(0, 3, 1, 2).reshape(5, -1))


def test_channels_last_rgba_array(tmp_path):
    a = RNG.random((5, 6, 6, 4)).astype(np.float32)
    a[..., 3] = 1.0
    np.save(tmp_path / "x.npy", a)
    x, _, shape = data_files.read_file(tmp_path / "x.npy")
    assert shape == (3, 6, 6)
    np.testing.assert_array_equal(x, a[..., :3].transpose(0, 3, 1, 2).reshape(5, -1))
    a[0, 0, 0, 3] = 0.5
    np.save(tmp_path / "x.npy", a)
    refused(tmp_path / "x.npy", "alpha")


# --------------------------------------------------------------------- CSV ---
@pytest.mark.parametrize("raw", [
    b"\xef\xbb\xbf1.5,2\r\n\"3\",\"4.5\"\r\n5, 6\r\n",  # Excel's CSV UTF-8: byte-order mark, CRLF, quotes
    b"\xef\xbb\xbfa,b\r\n1.5,2\r\n3,4.5\r\n5,6\r\n",
    b"# exported\n1.5,2\n\n3,4.5\n5,6",
])
def test_csv_as_spreadsheets_write_it(tmp_path, raw):
    (tmp_path / "s.csv").write_bytes(raw)
    x, _ = data_files.read_array(tmp_path / "s.csv")
    np.testing.assert_array_equal(x, [[1.5, 2], [3, 4.5], [5, 6]])


def test_csv_pandas_index_over_numbered_columns(tmp_path, capsys):
    (tmp_path / "p.csv").write_text(",0,1\n0,1.5,2\n1,3,4\n")  # pd.DataFrame(array).to_csv()
    x, _ = data_files.read_array(tmp_path / "p.csv")
    np.testing.assert_array_equal(x, [[1.5, 2], [3, 4]])
    assert "row index" in capsys.readouterr().err


@pytest.mark.parametrize("text, words", [
    ("1,2 # first sample\n3,4\n5,6\n", "line 1: a # comment after the values"),
    ("1,2\n3,4 # note\n5,6\n", "line 2: a # comment"),
    ("1_000,2\n3,4\n5,6\n", "line 1: non-numeric value '1_000'"),
    ("a,b\n1,2\n1_000,2\n", "line 3: non-numeric value '1_000'"),
    ("１,2\n3,4\n5,6\n", "line 1: non-numeric value '１'"),
    ("1,,3\n4,5,6\n7,8,9\n", "line 1: non-numeric value ''"),
    ("1;5\n2;5\n", "separated by ';'"),
    ("a,b,c\n1,2\n3,4\n", "the header (line 1) names 3"),
    ("1,2\n" + "9" * 200_000 + ",1\n", "a field of 200000 characters"),
])
def test_csv_rows_are_never_dropped_silently(tmp_path, text, words):
    (tmp_path / "s.csv").write_text(text, encoding="utf-8")
    refused(tmp_path / "s.csv", words)


# -------------------------------------------------- headers, labels, sizes ---
def lying_npy(path, rows: int) -> None:
    """A .npy whose header claims `rows` × 2 float64 but holds 4 rows."""
    a = np.zeros((4, 2))
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (rows, 2)})
        fh.write(a.tobytes())


def test_npy_header_claiming_1e11_rows_is_truncated(tmp_path):
    lying_npy(tmp_path / "x.npy", 10**11)
    refused(tmp_path / "x.npy", "truncated: its header promises an array of shape (100000000000, 2)")


def test_npz_member_header_claiming_1e11_rows_is_truncated(tmp_path):
    lying_npy(tmp_path / "x.npy", 10**11)
    import zipfile

    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.write(tmp_path / "x.npy", "x.npy")
    refused(tmp_path / "d.npz", "truncated")


@pytest.mark.parametrize("arrays, words", [
    ({"y": np.arange(10)}, "only labels 'y'"),
    ({"labels": np.arange(10)}, "only labels 'labels'"),
    ({"x": np.arange(20.0).reshape(10, 2), "y": np.array([0] * 9 + [10**12])}, "must lie in 0..9"),
    ({"x": np.arange(4.0).reshape(2, 2), "y": np.array([0, 2])}, "must lie in 0..1"),
])
def test_labels_without_samples_and_labels_beyond_the_rows_are_refused(tmp_path, arrays, words):
    np.savez(tmp_path / "d.npz", **arrays)
    refused(tmp_path / "d.npz", words)


def test_labels_with_gaps_keep_their_values(tmp_path):
    """Labels {3, 8} (two digits of ten) keep their numbers: `sample --label 8` still means the digit 8."""
    np.savez(tmp_path / "d.npz", x=RNG.random((10, 2)), y=np.array([3, 8] * 5))
    ds = data.load(str(tmp_path / "d.npz"), holdout=0.0)
    assert ds.n_classes == 9 and sorted(set(ds.train_labels.tolist())) == [3, 8]


# ------------------------------------------------- names and the command line ---
@pytest.mark.parametrize("name, words", [
    ("mnist", "<root>/MNIST/raw/"), ("MNIST", "~/.keras/datasets/mnist.npz"), ("Fashion-MNIST", "FashionMNIST"),
    ("emnist", "EMNIST/raw"), ("cifar10", "pickles"),
])
def test_well_known_names_say_nothing_is_downloaded(divgen, tmp_path, monkeypatch, name, words):
    monkeypatch.chdir(tmp_path)
    result = divgen("train", "--data", name, "--out", tmp_path / "run")
    assert_clean_failure(result)
    assert "downloads nothing" in result.err and words in result.err, result.err
    assert not (tmp_path / "run").exists()


def test_a_file_named_like_a_data_set_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_idx(tmp_path / "mnist")
    assert len(data.load("mnist").holdout) == 4


@pytest.mark.parametrize("name", ["lying.npy", "raw", "y.npz", "comment.csv"])
def test_bad_files_through_the_command_line(divgen, tmp_path, name):
    lying_npy(tmp_path / "lying.npy", 10**11)
    write_idx(tmp_path / "raw")
    _truncate(tmp_path / "raw" / "t10k-images-idx3-ubyte", 100)
    np.savez(tmp_path / "y.npz", y=np.arange(10))
    (tmp_path / "comment.csv").write_text("1,2 # note\n3,4\n5,6\n")
    before = snapshot(tmp_path)
    result = divgen("train", "--data", tmp_path / name, *TINY, "--steps", 2, "--out", tmp_path / "run")
    assert_clean_failure(result)
    assert snapshot(tmp_path) == before


def test_evaluate_holds_out_the_same_test_rows(divgen, tmp_path):
    """A run on an IDX directory records it; evaluate reloads the same split and refuses changed files."""
    write_idx(tmp_path / "raw", n_train=60, n_test=30, hw=(6, 6))
    result = divgen("train", "--data", tmp_path / "raw", "--model", "mlp", "--steps", 2, "--width", 8,
                    "--batch-size", 16, "--n-samples", 20, "--no-figures", "--out", tmp_path / "run", "--json")
    assert result.code == 0, result.err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["data"] == str(tmp_path / "raw") and cfg["data_sha256"] == data_files.fingerprint(str(tmp_path / "raw"))
    held = data.load(cfg["data"], n=cfg["n_data"], seed=cfg["seed"], holdout=cfg["holdout"]).holdout
    assert len(held) == 30
    labels = np.zeros(30, np.uint8)
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    result = divgen("evaluate", tmp_path / "run")
    assert_clean_failure(result)
    assert "has changed" in result.err


def test_kaggle_idx_names_with_a_dot(tmp_path):
    """Kaggle's MNIST names its files train-images.idx3-ubyte, train-labels.idx1-ubyte, ..."""
    a = write_idx(tmp_path / "raw")
    for name in a:
        path = tmp_path / "raw" / name
        path.rename(path.with_name(name.replace("s-idx", "s.idx")))
    ds = data.load(str(tmp_path / "raw"))
    torch.testing.assert_close(ds.holdout, flat(a["t10k-images-idx3-ubyte"]))
    _, y, _ = data_files.read_file(tmp_path / "raw" / "train-images.idx3-ubyte")
    assert y.tolist() == [0, 1, 2] * 4
