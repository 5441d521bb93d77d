"""A study's figures, each returned as PNG bytes: overlaid learning curves and the
cross-evaluation heatmap.

Like the run report's figures, this uses matplotlib's object API (`Figure`, no pyplot): no
global state and no GUI backend; savefig picks the Agg canvas for PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from cnnlab.report.figures import png_bytes

# One panel per figure: validation solid, training dashed, so a cell keeps one colour.
STYLES: tuple[tuple[str, str, Literal["-", "--"]], ...] = (
    ("val_", "validation", "-"),
    ("", "train", "--"),
)


def colours(count: int) -> list[Any]:
    """One distinct colour per cell: tab10 up to 10 cells, tab20 beyond (then it repeats)."""
    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(k % palette.N) for k in range(count)]


def has_curve(curves: Mapping[str, Mapping[str, Any]], metric: str) -> bool:
    """Whether any cell has a finite value of `metric` or `val_<metric>`."""
    return any(
        np.isfinite(_floats(_series(curve, key).get("mean"))).any()
        for curve in curves.values()
        for key in (metric, "val_" + metric)
    )


def overlaid_curves(
    curves: Mapping[str, Mapping[str, Any]], metric: str, title: str | None = None
) -> bytes:
    """`metric` per epoch for every cell on one axis: the mean over seeds as a line and a
    ±std band around it; validation solid, training dashed.

    `curves` maps a cell (or run) name to {"epoch": [...], "<column>": {"mean": [...],
    "std": [...]}} as in study.json; a missing column or std is simply not drawn, and null
    values (an epoch some seeds never reached) leave gaps.
    """
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    ax = figure.subplots()
    for colour, curve in zip(colours(len(curves)), curves.values(), strict=True):
        epochs = _floats(curve.get("epoch"))
        for prefix, _, style in STYLES:
            series = _series(curve, prefix + metric)
            mean, std = _floats(series.get("mean")), _floats(series.get("std"))
            if not np.isfinite(mean).any() or len(mean) != len(epochs):
                continue
            ax.plot(epochs, mean, linestyle=style, color=colour, linewidth=1.6)
            if len(std) == len(mean) and np.isfinite(std).any():
                ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
    # Two legends: which colour is which cell, and which line style is which split.
    cells = [Line2D([], [], color=c, lw=2) for c in colours(len(curves))]
    figure.legend(cells, list(curves), frameon=False, loc="outside right upper")
    styles = [Line2D([], [], color="black", linestyle=s) for _, _, s in STYLES]
    ax.legend(styles, [label for _, label, _ in STYLES], frameon=False, loc="best")
    ax.set_title(title or f"{metric}: mean over seeds, band ±1 std")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return png_bytes(figure)


def heatmap(
    cells: Sequence[str], sets: Sequence[str], summaries: Sequence[Sequence[Mapping[str, Any]]]
) -> bytes:
    """Cells (rows) against evaluation sets (columns), coloured by the mean, each square
    annotated "mean ± std"; a square with no result stays white."""
    means = np.array([[_float(s.get("mean")) for s in row] for row in summaries], dtype=float)
    means = means.reshape(len(cells), len(sets))
    figure = Figure(figsize=(2 + 1.7 * len(sets), 1.2 + 0.55 * len(cells)), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(means), cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    ax.set_xticks(np.arange(len(sets)), list(sets), rotation=20 if len(sets) > 3 else 0)
    ax.set_yticks(np.arange(len(cells)), list(cells))
    finite = means[np.isfinite(means)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), value in np.ndenumerate(means):
        if math.isnan(value):
            continue
        std = _float(summaries[i][j].get("std"))
        text = f"{value:.4f}" + ("" if math.isnan(std) else f"\n± {std:.4f}")
        # viridis is dark at the low end: white text there, black on the light high end
        colour = "white" if value < middle else "black"
        ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9)
    return png_bytes(figure)


def _series(curve: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = curve.get(key)
    return value if isinstance(value, Mapping) else {}


def _floats(values: Any) -> np.ndarray:
    """JSON numbers (null for unknown) as a float array with NaN for null."""
    if not isinstance(values, Sequence):
        return np.array([], dtype=float)
    return np.array([_float(v) for v in values], dtype=float)


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan
