"""The report's figures, each returned as PNG bytes.

matplotlib's object API (`Figure`, no pyplot): no global state, no GUI backend, safe in
threads and on machines without a display; savefig picks the Agg canvas for PNG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

DPI = 110  # 1100 px wide at 10 in: the page's width, sharp enough on a laptop screen
TRAIN_COLOR, VAL_COLOR, BEST_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c"
STAGE_COLOR = "#7f7f7f"
ANNOTATE_MAX_CLASSES = 20  # beyond this, numbers in cells are unreadable
GROUPED_MAX_CLASSES = 30
TILE_MIN, TILE_MAX = 96, 160  # px: tiny images are enlarged, large ones shrunk to this
LEGEND_MAX_CURVES = 10  # beyond, one thin line per class and no legend: a legend of 100 is noise


class ClassCurve(NamedTuple):
    """One class against the rest: its ROC and precision-recall curves (scikit-learn's)."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    auc: float | None  # the recorded numbers (metrics.json), for the legend
    average_precision: float | None


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # tight: long class names and axis labels are never cut off at the edge
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", bbox_inches="tight")
    return buffer.getvalue()


def learning_curves(
    history: Mapping[str, Sequence[float]],
    best_epoch: int | None,
    stage_starts: Sequence[int] = (),
) -> bytes:
    """Loss and accuracy (and a reconstruction's PSNR) per epoch, train against validation, the
    best epoch marked, and the first epoch of each later fine-tuning stage."""
    panels = [name for name in ("loss", "accuracy", "psnr") if _present(history, name)]
    panels = panels or ["loss"]
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    epochs = np.asarray(history.get("epoch", []), dtype=float)
    for ax, name in zip(axes, panels, strict=True):
        for prefix, label, color in (("", "train", TRAIN_COLOR), ("val_", "validation", VAL_COLOR)):
            values = np.asarray(history.get(prefix + name, []), dtype=float)
            if values.size and not np.all(np.isnan(values)):
                ax.plot(epochs, values, marker="o", markersize=3, label=label, color=color)
        if best_epoch is not None:
            ax.axvline(
                best_epoch,
                color=BEST_COLOR,
                linestyle="--",
                linewidth=1.2,
                label=f"best epoch ({best_epoch})",
            )
        for number, first in enumerate(stage_starts, start=2):
            stage_label = "next stage begins" if number == 2 else None
            ax.axvline(
                first - 0.5, color=STAGE_COLOR, linestyle=":", linewidth=1.2, label=stage_label
            )
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.has_data():
            ax.legend(frameon=False)
    return png_bytes(figure)


def confusion_matrices(matrix: Sequence[Sequence[float]], classes: Sequence[str]) -> bytes:
    """Counts and the row-normalised matrix (each true class sums to 1).

    Side by side up to 10 classes and beyond 20 (cells too small for numbers anyway); one
    above the other in between, so the numbers in the cells stay readable at page width.
    """
    counts = np.asarray(matrix, dtype=float)
    n = counts.shape[0]
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    stacked = 10 < n <= ANNOTATE_MAX_CLASSES
    height = 4.8 + (0.8 if _long(classes) and n <= 40 else 0.0)
    figure = Figure(figsize=(8, 15) if stacked else (10, height), layout="constrained")
    first, second = figure.subplots(2, 1) if stacked else figure.subplots(1, 2)
    _matrix_panel(figure, first, counts, classes, "counts", "{:.0f}")
    _matrix_panel(figure, second, normalised, classes, "normalised by true class", "{:.2f}")
    return png_bytes(figure)


def _matrix_panel(
    figure: Figure, ax, values: np.ndarray, classes: Sequence[str], title: str, number: str
) -> None:
    n = values.shape[0]
    image = ax.imshow(values, cmap="Blues", vmin=0, interpolation="nearest")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    ax.set_title(title)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 40:  # beyond, names overlap: matplotlib's index ticks (0, 20, 40...) stay
        names = [str(c) for c in classes]
        size = 9 if n <= ANNOTATE_MAX_CLASSES else 6
        ax.set_xticks(np.arange(n), names, rotation=90 if _long(classes) else 0, fontsize=size)
        ax.set_yticks(np.arange(n), names, fontsize=size)
    if n <= ANNOTATE_MAX_CLASSES:
        threshold = values.max() / 2 if values.size else 0
        for (i, j), value in np.ndenumerate(values):
            color = "white" if value > threshold else "black"
            text = number.format(value)
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=12 if n <= 5 else 8)


def class_distribution(counts: Mapping[str, Mapping[str, float]], classes: Sequence[str]) -> bytes:
    """Images per class: bars grouped by class, or one row per split when classes are many
    (grouped bars for 100 classes would be a comb no one can read)."""
    splits = [s for s in counts if counts[s]] or ["train"]
    heights = {s: [float(counts.get(s, {}).get(c, 0) or 0) for c in classes] for s in splits}
    x = np.arange(len(classes))
    if len(classes) <= GROUPED_MAX_CLASSES:
        figure = Figure(figsize=(10, 3.6 + (0.8 if _long(classes) else 0)), layout="constrained")
        ax = figure.subplots()
        width = 0.8 / len(splits)
        for k, split in enumerate(splits):
            ax.bar(x + (k - (len(splits) - 1) / 2) * width, heights[split], width, label=split)
        # Above the axes: inside, the legend would hide the tallest bars.
        ax.legend(frameon=False, ncols=len(splits), loc="lower right", bbox_to_anchor=(1, 1))
        axes = [ax]
    else:
        figure = Figure(figsize=(10, 0.6 + 1.7 * len(splits)), layout="constrained")
        axes = list(figure.subplots(len(splits), 1, sharex=True, squeeze=False)[:, 0])
        for k, (ax, split) in enumerate(zip(axes, splits, strict=True)):
            ax.bar(x, heights[split], 0.8, color=f"C{k}")
            ax.set_title(split, loc="left", fontsize=10)
    for ax in axes:
        ax.set_ylabel("images")
        ax.grid(axis="y", alpha=0.3)
    if len(classes) <= 60:
        names = [str(c) for c in classes]
        size = 9 if len(classes) <= 30 else 6
        axes[-1].set_xticks(x, names, rotation=90 if _long(classes) else 0, fontsize=size)
    axes[-1].set_xlabel("class")
    return png_bytes(figure)


