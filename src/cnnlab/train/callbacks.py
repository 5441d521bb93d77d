"""Small callbacks with Keras's moments: keep the best weights, stop early, checkpoint, log."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cnnlab.config import EarlyStoppingConfig
from cnnlab.train.checkpoint import rng_state, save_state, save_weights


@dataclass
class TrainState:
    """Everything the loop carries between epochs; saved in the checkpoint for --resume."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None  # best monitored value so far
    best_epoch: int = 0
    stop: bool = False
    stop_reason: str = ""
    stage: int = 0  # index into the run's stages (model.stages)
    stage_starts: list[int] = field(default_factory=lambda: [0])  # epochs run before each


class Callback:
    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None: ...


class BestWeights(Callback):
    """Writes model.safetensors whenever the monitored value improves (Keras's
    ModelCheckpoint(save_best_only=True)); without validation data, the last epoch's weights."""

    def __init__(self, model: torch.nn.Module, path: Path, monitor: str, min_delta: float = 0.0):
        self.model, self.path, self.monitor, self.min_delta = model, path, monitor, min_delta
        self.sign = 1.0 if monitor.endswith("loss") else -1.0  # lower loss, higher accuracy

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        value = logs.get(self.monitor)
        if value is None or math.isnan(value):
            save_weights(self.model, self.path)
            return
        if state.best is None or self.sign * (state.best - value) > self.min_delta:
            state.best, state.best_epoch = value, state.epoch
            save_weights(self.model, self.path)


class EarlyStopping(Callback):
    def __init__(self, cfg: EarlyStoppingConfig):
        self.patience = cfg.patience

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if state.best is not None and state.epoch - state.best_epoch >= self.patience:
            state.stop = True
            state.stop_reason = (
                f"early stopping: no improvement for {self.patience} epochs "
                f"(best at epoch {state.best_epoch})"
            )


class Checkpoint(Callback):
    """The last complete epoch's full training state, so a killed run resumes from it."""

    def __init__(self, folder: Path, parts: dict[str, Any]):
        self.folder, self.parts = folder, parts  # model, optimizer, schedule

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        payload = {name: part.state_dict() for name, part in self.parts.items()}
        payload["state"] = state.__dict__.copy()
        payload["rng"] = rng_state()
        save_state(self.folder, payload)


class EpochLine(Callback):
    """One Keras-like line per epoch."""

    def __init__(self, console: Console, epochs: int):
        self.console, self.epochs = console, epochs

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        parts = [f"Epoch {state.epoch}/{self.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs and not math.isnan(logs[key]):
                parts.append(f"{key}: {logs[key]:.4f}")
        parts += [f"lr: {logs['lr']:.2e}", f"{logs['seconds']:.1f}s"]
        self.console.print(" - ".join(parts), highlight=False)
        if state.stop:
            self.console.print(state.stop_reason, highlight=False)
