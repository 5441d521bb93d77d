"""Turn a run folder's files into what the page shows: formatted numbers, tables, figures.

Everything here is plain data for the template; figures arrive as `data:` URIs so the page
needs nothing but itself.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from cnnlab.report import figures
from cnnlab.runfiles import (
    PREDICTIONS,
    SPLIT_ORDER,
    Evaluation,
    RunFiles,
    has_values,
    mapping,
)

MAX_MISCLASSIFIED = 32  # a screenful; the full list is in predictions.csv
TOP_K = re.compile(r"^top_(\d+)_accuracy$")
MISSING = "\u2013"  # an en dash where a number was not recorded


@dataclass
class Misclassified:
    """Test images the model got wrong, with what it said about each."""

    images: np.ndarray  # uint8 (N, C, H, W), C = 1 or 3
    true: list[str]  # true class names
    predicted: list[str]  # predicted class names
    confidence: list[float]  # probability of the predicted class
    paths: list[str]
    total: int | None = None  # every mistake of the split; None: as many as `images`
    loss: list[float] | None = None  # -log p(true class): given when sorted by it, highest first
    split: str = "test"  # the split they come from: test, else val (runs/gallery.shown_split)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if _finite(value) else MISSING


def decimal(value: Any, places: int = 4) -> str:
    return f"{value:.{places}f}" if _finite(value) else MISSING


def count(value: Any) -> str:
    return f"{int(value):,}" if _finite(value) else MISSING


def seconds(value: Any) -> str:
    if not _finite(value):
        return MISSING
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min ({value:,.0f} s)"


SPLIT_TITLES = {"val": "validation"}


def splits_with_metrics(metrics: dict[str, Any]) -> list[str]:
    known = [s for s in SPLIT_ORDER if mapping(metrics.get(s))]
    return known + [s for s in metrics if s not in known and mapping(metrics.get(s))]


def evaluated_split(metrics: dict[str, Any]) -> str | None:
    """The split whose numbers lead the page: test when it exists, else val."""
    for split in ("test", "val"):
        if mapping(metrics.get(split)):
            return split
    return None


# The headline's caveat when no test split exists (data/split.no_test_note says it at run time)
NO_TEST_SPLIT = (
    "No test split: these are the validation images, which chose the kept weights (best epoch, "
    "early stopping), so they overstate the score on new images. Set data.test_split (e.g. 0.2) "
    "or give the source a test part."
)


def headline(run: RunFiles) -> dict[str, str] | None:
    split = evaluated_split(run.metrics)
    if split is None:
        return None
    values = mapping(run.metrics[split])
    return {
        "split": split,
        "accuracy": percent(values.get("accuracy")),
        "loss": decimal(values.get("loss")),
        # task: reconstruction: the best pixel accuracy the data allows
        "ceiling": percent(values["accuracy_ceiling"]) if "accuracy_ceiling" in values else "",
        "caution": NO_TEST_SPLIT if split == "val" else "",
    }


def metrics_table(metrics: dict[str, Any]) -> dict[str, Any]:
    """Final loss, accuracy and any top-k accuracy, one row per split."""
    splits = splits_with_metrics(metrics)
    top_ks = sorted(
        {key for s in splits for key in mapping(metrics[s]) if TOP_K.match(key)},
        key=lambda key: int(TOP_K.match(key).group(1)),  # type: ignore[union-attr]
    )
    columns = [("loss", "loss", decimal), ("accuracy", "accuracy", percent)]
    columns += [(k, f"top-{TOP_K.match(k).group(1)} accuracy", percent) for k in top_ks]  # type: ignore[union-attr]
    present = {key for s in splits for key in mapping(metrics[s])}
    columns += [column for column in RECONSTRUCTION_COLUMNS if column[0] in present]
    rows = [
        {"split": s, "cells": [fmt(mapping(metrics[s]).get(key)) for key, _, fmt in columns]}
        for s in splits
    ]
    return {"columns": [title for _, title, _ in columns], "rows": rows}


def _decimal2(value: Any) -> str:
    return decimal(value, 2)


# task: reconstruction's metrics.json keys, shown where a split has them
RECONSTRUCTION_COLUMNS = [
    ("accuracy_ceiling", "accuracy ceiling", percent),
    ("threshold_accuracy", "threshold accuracy", percent),
    ("psnr", "PSNR (dB)", _decimal2),
    ("ssim", "SSIM", decimal),
    ("reference_accuracy", "reference classifier accuracy", percent),
]


def best_epoch(run: RunFiles) -> tuple[int | None, str]:
    """The epoch whose weights were kept: best by early stopping's monitor, else val_loss."""
    stopping = mapping(mapping(run.config.get("train")).get("early_stopping"))
    monitor = str(stopping.get("monitor") or "val_loss")
    values = run.history.get(monitor, [])
    if not has_values(values):
        return None, monitor
    scores = np.asarray(values, dtype=float)
    index = int(np.nanargmin(scores) if monitor.endswith("loss") else np.nanargmax(scores))
    return int(run.history["epoch"][index]), monitor


