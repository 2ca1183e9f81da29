"""syndigits: rendered digits, their factors, the cache, and the data set that `--data syndigits` loads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import train_tiny
from divgen import data, data_files, files, syndigits
from divgen.syndigits import FONTS, Factors

DEJAVU_SANS = next(i for i, (file, _) in enumerate(FONTS) if file == "DejaVuSans.ttf")


def upright(digit: int, font: int = DEJAVU_SANS, n: int = 1, **given) -> Factors:
    """n copies of one glyph at scale 1, no rotation, shear, shift or thickening, unless `given`."""
    values = {**dict(angle=0.0, scale=1.0, shear=0.0, shift_x=0.0, shift_y=0.0, thickness=0.0), **given}
    return Factors(digit=np.full(n, digit, np.int64), font=np.full(n, font, np.int64),
                   **{k: np.full(n, v, np.float32) for k, v in values.items()})


def axis_angle(image: np.ndarray) -> float:
    """The ink's principal axis (28, 28), in degrees counterclockwise from vertical as seen, in (−90, 90]."""
    w = image.astype(np.float64)
    ys, xs = np.mgrid[: w.shape[0], : w.shape[1]]
    x, y = xs - (w * xs).sum() / w.sum(), -(ys - (w * ys).sum() / w.sum())  # y up
    cov = np.cov(np.stack([x.ravel(), y.ravel()]), aweights=w.ravel())
    ux, uy = np.linalg.eigh(cov)[1][:, -1]
    return turn(0.0, math.degrees(math.atan2(-ux, uy)))  # (0, 1) -> 0, (−1, 1) -> 45


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(x, y) of the ink (28, 28), in pixels, y down."""
    w = image.astype(np.float64)
    ys, xs = np.mgrid[: w.shape[0], : w.shape[1]]
    return (w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()


def turn(a: float, b: float) -> float:
    """b − a for axes (defined modulo 180°), in (−90, 90]."""
    d = (b - a) % 180
    return d - 180 if d > 90 else d


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVGEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_small_split_is_deterministic_with_the_right_shapes_and_labels():
    first, again = syndigits.generate(60, 20, seed=3), syndigits.generate(60, 20, seed=3)
    assert first.x_train.shape == (60, 1, 28, 28) and first.x_test.shape == (20, 1, 28, 28)
    assert first.x_train.dtype == np.uint8 and first.y_train.dtype == np.int64
    assert first.x_train.tobytes() == again.x_train.tobytes() and first.x_test.tobytes() == again.x_test.tobytes()
    np.testing.assert_array_equal(first.y_train, first.factors_train.digit)
    np.testing.assert_array_equal(first.y_test, first.factors_test.digit)
    assert first.x_train.min() == 0 and first.x_train.max() >= 250  # black ground, (nearly) white ink
    other = syndigits.generate(60, 20, seed=4)
    assert other.x_train.tobytes() != first.x_train.tobytes()


def test_the_test_rows_continue_the_training_stream():
    # one stream of factors: a larger training split starts with the same rows
    small, large = syndigits.generate(10, 5, seed=1), syndigits.generate(12, 3, seed=1)
    np.testing.assert_array_equal(small.x_train, large.x_train[:10])
    np.testing.assert_array_equal(small.x_test[:2], large.x_train[10:])


def test_the_same_bytes_on_any_number_of_threads():
    f = syndigits.draw_factors(64, seed=5)
    one = syndigits.render(f)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = syndigits.render(f, chunk=16)  # and in other chunks
    finally:
        torch.set_num_threads(saved)
    assert one.tobytes() == two.tobytes()


def test_factors_lie_in_their_ranges():
    f = syndigits.draw_factors(2000, seed=0)
    for name, (lo, hi) in syndigits.RANGES.items():
        v = getattr(f, name)
        assert lo <= v.min() and v.max() <= hi and v.max() - v.min() > 0.9 * (hi - lo), name
    assert set(f.digit) == set(range(10)) and set(f.font) == set(range(len(FONTS)))
    assert f[:3].font_names() == [FONTS[i][1] for i in f.font[:3]]


def test_white_digits_on_black_inside_the_frame():
    x = syndigits.generate(300, 0, seed=2).x_train[:, 0].astype(np.float64)
    ring = np.ones((28, 28), bool)
    ring[1:-1, 1:-1] = False
    centre = x[:, 9:19, 9:19].mean()
    assert x[:, ring].mean() < 0.01 * centre  # MNIST's layout: ink in the middle, none at the edge
    assert (x[:, ring] > 64).sum() == 0


def test_at_scale_one_the_longer_side_fills_the_20_pixel_box():
    zero = syndigits.render(upright(0))[0, 0]  # a '0' is taller than wide
    rows, cols = np.nonzero(zero >= 128)
    assert 19 <= rows.max() - rows.min() + 1 <= 21
    assert cols.max() - cols.min() + 1 < 18
    assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 0.5  # centred
    half = syndigits.render(upright(0, scale=0.5))[0, 0]
    rows, _ = np.nonzero(half >= 128)
    assert 9 <= rows.max() - rows.min() + 1 <= 11


def test_rotation_turns_the_axis_of_a_one_counterclockwise():
    axis = {a: axis_angle(syndigits.render(upright(1, angle=a))[0, 0]) for a in (0.0, 45.0, -30.0, 90.0)}
    assert abs(axis[0.0]) < 15  # a '1' stands roughly upright
    assert turn(axis[0.0], axis[45.0]) == pytest.approx(45, abs=3)  # its top to the upper left
    assert turn(axis[0.0], axis[-30.0]) == pytest.approx(-30, abs=3)
    assert abs(turn(axis[0.0], axis[90.0])) == pytest.approx(90, abs=3)  # lying down


def test_shear_leans_the_top_to_the_right_and_shift_moves_the_ink():
    base = syndigits.render(upright(1))[0, 0]
    leaning = syndigits.render(upright(1, shear=0.4))[0, 0]
    assert turn(axis_angle(base), axis_angle(leaning)) < -15  # clockwise: about −atan(0.4) = −22°
    moved = syndigits.render(upright(1, shift_x=3.0, shift_y=-2.0))[0, 0]
    (x0, y0), (x1, y1) = centre_of_mass(base), centre_of_mass(moved)
    assert x1 - x0 == pytest.approx(3.0, abs=0.1) and y1 - y0 == pytest.approx(-2.0, abs=0.1)


def test_thickness_adds_ink_on_both_sides_of_a_stroke():
    ink = [int(syndigits.render(upright(1, thickness=t))[0, 0].astype(np.int64).sum()) for t in (-0.2, 0.0, 1.0)]
    assert ink[0] < ink[1] < ink[2]
    # a pixel more on every side adds about the outline's length in ink: DejaVu Sans' '1' is a 20-pixel
    # stem (both sides: 40), an 11-pixel foot (22) and a flag (~10), about 72 pixels in all
    assert 55 * 255 < ink[2] - ink[1] < 90 * 255


def test_every_font_draws_ten_different_digits_and_no_two_fonts_are_the_same():
    a = syndigits.atlas()
    t = syndigits.TILE
    per_row = a.field.shape[-1] // t
    tiles = [a.field[0, 0, (g // per_row) * t : (g // per_row + 1) * t, (g % per_row) * t : (g % per_row + 1) * t]
             for g in range(len(FONTS) * 10)]
    ink = [(tile < 0).numpy() for tile in tiles]
    assert all(i.sum() > 100 for i in ink)
    assert len({i.tobytes() for i in ink}) == len(ink)


def test_the_cache_round_trips_and_a_damaged_file_is_generated_again(cache, monkeypatch):
    first = syndigits.load(30, 10, seed=0)
    assert first.cache is not None and first.cache.is_file() and first.cache.parent.parent == cache
    monkeypatch.setattr(syndigits, "generate", lambda *a: pytest.fail("a cached split was generated again"))
    again = syndigits.load(30, 10, seed=0)
    assert again.x_train.tobytes() == first.x_train.tobytes() and again.x_test.tobytes() == first.x_test.tobytes()
    for name, v in first.factors_test.arrays().items():
        np.testing.assert_array_equal(getattr(again.factors_test, name), v)
    np.testing.assert_array_equal(again.y_train, first.y_train)
    monkeypatch.undo()
    monkeypatch.setenv("DIVGEN_CACHE", str(cache))

    damaged = bytearray(first.cache.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    first.cache.write_bytes(bytes(damaged))
    with pytest.raises(Exception):
        files.load_checked(first.cache)
    regenerated = syndigits.load(30, 10, seed=0)
    assert regenerated.x_train.tobytes() == first.x_train.tobytes()
    files.load_checked(first.cache)  # whole again
    assert syndigits.load(30, 11, seed=0).cache != first.cache  # other parameters, another file


def test_an_unwritable_cache_warns_and_still_gives_the_images(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DIVGEN_CACHE", str(blocker / "cache"))
    split = syndigits.load(20, 5, seed=0)
    assert split.cache is None and split.x_train.shape == (20, 1, 28, 28)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("divgen: warning:") and "nothing is cached" in err[0]
    assert blocker.read_text() == "not a directory"


def test_data_load_gives_28_by_28_images_in_10_classes_with_the_test_split_held_out(cache, monkeypatch):
    monkeypatch.setattr(syndigits, "N_TRAIN", 80)
    monkeypatch.setattr(syndigits, "N_TEST", 30)
    ds = data.load("syndigits", holdout=0.5)  # the split is fixed: --holdout does not move it
    split = syndigits.load()
    assert ds.event_shape == (1, 28, 28) and ds.spec.image and ds.n_classes == 10
    assert ds.train.shape == (80, 784) and ds.holdout.shape == (30, 784) and ds.train.dtype == torch.float32
    torch.testing.assert_close(ds.holdout, torch.from_numpy(split.x_test).reshape(30, -1).float() / 255)
    torch.testing.assert_close(ds.train_labels, torch.from_numpy(split.y_train))
    assert data_files.fingerprint("syndigits") == ""  # built in: no file to check


def test_train_runs_on_syndigits(cache, monkeypatch, divgen, tmp_path):
    monkeypatch.setattr(syndigits, "N_TRAIN", 64)
    monkeypatch.setattr(syndigits, "N_TEST", 16)
    train_tiny(divgen, tmp_path / "run", "--no-figures", "--n-samples", "10", steps=2, data="syndigits")
