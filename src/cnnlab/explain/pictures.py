"""The PNG files `cnnlab explain` writes: an image beside its heat-map overlay, and a layer's
feature-map grid, each titled. matplotlib's object API (Figure, no pyplot): no global state,
so several threads or a server may draw at once."""

from __future__ import annotations

import io

import numpy as np

from cnnlab.explain.features import feature_grid

DPI = 100
TITLE = 0.45  # inches above a grid for the title


def overlay_png(image: np.ndarray, blended: np.ndarray, title: str) -> bytes:
    """`image` (C, H, W uint8) and its overlay (3, H, W uint8) side by side under `title`
    (lines joined by newlines)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 3.4), dpi=DPI)
    left, right = figure.subplots(1, 2)
    if image.shape[0] == 1:
        left.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        left.imshow(image.transpose(1, 2, 0), interpolation="nearest")
    right.imshow(blended.transpose(1, 2, 0), interpolation="nearest")
    for axes in (left, right):
        axes.set_axis_off()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return _png(figure)


def feature_grid_png(name: str, maps: np.ndarray) -> bytes:
    """The grid of `maps` (C, H, W) titled with the layer's name, its channels and size."""
    from matplotlib.figure import Figure

    grid = feature_grid(maps)
    channels, height, width = maps.shape
    grid_h, grid_w = grid.shape[0] / DPI, grid.shape[1] / DPI
    figure = Figure(figsize=(max(grid_w, 4.0), grid_h + TITLE), dpi=DPI)  # room for the title
    axes = figure.add_axes((0.0, 0.0, 1.0, grid_h / (grid_h + TITLE)))
    axes.imshow(grid, interpolation="nearest")
    axes.set_axis_off()
    figure.suptitle(f"{name}: {channels} channels, {height}x{width}", fontsize=10)
    return _png(figure)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
