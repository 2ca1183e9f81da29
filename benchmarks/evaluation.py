"""Evaluation benchmarks: calibration, power and speed of every two-sample test; accuracy and
coverage of the divergence estimates (critic and k-NN), on Gaussian pairs and on mixtures with
narrow modes; exact divergences the old code got wrong; the Wasserstein critics against the known W1 and POT. Prints markdown tables (docs/evaluation.md).

    python benchmarks/evaluation.py                       # everything (about an hour on 2 shared cores)
    python benchmarks/evaluation.py --section tests       # calibration and power only
    python benchmarks/evaluation.py --section tests --method c2st-logit   # ... of one test
    python benchmarks/evaluation.py --quick               # seconds: tiny repetitions, same tables
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from divgen import catalog, critics, densities, estimators, two_sample
from divgen.tables import environment, markdown

FIT = critics.CriticFit()  # how the estimates' critics are trained; --quick: a few steps

ALPHA = 0.05


# ------------------------------------------------------------------- data ---
def ring(n: int, sd: float, g: torch.Generator, modes: int = 8) -> torch.Tensor:
    """ring8: 8 Gaussians of sd `sd` on the circle of radius 2; `modes` < 8 drops the last ones."""
    k = torch.randint(modes, (n,), generator=g)
    angle = k * (2 * math.pi / 8)
    return torch.stack([2 * torch.cos(angle), 2 * torch.sin(angle)], 1) + sd * torch.randn(n, 2, generator=g)


def student(n: int, d: int, g: torch.Generator, df: int = 2) -> torch.Tensor:
    """Student t with `df` degrees of freedom, independent coordinates (infinite variance at df = 2)."""
    z = torch.randn(n, d, generator=g)
    chi2 = torch.randn(n, int(df), generator=g).pow(2).sum(1, keepdim=True)  # χ²(df), df an integer
    return z / torch.sqrt(chi2 / df)


def shift(d: int, size: float) -> torch.Tensor:
    v = torch.zeros(d)
    v[0] = size
    return v


NULLS = {
    "Gaussian, 2-D": lambda n, g: (torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)),
    "Gaussian, 20-D": lambda n, g: (torch.randn(n, 20, generator=g), torch.randn(n, 20, generator=g)),
    "ring8, sd 0.05": lambda n, g: (ring(n, 0.05, g), ring(n, 0.05, g)),
    "Student t (df 2), 5-D": lambda n, g: (student(n, 5, g), student(n, 5, g)),
}
ALTERNATIVES = {
    "0.3-sd shift, 2-D": lambda n, g: (torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g) + shift(2, 0.3)),
    "0.3-sd shift, 20-D": lambda n, g: (torch.randn(n, 20, generator=g), torch.randn(n, 20, generator=g) + shift(20, 0.3)),
    "ring8 sd 0.05 vs 0.1": lambda n, g: (ring(n, 0.05, g), ring(n, 0.1, g)),
    "ring8, one mode dropped": lambda n, g: (ring(n, 0.05, g), ring(n, 0.05, g, modes=7)),
}


def rejection_table(cases: dict, reps: int, n: int, seed: int, methods=tuple(catalog.TEST_METHODS)) -> str:
    """For every case and test: % of `reps` pairs rejected at α = 0.05, and seconds per test."""
    rows = []
    for case, make in cases.items():
        g = torch.Generator().manual_seed(seed)
        pairs = [make(n, g) for _ in range(reps)]
        for method in methods:
            rejected, seconds = 0, 0.0
            for i, (a, b) in enumerate(pairs):
                t0 = time.perf_counter()
                rejected += two_sample.two_sample_test(a, b, method, seed=i).p_value <= ALPHA
                seconds += time.perf_counter() - t0
            rows.append([case, f"`{method}`", n, reps, f"{100 * rejected / reps:.1f}%", f"{seconds / reps:.2f}"])
            print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    return markdown(["pair", "test", "n per side", "pairs", "rejected at α = 0.05", "seconds per test"], rows, "llrrrr")


def shift_ceiling(n: int, d: int, size: float) -> float:
    """Power at α = 0.05 of the χ² test on the mean difference with the covariance known to be I: n/2·‖x̄_A − x̄_B‖²
    is χ²_d with noncentrality n/2·size² under a shift of `size` sd. Among tests that a rotation of the data
    leaves unchanged it is the most powerful against a pure shift (the kernel tests, which know neither the
    covariance nor that the alternative is a shift, cannot beat it)."""
    from scipy import stats

    return float(stats.ncx2.sf(stats.chi2.ppf(1 - ALPHA, d), d, n / 2 * size ** 2))


# ------------------------------------------------------------- estimation ---
def estimation_pairs(d: int) -> dict:
    """(P, Q) densities at dimension d: P = N(0, I) against Q wider and shifted (N(e1, 1.5²I)), Q narrower
    along e1 (sd 0.5 there), Q with a rotated covariance (sd 0.5 and 1.5 along two random orthogonal
    directions, d ≥ 2), and a non-Gaussian pair: P with independent Student t (5 degrees of freedom,
    unit variance) coordinates against Q = N(0, I)."""
    eye = torch.eye(d, dtype=torch.float64)
    zero = torch.zeros(d, dtype=torch.float64)
    standard = densities.gaussian(zero, eye)
    narrow = eye.clone()
    narrow[0, 0] = 0.25
    pairs = {"Q wider": (standard, densities.gaussian(shift(d, 1.0).double(), 2.25 * eye)),
             "Q narrower along e1": (standard, densities.gaussian(zero, narrow))}
    if d >= 2:
        rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64))
        scales = torch.ones(d, dtype=torch.float64)
        scales[:2] = torch.tensor([0.25, 2.25])
        pairs["Q rotated"] = (standard, densities.gaussian(zero, rotation @ torch.diag(scales) @ rotation.T))
    t5 = torch.distributions.Independent(torch.distributions.StudentT(
        torch.full((d,), 5.0, dtype=torch.float64), zero, torch.full((d,), math.sqrt(3 / 5), dtype=torch.float64)), 1)
    pairs["P Student t₅, Q = N(0, I)"] = (t5, standard)
    return pairs


def _percent(values) -> str:
    return f"{100 * np.mean(values):.1f}%"


def estimation_table(reps: int, n: int, dims: tuple[int, ...]) -> str:
    """Accuracy of the critic (kl, js) and k-NN (kl) estimates, and how often each interval holds what it is
    for: the lower bound below the truth, and the two-sided interval, which describes the estimator's spread
    and not its bias, around the mean of the repetitions' estimates (and, for comparison, around the truth)."""
    accuracy, coverage = [], []
    for d in dims:
        for k, (label, (p, q)) in enumerate(estimation_pairs(d).items()):
            exact = {name: densities.exact_divergence(p, q, name, n_samples=1_000_000).value for name in ("kl", "js")}
            torch.manual_seed(3000 + 10 * d + k)
            found, seconds = [], []
            for i in range(reps):
                a, b = p.sample((n,)).float(), q.sample((n,)).float()
                t0 = time.perf_counter()
                row = {e.divergence: e for e in estimators.critic_estimates(a, b, ["kl", "js"], seed=i, fit=FIT)}
                seconds.append(time.perf_counter() - t0)
                row["knn"] = estimators.knn_estimate(a, b, "kl")
                found.append(row)
            acc, cov = [d, label, f"{exact['kl']:.4f}", f"{exact['js']:.4f}"], [d, label]
            for name in ("kl", "js", "knn"):
                truth = exact["kl" if name == "knn" else name]
                es = [r[name] for r in found]
                mean = float(np.mean([e.estimate for e in es]))
                acc += [_percent([abs(e.estimate - truth) / truth for e in es]),
                        f"{100 * (mean - truth) / truth:+.1f}%"]
                if name != "knn":
                    cov.append(f"{sum(e.lower_bound <= truth for e in es)}/{reps}")
                cov += [f"{sum(e.ci_low <= mean <= e.ci_high for e in es)}/{reps}",
                        f"{sum(e.ci_low <= truth <= e.ci_high for e in es)}/{reps}"]
            accuracy.append(acc + [f"{np.mean(seconds):.1f}"])
            coverage.append(cov)
            print(" | ".join(map(str, accuracy[-1] + coverage[-1][2:])), file=sys.stderr, flush=True)
    head = ["d", "pair", "KL(P‖Q)", "JS(P,Q)", "KL: mean abs. rel. error", "KL: mean rel. error",
            "JS: mean abs. rel. error", "JS: mean rel. error", "k-NN KL: mean abs. rel. error",
            "k-NN KL: mean rel. error", "seconds per critic estimate (KL + JS)"]
    cover = ["d", "pair"] + [f"{what}: {part}" for what, parts in (
        ("KL", ("lower bound ≤ truth", "CI ∋ mean estimate", "CI ∋ truth")),
        ("JS", ("lower bound ≤ truth", "CI ∋ mean estimate", "CI ∋ truth")),
        ("k-NN KL", ("CI ∋ mean estimate", "CI ∋ truth"))) for part in parts]
    return (markdown(head, accuracy, "rl" + "r" * (len(head) - 2)) + "\n\nWhat the intervals hold (95% each; "
            "\"mean estimate\": the mean of the repetitions' estimates):\n\n"
            + markdown(cover, coverage, "rl" + "r" * (len(cover) - 2)))


def mixture_pairs() -> dict:
    """Pairs of 2-D Gaussian mixtures whose log-ratio has fine structure (what the MLP candidate is for),
    as (P, Q) densities; samples are drawn from the densities, the truth is exact_divergence's grid."""
    from divgen.data import TOYS

    mix = densities.gaussian_mixture
    ring8, grid25 = TOYS["ring8"].modes(), TOYS["grid25"].modes()
    return {
        "ring8 sd 0.05 vs 0.08": (mix(ring8, [0.05]), mix(ring8, [0.08])),
        "ring8 sd 0.05 vs 0.1": (mix(ring8, [0.05]), mix(ring8, [0.1])),
        "ring8, one mode dropped": (mix(ring8, [0.05]), mix(ring8[:7], [0.05])),
        "grid25 sd 0.05 vs 0.07": (mix(grid25, [0.05]), mix(grid25, [0.07])),
    }


def structured_table(reps: int, n: int) -> str:
    """JS estimates between mixtures with narrow modes, against the exact value."""
    rows = []
    for label, (p, q) in mixture_pairs().items():
        truth = densities.exact_divergence(p, q, "js").value
        estimates, lower, seconds = [], 0, []
        for i in range(reps):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(5000 + i)
                a, b = p.sample((n,)), q.sample((n,))
            t0 = time.perf_counter()
            e = estimators.critic_estimates(a, b, ["js"], seed=i, fit=FIT)[0]
            seconds.append(time.perf_counter() - t0)
            estimates.append(e.estimate)
            lower += e.lower_bound <= truth
        rows.append([label, n, reps, f"{truth:.4f}", f"{np.mean(estimates):.4f}",
                     f"{min(estimates):.4f} – {max(estimates):.4f}",
                     f"{100 * np.mean([(e - truth) / truth for e in estimates]):+.1f}%", f"{lower}/{reps}",
                     f"{np.mean(seconds):.1f}"])
        print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    return markdown(["pair", "n per side", "repetitions", "JS (exact)", "critic estimate (mean)", "range",
                     "mean rel. error", "lower bound ≤ truth", "seconds per estimate"], rows, "lrrrrrrrr")

