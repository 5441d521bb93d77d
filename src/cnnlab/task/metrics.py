"""Classification metrics of one split, by scikit-learn: accuracy, top-k, per class, confusion."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score


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
    return metrics
