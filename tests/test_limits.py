"""Ranges of numbers and sizes of requests: the checks every flag and every allocation goes through."""

from __future__ import annotations

import argparse
import math

import pytest

from divgen import limits
from divgen.errors import InputError


@pytest.mark.parametrize("bounds, good, bad, text", [
    (limits.AT_LEAST_1, [1, 7], [0, -3], "at least 1"),
    (limits.POSITIVE, [1e-9, 5.0], [0.0, -1.0], "> 0"),
    (limits.FRACTION, [0.0, 0.999], [1.0, -0.1], "in [0, 1)"),
    (limits.PROBABILITY, [0.5], [0.0, 1.0], "in (0, 1)"),
    (limits.FINITE, [-1e30, 0.0], [math.inf, -math.inf, math.nan], "a finite number"),
])
def test_bounds_accept_their_range_and_name_the_flag_otherwise(bounds, good, bad, text):
    for value in good:
        bounds.check("--x", value)
    for value in bad:
        with pytest.raises(InputError, match="^--x must be"):
            bounds.check("--x", value)
    assert bounds.text() == text


def test_number_reads_the_kind_and_checks_the_range():
    parse = limits.number(int, "--steps", limits.AT_LEAST_1)
    assert parse("12") == 12
    for text, words in (("1.5", "not a valid int"), ("x", "not a valid int"), ("0", "at least 1")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            parse(text)


@pytest.mark.parametrize("n, text", [(512, "512 B"), (3_200_000, "3.2 MB"), (51e9, "51 GB"), (1.6e13, "16 TB")])
def test_size_text(n, text):
    assert limits.size_text(n) == text


def test_require_names_the_largest_term_and_the_total():
    limits.require([("--a 1", 60), ("--b 2", 40)], have=100)  # exactly enough: accepted
    with pytest.raises(InputError, match=r"^--a 1: needs about 101 B of memory \(estimate\), but 100 B is available$"):
        limits.require([("--a 1", 60), ("--b 2", 41)], have=100)


def test_training_memory_counts_parameters_adam_state_and_the_batch():
    """A 2-D MLP of width 10 and depth 1, one network: (2·10 + 10) + (10·2 + 2) = 52 parameters, counted by the
    network_sizes terms within the formula's own rounding, and the data term is exactly 4 bytes a value."""

    class Cfg:
        width, depth, noise_dim, batch_size, keep_checkpoints, n_samples, model = 10, 1, 2, 8, 1, 100, "mlp"

    sizes = limits.network_sizes(Cfg, (2,), networks=1)
    assert sum(sizes.values()) == 52
    terms = dict(limits.training_memory(Cfg, (2,), n_rows=1000, networks=1))
    assert terms["--n-data 1000"] == 4 * 1000 * 2
    disk = dict(limits.training_disk(Cfg, (2,), networks=1))
    assert disk["--n-samples 100"] == 4 * 100 * 2 and disk["--keep-checkpoints 1"] == 2 * 3 * 4 * 52


def test_a_gaussians_scale_matrix_is_counted():
    """N(μ, LLᵀ) in d = 200,000: 4·10¹⁰ entries in L alone, refused before anything is built."""

    class Cfg:
        width, depth, noise_dim, batch_size, model = 16, 1, 2, 8, "gaussian"

    sizes = limits.network_sizes(Cfg, (200_000,), networks=1)
    assert sum(sizes.values()) == 200_000**2 + 2 * 200_000
    with pytest.raises(InputError, match=r"^data dimension 200000 \(a 200000 × 200000 scale matrix\): needs about"):
        limits.require(limits.training_memory(Cfg, (200_000,), n_rows=10, networks=1), have=8 * 10**9)


@pytest.mark.parametrize("kind, text, value", [
    (int, "20", 20), (int, "+3", 3), (int, "２０", None), (int, "1_000", None), (int, " 5", None), (int, "٣", None),
    (float, "1e-3", 1e-3), (float, ".5", 0.5), (float, "5.", 5.0), (float, "inf", math.inf), (float, "1_0", None),
    (float, "１.5", None), (float, "0x1p3", None),
])
def test_ascii_number_reads_plain_decimals_only(kind, text, value):
    """Python's int() and float() read all of these; a number on the command line or in a CSV is plain ASCII."""
    assert limits.ascii_number(text, kind) == value


def test_float_flags_must_be_finite_in_float32():
    parse = limits.number(float, "--penalty-weight", limits.NON_NEGATIVE)
    assert parse("3e38") == 3e38
    with pytest.raises(argparse.ArgumentTypeError, match=r"finite in float32"):
        parse("1e308")  # finite in float64, inf as a float32 tensor