# --------------------------------------------------------- exact divergences ---
def exact_table() -> str:
    """The issue's cases: exact values by every method, against closed forms."""
    g1 = lambda m, s: densities.gaussian([m], [[s * s]])  # noqa: E731
    from divgen.data import toy_density

    cases = [
        ("KL(ring8 ‖ N((2,0), 0.05²I))", toy_density("ring8"), densities.gaussian([2.0, 0.0], [[0.0025, 0], [0, 0.0025]]), "kl", "1597.9 (grid)"),
        ("KL(N(0,1) ‖ N(0,0.01²))", g1(0, 1), g1(0, 0.01), "kl", "4994.9"),
        ("Neyman N(0,1) ‖ N(0.5,1.5²)", g1(0, 1), g1(0.5, 1.5), "neyman", "inf"),
        ("Pearson N(0,1) ‖ N(0,0.5²)", g1(0, 1), g1(0, 0.5), "pearson", "inf"),
        ("alpha:3 N(0,1.2²) ‖ N(1,1)", g1(0, 1.2), g1(1, 1), "alpha:3", "2.406e10"),
        ("Pearson N(0,1.2²) ‖ N(1,1)", g1(0, 1.2), g1(1, 1), "pearson", "5.64"),
    ]
    rows = []
    for label, p, q, name, expected in cases:
        cells = [label, expected]
        for method in ("auto", "quadrature", "grid", "monte-carlo"):
            d = densities.dim(p)
            if (method == "quadrature" and d != 1):
                cells.append("—")
                continue
            t0 = time.perf_counter()
            r = densities.exact_divergence(p, q, name, method, n_samples=200_000)
            cells.append(f"{r.value:.6g} ± {r.error:.2g} ({r.method}, {time.perf_counter() - t0:.1f} s)")
        rows.append(cells)
    return markdown(["divergence", "expected", "auto", "quadrature", "grid", "Monte Carlo"], rows, "lrrrrr")


