"""The optimal discriminator: a GAN discriminator trained on two known densities approaches p/(p+q).

Goodfellow et al. 2014, Proposition 1: for fixed P and Q the maximizer of
E_P[log D] + E_Q[log(1 − D)] is D* = p/(p + q), and the maximum value is
2·JS(P, Q) − log 4. For each pair of densities and training length this
prints the L1 gap E_{½(p+q)}|D − D*| and the value reached against the
optimum, all integrated by quadrature on a grid.

    python benchmarks/optimal_discriminator.py
"""

from __future__ import annotations

import math
import sys
import time

import torch

from divgen import densities, fit
from divgen.data import toy_density

PAIRS = {
    "mog1d vs N(0, 1.5²)": (lambda: toy_density("mog1d"), lambda: densities.gaussian([0.0], [[1.5**2]])),
    "N(0, 1) vs N(1, 1)": (lambda: densities.gaussian([0.0], [[1.0]]), lambda: densities.gaussian([1.0], [[1.0]])),
    "mog2d vs N(0, I)": (lambda: toy_density("mog2d"), lambda: densities.gaussian([0.0, 0.0], torch.eye(2))),
}
STEPS = (100, 500, 2000)


def main() -> int:
    torch.set_num_threads(1)
    print("| densities P vs Q | critic steps | L1 gap E½(p+q)\\|D − p/(p+q)\\| | value E_P log D + E_Q log(1 − D) | 2·JS − log 4 | gap to optimum | seconds |")
    print("|---|---|---|---|---|---|---|")
    for label, (p, q) in PAIRS.items():
        for steps in STEPS:
            t0 = time.perf_counter()
            c = fit.check_discriminator(p(), q(), steps=steps, seed=0)
            print(f"| {label} | {steps} | {c.l1_gap:.4f} | {c.value:.4f} | {c.optimum:.4f} | {c.optimum - c.value:.4f} | {time.perf_counter() - t0:.1f} |")
    js = densities.exact_divergence(toy_density("mog1d"), densities.gaussian([0.0], [[1.5**2]]), "js").value
    print(f"\ncheck: mog1d vs N(0, 1.5²): 2·JS − log 4 = {2 * js - math.log(4):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
