"""The interpretation section's figure: feature embeddings as scatter plots, PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from cnnlab.report.figures import png_bytes

LEGEND_MAX_CLASSES = 20  # beyond, colours alone: a legend of 100 names is noise
POINT_SIZE, MISTAKE_SIZE = 9, 34  # points^2: mistakes larger, drawn on top
# hundreds of antialiased points make a 190 KB PNG; 128 colours of a palette, 50 KB, look the same
PALETTE_COLOURS = 128


def embedding_figure(
    coordinates: Mapping[str, np.ndarray],
    labels: np.ndarray,
    predicted: np.ndarray,
    classes: Sequence[str],
) -> bytes:
    """One panel per method (PCA, t-SNE, UMAP), each image a point coloured by its true class,
    the misclassified ones as black-edged crosses; one legend for all panels."""
    methods = list(coordinates)
    figure = Figure(figsize=(10, 3.7), layout="constrained")
    axes = figure.subplots(1, len(methods), squeeze=False)[0]
    colours = _class_colours(len(classes))
    wrong = predicted != labels
    for ax, method in zip(axes, methods, strict=True):
        xy = coordinates[method]
        ax.scatter(
            xy[~wrong, 0], xy[~wrong, 1], s=POINT_SIZE, c=colours[labels[~wrong]], linewidths=0
        )
        ax.scatter(
            xy[wrong, 0],
            xy[wrong, 1],
            s=MISTAKE_SIZE,
            c=colours[labels[wrong]],
            marker="X",
            edgecolors="black",
            linewidths=0.6,
        )
        ax.set_title(method)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    handles = [Line2D([], [], marker="X", linestyle="", color="white", markeredgecolor="black")]
    names = [f"misclassified ({int(wrong.sum())})"]
    if len(classes) <= LEGEND_MAX_CLASSES:
        handles += [
            Line2D([], [], marker="o", linestyle="", color=colours[k]) for k in range(len(classes))
        ]
        names += [str(name) for name in classes]
    figure.legend(handles, names, loc="outside right center", frameon=False, fontsize=8)
    return _palette(png_bytes(figure))


def _palette(png: bytes) -> bytes:
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    buffer = io.BytesIO()
    picture.quantize(PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG")
    return buffer.getvalue()


def _class_colours(count: int) -> np.ndarray:
    """(count, 3 or 4) colours: matplotlib's tab10 / tab20 while they last, then evenly
    spaced hues."""
    if count <= 20:
        listed = colormaps["tab10" if count <= 10 else "tab20"]
        assert isinstance(listed, ListedColormap)  # matplotlib's qualitative maps are lists
        return np.asarray(listed.colors)[:count]
    return colormaps["turbo"](np.linspace(0.05, 0.95, count))
