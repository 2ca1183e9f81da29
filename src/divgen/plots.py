"""Figures: data against samples (with critic contours in 2-D), image grids, training curves.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`),
never pyplot: importing divgen does not change a notebook's backend, and no
window is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure

DATA_COLOR, MODEL_COLOR = "0.55", "tab:orange"
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def new_figure(width: float, height: float) -> Figure:
    """A figure that is not registered with pyplot (saved with `save`, collected like any object)."""
    return Figure(figsize=(width, height))


def subplots(nrows: int, ncols: int, width: float, height: float, **kwargs):
    """(figure, 2-D array of axes)."""
    fig = new_figure(width, height)
    return fig, np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False, **kwargs))


def save(fig: Figure, path: Path, dpi: int = 110, title: str = "") -> None:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)


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


def is_image(event_shape) -> bool:
    """(H, W) or (C, H, W) with C ∈ {1, 3}: shown as pictures."""
    from divgen.data import Spec

    return bool(tuple(event_shape)) and Spec(tuple(event_shape)).image


def mosaic(images: np.ndarray, event_shape, rows: int, cols: int) -> np.ndarray:
    """rows × cols tiles of images (n, d) as one (H', W') or (H', W', 3) array, one pixel of padding each."""
    shape = tuple(event_shape)
    c, h, w = (1, *shape) if len(shape) == 2 else shape
    n = rows * cols
    tiles = np.zeros((n, c, h + 2, w + 2), dtype=np.float32)
    tiles[: min(n, len(images)), :, 1:-1, 1:-1] = images[:n].reshape(-1, c, h, w)
    grid = tiles.reshape(rows, cols, c, h + 2, w + 2).transpose(0, 3, 1, 4, 2).reshape(rows * (h + 2), cols * (w + 2), c)
    return grid[..., 0] if c == 1 else grid


def image_grid(file, images: np.ndarray, event_shape) -> None:
    """A PNG of images (n, d) in a near-square grid, every tile on one grey (or colour) scale:
    the 0.5–99.5 percentiles of all the images."""
    from matplotlib.image import imsave

    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    grid = mosaic(images, event_shape, rows, cols)
    lo, hi = (float(v) for v in np.percentile(images, [0.5, 99.5]))
    if grid.ndim == 3:
        imsave(file, np.clip((grid - lo) / max(hi - lo, 1e-12), 0, 1), format="png")
    else:
        imsave(file, grid, cmap="gray_r", vmin=lo, vmax=hi, format="png")


def image_panels(axes, panels: list[tuple[str, np.ndarray]], event_shape, rows: int = 8, cols: int = 8) -> None:
    """Image grids side by side on one grey (or colour) scale, the range of the first panel (the data)."""
    lo, hi = float(np.min(panels[0][1])), float(np.max(panels[0][1]))
    for ax, (name, images) in zip(axes, panels):
        grid = mosaic(images, event_shape, rows, cols)
        if grid.ndim == 3:
            ax.imshow(np.clip((grid - lo) / max(hi - lo, 1e-12), 0, 1))
        else:
            ax.imshow(grid, cmap="gray_r", vmin=lo, vmax=hi)
        ax.set_title(name)
        ax.axis("off")


def by_class(x: torch.Tensor, labels: torch.Tensor, classes: list[int], per: int) -> np.ndarray:
    """`per` rows of x for each class in turn (fewer if a class has fewer), as one (len(classes)·per, d) array."""
    out = np.zeros((len(classes) * per, x.shape[1]), dtype=np.float32)
    for i, k in enumerate(classes):
        rows = x[labels == k][:per].numpy()
        out[i * per : i * per + len(rows)] = rows
    return out


def samples_figure(path: Path, data: torch.Tensor, samples: torch.Tensor, density=None, critic=None, title: str = "",
                   event_shape=(), data_labels=None, samples_by_class: dict | None = None) -> None:
    """samples.png: scatter/histogram, image grids (e.g. 8×8 digits), or signals for long vectors.

    A conditional image model (`samples_by_class`: class -> samples) gets one class per row,
    beside the data's own rows of the same classes.
    """
    d = data.shape[1]
    if is_image(event_shape) and samples_by_class:
        classes, per = sorted(samples_by_class), 8
        fig, axes = subplots(1, 2, 9, 0.6 * len(classes) + 1.2)
        model = np.concatenate([samples_by_class[k][:per].numpy() for k in classes])
        image_panels(axes[0], [("data, one class per row", by_class(data, data_labels, classes, per)),
                               ("model, one class per row", model)], event_shape, rows=len(classes), cols=per)
    elif is_image(event_shape):
        fig, axes = subplots(1, 2, 9, 4.8)
        image_panels(axes[0], [("data", data[:64].numpy()), ("model", samples[:64].numpy())], event_shape)
    elif d >= 16:  # long vectors: draw them as signals
        fig, axes = subplots(1, 2, 10, 4, sharey=True)
        for ax, arr, name, color in ((axes[0, 0], data, "data", DATA_COLOR), (axes[0, 1], samples, "model", MODEL_COLOR)):
            for i, row in enumerate(arr[:12].numpy()):
                ax.plot(row + 3.0 * (i % 6), color=color if i < 6 else "k", lw=1, alpha=0.9)
            ax.set_title(name)
            ax.set_xlabel("coordinate")
            ax.set_yticks([])
    else:
        fig = new_figure(6.4, 5.2)
        draw_samples(fig.add_subplot(), data, samples, density, critic)
    save(fig, path, title=title)


def losses_figure(path: Path, metrics: list[dict], title: str = "") -> None:
    """losses.png: critic and generator losses, and the critic's divergence estimate, by step."""
    fig, axes = subplots(1, 2, 10, 3.8)
    axes = axes[0]
    steps = [m["step"] for m in metrics]
    for key, color in (("critic_loss", "tab:blue"), ("generator_loss", "tab:orange")):
        axes[0].plot(steps, [m[key] for m in metrics], color=color, label=key.replace("_", " "))
    axes[0].set_xlabel("step")
    axes[0].legend(frameon=False)
    axes[1].plot(steps, [m["estimate"] for m in metrics], color="tab:green")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("critic's divergence estimate")
    save(fig, path, title=title)


def ellipse(ax, mean, cov, color, label, n_std: float = 1.0, linestyle: str = "-"):
    """The n_std-σ ellipse of N(mean, cov) in 2-D."""
    vals, vecs = np.linalg.eigh(np.asarray(cov))
    t = np.linspace(0, 2 * np.pi, 200)
    pts = np.asarray(mean)[:, None] + n_std * vecs @ (np.sqrt(np.maximum(vals, 0))[:, None] * np.stack([np.cos(t), np.sin(t)]))
    ax.plot(pts[0], pts[1], color=color, lw=2, ls=linestyle, label=label)
    ax.plot(*mean, marker="+", color=color, ms=10, mew=2)
