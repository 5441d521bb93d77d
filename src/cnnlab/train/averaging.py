"""Averages of the weights over training: an exponential moving average (EMA) or SWA.

Both are torch's `AveragedModel`: a copy of the network beside the one that trains, on the same
device. SWA's mean is torch's own `update_parameters`; the EMA's update is torch's EMA function
(`get_ema_multi_avg_fn`: a foreach lerp by 1 - decay) applied here, step for step the same
(tests/train/test_ema.py), because `update_parameters` reads its device-side step count on the
host twice per call: on CUDA two synchronisations per training step.

- EMA (`train.ema`): updated after every optimiser step, whose decay
  warms up as Ultralytics's ModelEMA does: the k-th average (after the first, a copy) uses
  `decay * (1 - exp(-k / warmup))`, so the average does not remember the random initialisation
  for the first thousand steps. BatchNorm statistics are averaged with the weights
  (`use_buffers=True`, timm's ModelEmaV2 too): statistics that belong to the averaged weights,
  with no extra pass over the data. Validation, the kept best weights (BestWeights) and the
  final evaluation all use the average.
- SWA (`train.swa`): the plain mean (AveragedModel's default) of the weights at the end of each
  epoch from `start_epoch` on. Buffers are copied, and at the end `update_bn` recomputes the
  BatchNorm statistics for the mean weights with one pass over the training images (unaugmented:
  the inputs the network is evaluated on). Until then the mean's statistics are not its own, so
  validation during training measures the raw network (history.csv's val_* are the raw
  network's); the mean is the final weights, written over BestWeights's model.safetensors and
  evaluated. With `lr`, from `start_epoch` on torch's SWALR takes over the learning rate,
  stepped per batch: a cosine anneal to `lr` over `anneal_epochs`, then constant.

`state_dict` goes into the checkpoint, so a resumed run continues the average bitwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from cnnlab.config import EmaConfig, SwaConfig, TrainConfig
from cnnlab.train.checkpoint import save_weights

Schedule = torch.optim.lr_scheduler.LRScheduler
Evaluated = Literal["ema", "swa", "raw"]  # manifest.json's weights_evaluated


class WeightAverage:
    """The loop's hooks; each does nothing unless the kind of average needs it."""

    kind: Evaluated

    def __init__(self, averaged: AveragedModel):
        self.averaged = averaged

    def after_step(self, model: torch.nn.Module) -> None:
        """After each optimiser step."""

    def schedule(
        self, epoch: int, optimizer: torch.optim.Optimizer, schedule: Schedule, steps: int
    ) -> Schedule:
        """The lr schedule epoch `epoch` (from 0) steps per batch: the run's, unless SWA's."""
        return schedule

    def end_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """After epoch `epoch` (from 0) has trained, before it is validated."""

    def validated(self, model: torch.nn.Module) -> torch.nn.Module:
        """The network validation measures and BestWeights keeps."""
        return self.averaged.module

    def finish(self, images: Iterable[torch.Tensor], weights: Path) -> Evaluated:
        """After training: make `weights` hold what is evaluated, and say which it is."""
        return self.kind

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["averaged"])


def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters, then buffers (AveragedModel's use_buffers order), detached."""
    return [t.detach() for t in (*model.parameters(), *model.buffers())]


class Ema(WeightAverage):
    kind: Evaluated = "ema"

    def __init__(self, model: torch.nn.Module, cfg: EmaConfig):
        # the averaged copy, its n_averaged and its state_dict; the updates are after_step's
        super().__init__(AveragedModel(model, use_buffers=True))
        self.decay, self.warmup = cfg.decay, cfg.warmup
        self.updates = 0  # the host's copy of averaged.n_averaged, which lives on the device

    def decay_at(self, k: int) -> float:
        """The decay of the k-th average after the first update (a copy)."""
        if not self.warmup:
            return self.decay
        return self.decay * (1.0 - math.exp(-k / self.warmup))

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module) -> None:
        """torch's AveragedModel.update_parameters with its EMA function, step for step, less
        its two reads of the device's n_averaged (a host sync each, every step on CUDA): the
        host counts the updates. The first update copies; floating tensors lerp by 1 - decay
        in one foreach pass; integer buffers take torch's rounded blend."""
        pairs = zip(_tensors(self.averaged.module), _tensors(model), strict=True)
        if self.updates == 0:
            for averaged, current in pairs:
                averaged.copy_(current)
        else:
            decay = self.decay_at(self.updates)
            floats: list[tuple[torch.Tensor, torch.Tensor]] = []
            others: list[tuple[torch.Tensor, torch.Tensor]] = []
            for pair in pairs:
                (floats if pair[0].is_floating_point() else others).append(pair)
            if floats:
                averaged_floats, current_floats = zip(*floats, strict=True)
                torch._foreach_lerp_(averaged_floats, current_floats, 1 - decay)
            for averaged, current in others:
                averaged.copy_(averaged * decay + current * (1 - decay))
        self.averaged.n_averaged += 1  # as update_parameters keeps it, for the checkpoint
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.updates = int(state["updates"])


class Swa(WeightAverage):
    kind: Evaluated = "swa"

    def __init__(self, model: torch.nn.Module, cfg: SwaConfig):
        super().__init__(AveragedModel(model))  # the mean; buffers copied, then update_bn
        self.cfg = cfg
        self.lr_schedule: SWALR | None = None  # built at start_epoch, with lr
        self.saved_schedule: dict[str, Any] | None = None  # a resumed run's, for that moment

    def averages(self, epoch: int) -> bool:
        return epoch + 1 >= self.cfg.start_epoch

    def schedule(
        self, epoch: int, optimizer: torch.optim.Optimizer, schedule: Schedule, steps: int
    ) -> Schedule:
        if self.cfg.lr is None or not self.averages(epoch):
            return schedule
        if self.lr_schedule is None or self.lr_schedule.optimizer is not optimizer:
            # built on the lr the run's schedule reached, which it anneals from (cosine)
            self.lr_schedule = SWALR(
                optimizer, self.cfg.lr, anneal_epochs=self.cfg.anneal_epochs * steps
            )
            if self.saved_schedule is not None:
                self.lr_schedule.load_state_dict(self.saved_schedule)
                self.saved_schedule = None
        return self.lr_schedule

    def end_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        if self.averages(epoch):
            self.averaged.update_parameters(model)

    def validated(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # the mean's BatchNorm statistics are its own only after update_bn

    def finish(self, images: Iterable[torch.Tensor], weights: Path) -> Evaluated:
        if int(self.averaged.n_averaged) == 0:  # stopped before start_epoch (a user's callback)
            return "raw"
        update_bn(images, self.averaged.module)  # returns at once without BatchNorm
        save_weights(self.averaged.module, weights)
        return self.kind

    def state_dict(self) -> dict[str, Any]:
        schedule = None if self.lr_schedule is None else self.lr_schedule.state_dict()
        return {**super().state_dict(), "lr_schedule": schedule}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # rebuilt on the optimiser of the epoch that comes next, then given this state
        self.lr_schedule, self.saved_schedule = None, state["lr_schedule"]


def weight_average(cfg: TrainConfig, model: torch.nn.Module) -> WeightAverage | None:
    """The run's average of `model`'s weights, or None. Build it before torch.compile: the copy
    of a compiled module would call the original's compiled forward."""
    if cfg.ema is not None:
        return Ema(model, cfg.ema)
    if cfg.swa is not None:
        return Swa(model, cfg.swa)
    return None
