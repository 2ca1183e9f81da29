"""The catalog: every name it lists is one the library implements, and nothing the command line needs for --help
imports torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest
import torch

from divgen import catalog, config, data, demo, divergences, recipes, two_sample
from divgen.errors import InputError


def test_every_name_the_catalog_lists_is_implemented():
    assert set(data.TOYS) == set(catalog.TOY_DATA) and set(catalog.DATASETS) >= set(catalog.TOY_DATA)
    fixed = [n for n in catalog.F_DIVERGENCES if ":" not in n]
    assert [divergences.get(n).name for n in fixed] == fixed
    assert divergences.get("alpha:0.5").name == "alpha:0.5" and divergences.get("js-weighted:0.3").name == "js-weighted:0.3"
    a, b = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)), torch.randn(40, 2) + 3
    for method in catalog.TEST_METHODS:  # each name runs its own test, and the default is the catalog's
        assert two_sample.two_sample_test(a, b, method, permutations=19).method == method
    assert two_sample.two_sample_test(a, b, permutations=19).method == catalog.DEFAULT_TEST
    assert all(callable(getattr(demo, name)) for name in catalog.DEMO_FIGURES)
    assert set(catalog.DIVERGENCE_KINDS.values()) | {"f-gan"} | set(catalog.OWN_LOSSES) == set(recipes.TERMS)


@pytest.mark.parametrize("name", catalog.FAMILIES)
def test_every_family_row_names_what_exists(name):
    row = catalog.FAMILIES[name]
    assert row.compares is None or row.compares in catalog.COMPARES
    assert row.own_loss is None or row.own_loss in catalog.OWN_LOSSES
    assert row.compares is not None or row.own_loss is not None, "a family must train by something"
    assert row.encoder in (None, "deterministic", "gaussian")
    assert set(row.defaults) | set(row.image_defaults) | set(row.small_image_defaults) <= {f.name for f in fields(config.Config)}
    # a latent term compares codes with the prior: it needs an encoder, and a decoder to draw samples from the prior
    if row.compares in ("latent", "pairs"):
        assert row.encoder == "deterministic"
    if row.compares == "latent":
        assert row.decoder


@pytest.mark.parametrize("name", [n for n in catalog.F_DIVERGENCES if ":" not in n]
                         + ["alpha:-1", "alpha:0.5", "alpha:1.5", "alpha:3", "js-weighted:0.3"])
def test_mode_covering_is_an_unbounded_conjugate_domain(name):
    # lim f(u)/u = sup dom f*: infinite exactly for the divergences that the catalog calls mode covering
    div = divergences.get(name)
    slope = float(div.f(torch.tensor(1e12, dtype=torch.float64))) / 1e12
    assert catalog.mode_covering(name) == (div.dom[1] == float("inf")) == (slope > 20)
    assert not catalog.mode_covering("mmd") and not catalog.mode_covering("wasserstein")


@pytest.mark.parametrize("name, parsed", [("kl", ("kl", None)), ("alpha:-1", ("alpha", -1.0)),
                                          ("js-weighted:0.25", ("js-weighted", 0.25)), ("mmd", ("mmd", None))])
def test_divergence_names_parse(name, parsed):
    assert catalog.parse_divergence(name) == parsed


@pytest.mark.parametrize("bad", ["nope", "alpha:1", "alpha:0", "alpha:x", "alpha:inf", "js-weighted:1", "alpha:A", "kl:2"])
def test_bad_divergence_names_are_refused_in_one_line(bad):
    with pytest.raises(InputError) as info:
        catalog.divergence_kind(bad)
    assert "\n" not in str(info.value)


def test_the_objective_is_the_familys_own_loss_plus_the_divergences_term():
    fam = catalog.FAMILIES
    assert fam["mlp"].objective("hellinger") == "f-gan"
    assert fam["cgan"].objective("wasserstein") == "wasserstein"
    assert fam["vae"].objective("kl") == "elbo"
    assert fam["aae"].objective("js") == "reconstruction + f-gan"
    assert fam["aae"].objective("mmd") == "reconstruction + mmd"
    assert fam["bigan"].objective("js") == "cycle + f-gan" and fam["bigan"].objective("js", 0.0) == "f-gan"


def test_every_flag_is_in_exactly_one_help_group():
    grouped = [name for names in config.FLAG_GROUPS.values() for name in names]
    flags = [f.name for f in fields(config.Config) if f.metadata["flag"]]
    assert sorted(grouped) == sorted(flags) and len(set(grouped)) == len(grouped)


def test_train_help_imports_no_torch():
    code = ("import sys; from divgen import cli; p = cli.build_parser('train'); p.format_help(); "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