def roc_pr_curves(
    curves: Sequence[ClassCurve], macro: tuple[np.ndarray, np.ndarray] | None
) -> bytes:
    """ROC (left) and precision-recall (right) curves, one per class against the rest; `macro`:
    the mean ROC curve (true positive rate averaged at fixed false positive rates)."""
    figure = Figure(figsize=(10, 4.4), layout="constrained")
    roc, pr = figure.subplots(1, 2)
    labelled = len(curves) <= LEGEND_MAX_CURVES
    style = {"linewidth": 1.4} if labelled else {"linewidth": 0.7, "alpha": 0.45}
    for k, curve in enumerate(curves):
        scores = f"AUC {_short(curve.auc)}, AP {_short(curve.average_precision)}"
        label = f"{curve.name} ({scores})" if labelled else None
        roc.plot(curve.fpr, curve.tpr, color=f"C{k % 10}", label=label, **style)
        pr.step(curve.recall, curve.precision, where="post", color=f"C{k % 10}", **style)
    if macro is not None:
        roc.plot(*macro, color="black", linewidth=2.2, label="macro average")
    roc.plot([0, 1], [0, 1], color=STAGE_COLOR, linestyle=":", linewidth=1, label="chance")
    for ax, title, x, y in (
        (roc, "ROC", "false positive rate", "true positive rate"),
        (pr, "precision-recall", "recall", "precision"),
    ):
        ax.set(title=title, xlabel=x, ylabel=y, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    # One legend for both panels, beside them: inside, ten entries hide the curves.
    figure.legend(
        *roc.get_legend_handles_labels(), loc="outside right center", frameon=False, fontsize=8
    )
    return png_bytes(figure)


def reliability_diagram(
    edges: Sequence[float],
    accuracy: Sequence[float | None],
    confidence: Sequence[float | None],
    count: Sequence[int],
    ece: float | None,
) -> bytes:
    """Accuracy against confidence per bin (a calibrated model sits on the diagonal), the gap
    to each bin's mean confidence shaded, and the images per bin below."""
    bounds = np.asarray(edges, dtype=float)
    lower, width = bounds[:-1], np.diff(bounds)
    filled = np.asarray(count) > 0
    acc = np.asarray([a if a is not None else np.nan for a in accuracy], dtype=float)
    conf = np.asarray([c if c is not None else np.nan for c in confidence], dtype=float)
    figure = Figure(figsize=(5.6, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(
        lower[filled],
        acc[filled],
        width[filled],
        align="edge",
        color=TRAIN_COLOR,
        edgecolor="white",
        label="accuracy",
    )
    gap_low, gap_high = np.minimum(acc, conf)[filled], np.abs(acc - conf)[filled]
    top.bar(
        lower[filled],
        gap_high,
        width[filled],
        bottom=gap_low,
        align="edge",
        color="#d62728",
        alpha=0.3,
        edgecolor="#d62728",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], color=STAGE_COLOR, linestyle=":", linewidth=1, label="calibrated")
    title = "reliability" + (f" (ECE {ece:.4f})" if ece is not None else "")
    top.set(title=title, ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    top.grid(alpha=0.3)
    top.legend(frameon=False, fontsize=8, loc="upper left")
    bottom.bar(lower, np.asarray(count, dtype=float), width, align="edge", color=STAGE_COLOR)
    bottom.set(xlabel="confidence (top class)", ylabel="images")
    bottom.grid(axis="y", alpha=0.3)
    return png_bytes(figure)


def _short(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def image_tile(image: np.ndarray) -> bytes:
    """One image, channels first (C, H, W) with C = 1 or 3, as a PNG for the page.

    Tiny images (8x8 digits) are enlarged by an integer factor with nearest neighbour so their
    pixels stay sharp squares; large ones are shrunk so 32 of them keep the page light.
    """
    picture = Image.fromarray(_to_hwc_uint8(image))
    longest = max(picture.size)
    if longest < TILE_MIN:
        factor = math.ceil(TILE_MIN / longest)
        picture = picture.resize(
            (picture.width * factor, picture.height * factor), Image.Resampling.NEAREST
        )
    elif longest > TILE_MAX:
        picture.thumbnail((TILE_MAX, TILE_MAX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_hwc_uint8(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)  # the documented (C, H, W) -> Pillow's (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]  # grayscale: mode "L" shows gray, not a colour map
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def _present(history: Mapping[str, Sequence[float]], name: str) -> bool:
    return any(not math.isnan(v) for key in (name, "val_" + name) for v in history.get(key, []))


def _long(classes: Sequence[str]) -> bool:
    return len(classes) > 12 or any(len(str(c)) > 6 for c in classes)