# ------------------------------------------------------------- Wasserstein ---
def translated_pairs() -> dict:
    """Pairs whose W1 is known: B is drawn like A and moved by δ, so W1(P, Q) = ‖δ‖ (the plan x ↦ x + δ moves
    every point by ‖δ‖; the 1-Lipschitz V(x) = −⟨x, δ⟩/‖δ‖ gains ‖δ‖)."""
    def moved(draw, delta):
        delta = torch.tensor(delta)
        return lambda n, g: (draw(n, g), draw(n, g) + delta), float(delta.norm())

    pairs = {f"N(0, I) against N(e1, I), d = {d}": moved(lambda n, g, d=d: torch.randn(n, d, generator=g),
                                                          [1.0] + [0.0] * (d - 1)) for d in (1, 2, 3, 5)}
    pairs["ring of 8 modes, sd 0.05, moved by 0.3"] = moved(lambda n, g: ring(n, 0.05, g), [0.3, 0.0])
    pairs["sds (1, 0.05), moved by 0.2 along the narrow one"] = moved(
        lambda n, g: torch.randn(n, 2, generator=g) * torch.tensor([1.0, 0.05]), [0.0, 0.2])
    return pairs


def wasserstein_table(reps: int, n: int) -> str:
    """Per pair: POT's W1 on the samples, divgen's estimate (the transport potential up to
    critics.TRANSPORT_MAX_DIM dimensions, an MLP with a gradient penalty above) and, on the same samples
    and splits, the other critic (TRANSPORT_MAX_DIM moved for it), so that the dimension at which
    divgen switches is measured."""
    rows = []
    for i, (name, (draw, truth)) in enumerate(translated_pairs().items()):
        g = torch.Generator().manual_seed(4000 + i)
        found, other, exact_w, bounds, seconds = [], [], [], [], []
        for r in range(reps):
            a, b = draw(n, g)
            transport = a.shape[1] <= estimators.TRANSPORT_MAX_DIM
            exact_w.append(densities.wasserstein_empirical(a[:2000], b[:2000], 1))
            t0 = time.perf_counter()
            e = estimators.critic_estimate(a, b, "wasserstein", seed=r, fit=FIT)
            seconds.append(time.perf_counter() - t0)
            found.append(e.estimate)
            bounds.append(e.lower_bound)
            saved, estimators.TRANSPORT_MAX_DIM = estimators.TRANSPORT_MAX_DIM, 0 if transport else a.shape[1]
            try:
                other.append(estimators.critic_estimate(a, b, "wasserstein", seed=r, fit=FIT).estimate)
            finally:
                estimators.TRANSPORT_MAX_DIM = saved
        spread = lambda xs: f"{np.mean(xs):.4f} ± {np.std(xs):.4f} ({min(xs):.4f} – {max(xs):.4f})"  # noqa: E731
        rows.append([name, f"{truth:.4f}", f"{np.mean(exact_w):.4f}", "transport potential" if transport else "MLP",
                     spread(found),
                     f"{np.mean(bounds):.4f}, {sum(lb <= truth for lb in bounds)}/{reps} ≤ W1" if transport else "—",
                     f"{np.mean(seconds):.2f}", f"{'MLP' if transport else 'transport potential'}: {spread(other)}"])
        print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    return markdown(["pair (n per side: " + f"{n:,}, {reps} repetitions)", "W1(P, Q)", "POT W1 on the samples (mean)",
                     "divgen's critic", "estimate: mean ± sd (range)", "lower bound: mean, ≤ W1",
                     "seconds per estimate", "the other critic on the same samples: mean ± sd (range)"], rows)


