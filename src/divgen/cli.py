"""Argument parsing and nothing else: every command calls into the library.

Exit codes: 0 success, 2 bad input or usage (one line on stderr), 1 internal
failure, 130 interrupted. Only the chosen command's arguments are built, and
each command imports what it needs (torch, numpy, matplotlib) when it runs, so
`divgen --help` and `divgen COMMAND --help` stay fast: names, help strings
and per-family defaults come from catalog.py and config.py, which import no
torch.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from pathlib import Path

from divgen import __version__, catalog, config, jsonout, limits, offload
from divgen.errors import InputError, Interrupted, TrainingDiverged, one_line, os_error_text
from divgen.limits import AT_LEAST_1, PROBABILITY, SEED, number
from divgen.progress import announce


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message):
        # "divgen: error: " is printed by main; the sub-command, if any, comes after it
        command = self.prog.removeprefix("divgen").strip()
        raise InputError(f"{command}: {message}" if command else message)


def _emit(args, obj: dict, text: str) -> None:
    """The command's result on stdout: one strict JSON object with --json (non-finite numbers as null), else text."""
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(jsonout.dumps(obj) if args.json else text)


# ------------------------------------------------------------- divergences ---
def cmd_divergences(args) -> int:
    from divgen import divergences
    from divgen.tables import markdown

    rows = divergences.table(args.names or divergences.EXAMPLES)
    if args.json:
        print(jsonout.dumps({"divergences": rows, "names": list(catalog.DIVERGENCES)}))
        return 0
    cols = ["name", "f", "f*", "dom f*", "g_f", "f'(1)"]
    print(markdown([*cols, "maximum"], [[*(r[c] for c in cols), "∞" if r["maximum"] is None else r["maximum"]]
                                        for r in rows], "lllllrr"))
    print("\nmaximum: the value at disjoint supports, f(0) + sup dom f*.\n"
          "also: alpha:A for any A ∉ {0, 1}, js-weighted:PI for 0 < PI < 1; "
          "wasserstein (Lipschitz critic) and mmd (kernel) are trained without a conjugate.")
    return 0


# ------------------------------------------------------------------- train ---
def cmd_train(args) -> int:
    from divgen import runs, train

    given = {f.name: getattr(args, f.name) for f in fields(config.Config) if f.metadata["flag"] and getattr(args, f.name, None) is not None}
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise InputError("--resume DIR continues DIR; do not pass a different --out")
        out = Path(args.resume)
        # the flags given override the run's settings; train() refuses any that may not change
        cfg = replace(config.Config.from_dict(runs.read_config(out), str(out / runs.CONFIG)), **given)
    else:
        if not args.out:
            raise InputError("train: --out DIR is required (or --resume DIR)")
        cfg, out = config.Config(**given), Path(args.out)
    result = train.train(cfg, out, resume=bool(args.resume), overwrite=args.overwrite, quiet=args.json)
    run = result.run
    figures = "  ".join(f"{name}: {run / f'{name}.png'}" for name in ("samples", "losses") if (run / f"{name}.png").exists())
    _emit(args, {"run": str(run), "config": result.config.to_dict(), "final": result.metrics},
          f"run directory: {run}\nfinal: {jsonout.dumps(result.metrics)}" + (f"\n{figures}" if figures else ""))
    return 0


def _add_config_flags(groups: dict[str, argparse._ArgumentGroup]) -> None:
    by_name = {f.name: f for f in fields(config.Config)}
    for title, names in config.FLAG_GROUPS.items():
        p = groups[title]
        for name in names:
            meta = by_name[name].metadata
            flag = config.flag_name(name)
            if meta["kind"] is bool:
                p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{meta['help']} (default: {'yes' if by_name[name].default else 'no'})")
                continue
            default = config.default_text(name)
            p.add_argument(
                flag,
                type=number(meta["kind"], flag, meta["bounds"]) if meta["kind"] in (int, float) else meta["kind"],
                default=None,  # None = not given; the Config and the model family hold the real default
                metavar=name.upper() if not meta.get("choices") else "{" + ",".join(meta["choices"]) + "}",
                help=meta["help"] + ("" if default == "None" else f" (default: {default})"),
            )


# ------------------------------------------------------------------ sample ---
def cmd_sample(args) -> int:
    from divgen import results, sample_files

    out = sample_files.check_output(args.output, args.overwrite)
    trained = results.load_run(Path(args.run))
    sample_files.write(out, trained.nets, args.n, args.seed, trained.spec.event_shape, label=args.label, quiet=args.json)
    dim, shape = trained.spec.dim, sample_files.stored_shape(trained.spec.event_shape)
    what = f"of dimension {dim}" if len(shape) == 1 else f"of shape {'×'.join(map(str, shape))}"
    _emit(args, {"output": str(out), "n": args.n, "dim": dim, "shape": list(shape), "format": out.suffix.lower().lstrip(".")},
          f"wrote {args.n} samples {what} to {out}")
    return 0