def curves(run: RunFiles) -> dict[str, Any] | None:
    if not run.history or not has_values(run.history.get("loss")):
        return None
    epoch, monitor = best_epoch(run)
    stages = [mapping(stage) for stage in run.manifest.get("stages") or []]
    starts = [int(s["first_epoch"]) for s in stages[1:] if s.get("first_epoch")]
    return {
        "src": data_uri(figures.learning_curves(run.history, epoch, starts)),
        "best_epoch": epoch,
        "stage_starts": starts,
        "monitor": monitor,
        "has_val": has_values(run.history.get("val_loss")),
    }


def class_names(run: RunFiles, split_metrics: dict[str, Any]) -> list[str]:
    for candidate in (
        split_metrics.get("classes"),
        mapping(run.manifest.get("data")).get("classes"),
        list(mapping(split_metrics.get("per_class"))),
    ):
        if isinstance(candidate, list) and candidate:
            return [str(c) for c in candidate]
    return []


def per_class_section(run: RunFiles) -> dict[str, Any] | None:
    """Confusion matrix and per-class table, for test when it has them, else val."""
    for split in ("test", "val"):
        values = mapping(run.metrics.get(split))
        if values.get("per_class") or values.get("confusion_matrix"):
            return _per_class(run, split, values)
    return None


def _per_class(run: RunFiles, split: str, values: dict[str, Any]) -> dict[str, Any]:
    classes = class_names(run, values)
    section: dict[str, Any] = {"split": split, "confusion_src": None, "rows": [], "averages": []}
    matrix = values.get("confusion_matrix")
    if _square(matrix) and len(matrix) == len(classes):
        section["confusion_src"] = data_uri(figures.confusion_matrices(matrix, classes))
    per_class = mapping(values.get("per_class"))
    section["rows"] = [
        _class_row(name, mapping(per_class.get(name))) for name in classes if name in per_class
    ]
    for key, title in (("macro_avg", "macro average"), ("weighted_avg", "weighted average")):
        if mapping(values.get(key)):
            section["averages"].append(_class_row(title, mapping(values[key])))
    return section


def _class_row(name: str, values: dict[str, Any]) -> dict[str, str]:
    return {
        "name": name,
        "precision": decimal(values.get("precision"), 3),
        "recall": decimal(values.get("recall"), 3),
        "f1": decimal(values.get("f1"), 3),
        "support": count(values.get("support")),
    }


def ranking_section(run: RunFiles) -> dict[str, Any] | None:
    """ROC and precision-recall curves, AUC and AP per class, and the reliability diagram with
    its ECE, for test when it has them, else val. The numbers are metrics.json's; the curves are
    drawn from predictions.csv's probabilities (metrics.json keeps no curves)."""
    for split in ("test", "val"):
        values = mapping(run.metrics.get(split))
        if mapping(values.get("roc_auc")) or mapping(values.get("calibration")):
            return _ranking(run, split, values)
    return None


def _ranking(run: RunFiles, split: str, values: dict[str, Any]) -> dict[str, Any]:
    classes = class_names(run, values)
    auc, ap = mapping(values.get("roc_auc")), mapping(values.get("average_precision"))
    auc_of, ap_of = mapping(auc.get("per_class")), mapping(ap.get("per_class"))
    scored = split_predictions(run.folder, split, classes)
    curves_src = None
    if scored is not None:
        curves, macro = class_curves(*scored, classes, auc_of, ap_of)
        curves_src = data_uri(figures.roc_pr_curves(curves, macro)) if curves else None
    bins = mapping(values.get("calibration"))
    edges, count = bins.get("bins"), bins.get("count")
    reliability_src = None
    if isinstance(edges, list) and isinstance(count, list) and len(edges) == len(count) + 1:
        accuracy, confidence = bins.get("accuracy") or [], bins.get("confidence") or []
        reliability_src = data_uri(
            figures.reliability_diagram(edges, accuracy, confidence, count, _number(values, "ece"))
        )
    return {
        "split": split,
        "curves_src": curves_src,
        "binary": len(classes) == 2,
        "many": len(classes) > figures.LEGEND_MAX_CURVES,
        "reliability_src": reliability_src,
        "bins": len(count) if isinstance(count, list) else 0,
        "ece": decimal(values.get("ece")),
        "rows": [
            {"name": c, "auc": decimal(auc_of.get(c), 3), "ap": decimal(ap_of.get(c), 3)}
            for c in classes
        ],
        "macro": {"auc": decimal(auc.get("macro"), 3), "ap": decimal(ap.get("macro"), 3)},
        "undefined": [str(c) for c in auc.get("undefined") or []],
    }


