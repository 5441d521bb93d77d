"""`auto` in an experiment's train section, resolved before epoch 1 and kept.

train.batch_size: auto is train/batch_size.py's search (Keras's 32 off CUDA), on the stage that
trains the most parameters; train.optimizer.lr: auto is train/lr_find.py's range test on the
first stage, in batches of that size, its plot the run folder's lr_find.png. Both finders
restore model, optimiser and random state, so the run then trains exactly as one with those
numbers written in the file. They are recorded in every checkpoint (a resumed run uses them and
searches nothing again) and in manifest.json (auto_batch_size, lr_find). `cnnlab lr-find` runs
the same range test without a run (runs/preflight.py).

Out of device memory during training, an auto batch is halved and the run trains again from its
last complete epoch (runs/trained.py's fit_halving): an epoch is the unit a checkpoint and a
resume already restore exactly, where a restart mid-epoch would need the half-done epoch's
order, schedule and statistics replayed at another batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console

from cnnlab import runfiles
from cnnlab.atomic import atomic_path
from cnnlab.config import Experiment, StageConfig, TrainConfig
from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import CnnlabError
from cnnlab.runs.folder import RunFolder
from cnnlab.train import lr_find
from cnnlab.train.batch_size import CPU_BATCH, auto_batch_size, with_batch_size
from cnnlab.train.loop import Trainee
from cnnlab.train.lr_find import END, START, LRFind, find_lr, plot
from cnnlab.train.optim import KERAS_LR, base_lr
from cnnlab.train.stages import stage_trainee, stages_of

SAVED = "auto"  # the checkpoint's entry


@dataclass
class Tuned:
    """What the run's `auto` values became; numbers from the file pass through unchanged."""

    batch_size: int
    lr: float | None  # the finder's suggestion; None: train.optimizer.lr was not auto
    batch: dict[str, Any] | None = None  # how an auto batch was found and halved; None: not auto
    lr_find: dict[str, Any] | None = None  # the range test's record (LRFind.record)
    halvings: list[dict[str, int]] = field(default_factory=list)

    @property
    def halves(self) -> bool:
        """Out of memory halves only an auto batch: a number in the file is the experiment."""
        return self.batch is not None

    def experiment(self, cfg: Experiment) -> Experiment:
        """`cfg` with the numbers in place of auto (config.yaml keeps the file's auto)."""
        optimizer = cfg.train.optimizer
        if self.lr is not None:
            optimizer = optimizer.model_copy(update={"lr": self.lr})
        train = cfg.train.model_copy(update={"batch_size": self.batch_size, "optimizer": optimizer})
        return cfg.model_copy(update={"train": train})

    def halve(self, epoch: int, console: Console) -> int:
        """Half the batch after running out of memory in `epoch` (1-based); the new size."""
        if self.batch_size == 1:
            raise CnnlabError(
                f"out of device memory in epoch {epoch} with batches of 1; use smaller images "
                "(data.target_size) or a smaller model"
            )
        new = self.batch_size // 2
        self.halvings.append({"epoch": epoch, "from": self.batch_size, "to": new})
        since = f"the end of epoch {epoch - 1}" if epoch > 1 else "the start"
        console.print(
            f"Out of device memory in epoch {epoch} at batch size {self.batch_size}: halved to "
            f"{new}, training again from {since}",
            highlight=False,
        )
        self.batch_size = new
        return new

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's `auto` (train/callbacks.Checkpoint saves every part's)."""
        return {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "batch": self.batch,
            "lr_find": self.lr_find,
            "halvings": self.halvings,
        }

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> Tuned:
        return cls(**saved)

    def manifest(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.batch is not None:
            found["auto_batch_size"] = {
                **self.batch,
                "used": self.batch_size,
                "halved": self.halvings,
            }
        if self.lr_find is not None:
            found["lr_find"] = self.lr_find
        return found


def tune(
    cfg: Experiment,
    base: Trainee,
    train: DeviceBatches,
    device: torch.device,
    saved: dict[str, Any] | None,
    folder: RunFolder,
    console: Console,
) -> Tuned:
    """The run's auto values: from the checkpoint when resuming, else found now on `train` (the
    training split, on the device) and printed, the lr finder's plot written to the folder."""
    if saved is not None and SAVED in saved:  # resumed: what the run found when it began
        tuned = Tuned.from_saved(saved[SAVED])
        if tuned.halves or tuned.lr is not None:
            shown = "" if tuned.lr is None else f", lr {tuned.lr:.2e}"
            console.print(f"Recorded auto values: batch size {tuned.batch_size}{shown}")
        return tuned
    batch_size, lr = cfg.train.batch_size, cfg.train.optimizer.lr
    if batch_size != "auto" and lr != "auto":
        return Tuned(batch_size, None)
    size, record = choose_batch(cfg, base, train, device)
    tuned = Tuned(size, None, record)
    if record is not None:
        console.print(f"Batch size: auto -> {size} ({record['rule']})", highlight=False)
    if lr == "auto":
        result = sweep(cfg, base, with_batch_size(train, tuned.batch_size))
        with atomic_path(folder.file(runfiles.LR_FIND)) as temp:
            temp.write_bytes(plot(result))
        tuned.lr, tuned.lr_find = result.suggested, {**result.record(), "plot": runfiles.LR_FIND}
        console.print(result.line(), highlight=False)
    return tuned


def choose_batch(
    cfg: Experiment, base: Trainee, train: DeviceBatches, device: torch.device
) -> tuple[int, dict[str, Any] | None]:
    """(the batch size, its record when it was auto)."""
    if cfg.train.batch_size != "auto":
        return cfg.train.batch_size, None
    trainee = stage_trainee(base, hungriest(stages_of(cfg.model, cfg.train)), numbers(cfg), 1)
    size, rule = auto_batch_size(trainee, train, device)
    return size, {"found": size, "rule": rule, "device": str(device)}


def sweep(
    cfg: Experiment,
    base: Trainee,
    train: DeviceBatches,
    steps: int | None = None,
    start: float = START,
    end: float = END,
) -> LRFind:
    """The range test of the first stage's set-up (its trainable layers, the experiment's
    optimiser) over `train`'s batches, augmented as in training; `steps` None: lr_find.STEPS
    (read now, so a test can shorten every run's sweep)."""
    steps = steps or lr_find.STEPS
    first, train_cfg = stages_of(cfg.model, cfg.train)[0], numbers(cfg)
    trainee = stage_trainee(base, first, train_cfg, len(train))
    reference = first.lr or base_lr(train_cfg.optimizer)  # what stage_trainee built from
    return find_lr(trainee, train.epoch(0, steps), start, end, steps, reference)


def numbers(cfg: Experiment) -> TrainConfig:
    """`cfg.train` with auto replaced by placeholders the finders override: the lr by the sweep
    (each param group keeps its ratio to the first), the batch by each try."""
    optimizer = cfg.train.optimizer
    if optimizer.lr == "auto":
        optimizer = optimizer.model_copy(update={"lr": KERAS_LR[optimizer.name]})
    size = CPU_BATCH if cfg.train.batch_size == "auto" else cfg.train.batch_size
    return cfg.train.model_copy(update={"optimizer": optimizer, "batch_size": size})


def hungriest(stages: list[StageConfig]) -> StageConfig:
    """The stage that trains the most: gradients and optimiser state for the most parameters."""
    return max(
        stages, key=lambda stage: float("inf") if stage.unfreeze == "all" else stage.unfreeze
    )