# ------------------------------------------------------------------ encode ---
def cmd_encode(args) -> int:
    import numpy as np

    from divgen import data_files, files, results, sample_files

    out = sample_files.check_output(args.output, args.overwrite, formats=(".npy",), reads=args.data)
    trained = results.load_run(Path(args.run))
    x, y, shape = data_files.read_file(args.data)
    codes = results.encode(trained, x, y, shape)
    files.atomic_write(out, lambda fh: np.save(fh, codes.numpy()))
    _emit(args, {"output": str(out), "n": codes.shape[0], "dim": codes.shape[1]},
          f"wrote {codes.shape[0]} codes of dimension {codes.shape[1]} to {out}")
    return 0


# -------------------------------------------------------------------- demo ---
def cmd_demo(args) -> int:
    from divgen import demo

    if args.figure:
        from divgen import runs

        out = runs.prepare(Path(args.out) if args.out else demo._fresh_dir(f"divgen-{args.figure}"), args.overwrite,
                           files=demo.FIGURE_FILES, folders=())
        result = getattr(demo, args.figure)(out, quick=args.quick)
        _emit(args, result, "\n".join(f"{k}: {v}" for k, v in result.items()))
        return 0
    result = demo.run(Path(args.out) if args.out else None, quiet=args.json, quick=args.quick, overwrite=args.overwrite)
    _emit(args, result, demo.summary(result))
    return 0


# ----------------------------------------------------------------- compare ---
def cmd_compare(args) -> int:
    from divgen import fit

    result = fit.compare(args.data, args.methods, Path(args.out), model=args.model, steps=args.steps,
                         seed=args.seed, overwrite=args.overwrite, quiet=args.json)
    table = Path(result["table"]).read_text()
    _emit(args, result, f"{table}\nfigure: {result['figure']}\ntable: {result['table']} (and compare.json)")
    return 0


# ---------------------------------------------------- test, estimate, evaluate ---
def _read_pair(args):
    from divgen.data_files import read_array

    (a, _), (b, _) = read_array(args.a), read_array(args.b)
    return a, b


def cmd_test(args) -> int:
    from divgen import two_sample

    a, b = _read_pair(args)
    work = "training a classifier" if args.method == "c2st" else f"{args.permutations} permutations"  # c2st-logit: both
    with announce(f"test: {work} …", quiet=args.json):
        result = two_sample.two_sample_test(a, b, args.method, seed=args.seed, permutations=args.permutations)
    reject = result.p_value <= args.alpha
    what = catalog.TEST_METHODS[result.method].split(",")[0]
    verdict = "reject" if reject else "do not reject"
    _emit(args, jsonout.strict({**asdict(result), "alpha": args.alpha, "reject": reject}),
          f"{result.method}: statistic {result.statistic:.6g} ({what}), p-value {result.p_value:.4g}, "
          f"n_a {result.n_a}, n_b {result.n_b}\n{verdict} H0 (same distribution) at α = {args.alpha:g}")
    return 0


def cmd_estimate(args) -> int:
    from divgen import estimators

    a, b = _read_pair(args)
    with announce(f"estimate: {args.method} estimate of {args.divergence} …", quiet=args.json):
        e = estimators.estimate(a, b, args.divergence, method=args.method, seed=args.seed, confidence=args.confidence,
                                quiet=args.json)
    bound = (f"\n{e.divergence}(A‖B) ≥ {e.lower_bound:.6g} with {args.confidence:.0%} confidence (certified lower bound)"
             if e.lower_bound is not None else "\nno certified lower bound for this method")
    note = estimators.extrapolation_note(e.to_dict())
    _emit(args, e.to_dict(),
          f"{e.divergence}(A‖B) ≈ {e.estimate:.6g}   "
          + (f"{args.confidence:.0%} interval [{e.ci_low:.6g}, {e.ci_high:.6g}] (held-out sampling error only: no "
             "coverage promise)"
             if math.isfinite(e.ci_low) and math.isfinite(e.ci_high) else "no interval (the estimate is not finite)")
          + f"   ({e.method}, n_a {e.n_a}, n_b {e.n_b}){bound}"
          + (f"\n{note}" if note else "") + (f"\n{e.note}" if e.note else ""))
    return 0


def cmd_evaluate(args) -> int:
    from divgen import evaluate

    result = evaluate.evaluate_run(Path(args.run), seed=args.seed, quiet=args.json)
    _emit(args, result, evaluate.report(result) + f"\nwrote {Path(args.run) / 'eval.json'}")
    return 0


# ------------------------------------------------------------------ parser ---
def _demo_args(p):
    p.add_argument("--out", help="directory for the runs and the figure (default: a new ./divgen-demo*)")
    p.add_argument("--quick", action="store_true", help="20 steps per run: checks that everything runs, in seconds")
    p.add_argument("--overwrite", action="store_true", help="replace divgen's files in an existing --out (other files are kept)")
    p.add_argument("--figure", choices=tuple(catalog.DEMO_FIGURES),
                   help="instead, one of the lecture's pictures: "
                   + "; ".join(f"{k} ({v})" for k, v in catalog.DEMO_FIGURES.items()))


def _divergences_args(p):
    p.add_argument("names", nargs="*", help="divergences to show, e.g. alpha:0.3 (default: all, with example parameters)")


def _train_args(p):
    groups = {title: p.add_argument_group(title) for title in config.FLAG_GROUPS}
    out = groups["run and output"]
    out.add_argument("--out", help="new run directory")
    out.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest good checkpoint")
    out.add_argument("--overwrite", action="store_true", help="replace divgen's files in an existing --out (other files are kept)")
    _add_config_flags(groups)


def _seed(p, help):
    p.add_argument("--seed", type=number(int, "--seed", SEED), default=0, help=f"{help} (default: 0; 0 ≤ seed < 2³²)")


def _sample_args(p):
    p.add_argument("run", help="run directory")
    p.add_argument("-n", type=number(int, "-n", AT_LEAST_1), default=10_000,
                   help="number of samples, written in chunks: a large -n needs disk space, not memory (default: 10000)")
    p.add_argument("-o", "--output", required=True,
                   help="output file: .npy (float32, one sample per row), .npz (key x, and y for a conditional model), "
                        ".csv (no header), or .png (a grid of images, for image data)")
    _seed(p, "noise seed")
    p.add_argument("--label", type=number(int, "--label", limits.NON_NEGATIVE),
                   help="a conditional model (" + ", ".join(f.name for f in catalog.FAMILIES.values() if f.conditional)
                   + "): draw this class only")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def _encode_args(p):
    p.add_argument("run", help="run directory of a model with an encoder: "
                   + ", ".join(f.name for f in catalog.FAMILIES.values() if f.encoder))
    p.add_argument("data", help="samples to encode: .npy/.npz/.csv (a cvae needs their labels: a .npz with 'y')")
    p.add_argument("-o", "--output", required=True, help="output .npy file, one code per row")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")


def _compare_args(p):
    p.add_argument("--data", required=True, help="built-in data set or a .npy/.npz/.csv file (exact:* needs a built-in one)")
    p.add_argument("--model", default="gaussian", help="model to fit (default: gaussian)")
    p.add_argument("--methods", default="mle,exact:reverse-kl,adversarial:reverse-kl,adversarial:js",
                   help="comma-separated: mle, exact:NAME, adversarial:NAME (default: %(default)s)")
    p.add_argument("--out", required=True, help="output directory: compare.png, compare.md, compare.json, one run per adversarial fit")
    p.add_argument("--steps", type=number(int, "--steps", AT_LEAST_1), default=None,
                   help="generator steps of each adversarial fit (default: the gaussian family's, 3000)")
    _seed(p, "data sample and training seed")
    p.add_argument("--overwrite", action="store_true", help="replace divgen's files in an existing --out (other files are kept)")


def _test_args(p):
    p.add_argument("a", help="samples A (.npy/.npz/.csv, one sample per row)")
    p.add_argument("b", help="samples B, same dimension")
    tests = catalog.TEST_METHODS
    p.add_argument("--method", default=catalog.DEFAULT_TEST, choices=tuple(tests), metavar="{" + ",".join(tests) + "}",
                   help="; ".join(f"{k}: {v}" for k, v in tests.items()) + f" (default: {catalog.DEFAULT_TEST})")
    p.add_argument("--alpha", type=number(float, "--alpha", PROBABILITY), default=0.05,
                   help="significance level of the verdict, in (0, 1) (default: 0.05)")
    p.add_argument("--permutations", type=number(int, "--permutations", AT_LEAST_1), default=500,
                   help="relabellings of the permutation tests (all but c2st) (default: 500)")
    _seed(p, "seed of splits, training and permutations")


def _estimate_args(p):
    p.add_argument("a", help="samples A, playing P (the data)")
    p.add_argument("b", help="samples B, playing Q (the model)")
    p.add_argument("--divergence", required=True, help="any f-divergence name (see `divgen divergences`) or wasserstein")
    p.add_argument("--method", default="critic", choices=catalog.ESTIMATION_METHODS,
                   help="critic: cross-fitted classifier plug-in with a certified lower bound (wasserstein: in 1-D and "
                        "2-D the optimal transport's potential, also with one; above, a gradient-penalty critic, "
                        "an estimate only); knn: k-nearest neighbours, kl and "
                        "reverse-kl of continuous data (default: critic)")
    p.add_argument("--confidence", type=number(float, "--confidence", PROBABILITY), default=0.95,
                   help="confidence level of the interval, in (0, 1) (default: 0.95)")
    _seed(p, "seed of splits and training")


