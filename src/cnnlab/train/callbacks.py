"""Small callbacks with Keras's moments: keep the best weights, stop early, checkpoint, log."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cnnlab.config import EarlyStoppingConfig
from cnnlab.runfiles import write_history
from cnnlab.runtime import stream_seed
from cnnlab.train.checkpoint import rng_state, save_state, save_weights


@dataclass
class TrainState:
    """Everything the loop carries between epochs; saved in the checkpoint for --resume."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    # The epoch whose weights model.safetensors holds, and its monitored value: a record of
    # BestWeights's for the manifest; every monitoring callback keeps its own best.
    best_epoch: int = 0
    best: float | None = None
    stop: bool = False
    stop_reason: str = ""
    stage: int = 0  # index into the run's stages (model.stages)
    stage_starts: list[int] = field(default_factory=lambda: [0])  # epochs run before each

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> TrainState:
        """From a checkpoint's `state`; keys this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


class Callback:
    """Keras's moments. `logs` holds the epoch's loss, the task's statistics (accuracy), their
    val_ versions when there is validation data, lr and seconds. Setting `state.stop` ends
    training after this epoch."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState, epoch: int) -> None: ...

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


class Monitor(Callback):
    """Watches one logged value (Keras's MonitorCallback) and keeps its own best, replayed from
    the history whenever training begins, so a resumed run or a later stage continues it."""

    def __init__(self, monitor: str, min_delta: float = 0.0):
        self.monitor, self.min_delta = monitor, min_delta
        self.sign = 1.0 if monitor.endswith("loss") else -1.0  # lower loss, higher accuracy
        self.best: float | None = None
        self.best_epoch = 0

    def on_train_begin(self, state: TrainState) -> None:
        self.best, self.best_epoch = None, 0
        for number, logs in enumerate(state.history, start=1):
            self.improved(logs, int(logs.get("epoch", number)))

    def value(self, logs: dict[str, float]) -> float | None:
        """The monitored value, None when it was not logged (no validation data)."""
        return logs.get(self.monitor)

    def improved(self, logs: dict[str, float], epoch: int) -> bool:
        """Whether epoch `epoch`'s value beats the best by more than min_delta (then it is
        kept). A nan or inf never does: as in Lightning's ModelCheckpoint, a non-finite value
        ranks worst, so diverged weights are never the best."""
        value = self.value(logs)
        if value is None or not math.isfinite(value):
            return False
        if self.best is None or self.sign * (self.best - value) > self.min_delta:
            self.best, self.best_epoch = value, epoch
            return True
        return False


class BestWeights(Monitor):
    """Writes model.safetensors whenever the monitored value improves (Keras's
    ModelCheckpoint(save_best_only=True)); without validation data, the last epoch's weights."""

    def __init__(self, model: torch.nn.Module, path: Path, monitor: str, min_delta: float = 0.0):
        super().__init__(monitor, min_delta)
        self.model, self.path = model, path

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if self.value(logs) is None:
            save_weights(self.model, self.path)
        elif self.improved(logs, state.epoch):
            state.best, state.best_epoch = self.best, self.best_epoch
            save_weights(self.model, self.path)


class StopOnNonFinite(Callback):
    """Ends training after an epoch whose validation loss is nan or inf although the training
    loss was finite: the last steps diverged the weights (Lightning's EarlyStopping with
    check_finite; Keras's TerminateOnNaN watches the training loss, the loop's NonFiniteLoss).
    The best weights kept before it are evaluated."""

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        value = logs.get("val_loss")
        if value is None or math.isfinite(value):
            return
        state.stop = True
        kept = f"epoch {state.best_epoch}'s" if state.best_epoch else "no"
        state.stop_reason = (
            f"stopped: the validation loss became {value} at epoch {state.epoch} (the training "
            f"loss was finite): the weights diverged; {kept} weights are kept. Lower "
            "train.optimizer.lr or check the schedule and augment.rescale"
        )


class EarlyStopping(Monitor):
    def __init__(self, cfg: EarlyStoppingConfig):
        super().__init__(cfg.monitor, cfg.min_delta)
        self.patience = cfg.patience

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        self.improved(logs, state.epoch)
        if self.best is not None and state.epoch - self.best_epoch >= self.patience:
            state.stop = True
            state.stop_reason = (
                f"early stopping: no improvement for {self.patience} epochs "
                f"(best at epoch {self.best_epoch})"
            )


class HistoryCSV(Callback):
    """history.csv rewritten after every epoch, so a crashed run still shows its curves."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path, self.columns = path, columns

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        write_history(self.path, state.history, self.columns)


class RankRandomness(Callback):
    """torchrun with several processes: at each epoch's start, torch's own generators (Dropout's
    masks, drop path) are seeded from (seed, epoch, rank), so each process's slice of a batch
    draws its own masks, as one process's batch would, instead of every process repeating the
    same ones at the same positions; a resumed run draws them again. Not used by a plain run or
    a single process, which keep their one stream."""

    def __init__(self, seed: int, rank: int):
        self.seed, self.rank = seed, rank

    def on_epoch_begin(self, state: TrainState, epoch: int) -> None:
        key = f"cnnlab.rank_randomness:{self.seed}:{epoch}:{self.rank}"
        torch.manual_seed(stream_seed(key))  # every device's generator


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
        for key, value in logs.items():  # loss, the task's statistics, their val_ versions
            if key not in ("epoch", "lr", "seconds") and not math.isnan(value):
                parts.append(f"{key}: {value:.4f}")
        parts += [f"lr: {logs['lr']:.2e}", f"{logs['seconds']:.1f}s"]
        self.console.print(" - ".join(parts), highlight=False)
        if state.stop:
            self.console.print(state.stop_reason, highlight=False)
