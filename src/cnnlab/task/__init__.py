"""What a task means: the loss, what the loop adds up besides it, metrics and predictions.

The fit loop and inference are written once, against `Task`; classification is the task of
every run today. Another task (image-to-image reconstruction) is one more module beside
classification.py that implements the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class Task(Protocol):
    # Epoch statistics the loop and inference add up besides the loss, under the names the
    # history, the epoch line and early stopping use (classification: "accuracy").
    stat_names: tuple[str, ...]
    num_targets: int  # width of soft targets (MixUp/CutMix)

    def loss(
        self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor: ...

    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(len(stat_names),) sums over the batch, on the device: no host synchronisation."""
        ...

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """What the model says for each input (classification: class probabilities)."""
        ...

    def prediction_loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The summed loss of averaged predictions (test-time augmentation)."""
        ...

    def prediction_stats(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """batch_stats of averaged predictions."""
        ...


def history_columns(task: Task) -> tuple[str, ...]:
    """history.csv's columns: the training and validation loss and statistics of each epoch."""
    stats: Sequence[str] = task.stat_names
    return ("epoch", "loss", *stats, "val_loss", *(f"val_{s}" for s in stats), "lr", "seconds")
