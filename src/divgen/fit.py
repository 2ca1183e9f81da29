"""Three ways to fit one model by minimizing a divergence, side by side.

- `mle`: maximum likelihood, i.e. forward KL(P‖Q) from samples. For a
  Gaussian it is the sample mean and covariance.
- `exact:NAME`: gradient descent on the exact D_NAME(P‖Q_θ) when the data
  density p is known (the seeds' "cheating" experiment): trapezoid quadrature
  on a fixed grid in 1-D and 2-D, reparametrized Monte Carlo above.
- `adversarial:NAME`: the f-GAN / GAN training loop of train.py, from samples
  only; one ordinary run directory per fit.

`compare` runs several of them on one data set and writes a figure and a
table with the exact forward KL, reverse KL and JS of every fit.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Distribution, MultivariateNormal

from divgen import data as datasets
from divgen import catalog, densities, divergences, files, recipes, runs
from divgen.errors import InputError

MODELS = ("gaussian",)
# Gradient fits clip log p/q at ±300 rather than ±700: f' of the table (Neyman's
# 1/u², α = 3's u²) must stay finite in float64 for autograd, not only f.
FIT_LOG_RATIO_MAX = 300.0
# The divergences every fit is scored by, computed exactly when the data density is known.
SCORES = ("kl", "reverse-kl", "js")

@dataclass(frozen=True)
class Fit:
    """A fitted Gaussian N(mean, cov) and the method that produced it."""

    method: str  # "mle", "exact:NAME" or "adversarial:NAME"
    mean: list[float]  # (d,)
    cov: list[list[float]]  # (d, d)
    run: str | None = None  # the run directory of an adversarial fit
    scores: dict = field(default_factory=dict)  # name -> ExactResult as a dict, when p is known
    # adversarial fits: how the start was chosen, one entry per comparison (fit_adversarial)
    selection: list = field(default_factory=list)

    def distribution(self) -> MultivariateNormal:
        return densities.gaussian(self.mean, self.cov)

    @property
    def std(self) -> list[float]:
        return [math.sqrt(max(self.cov[i][i], 0.0)) for i in range(len(self.mean))]


# ------------------------------------------------------------------ methods ---
def parse_methods(text: str | list[str]) -> list[str]:
    """Validate a comma-separated list of methods; InputError names the bad one."""
    items = [m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    if not items:
        raise InputError("--methods is empty; give e.g. mle,exact:reverse-kl,adversarial:js")
    for m in items:
        kind, sep, name = m.partition(":")
        if m == "mle":
            continue
        if kind == "exact" and sep:
            divergences.get(name)  # only f-divergences have an exact E_Q[f(p/q)]
        elif kind == "adversarial" and sep:
            catalog.parse_divergence(name)
        else:
            raise InputError(f"unknown method {m!r}; valid: mle, exact:NAME, adversarial:NAME (NAME a divergence)")
    if len(set(items)) != len(items):
        raise InputError(f"--methods lists a method twice: {','.join(items)}")
    return items


def fit_mle(x: torch.Tensor) -> Fit:
    """Maximum likelihood Gaussian: the sample mean and the (1/N) sample covariance of x (N, d)."""
    x = x.double()
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / len(x)
    return Fit("mle", mean.tolist(), cov.tolist())


def fit_exact(density: Distribution, name: str, x_init: torch.Tensor, steps: int = 1000, lr: float = 0.05,
              starts: int = 4, seed: int = 0, init: Fit | None = None) -> Fit:
    """Minimize the exact D_name(P‖N(μ, LLᵀ)) over μ and L by Adam; the best of several starts.

    Start 0 is the data's mean and per-coordinate sd. A divergence need not
    be convex in (μ, L):
    reverse KL to two separated modes has a local minimum at a broad Gaussian
    between them, so starts 1… sit on k-means clusters of `x_init` with the
    clusters' sds, and the lowest final divergence wins. All starts run as one
    batch.

    d ≤ 2: the divergence is a trapezoid sum on a fixed grid over the data's
    overall box (mean ± 6 sd, wide enough for a mode-covering Gaussian), exact
    up to quadrature error and differentiable. d > 2:
    E_Q[f(p/q)] by Monte Carlo with x = μ + Lz, fresh z every step. The
    learning rate decays on a cosine to zero so the last iterate sits at the
    minimum rather than jittering around it.

    `init`, a fit, replaces the starts: the result is then the exact local
    minimizer in whose basin `init` lies (benchmarks use it to tell an
    adversarial fit's optimization error from the basin it fell into).
    """
    div = divergences.get(name)
    p = densities.as_double(density)
    d = densities.dim(p)
    if init is None:
        means, stds = _starts(x_init.double(), starts, seed)  # (S, d) each
        tril0 = torch.diag_embed(stds)
    else:
        means = torch.tensor([init.mean], dtype=torch.float64)
        tril0 = torch.linalg.cholesky(torch.tensor([init.cov], dtype=torch.float64))
    n_starts = len(means)
    mean = torch.nn.Parameter(means)
    raw_diag = torch.nn.Parameter(torch.log(torch.expm1(torch.diagonal(tril0, dim1=-2, dim2=-1))))  # softplus(raw) = L_ii
    off = torch.nn.Parameter(torch.tril(tril0, -1))
    opt = torch.optim.Adam([mean, raw_diag, off], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def q_batch() -> MultivariateNormal:  # batch of S Gaussians
        L = torch.tril(off, -1) + torch.diag_embed(torch.nn.functional.softplus(raw_diag))
        return MultivariateNormal(mean, scale_tril=L, validate_args=False)

    if d <= 2:
        points, weights = densities.trapezoid_grid(densities.box([p], sds=6.0, components=False), 2001 if d == 1 else 151)
        log_p = densities.log_density(p, points)[:, None]  # (N, 1), fixed: the data do not move

        def objective() -> torch.Tensor:  # (S,)
            log_q = q_batch().log_prob(points[:, None, :])  # (N, S)
            return (densities.f_integrand(div.f, log_p, log_q, max_log_ratio=FIT_LOG_RATIO_MAX) * weights[:, None]).sum(0)
    else:
        rng = torch.Generator().manual_seed(seed)

        def objective() -> torch.Tensor:  # (S,)
            q = q_batch()
            z = torch.randn(4096, n_starts, d, generator=rng, dtype=torch.float64)
            x = q.loc + (q.scale_tril @ z[..., None])[..., 0]  # (4096, S, d)
            log_q = q.log_prob(x)  # (4096, S)
            log_p = densities.log_density(p, x.reshape(-1, d)).reshape(4096, n_starts)
            # E_Q[f(p/q)]: f_integrand's q·f(u) divided by the base q
            return densities.f_integrand(div.f, log_p, log_q, log_q, FIT_LOG_RATIO_MAX).mean(0)

    for _ in range(steps):
        values = objective()
        finite = torch.isfinite(values)
        if not finite.any():
            raise InputError(f"exact:{name}: the divergence is not finite for any start; "
                             "this data density and divergence admit no Gaussian fit")
        opt.zero_grad(set_to_none=True)
        values[finite].sum().backward()  # the starts are independent: one backward for all
        opt.step()
        schedule.step()
    with torch.no_grad():
        values = objective() if d <= 2 else torch.stack([objective() for _ in range(8)]).mean(0)
        best = int(torch.where(torch.isfinite(values), values, torch.full_like(values, math.inf)).argmin())
        L = q_batch().scale_tril[best]
    return Fit(f"exact:{name}", mean[best].tolist(), (L @ L.T).tolist())


def _starts(x: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial means and sds (S, d): the data's moments, then k-means clusters of x (N, d)."""
    from divgen.models import floored_std as sd

    means, stds = [x.mean(0)], [sd(x)]
    if n > 1:
        from sklearn.cluster import KMeans

        sub = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:5000]]
        labels = KMeans(n_clusters=min(n - 1, len(sub)), n_init=3, random_state=seed).fit_predict(sub.numpy())
        for k in np.unique(labels):
            members = sub[torch.from_numpy(labels == k)]
            means.append(members.mean(0))
            stds.append(sd(members))
    return torch.stack(means), torch.stack(stds)


