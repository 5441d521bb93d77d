"""Inference over a split with sums kept on the device: one host synchronisation per call.

The fit loop validates with it once per epoch and evaluation runs it over every split; the task
says what the loss is and what else is added up, so neither computes accuracy itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnlab.data.batches import DeviceBatches
from cnnlab.runtime import autocast
from cnnlab.task import Task

Preprocess = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Inference:
    loss: float
    stats: dict[str, float]  # the task's statistics, e.g. {"accuracy": 0.93}
    predictions: torch.Tensor | None  # (N, ...) on the CPU, in the split's order


@torch.no_grad()
def infer(
    model: torch.nn.Module,
    batches: DeviceBatches,
    task: Task,
    preprocess: Preprocess,
    keep_predictions: bool = False,
    tta: bool = False,
) -> Inference:
    """Loss and statistics of `model` on a split; with `tta`, of the mean prediction of each
    image and its mirror image (test-time augmentation by horizontal flip)."""
    was_training = model.training
    model.eval()
    device = batches.device
    # loss sum, the task's statistics, count
    totals = torch.zeros(2 + len(task.stat_names), device=device, dtype=torch.float64)
    kept: list[torch.Tensor] = []
    predictions: torch.Tensor | None
    for images, targets in batches.epoch(0):
        inputs = preprocess(images)
        with autocast(device):
            outputs = model(inputs)
        if tta:
            with autocast(device):
                mirrored = model(inputs.flip(-1))
            predictions = (task.predictions(outputs) + task.predictions(mirrored)) / 2
            loss = task.prediction_loss(predictions, targets)
            stats = task.prediction_stats(predictions, targets)
        else:
            predictions = task.predictions(outputs) if keep_predictions else None
            loss = task.loss(outputs, targets, reduction="sum")
            stats = task.batch_stats(outputs, targets)
        count = torch.full((1,), targets.shape[0], device=device, dtype=torch.float64)
        totals += torch.cat([loss.double()[None], stats.double(), count])
        if keep_predictions:
            assert predictions is not None  # both branches predict when keep_predictions
            kept.append(predictions)
    model.train(was_training)
    loss_sum, *sums, count = totals.tolist()  # the one host synchronisation
    stats_of = {
        name: value / max(count, 1) for name, value in zip(task.stat_names, sums, strict=True)
    }
    return Inference(loss_sum / max(count, 1), stats_of, torch.cat(kept).cpu() if kept else None)
