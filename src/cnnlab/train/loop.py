"""The fit loop: visible, with Keras's named moments; extra behaviour lives in callbacks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.predict import Preprocess, infer
from cnnlab.progress import progress_bar
from cnnlab.train.callbacks import Callback, TrainState
from cnnlab.train.objective import Objective
from cnnlab.train.runtime import autocast


class NonFiniteLoss(CnnlabError):
    def __init__(self, epoch: int, step: int):
        super().__init__(
            f"the training loss became non-finite (nan or inf) at epoch {epoch}, step {step}; "
            "the run stopped. Lower train.optimizer.lr, check the data scaling (augment.rescale), "
            "or resume from the last good epoch with --resume"
        )


@dataclass
class Trainee:
    """What one training step needs."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    objective: Objective
    preprocess: Preprocess  # uint8 batch -> model input, deterministic (validation)
    augment: Augment | None = None  # uint8 batch -> augmented model input (training)

    @property
    def train_transform(self) -> Preprocess:
        return self.augment if self.augment is not None else self.preprocess


class Augment(Protocol):
    """Training-time augmentation: random per batch, reseeded per epoch, maybe mixing."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def begin_epoch(self, epoch: int) -> None: ...

    def mixes(self) -> bool: ...

    def mix(
        self, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def fit(
    trainee: Trainee,
    train: DeviceBatches,
    val: DeviceBatches | None,
    epochs: int,
    steps_per_epoch: int | None,
    callbacks: Sequence[Callback],
    state: TrainState,
) -> TrainState:
    for callback in callbacks:
        callback.on_train_begin(state)
    steps = steps_per_epoch or len(train)
    for epoch in range(state.epoch, epochs):
        if state.stop:
            break
        started = time.perf_counter()
        if trainee.augment is not None:
            trainee.augment.begin_epoch(epoch)
        with progress_bar(f"Epoch {epoch + 1}/{epochs}", total=steps) as advance:
            loss, accuracy = train_epoch(
                trainee, train.epoch(epoch, steps_per_epoch), epoch, advance
            )
        logs = {"epoch": epoch + 1, "loss": loss, "accuracy": accuracy}
        if val is not None:  # one host synchronisation per epoch for validation
            checked = infer(trainee.model, val, trainee.objective, trainee.preprocess)
            logs |= {"val_loss": checked.loss, "val_accuracy": checked.accuracy}
        logs |= {
            "lr": trainee.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        state.epoch = epoch + 1
        state.history.append(logs)
        for callback in callbacks:
            callback.on_epoch_end(state, logs)
    return state


def train_epoch(trainee: Trainee, batches, epoch: int, advance) -> tuple[float, float]:
    """Mean loss and accuracy of one epoch, accumulated on the device and read once."""
    model, objective = trainee.model, trainee.objective
    model.train()
    device = next(model.parameters()).device
    # loss sum, correct, count, steps taken, first non-finite step (-1: none); all on the
    # device, filled by kernels (torch.full), so no step waits for the host or the host for it.
    totals = torch.zeros(3, device=device, dtype=torch.float64)
    position = torch.zeros((), device=device, dtype=torch.float64)
    first_bad = torch.full((), -1.0, device=device, dtype=torch.float64)
    transform, augment = trainee.train_transform, trainee.augment
    mixing = augment is not None and augment.mixes()
    for images, labels in batches:
        inputs, targets = transform(images), labels
        if mixing:  # MixUp/CutMix: soft targets, the loss follows them
            inputs, targets = augment.mix(inputs, labels, objective.num_targets)
        with autocast(device):
            logits = model(inputs)
        loss = objective.loss(logits, targets)
        trainee.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainee.optimizer.step()
        trainee.schedule.step()
        count = torch.full((), labels.numel(), device=device, dtype=torch.float64)
        correct = (objective.predicted(logits) == labels).sum().double()
        totals += torch.stack([loss.detach().double() * count, correct, count])
        bad = (first_bad < 0) & ~torch.isfinite(loss.detach())
        first_bad = torch.where(bad, position, first_bad)
        position += 1
        advance(1)
    loss_sum, correct, count, bad_step = torch.cat([totals, first_bad[None]]).tolist()  # one sync
    if bad_step >= 0:
        raise NonFiniteLoss(epoch + 1, int(bad_step) + 1)
    if count == 0:
        return float("nan"), float("nan")
    return loss_sum / count, correct / count
