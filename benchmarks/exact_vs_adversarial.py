"""Exact vs adversarial minimizers of every f-divergence: a Gaussian fitted to a 1-D mixture.

The analogue of the f-GAN paper's Gaussian-mixture table (Nowozin et al. 2016,
table 3). For each divergence D:

- the exact minimizer Q* = N(μ*, σ*²) of D(P‖Q), by gradient descent on
  quadrature with the known data density (`fit.fit_exact`);
- the adversarial minimizer, trained from samples only with a critic
  (`fit.fit_adversarial`, the `gaussian` family's defaults), over several seeds;
- the excess divergence D(P‖Q_adv) − D(P‖Q*), both terms by adaptive
  quadrature. Target: ≤ 0.01 nats;
- per seed, the fit beside the range of the training rows it saw and how
  often that many draws of P reach beyond each end.

    python benchmarks/exact_vs_adversarial.py            # mog1d, 3 seeds, prints a markdown table
    python benchmarks/exact_vs_adversarial.py --divergences kl,js --seeds 5 --jobs 2
    python benchmarks/exact_vs_adversarial.py --quick     # seconds: checks that it runs
    python benchmarks/exact_vs_adversarial.py --tails --divergences jeffrey,pearson   # where the width is decided, and
                                                                                      # what no fit from n points can promise
    python benchmarks/exact_vs_adversarial.py --rows-within --divergences jeffrey     # without the rows beyond it
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from divgen import catalog, config, densities, divergences, fit
from divgen import data as datasets
from divgen.tables import environment, markdown

DEFAULT = "kl,reverse-kl,js,hellinger,jeffrey,pearson,neyman,gan,tv"
TARGET = 0.01  # nats
HUGE = 1e30  # quadrature of an infinite divergence returns astronomically large numbers, not inf
# The divergences the issue holds to the target; the others are reported.
HELD = ("kl", "reverse-kl", "js", "hellinger", "jeffrey", "pearson")


def adversarial(job: tuple[str, str, int, str, dict]) -> dict:
    data, name, seed, root, overrides = job
    torch.set_num_threads(1)  # one process per core
    t0 = time.perf_counter()
    f = fit.fit_adversarial(data, name, Path(root) / f"{name.replace(':', '_')}-seed{seed}", seed=seed, **overrides)
    return {"name": name, "seed": seed, "mean": f.mean[0], "std": f.std[0], "seconds": time.perf_counter() - t0,
            "selection": f.selection}


def _pm(values, digits=3) -> str:
    if max(values) > HUGE:
        return "∞"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.{digits}f} ± {sd:.{digits}f}"


def print_table(rows: list[dict], data: str, seeds: int, recipe: dict) -> None:
    print(environment())
    print(f"Gaussian fitted to `{data}` by each divergence; adversarial: {seeds} seeds, settings {json.dumps(recipe)}\n")
    header = ["divergence", "μ*", "σ*", "D(P‖Q*)", "μ adversarial", "σ adversarial", "excess D(P‖Q_adv) − D(P‖Q*)",
              "max excess", "≤ 0.01", "excess over its own basin's minimum", "starts told apart"]
    table = []
    for r in rows:
        worst = max(r["excess"])
        mark = ("yes" if worst <= TARGET else "**no**") + ("" if r["divergence"] in HELD else " (not held)")
        table.append([f"`{r['divergence']}`", f"{r['mu_star']:+.3f}", f"{r['sigma_star']:.3f}", f"{r['d_star']:.4f}",
                      _pm(r["mu_adv"]), _pm(r["sigma_adv"]), _pm(r["excess"], 4), "∞" if worst > HUGE else f"{worst:.4f}",
                      mark, _pm(r["local_excess"], 4), f"{r['told_apart']}/{len(r['excess'])}" if "told_apart" in r else "–"])
    print(markdown(header, table, "lrrrrrrrlrr"))
    print("\nQ* is the global minimizer (best of several starts). The last column compares each adversarial fit "
          "with the exact local minimizer of its own basin, found by exact descent from the adversarial fit. "
          "∞: the quadrature exceeded 1e30, i.e. the divergence is infinite (Neyman χ² is finite only for σ < 0.5·√2). "
          "Starts told apart: seeds whose comparison of the two starts on every data row (fit.comparison, "
          "95% interval) excludes 0; elsewhere the choice is a coin toss, which matters only where the two "
          "starts ended in different basins.")


def per_seed(rows: list[dict], p, data: str, n: int) -> None:
    """Each seed's fit beside the extremes of the training rows it was fitted to, and how often n draws of P
    reach beyond that range: where a divergence's width is decided beyond the data (--tails), the excess
    follows the sample's extremes."""
    import numpy as np

    grid, cdf = grid_cdf(p)
    table = []
    for r in rows:
        for seed, (mu, sigma, excess) in enumerate(zip(r["mu_adv"], r["sigma_adv"], r["excess"])):
            x = datasets.load(data, n=n, seed=seed).train[:, 0]
            lo, hi = float(x.min()), float(x.max())
            below, above = (1 - (1 - float(np.interp(lo, grid, cdf))) ** len(x),
                            1 - float(np.interp(hi, grid, cdf)) ** len(x))
            table.append([f"`{r['divergence']}`", seed, f"[{lo:+.2f}, {hi:+.2f}]", f"{below:.3f}", f"{above:.3f}",
                          f"{mu:+.3f}", f"{sigma:.3f}", f"{excess:.4f}"])
    print("\nPer seed: the range of the training rows, and the chance that as many draws of P reach below its "
          "minimum (1 − (1 − F(min))^n) and above its maximum (1 − F(max)^n); a small chance says the sample's "
          "extreme on that side lies unusually far out\n")
    print(markdown(["divergence", "seed", "training rows within", "chance below", "chance above", "μ adversarial",
                    "σ adversarial", "excess"], table, "lrlrrrrr"))