def adversarial_config(data: str, name: str, seed: int = 0, **overrides):
    """The training Config of an `adversarial:NAME` fit: the gaussian family's defaults (catalog.py), with the
    generator loss its `auto` resolves to (ratio for the mode-covering divergences, else minimax), and `overrides`."""
    from divgen.config import Config

    return Config(data=data, model="gaussian", divergence=name, seed=seed, **overrides)


# The starts of `adversarial:NAME`, (width as a multiple of the data's standard deviation, where the mean
# starts: Config.init_at): a wide start at the data mean reaches mode-covering minima, a narrow one in the
# densest region mode-seeking ones (at a random point it fell into a lighter mode as often as the point lay
# there: hellinger on mog1d, docs/results.md). The wide start began at a random data point until a pearson
# fit on a three-mode mixture was still 2 data units from its minimum after 3,000 steps (docs/results.md).
# `exact:NAME` likewise tries several starts.
ADVERSARIAL_STARTS = ((1.0, "mean"), (0.25, "densest"))


def comparison(real: torch.Tensor, samples_1: torch.Tensor, samples_2: torch.Tensor, name: str,
               seed: int = 0) -> dict:
    """How much closer samples_2 are to real data than samples_1, by divergence `name`.

    The paired difference of independent critics' estimates (estimators.paired_difference),
    with its 95% interval; for a kernel divergence the difference of MMD² statistics
    (no interval). Positive: samples_2 are closer.
    """
    from divgen import estimators, two_sample

    if recipes.row(name).estimator is None:
        d1 = two_sample.mmd_test(real, samples_1, permutations=1, seed=seed).statistic
        d2 = two_sample.mmd_test(real, samples_2, permutations=1, seed=seed).statistic
        return {"difference": d1 - d2, "ci_low": None, "ci_high": None}
    r = estimators.paired_difference(real, samples_1, samples_2, name, seed=seed)
    return {"difference": r.difference, "ci_low": r.ci_low, "ci_high": r.ci_high}


