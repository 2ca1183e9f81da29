"""The lecture's point-mass example: P = δ₀, Q_θ = δ_θ.

Off θ = 0 the two distributions are mutually singular, so every f-divergence
is stuck at its singular value f(0) + lim f(u)/u (KL ∞, JS log 2) and gives a
generator no gradient, while W1 = |θ| shrinks continuously to 0. Prints the
values at a few θ as a markdown table and saves the figure.

    python benchmarks/point_mass.py                      # writes docs/figures/point_mass.png
    python benchmarks/point_mass.py --out point_mass.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from divgen import plots
from divgen.densities import point_mass_divergence
from divgen.tables import environment, markdown

CURVES = (("kl", "KL(P‖Q_θ)", "tab:red"), ("js", "JS(P, Q_θ)", "tab:blue"), ("wasserstein", "W1(P, Q_θ)", "tab:green"))


def figure(path: Path) -> None:
    theta = np.linspace(-1, 1, 201)
    ceiling = 1.2  # where ∞ is drawn
    fig = plots.new_figure(5.6, 3.6)
    ax = fig.add_subplot()
    for name, label, color in CURVES:
        values = np.array([point_mass_divergence(t, name) for t in theta])
        off = theta != 0
        shown = np.where(np.isinf(values), ceiling, values)
        ax.plot(theta[theta < 0], shown[theta < 0], color=color, lw=2, label=label)
        ax.plot(theta[theta > 0], shown[theta > 0], color=color, lw=2)
        ax.plot([0], [point_mass_divergence(0.0, name)], "o", color=color, ms=6)
        if np.isinf(values[off]).any():
            ax.annotate("∞ for θ ≠ 0", (0.55, ceiling), textcoords="offset points", xytext=(0, 5), color=color, ha="center")
    ax.axhline(math.log(2), color="0.6", lw=0.8, ls=":")
    ax.text(-1, math.log(2) + 0.03, "log 2", color="0.4", fontsize=8)
    ax.set_xlabel("θ")
    ax.set_ylabel("divergence between δ₀ and δ_θ")
    ax.set_ylim(-0.05, ceiling + 0.2)
    ax.set_title("P = δ₀, Q_θ = δ_θ: only W1 sees how far θ is", fontsize=10)
    ax.legend(frameon=False, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.save(fig, path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "figures" / "point_mass.png"),
                    help="figure path (default: docs/figures/point_mass.png)")
    ap.add_argument("--quick", action="store_true", help="accepted for the smoke test; the script takes a second anyway")
    args = ap.parse_args(argv)
    print(environment())
    print(markdown(["θ", "KL(P‖Q_θ)", "JS(P, Q_θ)", "W1(P, Q_θ)"],
                   [[f"{t:g}", *(f"{point_mass_divergence(t, name):.4f}" for name, _, _ in CURVES)] for t in (-1.0, -0.1, 0.0, 0.01, 0.5)]))
    figure(Path(args.out))
    print(f"\nfigure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
