"""`divgen demo`: the seeds' core story on embedded data, in under two minutes on a CPU.

1. A Gaussian fitted adversarially to a two-mode 2-D mixture (`mog2d`) under
   `kl` covers both modes, like maximum likelihood; under `reverse-kl` it
   locks onto one mode. Neither fit ever evaluates p(x): the critic sees samples.
2. An MLP generator trained with `js` on eight Gaussians on a ring.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from divgen import data as datasets
from divgen import families, plots, runs
from divgen.config import Config
from divgen.fit import fit_mle
from divgen.results import load_run
from divgen.train import train

# Every run uses its family's defaults, the ring run included (its whole default schedule): the Gaussian
# model's `auto` generator loss (ratio for kl, minimax for reverse-kl) follows D_f itself (for `kl` the
# nonsaturating loss would maximize E_Q[f'(p/q)] = 1 − KL(Q‖P), i.e. follow reverse KL instead).
RUNS = {
    "kl": Config(data="mog2d", model="gaussian", divergence="kl"),
    "reverse-kl": Config(data="mog2d", model="gaussian", divergence="reverse-kl"),
    "ring8-js": Config(data="ring8", divergence="js"),
}
COLORS = {"mle": "k", "kl": "tab:blue", "reverse-kl": "tab:red"}
# What the demo writes in its --out besides the runs (run directories of their own).
DEMO_FILES = ("demo.png",)
FIGURE_FILES = ("disjoint.png", "film.gif", "film-strip.png")  # of --figure disjoint|film


def _fresh_dir(base: str = "divgen-demo") -> Path:
    path, i = Path(base), 1
    while path.exists():
        i += 1
        path = Path(f"{base}-{i}")
    return path


def run(out: Path | None = None, quiet: bool = False, quick: bool = False, overwrite: bool = False) -> dict:
    """Train the three demo runs under `out` and draw one figure; returns a summary.

    `quick`: 20 steps per run, to check that everything runs (the fits are then meaningless).
    """
    out = runs.prepare(out or _fresh_dir(), overwrite, files=DEMO_FILES, folders=())
    configs = {name: replace(cfg, steps=20, checkpoint_every=20) if quick else cfg for name, cfg in RUNS.items()}
    results = {}
    for i, (name, cfg) in enumerate(configs.items(), 1):
        if not quiet:
            print(f"demo: run {i}/{len(configs)}: {name} ({cfg.model} on {cfg.data}) in {out / name}", file=sys.stderr, flush=True)
        results[name] = train(cfg, out / name, quiet=quiet, overwrite=overwrite)
    fits = {name: families.density_model(r.nets).params() for name, r in results.items() if families.density_model(r.nets)}
    mle = fit_mle(datasets.load("mog2d", n=RUNS["kl"].n_data, seed=RUNS["kl"].seed).train)
    fits = {"mle": {"mean": mle.mean, "cov": mle.cov}, **fits}
    figure = out / "demo.png"
    _figure(figure, out, fits)
    return {"out": str(out), "figure": str(figure), "fits": fits, "ring8": results["ring8-js"].metrics}


def summary(result: dict) -> str:
    lines = ["Gaussian fits to mog2d (modes at (±2, 0), σ = 0.5):"]
    for name, p in result["fits"].items():
        sd = np.sqrt(np.diag(p["cov"]))
        lines.append(f"  {name:11s} mean ({p['mean'][0]:+.2f}, {p['mean'][1]:+.2f})  std ({sd[0]:.2f}, {sd[1]:.2f})")
    lines.append("  → kl covers both modes like maximum likelihood; reverse-kl locks onto one.")
    lines.append(f"runs: {result['out']}")
    lines.append(f"figure: {result['figure']}")
    return "\n".join(lines)


def _figure(path: Path, out: Path, fits: dict) -> None:
    import torch

    fig, axes = plots.subplots(1, 3, 15, 4.8)
    axes = axes[0]
    ax = axes[0]
    density = datasets.toy_density("mog2d")
    gx, gy, pts = plots.grid((-4.5, 4.5), (-3, 3))
    ax.contourf(gx, gy, density.log_prob(pts).exp().reshape(gx.shape).numpy(), levels=12, cmap="Greys")
    for name, p in fits.items():
        label = {"mle": "maximum likelihood", "kl": "adversarial KL(P‖Q)", "reverse-kl": "adversarial KL(Q‖P)"}[name]
        plots.ellipse(ax, p["mean"], p["cov"], COLORS[name], label, linestyle="--" if name == "mle" else "-")
    ax.set_aspect("equal")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    ax.set_title("Gaussian fits (1-σ ellipses) to a two-mode mixture")

    ring_cfg = RUNS["ring8-js"]
    ring = datasets.load("ring8", n=ring_cfg.n_data, seed=ring_cfg.seed).train
    samples = torch.from_numpy(np.load(out / "ring8-js" / "samples.npy"))
    plots.draw_samples(axes[1], ring, samples)
    axes[1].set_title("MLP generator, js, on ring8")

    ax = axes[2]
    for name, color in (("kl", COLORS["kl"]), ("reverse-kl", COLORS["reverse-kl"]), ("ring8-js", "tab:green")):
        m = runs.read_metrics(out / name)
        ax.plot([r["step"] for r in m], [r["estimate"] for r in m], color=color, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("critic's lower bound on D(P‖Q)")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend(frameon=False)
    ax.set_title("what the critic certifies during training")
    plots.save(fig, path, dpi=100)


# ------------------------------------------------------------- the lecture's pictures ---


def disjoint(out: Path, quick: bool = False) -> dict:
    """Disjoint supports: data N(0, 0.1²), model N(4, 0.1²), fixed samples of each.

    A GAN discriminator (logistic regression of data against model samples) and
    a WGAN-GP critic are trained on them to convergence (critics.fit_critic).
    The generator's gradient at its samples: for the GAN's minimax loss
    E log(1 − D(G(z))), ∂/∂x log(1 − D(x)) = −σ(V(x))·V'(x), which vanishes once D
    saturates at 0 on the model's samples; for WGAN, ∂V/∂x, whose magnitude the
    gradient penalty holds near 1 everywhere, supports apart or not.
    """
    import torch
    from torch import nn

    from divgen import config, critics, recipes
    from divgen.models import critic_pair

    gen = torch.Generator().manual_seed(0)
    p = 0.1 * torch.randn(2000, 1, generator=gen)
    q = 4 + 0.1 * torch.randn(2000, 1, generator=gen)
    steps = 50 if quick else 3000
    gan = critics.new_critic(p, q, 64, 2, seed=1, activation=nn.ReLU)
    critics.fit_critic(gan, critics.logistic_objective, p, q, gen, steps=steps, lr=1e-3, val_fraction=0.0)
    recipe = recipes.build(config.resolve(Config(divergence="wasserstein", lipschitz="gp")), p)

    def wgan_objective(critic, a, b, rng):  # the training recipe's own critic loss, to maximize
        return -(recipe.adversarial.critic_loss(*critic_pair(critic, a, b)) + recipe.adversarial.penalty(critic, (a,), (b,), rng))

    wgan = critics.new_critic(p, q, 64, 2, seed=2, activation=nn.ReLU)
    critics.fit_critic(wgan, wgan_objective, p, q, gen, steps=steps, lr=1e-3, val_fraction=0.0)

    x = q.clone().requires_grad_(True)  # the model's samples
    (g_gan,) = torch.autograd.grad(-torch.nn.functional.softplus(gan(x)).sum(), x)  # log(1 − σ(V)) = −softplus(V)
    (g_wgan,) = torch.autograd.grad(wgan(x).sum(), x)
    grads = {"gan_minimax": float(g_gan.abs().mean()), "wgan_gp": float(g_wgan.abs().mean())}

    u = torch.linspace(-1, 5, 600)[:, None]
    with torch.no_grad():
        d, v = torch.sigmoid(gan(u)), wgan(u)
    density = lambda m: torch.exp(-0.5 * ((u[:, 0] - m) / 0.1) ** 2) / (0.1 * (2 * torch.pi) ** 0.5)  # noqa: E731
    fig, axes = plots.subplots(1, 2, 11, 3.8)
    for ax in axes[0]:
        ax.fill_between(u[:, 0], density(0.0) / 4, color=plots.DATA_COLOR, alpha=0.6, label="data N(0, 0.1²)")
        ax.fill_between(u[:, 0], density(4.0) / 4, color=plots.MODEL_COLOR, alpha=0.5, label="model N(4, 0.1²)")
        ax.set_xlabel("x")
    ax = axes[0, 0]
    ax.plot(u[:, 0], d, color="tab:blue", lw=2, label="discriminator D(x)")
    ax.set_title(f"GAN: |∂/∂x log(1 − D)| at the model = {grads['gan_minimax']:.1e}", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="center")
    ax = axes[0, 1]
    ax.plot(u[:, 0], (v - v.min()) / (v.max() - v.min()), color="tab:green", lw=2, label="critic V(x), rescaled to [0, 1]")
    ax.set_title(f"WGAN-GP: |∂V/∂x| at the model = {grads['wgan_gp']:.2f}", fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="center")
    path = Path(out) / "disjoint.png"
    plots.save(fig, path, dpi=100, title="disjoint supports: the saturated discriminator gives no gradient, the critic does")
    return {"figure": str(path), "gradients": grads}


def film(out: Path, quick: bool = False, frames: int = 12) -> dict:
    """The GAN paper's figure 1 as a film: data density, generator density and discriminator D(x)
    over training, on `mog1d`. The frames come from the run's own checkpoints."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    steps = 40 if quick else 3000
    every = max(1, steps // frames)
    cfg = Config(data="mog1d", divergence="gan", steps=steps, checkpoint_every=every, keep_checkpoints=frames + 2,
                 figures=False, n_samples=1000)
    run = train(cfg, Path(out) / "film-run", quiet=True).run
    ds = datasets.load("mog1d")
    u = torch.linspace(-5, 5, 400)[:, None]
    p = ds.density.log_prob(u).exp()
    images = []
    for path in runs.checkpoints(run):
        trained = load_run(run, checkpoint=path)
        x = families.draw(trained.nets, 5000, 1).numpy()[:, 0]
        with torch.no_grad():
            d = torch.sigmoid(trained.nets["critic"](u))
        fig = plots.new_figure(4.2, 3.0)
        ax = fig.add_subplot()
        ax.fill_between(u[:, 0], p, color=plots.DATA_COLOR, alpha=0.6, label="data density")
        ax.hist(x, bins=np.linspace(-5, 5, 80), density=True, histtype="step", lw=2, color=plots.MODEL_COLOR, label="generator")
        ax.plot(u[:, 0], d, color="tab:blue", lw=2, ls="--", label="D(x)")
        ax.axhline(0.5, color="0.7", lw=0.8, ls=":")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"step {runs.load_checkpoint(path)['step']}", fontsize=10)
        ax.legend(frameon=False, fontsize=7, loc="upper left")
        fig.tight_layout()
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        images.append(Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB"))
    gif = Path(out) / "film.gif"
    images[0].save(gif, save_all=True, append_images=images[1:], duration=400, loop=0)
    shown = images[:: max(1, len(images) // 6)][:6]  # the strip: six frames from start to end
    strip = Image.new("RGB", (sum(im.width for im in shown), shown[0].height), "white")
    for i, im in enumerate(shown):
        strip.paste(im, (i * im.width, 0))
    png = Path(out) / "film-strip.png"
    strip.save(png)
    return {"gif": str(gif), "strip": str(png), "frames": len(images), "run": str(run)}
