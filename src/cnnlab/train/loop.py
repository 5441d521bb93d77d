"""The fit loop: visible, with Keras's named moments; extra behaviour lives in callbacks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from cnnlab import distributed
from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import CnnlabError
from cnnlab.progress import Advance, progress_bar
from cnnlab.runtime import autocast
from cnnlab.task import Task
from cnnlab.task.inference import Preprocess, infer
from cnnlab.train.averaging import WeightAverage
from cnnlab.train.callbacks import Callback, TrainState
from cnnlab.train.totals import EpochTotals


class NonFiniteLoss(CnnlabError):
    def __init__(self, epoch: int, step: int):
        # --resume only where a checkpoint exists: the one of the epoch before (every completed
        # epoch leaves one), which continues with more epochs or on another device
        kept = (
            f"; epoch {epoch - 1}'s checkpoint is kept, which --resume continues from"
            if epoch > 1
            else ""
        )
        super().__init__(
            f"the training loss became non-finite (nan or inf) at epoch {epoch}, step {step}; "
            "the run stopped. Lower train.optimizer.lr or check the data scaling "
            f"(augment.rescale) and start a new run{kept}"
        )


@dataclass
class Trainee:
    """What one training step needs."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None  # None before a stage builds one
    schedule: torch.optim.lr_scheduler.LRScheduler | None
    task: Task
    preprocess: Preprocess  # uint8 batch -> model input, deterministic (validation)
    augment: Augment | None = None  # uint8 batch -> augmented model input (training)
    average: WeightAverage | None = None  # train.ema / train.swa: averaged weights beside model

    @property
    def train_transform(self) -> Preprocess:
        return self.augment if self.augment is not None else self.preprocess

    @property
    def validated(self) -> torch.nn.Module:
        """The network validation measures: the EMA of the weights when there is one."""
        return self.model if self.average is None else self.average.validated(self.model)


@dataclass
class Shard:
    """This process's part of a torchrun run's training steps (see cnnlab.distributed)."""

    network: torch.nn.Module  # the model under DistributedDataParallel, for training steps
    world: int
    step_sizes: list[int]  # the global batch of each step of an epoch

    def weight(self, step: int, size: int) -> float:
        """The factor on this slice's mean loss that makes DDP's average of the processes'
        gradients the gradient of the global batch's mean loss, as one process computes it:
        world * (slice / global batch). 1 for equal slices; uneven ones (a batch the world size
        does not divide, a last partial batch) weigh by their share."""
        return self.world * size / self.step_sizes[step]


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
    optimizer = trainee.optimizer
    assert optimizer is not None, "fit needs a trainee with an optimiser (see train.stages)"
    for callback in callbacks:
        callback.on_train_begin(state)
    steps = steps_per_epoch or len(train)
    part = distributed.current()  # torchrun: this process's slice of every batch
    shard = None
    if part is not None:  # wrapped again by each stage's fit: requires_grad may have changed
        network = distributed.wrap(trainee.model)
        shard = Shard(network, part.world, train.step_sizes(steps_per_epoch))
    for epoch in range(state.epoch, epochs):
        if state.stop:
            break
        started = time.perf_counter()
        for callback in callbacks:
            callback.on_epoch_begin(state, epoch)
        if trainee.augment is not None:
            trainee.augment.begin_epoch(epoch)
        average = trainee.average
        if average is not None and trainee.schedule is not None:  # SWA's lr from its start
            trainee.schedule = average.schedule(epoch, optimizer, trainee.schedule, steps)
        with progress_bar(f"Epoch {epoch + 1}/{epochs}", total=steps) as advance:
            batches = train.epoch(epoch, steps_per_epoch, part)
            trained = train_epoch(trainee, batches, epoch, advance, shard)
        # the lr of the epoch's last step; the schedule has moved on to the next epoch's since
        lr = trained.pop("lr")
        if average is not None:
            average.end_epoch(trainee.model, epoch)
        logs = {"epoch": epoch + 1, **trained}
        if part is not None:  # BatchNorm statistics: rank 0's everywhere, as its checkpoint
            distributed.sync_buffers(trainee.model)
            if trainee.validated is not trainee.model:  # the EMA's own statistics
                distributed.sync_buffers(trainee.validated)
        if val is not None:  # one host synchronisation per epoch for validation
            checked = infer(trainee.validated, val, trainee.task, trainee.preprocess, part=part)
            logs["val_loss"] = checked.loss
            logs |= {f"val_{name}": value for name, value in checked.stats.items()}
        logs |= {"lr": lr, "seconds": time.perf_counter() - started}
        state.epoch = epoch + 1
        state.history.append(logs)
        for callback in callbacks:
            callback.on_epoch_end(state, logs)
    for callback in callbacks:
        callback.on_train_end(state)
    return state


def train_epoch(
    trainee: Trainee, batches, epoch: int, advance: Advance, shard: Shard | None = None
) -> dict[str, float]:
    """Mean loss and task statistics of one epoch, accumulated on the device and read once.
    With `shard` (torchrun), `batches` are this process's slices and the totals of every
    process are added up before they are read, so every process logs the same epoch."""
    model, task = trainee.model, trainee.task
    forward = model if shard is None else shard.network
    optimizer, schedule = trainee.optimizer, trainee.schedule
    assert optimizer is not None and schedule is not None
    model.train()
    totals = EpochTotals(task, next(model.parameters()).device)
    transform, augment = trainee.train_transform, trainee.augment
    mixing = augment is not None and augment.mixes()
    lr = optimizer.param_groups[0]["lr"]
    for step, (images, labels) in enumerate(batches):
        inputs, targets = transform(images), labels
        if augment is not None and mixing:  # MixUp/CutMix: soft targets, the loss follows them
            inputs, targets = augment.mix(inputs, labels, task.num_targets)
        with autocast(inputs.device):
            outputs = forward(inputs)
        size = labels.shape[0]
        # an empty slice (torchrun, a last batch smaller than the world) still takes its part
        # in the gradients' all-reduce, with zeros
        loss = task.loss(outputs, targets) if size else outputs.sum() * 0.0
        optimizer.zero_grad(set_to_none=True)
        (loss if shard is None else loss * shard.weight(step, size)).backward()
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]  # a Python float: no wait for the device
        schedule.step()
        if trainee.average is not None:
            trainee.average.after_step(model)
        totals.add(loss, outputs, labels)
        advance(1, totals.running)  # the bar reads the totals only when it redraws
    means, bad_step = totals.finish(sharded=shard is not None)
    if bad_step >= 0:
        raise NonFiniteLoss(epoch + 1, bad_step + 1)
    return {**means, "lr": lr}  # with no step, the optimiser's lr as it stands