def fit_adversarial(data: str, name: str, out: Path, seed: int = 0, overwrite: bool = False, quiet: bool = True,
                    starts: tuple[tuple[float, str], ...] = ADVERSARIAL_STARTS, **overrides) -> Fit:
    """Train a Gaussian generator against a critic for divergence `name`, once per start.

    Each start is a run directory `out/init-std-S`. The fit kept is the one whose
    samples are closest to the data, from samples alone like the fit itself:
    starts are compared in turn with the best so far by the paired difference of
    independent critics' estimates of D(data ‖ samples) (comparison), and a start
    replaces the best when its estimate is lower. Each comparison, with its 95%
    interval, is kept in Fit.selection (an interval that contains 0 says the two
    starts cannot be told apart at this sample size).

    The comparison scores every data point, the training rows with the held-out
    ones. Two Gaussians fitted to the same training rows are equally optimistic
    there, up to O(parameters / rows), far below the gaps between basins; and
    the held-out rows alone (a fifth) left an interval wider than such a gap
    (hellinger on mog1d: ±0.024 against 0.0205, docs/results.md).
    """
    from divgen import families, train

    best, selection = None, []
    real = None  # every data row: the training rows, then the held-out ones
    for i, (s, at) in enumerate(starts, 1):
        cfg = adversarial_config(data, name, seed, init_std=s, init_at=at, **overrides)
        if not quiet:
            print(f"adversarial:{name}, start {i}/{len(starts)} (initial std {s:g} × the data's, at a {at} point): "
                  f"{Path(out) / f'init-std-{s:g}'}", file=sys.stderr, flush=True)
        result = train.train(cfg, Path(out) / f"init-std-{s:g}", overwrite=overwrite, quiet=quiet)
        if real is None:
            ds = datasets.load(cfg.data, n=cfg.n_data, seed=cfg.seed, holdout=cfg.holdout)
            real = torch.cat([ds.train, ds.holdout])
        samples = families.draw(result.nets, len(real), seed=seed + 100 + i)  # as many as the data: independent
        candidate = (str(result.run), families.density_model(result.nets).params(), samples)
        if best is None:
            best = candidate
            continue
        cmp = comparison(real, best[2], samples, name, seed=seed)
        selection.append({"kept": best[0], "challenger": candidate[0], "rows": len(real), **cmp})
        if cmp["difference"] > 0:
            best = candidate
            selection[-1]["kept"] = candidate[0]
    run, params, _ = best
    return Fit(f"adversarial:{name}", params["mean"], params["cov"], run=run, selection=selection)


