"""The held-out evaluation of a run: `divgen evaluate`, and the report it prints.

A sampler is judged the way it was trained. evaluate_run composes the pure
pieces on the run's held-out split against fresh samples: independent critic
estimates (estimators.py), two-sample tests with exact p-values (two_sample.py),
precision, recall, density, coverage and, on toy mixtures, mode statistics
(sample_metrics.py), a data set's classifier's metrics and likelihood bounds
(metrics.py), and exact divergences where both densities are known
(densities.py). docs/evaluation.md says what every number covers.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from divgen import data as datasets
from divgen import catalog, data_files, estimators, families, files, jsonout, limits, metrics, recipes, results, sample_metrics
from divgen.densities import exact_divergence, gaussian
from divgen.errors import InputError
from divgen.progress import Progress, announce
from divgen.samples import MIN_SAMPLES, as_samples
from divgen.tables import markdown
from divgen.threads import concurrently
from divgen.two_sample import KERNEL_BLOCK, kernel_tests, logit_test

# The tests every run is evaluated by (cheap enough for a routine `divgen evaluate`).
EVALUATE_TESTS = ("mmd-agg", "energy", "c2st-logit")
EVALUATE_PERMUTATIONS = 500
LIKELIHOOD_K = 1000  # importance samples per held-out row of the IWAE bound (metrics.held_out_likelihood)
EVERY = 5.0  # seconds between the lines of work that cannot count its own steps (progress.announce)


def evaluate_run(run, seed: int = 0, n_modes_samples: int = 2500, quiet: bool = True) -> dict:
    """Held-out evaluation of a run directory; writes RUN/eval.json and returns its content.

    The real samples are the run's held-out split, which training never saw;
    the generated ones are fresh draws of the same size. Reported: independent
    critic estimates for the run's divergence and catalog.EVALUATED (`js`,
    `wasserstein`); the EVALUATE_TESTS two-sample tests; precision, recall, density
    and coverage (k = 5); exact divergences when both densities are known;
    mode statistics for the toy mixtures; and for images the data-copying test.
    Non-finite numbers are written as null (an infinite exact divergence also
    says `"infinite": true`).
    """
    run = Path(run)
    trained = results.load_run(run)
    files.require_target(run / "eval.json", "evaluate")  # where the report goes: checked before its work
    cfg, nets = trained.config, trained.nets
    ds = datasets.load(cfg.data, n=cfg.n_data, seed=cfg.seed, holdout=cfg.holdout)
    data_files.fingerprint(cfg.data, cfg.data_sha256)  # the held-out rows are those of the file the run split
    real = ds.holdout
    if len(real) < MIN_SAMPLES:
        raise InputError(f"run {str(run)!r} kept {len(real)} held-out samples; at least {MIN_SAMPLES} are needed "
                         "(train with --holdout > 0 and more data)")
    if ds.n_classes:  # the data set's classifier (metrics.classifier) is trained and cached on the way
        files.require_folder(files.cache_dir() / "classifiers", "the classifier cache (set DIVGEN_CACHE to move it)")
    # fresh noise: neither the training batches nor samples.npy (seed + 1)
    fake = families.draw(nets, len(real), seed=cfg.seed + 1_000_003 + seed)
    names = [n for n in dict.fromkeys([cfg.divergence, *catalog.EVALUATED]) if recipes.row(n).estimator]
    estimates, tests, prdc = _critics_and_tests(real, fake, names, seed, quiet)
    result = {
        "run": str(run),
        "data": cfg.data,
        "divergence": cfg.divergence,
        "model": cfg.model,
        "n_real": len(real),
        "n_fake": len(fake),
        "critic": estimates,
        "tests": tests,
        "prdc": prdc,
        "exact": _exact_divergences(ds, nets, names),
        "modes": None,
        # images: do the samples sit closer to the training rows than the held-out rows do? (pixel space)
        "copying": asdict(sample_metrics.data_copying(ds.train, real, fake)) if ds.spec.image else None,
    }
    if ds.modes is not None and ds.mode_std is not None:
        samples = families.draw(nets, n_modes_samples, seed=cfg.seed + 2_000_003 + seed)
        result["modes"] = asdict(sample_metrics.mode_stats(samples, ds.modes, ds.mode_std, ds.mode_weights))
    result.update(_model_metrics(ds, nets, catalog.FAMILIES[cfg.model], seed, quiet))
    result = jsonout.strict(result)
    files.write_json(run / "eval.json", result)
    return result


def _critics_and_tests(real, fake, names, seed: int, quiet: bool) -> tuple[list[dict], list[dict], dict | None]:
    """critic_estimates of `names`, the EVALUATE_TESTS and prdc (k = 5), as concurrent jobs
    (threads.concurrently): the critics' fits, the kernel tests (kernel_tests) and prdc. c2st-logit takes
    the classifier of the critics' first fold, as two_sample.c2st_logit fits it. Each number is the one
    `divgen estimate`, `divgen test` or sample_metrics.prdc gives with the seed."""
    real, fake = as_samples(real, fake)
    limits.require(limits.mmd_test_memory(len(real), len(fake), EVALUATE_PERMUTATIONS, KERNEL_BLOCK), limits.memory_available())
    steps = Progress(0, "evaluate: critics", quiet, unit="Adam steps")  # a job's fit can take a while on big data
    fits, finish = estimators.cross_fit_jobs(real, fake, names, seed, progress=steps)
    # the longest jobs first, so that no core is left with one at the end: the first kind of critic's two
    # folds (the classifier, whose MLP takes the most steps), then the kernel tests, then the rest
    jobs = [*fits[:2], ("mmd-agg and energy tests", lambda: kernel_tests(real, fake, EVALUATE_PERMUTATIONS, seed)),
            *fits[2:], ("prdc", lambda: asdict(sample_metrics.prdc(real, fake, k=5, seed=seed))
                        if min(len(real), len(fake)) > 5 else None)]
    progress = Progress(len(jobs), "evaluate", quiet, unit="jobs")
    *done, prdc = concurrently(jobs, progress)
    kernel, fitted = done[2], done[:2] + done[3:]
    progress.close()
    steps.close()
    cross = finish(fitted)
    estimates = [estimators.pooled(name, cross.terms[name], 0.95, len(real), len(fake)) for name in names]
    tests = {t.method: t for t in kernel}
    tests["c2st-logit"] = logit_test(cross.first_classifier, cross.folds[0], cross.rng, EVALUATE_PERMUTATIONS)
    return [asdict(e) for e in estimates], [asdict(tests[name]) for name in EVALUATE_TESTS], prdc


def _exact_divergences(ds, nets, names) -> dict:
    """D(P‖Q) between the known data density and the model's density (a density model only), by name."""
    model = families.density_model(nets)
    if ds.density is None or model is None:
        return {}  # a generator network has no density
    q = gaussian(**model.params())
    out = {}
    for name in names:
        try:
            result = exact_divergence(ds.density, q, name)
        except InputError:  # no exact method for this pair (e.g. W1 beyond 1-D)
            continue
        out[name] = {"value": result.value, "error": result.error, "method": result.method,
                     "infinite": math.isinf(result.value)}
    return out


