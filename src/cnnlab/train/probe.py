"""Training steps that leave no trace, for the finders (lr_find.py, batch_size.py).

A finder trains the run's own model, optimiser and augmentation for a few steps to see how they
respond, then puts everything back bitwise: weights and buffers, which parameters train and
which modules are in training mode, optimiser, schedule and weight-average state, and every
random generator a step draws from (torch's, CUDA's, the augmentation's; Python's and NumPy's
for good measure). The run that follows trains exactly as if no finder had run. Copies are kept
on the host, so a search for the largest batch does not spend the device memory it measures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnlab.runtime import autocast
from cnnlab.train.checkpoint import restore_rng, rng_state
from cnnlab.train.loop import Trainee


def on_host(value: Any) -> Any:
    """A deep copy of `value` (state dicts: tensors in dicts and lists) with tensors on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: on_host(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(on_host(item) for item in value)
    return value


@dataclass(frozen=True)
class Snapshot:
    weights: dict[str, torch.Tensor]
    training: list[bool]  # each module's train/eval mode
    trains: list[bool]  # each parameter's requires_grad (a transfer stage freezes blocks)
    optimizer: dict[str, Any] | None
    schedule: dict[str, Any] | None
    average: dict[str, Any] | None  # train.ema / train.swa's state
    rng: dict[str, Any]
    augment_rng: torch.Tensor | None


def snapshot(trainee: Trainee) -> Snapshot:
    model, generator = trainee.model, _augment_generator(trainee)
    return Snapshot(
        weights=on_host(model.state_dict()),
        training=[module.training for module in model.modules()],
        trains=[param.requires_grad for param in model.parameters()],
        optimizer=on_host(trainee.optimizer.state_dict()) if trainee.optimizer else None,
        schedule=on_host(trainee.schedule.state_dict()) if trainee.schedule else None,
        average=on_host(trainee.average.state_dict()) if trainee.average else None,
        rng={**rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
        augment_rng=generator.get_state() if generator is not None else None,
    )


def restore(trainee: Trainee, saved: Snapshot) -> None:
    """`trainee` as it was at `saved`, which stays as it is for another restore (load_state_dict
    keeps the tensors it is given, so it gets copies); gradients are dropped."""
    model = trainee.model
    model.load_state_dict(saved.weights)
    for module, training in zip(model.modules(), saved.training, strict=True):
        module.training = training
    for param, trains in zip(model.parameters(), saved.trains, strict=True):
        param.requires_grad_(trains)
        param.grad = None
    if trainee.optimizer is not None and saved.optimizer is not None:
        trainee.optimizer.load_state_dict(on_host(saved.optimizer))
    if trainee.schedule is not None and saved.schedule is not None:
        trainee.schedule.load_state_dict(on_host(saved.schedule))
    if trainee.average is not None and saved.average is not None:
        trainee.average.load_state_dict(on_host(saved.average))
    restore_rng(saved.rng)
    random.setstate(saved.rng["python"])
    np.random.set_state(saved.rng["numpy"])
    generator = _augment_generator(trainee)
    if generator is not None and saved.augment_rng is not None:
        generator.set_state(saved.augment_rng)


def train_step(trainee: Trainee, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One step as train_epoch takes it (augment, mix, forward, backward, optimiser step), but
    neither the schedule nor the weight average moves: a finder sets the lr itself. Returns the
    loss, still on the device."""
    optimizer, augment, task = trainee.optimizer, trainee.augment, trainee.task
    assert optimizer is not None, "a probe step needs a trainee with an optimiser"
    inputs, targets = trainee.train_transform(images), labels
    if augment is not None and augment.mixes():
        inputs, targets = augment.mix(inputs, labels, task.num_targets)
    with autocast(inputs.device):
        outputs = trainee.model(inputs)
    loss = task.loss(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _augment_generator(trainee: Trainee) -> torch.Generator | None:
    # TrainTransform's per-epoch generator (the Augment protocol does not promise one)
    generator = getattr(trainee.augment, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None