# ------------------------------------------------------------------ compare ---
# What compare writes in its --out (each adversarial fit is a run directory of its own);
# --overwrite removes these and nothing else.
COMPARE_FILES = ("compare.png", "compare.md", "compare.json")


def score(fit: Fit, density: Distribution | None) -> Fit:
    """The fit with its exact forward KL, reverse KL and JS against the data density (if known)."""
    if density is None:
        return fit
    q = fit.distribution()
    scores = {}
    for name in SCORES:
        # 401 nodes per axis in 2-D: the stated grid error stays far below the differences between fits
        r = densities.exact_divergence(density, q, name, n_grid=401)
        scores[name] = {"value": r.value, "error": r.error, "method": r.method}
    return Fit(fit.method, fit.mean, fit.cov, fit.run, scores, fit.selection)


def compare(
    data: str,
    methods: str | list[str],
    out: Path,
    model: str = "gaussian",
    steps: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = True,
) -> dict:
    """Fit `model` to `data` by every method; write compare.png, compare.md and compare.json in `out`.

    Everything is validated before anything is written: unknown methods,
    `exact:*` without a known data density, an existing `out` without
    `overwrite` all raise InputError.
    """
    from divgen.config import resolve

    items = parse_methods(methods)
    if model not in MODELS:
        raise InputError(f"--model {model!r}: compare fits one of {', '.join(MODELS)}")
    if steps is not None and steps < 1:
        raise InputError("--steps must be at least 1")
    ds = datasets.load(data, seed=seed)
    exact = [m for m in items if m.startswith("exact:")]
    if exact and ds.density is None:
        raise InputError(f"{exact[0]} needs the data density, and none is known for --data {data!r} "
                         f"(only the built-in {', '.join(datasets.TOYS)} have one); use mle or adversarial:NAME")
    constant = (ds.train.std(0) == 0).nonzero().flatten().tolist()
    if constant:
        raise InputError(f"--data {data!r}: column {constant[0] + 1} (of {ds.dim}) is constant; a Gaussian fit needs every "
                         "column to vary (its covariance would be singular, with no density): drop the column")
    for m in items:  # the adversarial fits' settings, before anything is written
        if m.startswith("adversarial:"):
            resolve(adversarial_config(data, m.partition(":")[2], seed, steps=steps))
    out = runs.prepare(Path(out), overwrite, files=COMPARE_FILES, folders=())

    fits = []
    for i, m in enumerate(items, 1):
        if not quiet:
            print(f"compare: fit {i}/{len(items)}: {m}", file=sys.stderr, flush=True)
        kind, _, name = m.partition(":")
        if kind == "mle":
            fit = fit_mle(ds.train)
        elif kind == "exact":
            fit = fit_exact(ds.density, name, ds.train, seed=seed)
        else:
            fit = fit_adversarial(data, name, out / f"adversarial-{name.replace(':', '_')}", seed=seed,
                                  overwrite=overwrite, quiet=quiet, steps=steps)
        fits.append(score(fit, ds.density))

    result = {
        "data": data,
        "model": model,
        "dim": ds.dim,
        "seed": seed,
        "steps": steps,
        "density_known": ds.density is not None,
        "fits": [_fit_dict(f) for f in fits],
        "figure": str(out / "compare.png"),
        "table": str(out / "compare.md"),
    }
    compare_figure(out / "compare.png", ds, fits, title=f"{model} fitted to {Path(data).name}")
    (out / "compare.md").write_text(markdown_table(fits, ds.density is not None) + "\n")
    files.write_json(out / "compare.json", result)
    return result