def _model_metrics(ds, nets, family, seed: int, quiet: bool) -> dict:
    """Labelled data: the data set's classifier's metrics. Latent-variable likelihood models: ELBO and IWAE."""
    out = {"classifier_metrics": None, "likelihood": None}
    n = len(ds.holdout)
    # neither counts its own steps: a line every EVERY seconds says what runs, and how big it is
    if ds.n_classes and n >= MIN_SAMPLES:
        per_class = " and per class" if getattr(nets["generator"], "n_classes", 0) else ""
        with announce(f"evaluate: metrics in the feature space of the data set's classifier, {n:,} held-out rows, "
                      f"{ds.n_classes:,} classes{per_class} …", quiet, every=EVERY):
            out["classifier_metrics"] = metrics.image_metrics(ds, nets, seed=seed, quiet=quiet)
    if family.own_loss == "elbo":  # on dequantized pixels, as benchmarks/digits.py
        with announce(f"evaluate: held-out likelihood, ELBO and IWAE bounds with k = {LIKELIHOOD_K:,} importance "
                      f"samples on each of {n:,} rows ({n * LIKELIHOOD_K:,} decoder passes) …", quiet, every=EVERY):
            out["likelihood"] = asdict(metrics.held_out_likelihood(ds, nets, k=LIKELIHOOD_K, seed=seed))
    return out


def _counts(counts: list[int]) -> str:
    """The held-out rows per class, in a few words: every count for a handful of classes, else their range."""
    used = [c for c in counts if c]
    if len(counts) <= 20:
        return f"held-out rows {', '.join(map(str, counts))}"
    return f"{len(used):,} of {len(counts):,} classes, {min(used, default=0)}–{max(used, default=0)} held-out rows each"


def _num(x, fmt: str = ".4f") -> str:
    return "—" if x is None else format(x, fmt)


