"""The loss, the predictions and the probabilities that follow the model's head.

A softmax head (or none) trains with cross-entropy; a one-unit sigmoid head with binary
cross-entropy on that unit, as Keras's `Dense(1, activation="sigmoid")` + binary_crossentropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Objective:
    def __init__(self, head_activation: str | None, num_outputs: int, label_smoothing: float = 0.0):
        self.binary = head_activation == "sigmoid" and num_outputs == 1
        self.num_targets = 2 if self.binary else num_outputs  # width of soft targets
        self.label_smoothing = label_smoothing

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

    def predicted(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.squeeze(1) > 0).long() if self.binary else logits.argmax(1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, classes) probabilities; a sigmoid unit gives [1 - p, p]."""
        logits = logits.float()
        if self.binary:
            positive = torch.sigmoid(logits.squeeze(1))
            return torch.stack([1 - positive, positive], dim=1)
        return torch.softmax(logits, dim=1)
