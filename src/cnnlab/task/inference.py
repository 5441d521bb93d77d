"""Inference over a split with sums kept on the device: one host synchronisation per call.

The fit loop validates with it once per epoch and evaluation runs it over every split; the task
says what the loss is and what else is added up, so neither computes accuracy itself.

Test-time augmentation averages the task's predictions (probabilities) over views of each
image: `tta=True` the image and its mirror; `"flip_translate"` airbench94's six views, weighted
as its `infer_mirror_translate`: half on the image and its mirror, half on the mean of the two
1-pixel translations (up-left and down-right, edges reflected) and their mirrors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from cnnlab import distributed
from cnnlab.data.batches import DeviceBatches
from cnnlab.runtime import autocast
from cnnlab.task import Task

Preprocess = Callable[[torch.Tensor], torch.Tensor]
Tta = bool | Literal["flip_translate"]  # evaluate.tta


def tta_views(inputs: torch.Tensor, tta: Tta) -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs, weights summing to 1; `inputs` are the model's (N, C, H, W)."""
    if not tta:
        return [(1.0, inputs)]
    views = [(0.5, inputs), (0.5, inputs.flip(-1))]
    if tta != "flip_translate":
        return views
    height, width = inputs.shape[-2:]
    padded = F.pad(inputs, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., :height, :width], padded[..., 2:, 2:]]  # content moved +1 / -1 px
    return [(w / 2, view) for w, view in views] + [
        (0.125, view) for image in shifted for view in (image, image.flip(-1))
    ]


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
    tta: Tta = False,
    part: distributed.Part | None = None,
) -> Inference:
    """Loss and statistics of `model` on a split; with `tta`, of the weighted mean prediction
    of each image's views (tta_views: its mirror image, and with flip_translate shifts).
    `part` (torchrun; every process calls it): this process infers its block of the split,
    then the sums are added up and the predictions gathered in the split's order."""
    was_training = model.training
    model.eval()
    device = batches.device
    # loss sum, the task's statistics, count
    totals = torch.zeros(2 + len(task.stat_names), device=device, dtype=torch.float64)
    kept: list[torch.Tensor] = []
    predictions: torch.Tensor | None
    for images, targets in batches.epoch(0) if part is None else batches.block(part):
        inputs = preprocess(images)
        if tta:
            predictions = torch.zeros((), device=device)
            for weight, view in tta_views(inputs, tta):
                with autocast(device):
                    outputs = model(view)
                predictions = predictions + weight * task.predictions(outputs)
            loss = task.prediction_loss(predictions, targets)
            stats = task.prediction_stats(predictions, targets)
        else:
            with autocast(device):
                outputs = model(inputs)
            predictions = task.predictions(outputs) if keep_predictions else None
            loss = task.loss(outputs, targets, reduction="sum")
            stats = task.batch_stats(outputs, targets)
        count = torch.full((1,), targets.shape[0], device=device, dtype=torch.float64)
        totals += torch.cat([loss.double()[None], stats.double(), count])
        if keep_predictions:
            assert predictions is not None  # both branches predict when keep_predictions
            kept.append(predictions)
    if part is not None:
        distributed.all_sum(totals)
        if keep_predictions:
            if not kept:  # an empty block still gives the gather its row shape
                with autocast(device):
                    empty = batches.images[:0].to(device)
                    kept.append(task.predictions(model(preprocess(empty))))
            kept = [distributed.gather_blocks(torch.cat(kept), batches.num_samples)]
    model.train(was_training)
    loss_sum, *sums, count = totals.tolist()  # the one host synchronisation
    stats_of = {
        name: value / max(count, 1) for name, value in zip(task.stat_names, sums, strict=True)
    }
    return Inference(loss_sum / max(count, 1), stats_of, torch.cat(kept).cpu() if kept else None)
