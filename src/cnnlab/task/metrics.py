"""Classification metrics of one split, by scikit-learn: accuracy, top-k, per class, confusion,
one-vs-rest ROC AUC and average precision, and calibration (ECE with its reliability bins).

metrics.json keeps numbers, not curves: the ROC and precision-recall curves are recomputed by the
report from predictions.csv (per-class probabilities of val and test), so this entry stays a few
kilobytes however many images a split has.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

# Equal-width bins on the top-class confidence, ECE = sum over bins of |accuracy - confidence|
# weighted by the bin's share of images: Guo et al. 2017's choice, so numbers compare with papers.
CALIBRATION_BINS = 15


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: list[str], loss: float, top_k: int
) -> dict[str, Any]:
    predicted = probabilities.argmax(1)
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0
    )
    metrics: dict[str, Any] = {"loss": loss, "accuracy": float((predicted == labels).mean())}
    if len(classes) > top_k:
        # scikit-learn wants two classes as one column, the positive class's score
        scores = probabilities[:, 1] if len(classes) == 2 else probabilities
        metrics[f"top_{top_k}_accuracy"] = float(
            top_k_accuracy_score(labels, scores, k=top_k, labels=indices)
        )
    metrics["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    metrics["macro_avg"] = {
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "support": int(support.sum()),
    }
    metrics["confusion_matrix"] = confusion_matrix(labels, predicted, labels=indices).tolist()
    metrics["classes"] = classes
    metrics |= ranking_metrics(labels, probabilities, classes)
    metrics |= calibration(labels, probabilities)
    return metrics


def ranking_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """One-vs-rest ROC AUC and average precision of each class, and their unweighted means.

    A class with no image in the split has neither (no positives), and one that every image
    belongs to has no ROC AUC (no negatives): they are named under "undefined" and left out of
    the macro mean, which is None when no class has one. Two classes are two one-vs-rest
    problems too; both have the ROC AUC of scikit-learn's binary roc_auc_score.
    """
    auc: dict[str, float] = {}
    precision: dict[str, float] = {}
    for k, name in enumerate(classes):
        positive = labels == k
        if positive.any():
            precision[name] = float(average_precision_score(positive, probabilities[:, k]))
            if not positive.all():
                auc[name] = float(roc_auc_score(positive, probabilities[:, k]))
    return {
        "roc_auc": _per_class_and_macro(auc, classes),
        "average_precision": _per_class_and_macro(precision, classes),
    }


def _per_class_and_macro(values: dict[str, float], classes: list[str]) -> dict[str, Any]:
    return {
        "macro": float(np.mean(list(values.values()))) if values else None,
        "per_class": values,
        "undefined": [name for name in classes if name not in values],
    }


def calibration(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Expected calibration error and the reliability diagram's bins, on the top-class
    confidence. A bin is (lower, upper], the first one [0, upper], as scikit-learn's
    calibration_curve(strategy="uniform") bins; its accuracy and confidence are None when empty.
    """
    confidence = probabilities.max(1).astype(np.float64)
    correct = (probabilities.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], confidence)
    count = np.bincount(index, minlength=bins)
    accuracy = np.bincount(index, weights=correct, minlength=bins) / np.maximum(count, 1)
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / np.maximum(count, 1)
    total = int(count.sum())
    ece = float(np.sum(np.abs(accuracy - mean_confidence) * count) / total) if total else None
    filled = count > 0
    return {
        "ece": ece,
        "calibration": {
            "bins": edges.tolist(),  # the bins + 1 edges
            "accuracy": [float(a) if f else None for a, f in zip(accuracy, filled, strict=True)],
            "confidence": [
                float(c) if f else None for c, f in zip(mean_confidence, filled, strict=True)
            ],
            "count": count.tolist(),
        },
    }