def _evaluate_args(p):
    p.add_argument("run", help="run directory")
    _seed(p, "seed of generated samples, splits and training")


# name: (function, one-line help, arguments, the modules it runs on, loaded first: see _interrupts_held).
# train and sample load matplotlib (divgen.plots) only when they draw, after their work: 0.35 s later
# to the first step
COMMANDS = {
    "demo": (cmd_demo, "the main job on embedded data: mode covering vs mode seeking, and a GAN on ring8 (CPU, < 2 min)", _demo_args,
             ("divgen.demo", "divgen.plots")),
    "divergences": (cmd_divergences, "the table of f-divergences: f, f*, dom f*, g_f, f'(1)", _divergences_args,
                    ("divgen.recipes",)),
    "train": (cmd_train, "train a generator by minimizing a divergence", _train_args, ("divgen.train",)),
    "sample": (cmd_sample, "draw samples from a trained run", _sample_args,
               ("divgen.results", "divgen.sample_files")),
    "encode": (cmd_encode, "latent codes of samples, from a model with an encoder (E(x); for a VAE the posterior mean)",
               _encode_args, ("divgen.results", "divgen.sample_files")),
    "compare": (cmd_compare, "fit one model by maximum likelihood, exact and adversarial divergence minimization, side by side",
                _compare_args, ("divgen.fit", "divgen.train", "divgen.plots", "divgen.estimators", "divgen.two_sample")),
    "test": (cmd_test, "two-sample test of H0: A and B come from the same distribution", _test_args, ("divgen.two_sample",)),
    "estimate": (cmd_estimate, "estimate D(A‖B) between two sample files, with a certified lower bound and an "
                 "interval of its sampling error", _estimate_args, ("divgen.estimators",)),
    "evaluate": (cmd_evaluate, "held-out evaluation of a run: independent critics, two-sample tests, exact divergences, modes",
                 _evaluate_args, ("divgen.evaluate", "divgen.train")),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with `only`, of that command alone (the others keep their names
    and help, enough for `divgen --help`)."""
    parser = _Parser(prog="divgen", description="Train and evaluate generative models as divergence minimization. "
                     "Every JSON divgen prints or writes is strict JSON: a non-finite number is null.")
    parser.add_argument("--version", action="version", version=f"divgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (func, help, add_arguments, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        p.set_defaults(func=func)
        if only is None or only == name:
            add_arguments(p)
    return parser


@contextmanager
def _interrupts_held():
    """Hold Ctrl-C (SIGINT) while torch and the other compiled libraries load, and raise it as
    KeyboardInterrupt right after. A KeyboardInterrupt raised inside torch's C++ initialisation
    cannot be caught: the process aborts ("terminate called after throwing ... KeyboardInterrupt")
    or dies by the signal, whatever the handler above it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def _offloads(args) -> bool:
    """Whether the command calls offload's jobs, which a helper process then loads while torch loads
    here: prdc and the transport potential (evaluate), the transport potential (estimate of wasserstein)."""
    return args.command == "evaluate" or (args.command == "estimate" and args.divergence == "wasserstein")


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
        command = next((a for a in argv if not a.startswith("-")), "")
        with _interrupts_held():
            args = build_parser(only=command).parse_args(argv)  # --help and usage errors end here, light
            if _offloads(args) and "torch" not in sys.modules:  # only then do the helper's imports overlap
                offload.start()
            for module in COMMANDS[args.command][3]:
                importlib.import_module(module)
        return args.func(args)
    except InputError as e:
        print(f"divgen: error: {one_line(e, 2000)}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"divgen: training diverged: {one_line(e, 2000)}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"divgen: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("divgen: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("divgen: out of memory, although the request's estimate fit; please report this with the command",
              file=sys.stderr)
        return 1
    except OSError as e:  # a file that the checks before the work could not foresee (a disk that filled up)
        if e.filename is None:  # not about a path of the user's: an internal failure
            raise
        print(f"divgen: error: {one_line(os_error_text(e), 2000)}", file=sys.stderr)
        return 2
    finally:
        offload.stop()


def run() -> None:
    """The `divgen` command (and `python -m divgen`): main(), then the process ends with its exit code."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun worker, whose process group is destroyed and whose files are written and closed: it
        # ends here, before the interpreter's own teardown. There, about one run in 40 (2 CPU processes,
        # gloo), a thread of the distributed runtime was destroyed while still running, which aborts the
        # process (SIGABRT, "terminate called without an active exception", no Python frame) and makes
        # torchrun stop the other ranks and report the finished run as failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
