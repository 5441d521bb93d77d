"""Inference over a split with sums kept on the device: one host synchronisation per call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnlab.data.batches import DeviceBatches
from cnnlab.train.objective import Objective
from cnnlab.train.runtime import autocast

Preprocess = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Inference:
    loss: float
    accuracy: float
    probabilities: torch.Tensor | None  # (N, classes) on the CPU, in the split's order


@torch.no_grad()
def infer(
    model: torch.nn.Module,
    batches: DeviceBatches,
    objective: Objective,
    preprocess: Preprocess,
    keep_probabilities: bool = False,
    tta: bool = False,
) -> Inference:
    """Loss and accuracy of `model` on a split; with `tta`, of the mean prediction of each
    image and its mirror image (test-time augmentation by horizontal flip)."""
    was_training = model.training
    model.eval()
    device = batches.device
    totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, count
    kept = []
    for images, labels in batches.epoch(0):
        inputs = preprocess(images)
        with autocast(device):
            logits = model(inputs)
        if tta:
            with autocast(device):
                mirrored = model(inputs.flip(-1))
            probabilities = (
                objective.probabilities(logits) + objective.probabilities(mirrored)
            ) / 2
            picked = probabilities.gather(1, labels[:, None]).clamp_min(1e-12)
            loss, correct = -picked.log().sum(), (probabilities.argmax(1) == labels).sum()
        else:
            probabilities = objective.probabilities(logits) if keep_probabilities else None
            loss = objective.loss(logits, labels, reduction="sum")
            correct = (objective.predicted(logits) == labels).sum()
        count = torch.full((), labels.numel(), device=device, dtype=torch.float64)
        totals += torch.stack([loss.double(), correct.double(), count])
        if keep_probabilities:
            kept.append(probabilities)
    model.train(was_training)
    loss_sum, correct, count = totals.tolist()  # the one host synchronisation
    probabilities = torch.cat(kept).cpu() if kept else None
    return Inference(loss_sum / max(count, 1), correct / max(count, 1), probabilities)
