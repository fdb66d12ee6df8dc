"""Figures of a run, saved as PNG atomically (temporary file in the same folder, then os.replace).

Matplotlib is used through ``matplotlib.figure.Figure`` (no pyplot state, no GUI backend needed).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import xarray as xr

from ppl_dgm.results import atomic_write


def _save(fig, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def plot_site_kl(history: xr.Dataset, path: str | os.PathLike, variable: str = "kl") -> None:
    """KL per latent site (nats per data point) against epochs, one line per site.

    ``history[variable]`` has dims ``(epoch, site)``, as the trainer records ``site_kl`` each epoch.
    The LVAE paper's figure of per-layer KL shows which layers stay active during training.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    kl = history[variable].transpose("epoch", "site")
    kl = kl.isel(epoch=np.flatnonzero(np.isfinite(np.asarray(kl)).any(axis=1)))  # evaluated epochs
    epochs = np.asarray(kl["epoch"])
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for site in kl["site"].values:
        ax.plot(epochs, np.asarray(kl.sel(site=site)), marker="." if len(epochs) < 30 else None,
                label=str(site))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("KL(q || p) per site [nats]")
    ax.set_title("KL per latent site")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def tile_images(images: np.ndarray, nrow: int, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile ``(n, H, W)`` images into one image, ``nrow`` per row, separated by ``pad`` pixels."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (n, H, W), got {images.shape}")
    if nrow < 1:
        raise ValueError("nrow must be >= 1")
    n, h, w = images.shape
    ncol = min(nrow, n)
    rows = -(-n // nrow)
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=np.float32)
    for k, image in enumerate(images):
        r, c = divmod(k, nrow)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid


def grid_image(images: np.ndarray, nrow: int = 10, padding: int = 2,
               pad_value: float = 1.0) -> np.ndarray:
    """Images ``(n, H, W)`` with values in [0, 1] as one grey-scale grid array, ``nrow`` per row.

    Small images (e.g. 8x8 digits) are first enlarged by an integer factor to about 28 pixels; the
    cells are then separated (and framed) by ``padding`` pixels of ``pad_value`` (white by default,
    against the dark backgrounds of digit samples), so each sample stays readable.
    """
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (n, H, W), got {images.shape}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0 (got {padding})")
    factor = max(1, 28 // int(images.shape[1]))
    if factor > 1:
        images = np.kron(images, np.ones((1, factor, factor), dtype=np.float32))
    return tile_images(images, nrow, pad=padding, pad_value=pad_value)


def image_grid(images: np.ndarray, path: str | os.PathLike, nrow: int = 10, padding: int = 2,
               pad_value: float = 1.0) -> None:
    """Save ``images`` (n, H, W) with values in [0, 1] as a grey-scale PNG grid, ``nrow`` per row.

    See :func:`grid_image` (enlargement of small images, ``padding`` pixels between cells).
    """
    from matplotlib.image import imsave

    grid = grid_image(images, nrow, padding, pad_value)
    atomic_write(path, lambda tmp: imsave(tmp, grid, cmap="gray", vmin=0.0, vmax=1.0,
                                          format="png"))


def plot_glimpses(
    pair: object, x: np.ndarray, y: np.ndarray, path: str | os.PathLike, max_canvases: int = 6
) -> None:
    """RNN-SPN figure: each canvas with its glimpse boxes, the glimpses and the predicted digits.

    ``pair`` provides ``glimpses(x) -> (theta (B, K, 2, 3), glimpses (B, K, h, w))`` and
    ``classify(x) -> (B, T, 10)`` (``ppl_dgm.models.rnn_spn.SequencePair``); ``x`` holds canvases
    ``(B, H, W)`` and ``y`` their labels ``(B, T)``. One row per canvas: the canvas with the
    transformed sampling grid's outline for each glimpse (one colour per step), then the K glimpses
    titled with the predicted digit(s) (red when wrong).
    """
    import torch
    from matplotlib.figure import Figure

    from ppl_dgm.nn.spatial import glimpse_corners

    x = torch.as_tensor(x, dtype=torch.float32)[:max_canvases]
    y = np.asarray(y)[:max_canvases]
    was_training = pair.training
    pair.eval()
    with torch.no_grad():
        theta, glimpses = pair.glimpses(x)
        pred = pair.classify(x).argmax(-1).cpu().numpy()
    pair.train(was_training)
    height, width = x.shape[-2:]
    corners = glimpse_corners(theta.cpu(), height, width).numpy()  # (B, K, 4, 2)
    glimpses = glimpses.cpu().numpy()
    canvases = x.reshape(len(x), height, width).cpu().numpy()
    n, k = glimpses.shape[:2]
    colours = ["tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan"]
    fig = Figure(figsize=(2.2 * (k + 1), 2.3 * n))
    axes = fig.subplots(n, k + 1, squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.set_facecolor("0.85")  # outside the canvas (glimpses may extend beyond it)
        ax.imshow(canvases[i], cmap="gray", vmin=0, vmax=1)
        for j in range(k):
            box = np.concatenate([corners[i, j], corners[i, j, :1]])
            ax.plot(box[:, 0], box[:, 1], color=colours[j % len(colours)], lw=1.5)
        lo = np.minimum(corners[i].reshape(-1, 2).min(0), -0.5) - 2
        hi = np.maximum(corners[i].reshape(-1, 2).max(0), [width - 0.5, height - 0.5]) + 2
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
        ax.set_title("true " + "".join(str(int(v)) for v in y[i]), fontsize=9)
        for j in range(k):
            ax = axes[i, j + 1]
            ax.imshow(glimpses[i, j], cmap="gray", vmin=0, vmax=1)
            shown = range(pred.shape[1]) if k == 1 else [j]  # one glimpse: every head's digit
            text = "".join(str(int(pred[i, t])) for t in shown)
            wrong = any(pred[i, t] != y[i, t] for t in shown)
            ax.set_title(f"glimpse {j + 1}: {text}" if k > 1 else f"predicted {text}",
                         fontsize=9, color="red" if wrong else colours[j % len(colours)])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    _save(fig, path)


def plot_learning_curves(curves: dict[str, tuple[list[float], list[float]]],
                         path: str | os.PathLike, ylabel: str,
                         reference: dict[str, float] | None = None, title: str = "",
                         xlabel: str = "epoch",
                         other_curves: dict[str, tuple[Any, Any]] | None = None) -> None:
    """One line per run (``label -> (x, values)``: epochs, or steps with ``xlabel``), each
    ``reference`` value (``label -> value``, e.g. a paper's reported figure) as a dashed
    horizontal line, and each of ``other_curves`` (e.g. an authors' published curve) as a thin
    dotted line with markers."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for label, (epochs, values) in curves.items():
        if len(epochs):
            ax.plot(epochs, values, marker="." if len(epochs) < 30 else None, label=label)
    for i, (label, value) in enumerate((reference or {}).items()):
        ax.axhline(value, linestyle="--", color=f"C{(len(curves) + i) % 10}",
                   label=f"{label}: paper {value:g}")
    for i, (label, (xs, values)) in enumerate((other_curves or {}).items()):
        if len(xs):
            ax.plot(xs, values, linestyle=":", linewidth=1,
                    marker="o" if len(xs) < 200 else None, markersize=3,
                    color=f"C{(len(curves) + len(reference or {}) + i) % 10}", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title if len(title) < 90 else title[:87] + "...", fontsize="small")
    ax.grid(alpha=0.3)
    if curves or reference:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def plot_auxiliary(figures: dict[str, dict[str, tuple[list[float], list[float]]]],
                   path: str | os.PathLike, title: str = "") -> None:
    """The diagnostics of an auxiliary variable by optimiser steps, one panel each
    (``figures``: ``"mutual_info_y_a"`` and/or ``"a_std"`` -> run label -> (steps, values))."""
    from matplotlib.figure import Figure

    names = {"mutual_info_y_a": "I(y; a | x), nats", "a_std": "mean std of q(a | x)"}
    panels = [n for n in names if n in figures]
    fig = Figure(figsize=(5 * max(len(panels), 1), 3.8))
    for i, name in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, (steps, values) in figures[name].items():
            ax.plot(steps, values, marker="." if len(steps) < 60 else None, label=label)
        ax.set_xlabel("optimiser steps")
        ax.set_ylabel(names[name])
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    _save(fig, path)