def split_predictions(
    folder: Path, split: str, classes: list[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, probabilities) of `split` from predictions.csv; None when the file is missing,
    damaged or has no probability column per class (read_run notes nothing: the section says
    the curves are missing)."""
    try:
        reader = csv.reader(io.StringIO((folder / PREDICTIONS).read_text(encoding="utf-8")))
        header = next(reader, [])
        columns = [header.index(f"p_{c}") for c in classes]
        split_at, label_at = header.index("split"), header.index("label")
        index = {c: k for k, c in enumerate(classes)}
        rows = [row for row in reader if row and row[split_at] == split]
        labels = np.array([index[row[label_at]] for row in rows], dtype=np.int64)
        probabilities = np.array([[float(row[c]) for c in columns] for row in rows])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, csv.Error):
        return None
    return (labels, probabilities) if len(rows) else None


def class_curves(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
    auc: dict[str, Any],
    ap: dict[str, Any],
) -> tuple[list[figures.ClassCurve], tuple[np.ndarray, np.ndarray] | None]:
    """Each class against the rest (two classes: the second, scikit-learn's positive one), with
    the macro-average ROC curve when there are more than two. A class with no image, or with
    every image, of the split has no ROC curve and is left out."""
    from sklearn.metrics import precision_recall_curve, roc_curve  # 1.5 s: only when drawn

    curves = []
    for k in [1] if len(classes) == 2 else range(len(classes)):
        positive = labels == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probabilities[:, k])
        precision, recall, _ = precision_recall_curve(positive, probabilities[:, k])
        name = classes[k]
        curves.append(
            figures.ClassCurve(
                name, fpr, tpr, recall, precision, _number(auc, name), _number(ap, name)
            )
        )
    if len(classes) == 2 or not curves:
        return curves, None
    grid = np.linspace(0.0, 1.0, 201)
    mean_tpr = np.mean([np.interp(grid, c.fpr, c.tpr) for c in curves], axis=0)
    return curves, (grid, mean_tpr)


def _number(values: dict[str, Any], key: str) -> float | None:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) and _finite(value) else None


def misclassified_tiles(wrong: Misclassified | None) -> dict[str, Any] | None:
    if wrong is None:
        return None
    total = len(wrong.images) if wrong.total is None else wrong.total
    losses = wrong.loss or []
    shown = zip(
        wrong.images[:MAX_MISCLASSIFIED],
        wrong.true,
        wrong.predicted,
        wrong.confidence,
        list(wrong.paths) + [""] * len(wrong.images),
        strict=False,
    )
    tiles = [
        {
            "src": data_uri(figures.image_tile(image)),
            "true": str(true),
            "predicted": str(pred),
            "confidence": decimal(conf, 2),
            "path": str(path),
            "loss": decimal(losses[k], 2) if k < len(losses) else None,
        }
        for k, (image, true, pred, conf, path) in enumerate(shown)
    ]
    split = SPLIT_TITLES.get(wrong.split, wrong.split)
    return {"tiles": tiles, "total": total, "by_loss": bool(losses), "split": split}


def evaluations_table(run: RunFiles) -> list[dict[str, Any]]:
    """One row per `cnnlab evaluate` of the run: which data, how, and its numbers."""
    return [_evaluation_row(evaluation) for evaluation in run.evaluations]


def _evaluation_row(evaluation: Evaluation) -> dict[str, Any]:
    info, metrics = evaluation.info, evaluation.metrics
    augment = str(info.get("augment") or "none")
    absent = info.get("classes_absent")
    return {
        "name": evaluation.name,
        "source": str(info.get("source") or MISSING),
        "split": str(info.get("split") or MISSING),
        "same_data": info.get("same_data") is True,
        "augment": "train (the run's own)" if augment == "train" else augment,
        "tta": _yes_no(info.get("tta")) or MISSING,
        "images": count(info.get("images")),
        "accuracy": percent(metrics.get("accuracy")),
        "loss": decimal(metrics.get("loss")),
        "f1": decimal(mapping(metrics.get("macro_avg")).get("f1"), 3),
        "created": _moment(info.get("created")),
        "absent": [str(c) for c in absent] if isinstance(absent, list) else [],
    }


def _moment(value: Any) -> str:
    """An ISO timestamp to the minute, "2026-12-01 12:00 UTC"; anything else as it is."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value) if value else MISSING
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname() or ''}".rstrip()


def data_section(run: RunFiles) -> dict[str, Any] | None:
    data = mapping(run.manifest.get("data"))
    if not data:
        return None
    counts = {s: mapping(c) for s, c in mapping(data.get("class_counts")).items() if mapping(c)}
    classes = [str(c) for c in data.get("classes") or []] or sorted(
        {c for per_split in counts.values() for c in per_split}
    )
    sizes = mapping(data.get("split_sizes"))
    skipped = [mapping(item) for item in data.get("skipped") or []]
    return {
        "source": str(data.get("source", "")),
        "fingerprint": str(data.get("fingerprint", "")),
        "classes": classes,
        "sizes": [(s, count(n)) for s, n in sizes.items()],
        "total": count(sum(n for n in sizes.values() if _finite(n))) if sizes else MISSING,
        "distribution_src": data_uri(figures.class_distribution(counts, classes))
        if counts and classes
        else None,
        "skipped": [
            {"path": str(s.get("path", "")), "reason": str(s.get("reason", ""))} for s in skipped
        ],
        "ignored": count(data.get("ignored", 0)),
        "duplicates": count(data.get("duplicates", 0)),
        "warnings": [str(w) for w in data.get("warnings") or []],
    }


def stages_table(run: RunFiles) -> list[dict[str, str]]:
    """A staged transfer run's stages (manifest.json): the epochs each ran, what it unfroze,
    its trainable parameters and each parameter group's learning rate."""
    stages = [mapping(stage) for stage in run.manifest.get("stages") or []]
    last_epoch = max((int(e) for e in run.history.get("epoch", []) if _finite(e)), default=None)
    rows = []
    for k, stage in enumerate(stages):
        first = _whole(stage.get("first_epoch"))
        following = _whole(stages[k + 1].get("first_epoch")) if k + 1 < len(stages) else None
        last = following - 1 if following is not None else last_epoch
        if first is None:
            ran = ""
        elif last is not None and last > first:
            ran = f"epochs {first}-{last}"
        else:
            ran = f"epoch {first}"
        blocks = stage.get("trainable_blocks") or []
        rates = mapping(stage.get("lr"))
        rows.append(
            {
                "stage": str(stage.get("stage", k + 1)),
                "epochs": f"{stage.get('epochs', MISSING)} ({ran})" if ran else MISSING,
                "unfreeze": str(stage.get("unfreeze", MISSING)),
                "trained": "head + " + ", ".join(map(str, blocks)) if blocks else "head only",
                "trainable": count(stage.get("trainable_params")),
                "lr": ", ".join(f"{group} {float(lr):.2g}" for group, lr in rates.items())
                if all(_finite(lr) for lr in rates.values())
                else MISSING,
                "batchnorm": str(stage.get("batchnorm", MISSING)),
            }
        )
    return rows


def _whole(value: Any) -> int | None:
    return int(value) if _finite(value) else None


def run_info(run: RunFiles) -> dict[str, list[tuple[str, str]]]:
    manifest = run.manifest
    model = mapping(manifest.get("model"))
    # a staged run's count is its last stage's (the model section lists every stage's)
    trainable = "trainable params (last stage)" if manifest.get("stages") else "trainable params"
    general = [
        ("device", manifest.get("device")),
        ("seed", manifest.get("seed")),
        ("cnnlab", manifest.get("cnnlab")),
        ("started", manifest.get("started")),
        ("finished", manifest.get("finished")),
        ("epochs run", manifest.get("epochs_run")),
        ("stopped early", _yes_no(manifest.get("stopped_early"))),
        ("weights evaluated", manifest.get("weights_evaluated")),  # raw, ema or swa
        ("features", model.get("feature_dimension")),  # a features run: what it classified
        ("classifier", mapping(model.get("classifier")).get("estimator")),
        ("total params", _count_or_none(model.get("total_params"))),
        (trainable, _count_or_none(model.get("trainable_params"))),
        ("non-trainable params", _count_or_none(model.get("non_trainable_params"))),
    ]
    return {
        "general": [(k, str(v)) for k, v in general if v is not None and v != ""],
        "versions": [(k, str(v)) for k, v in mapping(manifest.get("versions")).items()],
        "timings": [
            (k.removesuffix("_s"), seconds(v)) for k, v in mapping(manifest.get("timings")).items()
        ],
    }


def model_name(run: RunFiles) -> str:
    name = mapping(run.manifest.get("model")).get("name") or mapping(run.config.get("model")).get(
        "name"
    )
    return str(name) if name else "layer list"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _square(matrix: Any) -> TypeGuard[Sequence[Sequence[float]]]:
    return (
        isinstance(matrix, Sequence)
        and len(matrix) > 0
        and all(isinstance(row, Sequence) and len(row) == len(matrix) for row in matrix)
    )


def _yes_no(value: Any) -> str | None:
    return None if value is None else ("yes" if value else "no")


def _count_or_none(value: Any) -> str | None:
    return count(value) if _finite(value) else None