# ------------------------------------------------------------------- speed ---
def speed_table(n: int, d: int, methods=tuple(catalog.TEST_METHODS)) -> str:
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.npy", Path(tmp) / "b.npy"
        np.save(a, rng.normal(size=(n, d)).astype(np.float32))
        np.save(b, rng.normal(size=(n, d)).astype(np.float32))
        for method in methods:
            cmd = [sys.executable, "-m", "divgen", "test", str(a), str(b), "--method", method]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            rows.append([f"`divgen test A.npy B.npy --method {method}`", f"2 × {n:,}, {d}-D", f"{time.perf_counter() - t0:.1f}"])
            print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    return markdown(["command", "data", "wall-clock seconds"], rows, "llr")


SECTIONS = ("exact", "tests", "estimation", "structured", "wasserstein", "speed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few repetitions of small samples, critics of 100 steps, two tests timed: checks that it runs")
    parser.add_argument("--section", choices=SECTIONS, action="append", help="run only these sections (repeatable)")
    parser.add_argument("--method", choices=tuple(catalog.TEST_METHODS), action="append",
                        help="--section tests: only these tests (repeatable; default: all)")
    parser.add_argument("--null-reps", type=int, default=200, help="pairs per null case (default: 200)")
    parser.add_argument("--power-reps", type=int, default=100, help="pairs per alternative (default: 100)")
    parser.add_argument("--estimate-reps", type=int, default=10, help="repetitions per estimation pair (default: 10)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections = args.section or SECTIONS
    global FIT
    if args.quick:
        null_reps, power_reps, est_reps, n_test, n_est, dims, n_speed = 1, 1, 1, 100, 400, (1,), 200
        FIT = critics.CriticFit(steps=100)
    else:
        null_reps, power_reps, est_reps, n_test, n_est, dims, n_speed = (args.null_reps, args.power_reps, args.estimate_reps,
                                                                         500, 5000, (1, 5, 20), 5000)
    n_structured = 2000 if not args.quick else 400
    methods = tuple(args.method or catalog.TEST_METHODS)
    command = "python benchmarks/evaluation.py" + (" --quick" if args.quick else "") + "".join(
        f" --section {s}" for s in (args.section or [])) + "".join(f" --method {m}" for m in (args.method or []))
    print(f"`{command}`\n")
    jobs = {
        "exact": ("Exact divergences of the issue's cases (value ± stated error, method, seconds)", exact_table),
        "tests": None,
        "estimation": (f"Estimation: Gaussian pairs (Q wider, narrower, rotated) and a Student t P, n = {n_est:,} per side, "
                       f"{est_reps} repetitions; critic "
                       f"(95% one-sided lower bound, 95% interval) and k-NN (k = 5, 95% interval)",
                       lambda: estimation_table(est_reps, n_est, dims)),
        "structured": (f"Estimation on mixtures with narrow modes: JS, n = {n_structured:,} per side, {est_reps} "
                       "repetitions", lambda: structured_table(est_reps, n_structured)),
        "wasserstein": ("Wasserstein: translated pairs, where W1 = ‖δ‖; divgen's critic beside the other one",
                        lambda: wasserstein_table(max(1, est_reps // 2), 2000 if not args.quick else 200)),
        "speed": ("Speed of `divgen test`", lambda: speed_table(n_speed, 10, methods[:2] if args.quick else methods)),
    }
    for section in SECTIONS:
        if section not in sections:
            continue
        if section == "tests":
            ceiling = ", ".join(f"{100 * shift_ceiling(n_test, d, 0.3):.1f}% on the {d}-D shift" for d in (2, 20))
            parts = [(f"Calibration: pairs from one distribution, {null_reps} pairs per case",
                      lambda: rejection_table(NULLS, null_reps, n_test, 1000, methods)),
                     (f"Power: {power_reps} pairs per case (the most powerful rotation-invariant test of a shift, "
                      f"the χ² test on the mean difference with the covariance known, has {ceiling})",
                      lambda: rejection_table(ALTERNATIVES, power_reps, n_test, 2000, methods))]
        else:
            parts = [jobs[section]]
        for title, make in parts:
            t0 = time.perf_counter()
            table = make()
            print(f"**{title}** ({time.perf_counter() - t0:.0f} s)\n\n{environment()}\n\n{table}\n", flush=True)


if __name__ == "__main__":
    main()