def grid_cdf(p, grid=None):
    """(grid, P's CDF on it) by cumulative quadrature of the density; the grid defaults to ±12 sd of P."""
    import numpy as np

    if grid is None:
        m, s = float(p.mean[0]), float(p.variance[0] ** 0.5)
        grid = np.linspace(m - 12 * s, m + 12 * s, 240_001)
    density = p.log_prob(torch.from_numpy(grid)[:, None].float()).double().exp().numpy()
    return grid, np.cumsum(density) * (grid[1] - grid[0])


def filled_range(p, n: int, grid=None) -> tuple[float, float]:
    """P's 1/4n and 1 − 1/4n quantiles, on `grid` (default: ±12 sd of P, grid_cdf): the range that n
    points drawn from P fill; half a point lies beyond it, in expectation."""
    import numpy as np

    grid, cdf = grid_cdf(p, grid)
    return float(grid[np.searchsorted(cdf, 1 / (4 * n))]), float(grid[np.searchsorted(cdf, 1 - 1 / (4 * n))])


def rows_within(data: str, seed: int, n: int, lo: float, hi: float, root: str) -> tuple[str, list[float]]:
    """A .npy file of the rows (training and held-out) that `seed` draws of `data`, less those outside
    [lo, hi]; and the values left out."""
    import numpy as np

    ds = datasets.load(data, n=n, seed=seed)
    x = torch.cat([ds.train, ds.holdout]).numpy()
    keep = (x[:, 0] >= lo) & (x[:, 0] <= hi)
    Path(root).mkdir(parents=True, exist_ok=True)
    path = Path(root) / f"{data}-seed{seed}-within.npy"
    np.save(path, x[keep])
    return str(path), sorted(float(v) for v in x[~keep, 0])


