"""Evaluation benchmarks: calibration and power of the two-sample tests, accuracy of the
divergence estimates, speed of `divgen test`. Prints markdown tables.

    python benchmarks/evaluation.py            # the full run (several minutes on 2 cores)
    python benchmarks/evaluation.py --quick    # fewer repetitions, same tables
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
from torch.distributions import MultivariateNormal

from divgen import evaluate


def gaussian(n: int, mean: torch.Tensor, var: float, g: torch.Generator) -> torch.Tensor:
    return mean + math.sqrt(var) * torch.randn(n, len(mean), generator=g)


def e1(d: int, size: float) -> torch.Tensor:
    v = torch.zeros(d)
    v[0] = size
    return v


def run_test(method: str, a, b, seed: int):
    return evaluate.two_sample_test(a, b, method, seed=seed)


def calibration(pairs: int, n: int, alpha: float = 0.05) -> list[str]:
    rows = ["| test | d | n per sample | pairs | rejected at α = 0.05 |", "| --- | ---: | ---: | ---: | ---: |"]
    for method in evaluate.TESTS:
        for d in (2, 10):
            g = torch.Generator().manual_seed(1000 + d)
            rejected = 0
            for i in range(pairs):
                a, b = gaussian(n, torch.zeros(d), 1.0, g), gaussian(n, torch.zeros(d), 1.0, g)
                rejected += run_test(method, a, b, seed=i).p_value <= alpha
            rows.append(f"| {method} | {d} | {n} | {pairs} | {100 * rejected / pairs:.1f}% |")
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def power(reps: int, shift: float, alpha: float = 0.05) -> list[str]:
    rows = [f"| test | d | n per sample | mean shift | power at α = 0.05 ({reps} repetitions) |",
            "| --- | ---: | ---: | ---: | ---: |"]
    for method in evaluate.TESTS:
        for d in (2, 10):
            for n in (500, 2000):
                g = torch.Generator().manual_seed(2000 + d + n)
                hits = 0
                for i in range(reps):
                    a, b = gaussian(n, torch.zeros(d), 1.0, g), gaussian(n, e1(d, shift), 1.0, g)
                    hits += run_test(method, a, b, seed=i).p_value <= alpha
                rows.append(f"| {method} | {d} | {n} | {shift} | {100 * hits / reps:.0f}% |")
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def js_monte_carlo(p, q, n: int = 1_000_000, seed: int = 0) -> float:
    """JS(P, Q) = ½ E_P[log 2p/(p + q)] + ½ E_Q[log 2q/(p + q)], by Monte Carlo in float64."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x, y = p.sample((n,)), q.sample((n,))

    def half(x, own, other):
        lo, lt = own.log_prob(x), other.log_prob(x)
        return (math.log(2) + lo - torch.logaddexp(lo, lt)).mean()

    return float(0.5 * half(x, p, q) + 0.5 * half(y, q, p))


def estimation(reps: int, n: int = 10_000) -> list[str]:
    rows = [f"| d | KL(P‖Q) | critic KL: mean abs. rel. error | mean rel. error | CI coverage | k-NN KL: mean abs. rel. error "
            f"| JS (MC) | critic JS: mean abs. rel. error | seconds per estimate |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d in (1, 2, 5, 10):
        mean_q, var_q = e1(d, 1.0), 1.5
        p = MultivariateNormal(torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))
        q = MultivariateNormal(mean_q.double(), var_q * torch.eye(d, dtype=torch.float64))
        kl = float(torch.distributions.kl_divergence(p, q))
        js = js_monte_carlo(p, q)
        g = torch.Generator().manual_seed(3000 + d)
        kl_err, kl_signed, covered, knn_err, js_err, seconds = [], [], 0, [], [], []
        for i in range(reps):
            a, b = gaussian(n, torch.zeros(d), 1.0, g), gaussian(n, mean_q, var_q, g)
            t0 = time.perf_counter()
            est = {e.divergence: e for e in evaluate.critic_estimates(a, b, ["kl", "js"], seed=i)}
            seconds.append(time.perf_counter() - t0)
            kl_err.append(abs(est["kl"].estimate - kl) / kl)
            kl_signed.append((est["kl"].estimate - kl) / kl)
            covered += est["kl"].ci_low <= kl <= est["kl"].ci_high
            js_err.append(abs(est["js"].estimate - js) / js)
            knn_err.append(abs(evaluate.knn_estimate(a, b, "kl").estimate - kl) / kl)
        rows.append(f"| {d} | {kl:.4f} | {100 * np.mean(kl_err):.1f}% | {100 * np.mean(kl_signed):+.1f}% | "
                    f"{covered}/{reps} | {100 * np.mean(knn_err):.1f}% | {js:.4f} | {100 * np.mean(js_err):.1f}% | "
                    f"{np.mean(seconds):.1f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def speed() -> list[str]:
    rows = ["| command | wall-clock seconds |", "| --- | ---: |"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.npy", Path(tmp) / "b.npy"
        np.save(a, rng.normal(size=(5000, 10)).astype(np.float32))
        np.save(b, rng.normal(size=(5000, 10)).astype(np.float32))
        for method in evaluate.TESTS:
            cmd = [sys.executable, "-m", "divgen", "test", str(a), str(b), "--method", method]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            rows.append(f"| `divgen test A.npy B.npy --method {method}` (2 × 5,000, 10-D) | {time.perf_counter() - t0:.1f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (the tables keep their shape)")
    args = parser.parse_args()
    pairs, reps_power, reps_est = (50, 10, 1) if args.quick else (200, 50, 5)
    sections = [
        ("Calibration: pairs from one distribution, N(0, I)", calibration(pairs, n=500)),
        ("Power: N(0, I) against N(δ·e1, I)", power(reps_power, shift=0.2)),
        ("Estimation: P = N(0, I), Q = N(e1, 1.5·I), n = 10,000 per side; "
         "k-NN with k = 5; CI: normal theory, 95%", estimation(reps_est)),
        ("Speed", speed()),
    ]
    from divgen.tables import environment

    print(environment())
    print(f"`python benchmarks/evaluation.py{' --quick' if args.quick else ''}`, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    for title, rows in sections:
        print(f"**{title}**\n")
        print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
