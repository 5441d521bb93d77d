"""Classification: the loss that follows the model's head, accuracy, metrics, predictions.

A softmax head (or none) trains with cross-entropy; a one-unit sigmoid head with binary
cross-entropy on that unit, as Keras's `Dense(1, activation="sigmoid")` + binary_crossentropy.
Class weights (train.class_weight) weight the training loss as Keras's `class_weight` does.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    from cnnlab.data.pipeline import Split


class Classification:
    stat_names: tuple[str, ...] = ("accuracy",)

    def __init__(
        self,
        head_activation: str | None,
        num_outputs: int,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
    ):
        self.binary = head_activation == "sigmoid" and num_outputs == 1
        self.num_targets = 2 if self.binary else num_outputs  # width of soft targets
        self.label_smoothing = label_smoothing
        if class_weights is not None and len(class_weights) != self.num_targets:
            raise ValueError(f"{len(class_weights)} class weights for {self.num_targets} classes")
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        # on the host; each device gets its copy once (a copy per step would wait for the host)
        self._weights = None if class_weights is None else torch.tensor(self.class_weights)
        self._weights_on: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def for_model(
        cls,
        model: torch.nn.Module,
        num_classes: int,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
    ) -> Classification:
        """The task of `model`'s head: its activation and width select the loss."""
        # a KerasModel's output_shape is a shape tuple; Module.__getattr__ types it Tensor | Module
        outputs = (
            cast("tuple[int, ...]", model.output_shape)[-1]
            if hasattr(model, "output_shape")
            else num_classes
        )
        head = getattr(model, "head_activation", None)
        return cls(head, outputs, label_smoothing, class_weights)

    # --- what the loop and inference call -------------------------------------------------------

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """`labels`: class indices (N,), or soft targets (N, num_targets) from MixUp/CutMix.

        With class weights, the "mean" loss (the training step's) is Keras 3's with
        class_weight: each sample's loss times its class's weight, summed and divided by the
        batch size (its sum_over_batch_size), not by the weights' sum as torch's `weight=`
        does. "sum" (inference, validation, evaluation) is never weighted, as in Keras."""
        if self._weights is None or reduction != "mean":
            return self._unweighted(logits, labels, reduction)
        per_sample = self._unweighted(logits, labels, "none")
        return (per_sample * self.sample_weights(labels)).mean()

    def sample_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """(N,) weights: the class weight of each hard label (label smoothing leaves it, as
        Keras weights by the smoothed target's top class); for soft MixUp/CutMix targets, the
        weights mixed as the classes are (Keras's top class would jump at an even mix)."""
        assert self._weights is not None
        weights = self._weights_on.get(labels.device)
        if weights is None:
            weights = self._weights_on[labels.device] = self._weights.to(labels.device)
        return labels.float() @ weights if labels.dim() == 2 else weights[labels]

    def _unweighted(
        self, logits: torch.Tensor, labels: torch.Tensor, reduction: str
    ) -> torch.Tensor:
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


def class_weights(
    setting: str | Mapping[str, float] | None, classes: Sequence[str], labels: np.ndarray
) -> list[float] | None:
    """train.class_weight as one weight per class, in class order. balanced: scikit-learn's
    compute_class_weight on the training labels, n_samples / (n_classes * count)."""
    if setting is None:
        return None
    if isinstance(setting, str):  # "balanced", the only word cnnlab.config lets through
        missing = sorted(set(range(len(classes))) - set(np.unique(labels).tolist()))
        if missing:
            raise ConfigError(
                f"train.class_weight: balanced, but the training split has no image of class "
                f"{classes[missing[0]]}; give weights by name instead, e.g. {{cats: 2.0}}"
            )
        from sklearn.utils.class_weight import compute_class_weight

        weights = compute_class_weight("balanced", classes=np.arange(len(classes)), y=labels)
        return [float(w) for w in weights]
    for name in setting:
        if name not in classes:
            close = difflib.get_close_matches(name, classes, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"train.class_weight: {name!r} is not a class; {hint}"
                f"(classes: {', '.join(classes)})"
            )
    return [float(setting.get(name, 1.0)) for name in classes]


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
