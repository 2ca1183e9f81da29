"""The optimal discriminator: a GAN discriminator trained on two known densities approaches p/(p+q).

Goodfellow et al. 2014, Proposition 1: for fixed P and Q the maximizer of
E_P[log D] + E_Q[log(1 − D)] is D* = p/(p + q), and the maximum value is
2·JS(P, Q) − log 4. For each pair of densities and training length this
prints the L1 gap E_{½(p+q)}|D − D*| and the value reached against the
optimum, all integrated by quadrature on a grid.

    python benchmarks/optimal_discriminator.py
    python benchmarks/optimal_discriminator.py --quick   # one pair, 20 steps: checks that it runs
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from divgen import densities, fit
from divgen.data import toy_density
from divgen.tables import environment, markdown

PAIRS = {
    "mog1d vs N(0, 1.5²)": (lambda: toy_density("mog1d"), lambda: densities.gaussian([0.0], [[1.5**2]])),
    "N(0, 1) vs N(1, 1)": (lambda: densities.gaussian([0.0], [[1.0]]), lambda: densities.gaussian([1.0], [[1.0]])),
    "mog2d vs N(0, I)": (lambda: toy_density("mog2d"), lambda: densities.gaussian([0.0, 0.0], torch.eye(2))),
}
STEPS = (100, 500, 2000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one pair, 20 steps: checks that the script runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pairs = dict(list(PAIRS.items())[:1]) if args.quick else PAIRS
    rows = []
    for label, (p, q) in pairs.items():
        for steps in (20,) if args.quick else STEPS:
            t0 = time.perf_counter()
            c = fit.check_discriminator(p(), q(), steps=steps, seed=0)
            rows.append([label, steps, f"{c.l1_gap:.4f}", f"{c.value:.4f}", f"{c.optimum:.4f}", f"{c.optimum - c.value:.4f}",
                         f"{time.perf_counter() - t0:.1f}"])
    print(environment())
    print(markdown(["densities P vs Q", "critic steps", "L1 gap E½(p+q)\\|D − p/(p+q)\\|", "value E_P log D + E_Q log(1 − D)",
                    "2·JS − log 4", "gap to optimum", "seconds"], rows))
    js = densities.exact_divergence(toy_density("mog1d"), densities.gaussian([0.0], [[1.5**2]]), "js").value
    print(f"\ncheck: mog1d vs N(0, 1.5²): 2·JS − log 4 = {2 * js - math.log(4):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
