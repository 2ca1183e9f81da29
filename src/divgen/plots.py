"""Figures: data against samples (with critic contours in 2-D), training curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

DATA_COLOR, MODEL_COLOR = "0.55", "tab:orange"


def _limits(*arrays: np.ndarray, pad: float = 0.15) -> list[tuple[float, float]]:
    both = np.concatenate(arrays)
    lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-3)
    return list(zip(lo - pad * span, hi + pad * span))


def grid(xlim, ylim, n: int = 150) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """A mesh over a 2-D window and its points (n², 2) as a float32 tensor."""
    gx, gy = np.meshgrid(np.linspace(*xlim, n), np.linspace(*ylim, n))
    return gx, gy, torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32))


def draw_samples(ax, data: torch.Tensor, samples: torch.Tensor, density=None, critic: Callable | None = None, n_show: int = 2000):
    """Data vs model samples on one axis: 2-D scatter, 1-D histograms, else the first two coordinates."""
    x, s = data[:n_show].numpy(), samples[:n_show].numpy()
    if x.shape[1] == 1:
        lims = _limits(x, s)[0]
        bins = np.linspace(*lims, 80)
        ax.hist(x[:, 0], bins=bins, density=True, color=DATA_COLOR, alpha=0.6, label="data")
        ax.hist(s[:, 0], bins=bins, density=True, histtype="step", lw=2, color=MODEL_COLOR, label="model")
        if density is not None:
            u = torch.linspace(*lims, 400)[:, None]
            ax.plot(u[:, 0], density.log_prob(u).exp(), color="k", lw=1, label="data density")
        ax.set_xlabel("x")
        ax.legend(frameon=False, fontsize=8)
        return
    (xl, yl) = _limits(x[:, :2], s[:, :2])
    if x.shape[1] == 2 and critic is not None:
        gx, gy, pts = grid(xl, yl)
        t = critic(pts).reshape(gx.shape).numpy()
        cs = ax.contourf(gx, gy, t, levels=20, cmap="Blues", alpha=0.55)
        ax.figure.colorbar(cs, ax=ax, label="critic T(x)", shrink=0.8)
    ax.scatter(x[:, 0], x[:, 1], s=3, c=DATA_COLOR, alpha=0.5, label="data", linewidths=0)
    ax.scatter(s[:, 0], s[:, 1], s=3, c=MODEL_COLOR, alpha=0.6, label="model", linewidths=0)
    ax.set_xlim(xl)
    ax.set_ylim(yl)
    ax.set_aspect("equal", adjustable="box")
    ax.legend(frameon=False, fontsize=8, markerscale=4, loc="upper right")
    if x.shape[1] > 2:
        ax.set_xlabel("coordinate 1")
        ax.set_ylabel("coordinate 2")


def _is_image(dim: int) -> bool:
    side = int(round(math.sqrt(dim)))
    return dim >= 16 and side * side == dim


def samples_figure(path: Path, data: torch.Tensor, samples: torch.Tensor, density=None, critic=None, title: str = "") -> None:
    """samples.png: scatter/histogram, or image grids for square-image data (e.g. 8×8 digits)."""
    d = data.shape[1]
    if _is_image(d):
        side = int(round(math.sqrt(d)))
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
        for ax, arr, name in ((axes[0], data, "data"), (axes[1], samples, "model")):
            tiles = arr[:64].reshape(-1, side, side).numpy()
            tiles = np.pad(tiles, ((0, 64 - len(tiles)), (1, 1), (1, 1)))
            mosaic = tiles.reshape(8, 8, side + 2, side + 2).transpose(0, 2, 1, 3).reshape(8 * (side + 2), -1)
            ax.imshow(mosaic, cmap="gray_r")
            ax.set_title(name)
            ax.axis("off")
    elif d >= 16:  # long vectors that are not square images: draw them as signals
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, arr, name, color in ((axes[0], data, "data", DATA_COLOR), (axes[1], samples, "model", MODEL_COLOR)):
            for i, row in enumerate(arr[:12].numpy()):
                ax.plot(row + 3.0 * (i % 6), color=color if i < 6 else "k", lw=1, alpha=0.9)
            ax.set_title(name)
            ax.set_xlabel("coordinate")
            ax.set_yticks([])
    else:
        fig, ax = plt.subplots(figsize=(6.4, 5.2))
        draw_samples(ax, data, samples, density, critic)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def losses_figure(path: Path, metrics: list[dict], title: str = "") -> None:
    """losses.png: critic and generator losses, and the critic's divergence estimate, by step."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = [m["step"] for m in metrics]
    for key, color in (("critic_loss", "tab:blue"), ("generator_loss", "tab:orange")):
        axes[0].plot(steps, [m[key] for m in metrics], color=color, label=key.replace("_", " "))
    axes[0].set_xlabel("step")
    axes[0].legend(frameon=False)
    axes[1].plot(steps, [m["estimate"] for m in metrics], color="tab:green")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("critic's divergence estimate")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ellipse(ax, mean, cov, color, label, n_std: float = 1.0, linestyle: str = "-"):
    """The n_std-σ ellipse of N(mean, cov) in 2-D."""
    vals, vecs = np.linalg.eigh(np.asarray(cov))
    t = np.linspace(0, 2 * np.pi, 200)
    pts = np.asarray(mean)[:, None] + n_std * vecs @ (np.sqrt(np.maximum(vals, 0))[:, None] * np.stack([np.cos(t), np.sin(t)]))
    ax.plot(pts[0], pts[1], color=color, lw=2, ls=linestyle, label=label)
    ax.plot(*mean, marker="+", color=color, ms=10, mew=2)