def _fit_dict(fit: Fit) -> dict:
    return {"method": fit.method, "mean": fit.mean, "cov": fit.cov, "std": fit.std, "run": fit.run, "exact": fit.scores,
            "selection": fit.selection}


def _vector(v) -> str:
    return "(" + ", ".join(f"{a:+.3f}" for a in v) + ")" if len(v) > 1 else f"{v[0]:+.3f}"


def markdown_table(fits: list[Fit], density_known: bool = True) -> str:
    """One row per fit: parameters, then KL(P‖Q), KL(Q‖P) and JS(P, Q) computed exactly."""
    from divgen.tables import markdown

    d = len(fits[0].mean)
    head = ["method", "mean", "std"] + (["corr"] if d == 2 else [])
    head += ["KL(P‖Q)", "KL(Q‖P)", "JS(P,Q)"] if density_known else []
    rows = []
    for f in fits:
        row = [f"`{f.method}`", _vector(f.mean), _vector(f.std)]
        if d == 2:
            row.append(f"{f.cov[0][1] / (f.std[0] * f.std[1]):+.3f}")
        if density_known:
            row += [f"{f.scores[n]['value']:.4f}" for n in SCORES]
        rows.append(row)
    table = markdown(head, rows, "lll")
    if not density_known:
        table += "\n\nNo data density is known for this data set, so no exact divergences are given."
    return table


def compare_figure(path: Path, ds: datasets.Dataset, fits: list[Fit], title: str = "") -> None:
    """One panel per fit: data density contours (or samples) and the fit's 1-σ ellipse; density curves in 1-D."""
    from divgen import plots

    n = len(fits)
    fig, axes = plots.subplots(1, n, 3.6 * n, 3.6 if ds.dim > 1 else 3.0)
    x = ds.train.double()
    colors = plots.COLORS
    if ds.dim == 1:
        lo, hi = float(x.min()) - 1.0, float(x.max()) + 1.0
        u = torch.linspace(lo, hi, 600, dtype=torch.float64)[:, None]
        p_curve = densities.log_density(densities.as_double(ds.density), u).exp() if ds.density is not None else None
    else:
        lo, hi = x[:, :2].min(0).values - 1.0, x[:, :2].max(0).values + 1.0
        gx, gy, pts = plots.grid((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])), 200)
        p_grid = None
        if ds.density is not None and ds.dim == 2:
            p_grid = densities.log_density(densities.as_double(ds.density), pts.double()).exp().reshape(gx.shape).numpy()
    for i, (ax, fit) in enumerate(zip(axes[0], fits)):
        color = colors[i % len(colors)]
        if ds.dim == 1:
            if p_curve is not None:
                ax.fill_between(u[:, 0], p_curve, color=plots.DATA_COLOR, alpha=0.5, label="data density")
            else:
                ax.hist(x[:, 0].numpy(), bins=80, density=True, color=plots.DATA_COLOR, alpha=0.5, label="data")
            q_curve = densities.log_density(fit.distribution(), u).exp()
            ax.plot(u[:, 0], q_curve, color=color, lw=2, label="fit")
            ax.set_xlabel("x")
        else:
            if p_grid is not None:
                ax.contour(gx, gy, p_grid, levels=6, colors=plots.DATA_COLOR, linewidths=1)
            else:
                s = x[:2000, :2].numpy()
                ax.scatter(s[:, 0], s[:, 1], s=2, c=plots.DATA_COLOR, alpha=0.4, linewidths=0)
            mean, cov = np.asarray(fit.mean[:2]), np.asarray(fit.cov)[:2, :2]
            plots.ellipse(ax, mean, cov, color, "1-σ")
            ax.set_xlim(float(lo[0]), float(hi[0]))
            ax.set_ylim(float(lo[1]), float(hi[1]))
            ax.set_aspect("equal", adjustable="box")
        label = fit.method
        if fit.scores:
            label += "\n" + "  ".join(f"{k} {fit.scores[k]['value']:.3f}" for k in SCORES)
        ax.set_title(label, fontsize=9)
    plots.save(fig, path, dpi=90, title=title)