def report(result: dict) -> str:
    """evaluate_run's result as markdown tables."""
    parts = [f"run {result['run']}: {result['divergence']} · {result['model']} on {result['data']}; "
             f"{result['n_real']} held-out real vs {result['n_fake']} generated samples",
             markdown(["independent critic", "estimate", "95% interval (sampling error only)", "95% lower bound"],
                      [[e["divergence"], _num(e["estimate"]), f"[{_num(e['ci_low'])}, {_num(e['ci_high'])}]",
                        _num(e["lower_bound"])] for e in result["critic"]]),
             *filter(None, map(estimators.extrapolation_note, result["critic"])),
             markdown(["test", "statistic", "p-value"],
                      [[t["method"], _num(t["statistic"], ".4g"), _num(t["p_value"], ".4g")] for t in result["tests"]])]
    if result.get("prdc"):
        r = result["prdc"]
        parts.append(markdown(["precision", "recall", "density", "coverage", "k"],
                              [[_num(r["precision"], ".3f"), _num(r["recall"], ".3f"), _num(r["density"], ".3f"),
                                _num(r["coverage"], ".3f"), r["k"]]], "rrrrr"))
    if result["exact"]:
        parts.append(markdown(["exact divergence", "value", "method"],
                              [[name, "inf" if x.get("infinite") else _num(x["value"]), x["method"]]
                               for name, x in result["exact"].items()], "lrl"))
    m = result["modes"]
    if m:
        parts.append(markdown(["modes captured", "high quality", "spread (1: the data's)",
                               "reverse KL of the mode histogram (vs true weights)"],
                              [[f"{m['modes_captured']} / {m['n_modes']}", f"{100 * m['high_quality']:.1f}%",
                                _num(m["spread"], ".2f"), _num(m["reverse_kl"])]], "rrrr"))
    c = result.get("classifier_metrics")
    if c:
        f, p, pt, k = c["frechet"], c["prdc"], c["prdc_train_vs_test"], c["classes"]
        rows = [["Fréchet distance to the test split", _num(f["model_vs_test"], ".3f"), _num(f["train_vs_test"], ".3f")],
                *[[name, _num(p[name], ".3f"), _num(pt[name], ".3f")] for name in ("precision", "recall", "density", "coverage")],
                ["classes covered", f"{k['covered']} / {k['n_classes']}", ""],
                ["KL(generated labels ‖ training labels)", _num(k["kl"]), ""]]
        if c["conditional_accuracy"] is not None:
            rows.append(["conditional accuracy", f"{100 * c['conditional_accuracy']:.1f}%", ""])
        if c.get("intra_class_frechet"):
            ic = c["intra_class_frechet"]
            rows.append([f"intra-class Fréchet distance, per class ({_counts(ic['counts'])})",
                         _num(ic["model_vs_test"], ".3f"), _num(ic["train_vs_test"], ".3f")])

        parts.append(f"in the feature space of a classifier trained on the training split (held-out accuracy "
                     f"{100 * c['classifier']['test_accuracy']:.1f}%), {f['n']} samples each:\n"
                     + markdown(["classifier metric", "model", "real train vs test"], rows))
        if (c.get("intra_class_frechet") or {}).get("note"):
            parts.append(f"intra-class Fréchet distance: {c['intra_class_frechet']['note']}")
    cp = result.get("copying")
    if cp:
        parts.append(markdown(["data copying (samples nearer training or held-out rows, pixels)", "Z", "distance ratio", "verdict"],
                              [["samples vs held-out rows", _num(cp["z"], ".2f"), _num(cp["distance_ratio"], ".3f"),
                                f"copies training rows (Z < {sample_metrics.COPYING_Z:g})" if cp["copying"] else "pass"]]))
    lb = result.get("likelihood")
    if lb:
        unit = "bits per dimension" + (f" (dequantized {lb['marginal']['levels']}-level pixels)"
                                       if lb["marginal"]["levels"] else "")
        named = [("log p(x), summed over the classes, k per class" if lb["conditional"] else "log p(x)", lb["marginal"]),
                 ("log p(x given y)", lb["conditional"])]
        parts.append(markdown(["held-out bound", "nats per sample", unit],
                              [row for name, b in named if b for row in
                               ([f"{name}: ELBO", _num(b["elbo"], ".3f"), _num(b["elbo_bits_per_dim"])],
                                [f"{name}: IWAE, k = {b['k']}", _num(b["iwae"], ".3f"), _num(b["iwae_bits_per_dim"])])]))
    return "\n\n".join(parts)