def tails(p, name: str, mu: float, sigma: float, n: int, stretch: float = 1.6) -> None:
    """Where the data decide a Gaussian fit's width, and what a change no sample of n shows does to it.

    (1) dD(P‖N(μ*, σ*²))/dσ at the exact minimizer, split into the range where n training points lie
    (between the 1/4n and 1 − 1/4n quantiles of P: half a point lies beyond, in expectation) and beyond it: each
    half of an f-divergence's integral, ∫q·f(p/q), by central differences on a grid. (2) P′: P with its log-
    density beyond those quantiles decaying `stretch`² times slower (a Gaussian tail `stretch` times wider),
    renormalized. Its total variation from P, times n, bounds how many of n points tell them apart; its exact
    minimizer's excess under P is what fitting either from the same points costs. (3) Le Cam's two-point
    bound: δ, the least over Gaussians Q of the larger of Q's excesses under P and under P′. With chance
    (1 − TV)^n a coupling draws the same n points from both; then a fit returns the same Q for both, and that Q
    misses any target below δ on one of them. So for every way of fitting from n points, the chance of missing
    such a target on P plus the chance on P′ is at least (1 − TV)^n.
    """
    import numpy as np
    from scipy.optimize import minimize

    f = divergences.get(name).f
    grid = np.linspace(mu - 12 * sigma, mu + 12 * sigma, 240_001)
    dx = grid[1] - grid[0]
    log_p = p.log_prob(torch.from_numpy(grid)[:, None].float()).double().numpy()
    lo, hi = filled_range(p, n, grid)
    inside = (grid >= lo) & (grid <= hi)

    def integrand(lp, m, s):
        lq = -0.5 * ((grid - m) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
        u = torch.from_numpy(np.clip(lp - lq, -700, 700)).exp()
        return np.exp(lq) * f(u).numpy() * dx

    def value(lp, m, s, where=slice(None)):
        return float(integrand(lp, m, s)[where].sum())

    h = 1e-4
    q_star = np.exp(-0.5 * ((grid - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)) * dx
    print(f"\n{name} at its exact minimizer N({mu:+.3f}, {sigma:.3f}²): {n:,} training points lie within "
          f"[{lo:+.2f}, {hi:+.2f}], the 1/4n and 1 − 1/4n quantiles of P; beyond it lie "
          f"{1 - (np.exp(log_p) * dx)[inside].sum():.1e} of P and {1 - q_star[inside].sum():.4f} of Q*")
    for label, where in (("within", inside), ("beyond", ~inside)):
        slope = (value(log_p, mu, sigma + h, where) - value(log_p, mu, sigma - h, where)) / (2 * h)
        print(f"  dD/dσ from {label} that range: {slope:+.3f}")

    edge = np.where(grid < lo, lo, np.where(grid > hi, hi, grid))
    edge_lp = p.log_prob(torch.from_numpy(edge)[:, None].float()).double().numpy()
    log_p2 = np.where(inside, log_p, edge_lp + (log_p - edge_lp) / stretch**2)
    log_p2 -= np.log(np.exp(log_p2).sum() * dx)
    tv = 0.5 * np.abs(np.exp(log_p) - np.exp(log_p2)).sum() * dx
    fit2 = minimize(lambda t: value(log_p2, t[0], np.exp(t[1])), [mu, np.log(sigma)], method="Nelder-Mead",
                    options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 4000})
    m2, s2 = fit2.x[0], float(np.exp(fit2.x[1]))
    d_star, d2_star = value(log_p, mu, sigma), fit2.fun
    print(f"  P′, tails beyond that range {stretch:g}× wider: TV(P, P′) = {tv:.1e}, so {n:,} points drawn from P "
          f"and from P′ differ in {n * tv:.2f} points in expectation (a coupling); {name}'s minimizer for P′ is "
          f"N({m2:+.3f}, {s2:.3f}²), whose excess under P is {value(log_p, m2, s2) - d_star:+.4f}")

    def worse(t):  # the larger of a Gaussian's two excesses, under P and under P′
        m, s = t[0], np.exp(t[1])
        return max(value(log_p, m, s) - d_star, value(log_p2, m, s) - d2_star)

    both = minimize(worse, [(mu + m2) / 2, np.log(np.sqrt(sigma * s2))], method="Nelder-Mead",
                    options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 4000})
    same = (1 - tv) ** n
    print(f"  every Gaussian is at least {both.fun:.4f} above the minimum under P or under P′ (the best compromise: "
          f"N({both.x[0]:+.3f}, {np.exp(both.x[1]):.3f}²)); the maximal coupling draws the same {n:,} points from "
          f"both with chance (1 − TV)^n = {same:.2f}. So any fit from {n:,} points misses every target below "
          f"{both.fun:.4f} on P or on P′ with chances that add up to at least {same:.2f} (Le Cam's two-point bound)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="mog1d", help="a built-in 1-D data set with a known density (default: mog1d)")
    ap.add_argument("--divergences", default=DEFAULT, help=f"comma-separated (default: {DEFAULT})")
    ap.add_argument("--seeds", type=int, default=3, help="adversarial seeds per divergence (default: 3)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel training processes (default: 2)")
    ap.add_argument("--out", help="keep the run directories here (default: a temporary directory)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--table-from", metavar="JSON", help="print the table of an earlier --json file and exit")
    ap.add_argument("--quick", action="store_true", help="kl only, one seed, 30 steps on 1,000 rows: checks that the script runs")
    ap.add_argument("--stretch", type=float, default=1.6,
                    help="with --tails: how many times wider P′'s tails are than P's beyond that range (below 1: "
                         "thinner; default: 1.6)")
    ap.add_argument("--rows-within", action="store_true",
                    help="train each seed on its rows within P's 1/4n and 1 − 1/4n quantiles only (a .npy file, whose "
                         "own fifth is held out): what the few rows beyond them do to each fit")
    ap.add_argument("--tails", action="store_true",
                    help="train nothing: for each divergence, where the data decide the exact minimizer's width, "
                         "and the minimizer of the data with tails too thin to show in --n-data points changed")
    recipe = {k: v for k, v in config.resolve(config.Config(model="gaussian")).to_dict().items()
              if k in catalog.FAMILIES["gaussian"].defaults and k != "divergence"}
    for key, value in recipe.items():
        ap.add_argument("--" + key.replace("_", "-"), type=type(value), default=value, help=f"adversarial fit (default: {value})")
    ap.add_argument("--generator-loss", default="auto", choices=catalog.GENERATOR_LOSSES,
                    help="adversarial fit (default: auto: ratio for kl, jeffrey, pearson, minimax for the others)")
    ap.add_argument("--n-data", type=int, default=10_000,
                    help="training samples of the data set, a fifth of them held out (default: 10,000)")
    ap.add_argument("--ema", type=float, default=0.0, help="adversarial fit (default: 0, no moving average)")
    args = ap.parse_args(argv)
    if args.quick:
        args.divergences, args.seeds, args.steps, args.jobs, args.n_data = "kl", 1, 30, 1, 1000
    recipe["generator_loss"], recipe["ema"] = args.generator_loss, args.ema
    recipe["n_data"] = args.n_data

    if args.table_from:
        saved = json.loads(Path(args.table_from).read_text())
        print_table(saved["rows"], saved["data"], len(saved["rows"][0]["excess"]), saved["recipe"])
        return 0
    names = [n.strip() for n in args.divergences.split(",") if n.strip()]
    overrides = {k: getattr(args, k) for k in recipe}
    ds = datasets.load(args.data, seed=0)
    if ds.density is None or ds.dim != 1:
        ap.error(f"--data {args.data}: needs a built-in 1-D data set with a known density")
    p = ds.density

    t0 = time.perf_counter()
    exact = {}
    for name in names:
        f = fit.fit_exact(p, name, ds.train, steps=50 if args.quick else 1000)
        exact[name] = (f, densities.exact_divergence(p, f.distribution(), name).value)

    if args.tails:
        for name in names:
            f_star, _ = exact[name]
            tails(p, name, f_star.mean[0], f_star.std[0], args.n_data, args.stretch)
        return 0
    root = args.out or tempfile.mkdtemp(prefix="divgen-exact-vs-adv-")
    sources = {seed: args.data for seed in range(args.seeds)}
    if args.rows_within:
        lo, hi = filled_range(p, args.n_data)
        for seed in sources:
            sources[seed], left_out = rows_within(args.data, seed, args.n_data, lo, hi, root)
            print(f"seed {seed}: rows beyond [{lo:+.2f}, {hi:+.2f}] left out: {[round(v, 2) for v in left_out]}")
    jobs = [(sources[seed], name, seed, root, overrides) for name in names for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(adversarial, jobs))

    rows = []
    for name in names:
        f_star, d_star = exact[name]
        mine = [r for r in runs if r["name"] == name]
        d_adv = [densities.exact_divergence(p, densities.gaussian([r["mean"]], [[r["std"] ** 2]]), name).value for r in mine]
        # the exact local minimizer whose basin each adversarial fit ended in: descend from it
        local = [fit.fit_exact(p, name, ds.train, steps=20 if args.quick else 300, lr=0.01,
                               init=fit.Fit("", [r["mean"]], [[r["std"] ** 2]])) for r in mine]
        d_local = [densities.exact_divergence(p, f.distribution(), name).value for f in local]
        rows.append({
            "divergence": name, "mu_star": f_star.mean[0], "sigma_star": f_star.std[0], "d_star": d_star,
            "mu_adv": [r["mean"] for r in mine], "sigma_adv": [r["std"] for r in mine],
            "excess": [a - d_star for a in d_adv], "local_excess": [a - b for a, b in zip(d_adv, d_local)],
            "mu_local": [f.mean[0] for f in local], "sigma_local": [f.std[0] for f in local],
            "seconds": sum(r["seconds"] for r in mine) / len(mine),
            "told_apart": sum(all(c["ci_low"] is not None and (c["ci_low"] > 0 or c["ci_high"] < 0) for c in r["selection"])
                              for r in mine),
            "selection": [r["selection"] for r in mine],
        })

    print_table(rows, args.data, args.seeds, overrides)
    if not args.rows_within:  # the rows were a file of them
        per_seed(rows, p, args.data, args.n_data)
    print(f"\n{len(jobs)} adversarial runs, {rows[0]['seconds'] if rows else 0:.0f} s each on average; "
          f"total {time.perf_counter() - t0:.0f} s with {args.jobs} processes")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": args.data, "recipe": overrides, "rows": rows}, indent=2))
    held_failed = [r["divergence"] for r in rows if r["divergence"] in HELD and max(r["excess"]) > TARGET]
    return 1 if held_failed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
