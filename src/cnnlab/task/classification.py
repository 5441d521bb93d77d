"""Classification: the loss that follows the model's head, accuracy, metrics, predictions.

A softmax head (or none) trains with cross-entropy; a one-unit sigmoid head with binary
cross-entropy on that unit, as Keras's `Dense(1, activation="sigmoid")` + binary_crossentropy.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from cnnlab.data.pipeline import Split


class Classification:
    stat_names: tuple[str, ...] = ("accuracy",)

    def __init__(self, head_activation: str | None, num_outputs: int, label_smoothing: float = 0.0):
        self.binary = head_activation == "sigmoid" and num_outputs == 1
        self.num_targets = 2 if self.binary else num_outputs  # width of soft targets
        self.label_smoothing = label_smoothing

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, num_classes: int, label_smoothing: float = 0.0
    ) -> Classification:
        """The task of `model`'s head: its activation and width select the loss."""
        # a KerasModel's output_shape is a shape tuple; Module.__getattr__ types it Tensor | Module
        outputs = (
            cast("tuple[int, ...]", model.output_shape)[-1]
            if hasattr(model, "output_shape")
            else num_classes
        )
        return cls(getattr(model, "head_activation", None), outputs, label_smoothing)

    # --- what the loop and inference call -------------------------------------------------------

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """`labels`: class indices (N,), or soft targets (N, num_targets) from MixUp/CutMix."""
        logits = logits.float()  # the loss in fp32 even under bf16 autocast
        if labels.dim() == 2:
            return self._soft_loss(logits, labels.float(), reduction)
        if self.binary:
            return F.binary_cross_entropy_with_logits(
                logits.squeeze(1), labels.float(), reduction=reduction
            )
        return F.cross_entropy(
            logits, labels, label_smoothing=self.label_smoothing, reduction=reduction
        )

    def _soft_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, reduction: str
    ) -> torch.Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(
                logits.squeeze(1), targets[:, 1], reduction=reduction
            )
        # cross_entropy takes probabilities as targets, label smoothing included
        return F.cross_entropy(
            logits, targets, label_smoothing=self.label_smoothing, reduction=reduction
        )

    def batch_stats(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (self.predicted(logits) == labels).sum().double()[None]  # correct answers

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return self.probabilities(logits)

    def prediction_loss(self, probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        picked = probabilities.gather(1, labels[:, None]).clamp_min(1e-12)
        return -picked.log().sum()

    def prediction_stats(self, probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (probabilities.argmax(1) == labels).sum().double()[None]

    def predicted(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.squeeze(1) > 0).long() if self.binary else logits.argmax(1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, classes) probabilities; a sigmoid unit gives [1 - p, p]."""
        logits = logits.float()
        if self.binary:
            positive = torch.sigmoid(logits.squeeze(1))
            return torch.stack([1 - positive, positive], dim=1)
        return torch.softmax(logits, dim=1)


# --- what a run folder holds of it --------------------------------------------------------------


def split_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: list[str], loss: float, top_k: int
) -> dict[str, Any]:
    """metrics.json's entry for one split (scikit-learn, imported only once training is over:
    70 MB resident and 1.5 s at import)."""
    from cnnlab.task.metrics import classification_metrics

    return classification_metrics(labels, probabilities, classes, loss, top_k)


def mistakes(labels: np.ndarray, probabilities: np.ndarray, limit: int = 32) -> np.ndarray:
    """Indices of the first `limit` wrongly classified images: the report's gallery (a
    screenful; every one is in predictions.csv)."""
    return np.flatnonzero(probabilities.argmax(1) != labels)[:limit]


def predictions_csv(predicted: dict[str, tuple[Split, np.ndarray]]) -> str:
    """predictions.csv: split, path, label, predicted, confidence, p_<class>... per image."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    classes = next(iter(predicted.values()))[0].classes if predicted else []
    writer.writerow(
        ["split", "path", "label", "predicted", "confidence", *(f"p_{c}" for c in classes)]
    )
    for name, (split, probabilities) in predicted.items():
        best = probabilities.argmax(1)
        for i, path_ in enumerate(split.paths):
            row = probabilities[i]
            writer.writerow(
                [
                    name,
                    path_,
                    classes[split.labels[i]],
                    classes[best[i]],
                    f"{row[best[i]]:.6f}",
                    *(f"{p:.6f}" for p in row),
                ]
            )
    return out.getvalue()