# ------------------------------------------------------ optimal discriminator ---
@dataclass(frozen=True)
class DiscriminatorCheck:
    """A discriminator trained on samples of two known densities, against the optimum D* = p/(p+q)."""

    l1_gap: float  # E_{x ~ ½(p+q)} |D(x) − D*(x)|, by quadrature
    value: float  # E_P[log D] + E_Q[log(1 − D)] of the trained D, by quadrature
    optimum: float  # the same at D*: 2·JS(P, Q) − log 4


def check_discriminator(p: Distribution, q: Distribution, steps: int = 2000, batch_size: int = 512,
                        lr: float = 1e-3, width: int = 64, depth: int = 2, seed: int = 0) -> DiscriminatorCheck:
    """Train a GAN discriminator D = sigmoid(V) on fresh samples of p and q (d ≤ 2), then compare it with p/(p+q).

    Goodfellow et al. 2014, Proposition 1: for fixed P and Q the discriminator
    maximizing E_P[log D] + E_Q[log(1 − D)] is D* = p/(p + q), and the maximum
    is 2·JS(P, Q) − log 4.
    """
    from divgen import critics

    p64, q64 = densities.as_double(p), densities.as_double(q)
    d = densities.dim(p64)
    if d > 2:
        raise InputError("check_discriminator integrates on a grid and needs d ≤ 2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        n = batch_size * 40  # a fixed pair of samples, large next to what one step sees
        x_p, x_q = p.sample((n,)).float().reshape(n, d), q.sample((n,)).float().reshape(n, d)
    critic = critics.new_critic(x_p, x_q, width, depth, seed, activation=torch.nn.ReLU)
    rng = torch.Generator().manual_seed(seed)
    # the discriminator's cross-entropy, minibatches of `batch_size`, every step kept (no early stopping)
    critics.fit_critic(critic, critics.logistic_objective, x_p, x_q, rng, steps=steps, lr=lr, batch_size=batch_size,
                       val_fraction=0.0, betas=(0.5, 0.999))

    points, weights = densities.trapezoid_grid(densities.box([p64, q64]), 4001 if d == 1 else 301)
    with torch.no_grad():
        v = critic(points.float()).double()
    lp, lq = densities.log_density(p64, points), densities.log_density(q64, points)
    pd, qd = lp.exp(), lq.exp()
    d_star = torch.sigmoid(lp - lq)  # p/(p+q)
    l1 = float((weights * 0.5 * (pd + qd) * (torch.sigmoid(v) - d_star).abs()).sum())
    # log D = log_sigmoid(V), log(1 − D) = log_sigmoid(−V): stable for any V
    value = float((weights * (pd * torch.nn.functional.logsigmoid(v) + qd * torch.nn.functional.logsigmoid(-v))).sum())
    optimum = densities.exact_divergence(p64, q64, "gan").value
    return DiscriminatorCheck(l1, value, optimum)
