"""The fit loop with its callbacks: early stopping keeps the best weights, checkpoints hold the
last complete epoch, and a non-finite loss stops the run naming the epoch and step."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from cnnlab.config import EarlyStoppingConfig
from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import CnnlabError
from cnnlab.runtime import select_device
from cnnlab.task.classification import Classification as Objective
from cnnlab.train.callbacks import (
    BestWeights,
    Callback,
    Checkpoint,
    EarlyStopping,
    EpochLine,
    TrainState,
)
from cnnlab.train.checkpoint import load_state
from cnnlab.train.loop import NonFiniteLoss, Trainee, fit

DEVICE = select_device("auto")  # the GPU when there is one


def make_trainee(lr: float = 0.1) -> Trainee:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)).to(DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return Trainee(model, optimizer, schedule, Objective(None, 2), lambda x: x.float() / 255)


def batches(n: int = 12, batch_size: int = 4) -> DeviceBatches:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n) % 2
    return DeviceBatches(images, labels, batch_size=batch_size, device=DEVICE)


class Scripted(Callback):
    """Plays a given val_loss per epoch and snapshots the weights, so tests know the best."""

    def __init__(self, model: torch.nn.Module, val_losses: list[float]):
        self.model, self.val_losses = model, val_losses
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        logs["val_loss"] = self.val_losses[state.epoch - 1]
        self.snapshots[state.epoch] = {
            k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
        }


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_early_stopping_stops_after_patience_epochs_and_keeps_the_best_weights(tmp_path: Path):
    trainee = make_trainee()
    script = Scripted(trainee.model, [1.0, 0.5, 0.6, 0.7, 0.1, 0.1])
    weights = tmp_path / "model.safetensors"
    callbacks = [
        script,
        BestWeights(trainee.model, weights, "val_loss"),
        EarlyStopping(EarlyStoppingConfig(patience=2)),
    ]
    state = fit(trainee, batches(), None, 6, None, callbacks, TrainState())

    assert state.epoch == 4 and len(state.history) == 4  # epochs 3 and 4 did not improve
    assert state.stop and state.best_epoch == 2 and state.best == 0.5
    assert "no improvement for 2 epochs" in state.stop_reason
    saved = load_file(str(weights))
    assert same_tensors(saved, script.snapshots[2])
    assert not same_tensors(saved, script.snapshots[4])  # the best, not the last


def test_improvement_smaller_than_min_delta_does_not_count(tmp_path: Path):
    trainee = make_trainee()
    script = Scripted(trainee.model, [1.0, 0.95, 0.5])
    stopping = EarlyStoppingConfig(patience=1, min_delta=0.1)
    callbacks = [
        script,
        BestWeights(trainee.model, tmp_path / "w.safetensors", "val_loss", stopping.min_delta),
        EarlyStopping(stopping),
    ]
    state = fit(trainee, batches(), None, 3, None, callbacks, TrainState())
    assert state.epoch == 2 and state.best_epoch == 1


def test_best_weights_monitor_val_accuracy_keeps_the_highest(tmp_path: Path):
    trainee = make_trainee()
    state = TrainState()
    best = BestWeights(trainee.model, tmp_path / "w.safetensors", "val_accuracy")
    for epoch, accuracy in enumerate([0.5, 0.8, 0.7], start=1):
        state.epoch = epoch
        best.on_epoch_end(state, {"val_accuracy": accuracy})
    assert (state.best, state.best_epoch) == (0.8, 2)


def test_without_validation_the_last_weights_are_kept(tmp_path: Path):
    trainee = make_trainee()
    weights = tmp_path / "model.safetensors"
    fit(trainee, batches(), None, 2, None, [BestWeights(trainee.model, weights, "")], TrainState())
    assert same_tensors(load_file(str(weights)), trainee.model.state_dict())


def test_fit_records_keras_history_with_validation_and_lr(tmp_path: Path):
    trainee = make_trainee()
    state = fit(trainee, batches(), batches(6), 2, None, [], TrainState())
    assert [row["epoch"] for row in state.history] == [1, 2]
    for row in state.history:
        assert set(row) == {
            "epoch",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "lr",
            "seconds",
        }
        assert 0.0 <= row["accuracy"] <= 1.0 and row["lr"] == 0.1


def test_steps_per_epoch_sets_the_number_of_steps():
    trainee = make_trainee()
    fit(trainee, batches(), None, 2, 5, [], TrainState())  # 3 batches per pass, 5 asked
    assert trainee.schedule.last_epoch == 10


def test_checkpoint_holds_the_last_complete_epoch(tmp_path: Path):
    trainee = make_trainee()
    parts = {"model": trainee.model, "optimizer": trainee.optimizer, "schedule": trainee.schedule}
    fit(trainee, batches(), None, 2, None, [Checkpoint(tmp_path, parts)], TrainState())
    saved = load_state(tmp_path)
    assert saved["state"]["epoch"] == 2 and len(saved["state"]["history"]) == 2
    assert same_tensors(saved["model"], trainee.model.state_dict())
    assert saved["schedule"]["last_epoch"] == 6
    assert torch.equal(saved["rng"]["torch"], torch.get_rng_state())


def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path: Path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CnnlabError, match=r"last\.pt: not a readable cnnlab checkpoint"):
        load_state(tmp_path)


def test_a_missing_checkpoint_is_named(tmp_path: Path):
    with pytest.raises(CnnlabError, match="no checkpoint to resume from"):
        load_state(tmp_path)


class NanAt(Objective):
    """Cross-entropy, except the training loss of step `step` (counted from 1 over the run)."""

    def __init__(self, step: int):
        super().__init__(None, 2)
        self.bad_step, self.calls = step, 0

    def loss(self, logits, labels, reduction="mean"):
        loss = super().loss(logits, labels, reduction)
        if reduction == "mean":
            self.calls += 1
            if self.calls == self.bad_step:
                return loss * float("nan")
        return loss


def test_non_finite_loss_stops_naming_epoch_and_step_after_the_last_good_checkpoint(
    tmp_path: Path,
):
    trainee = make_trainee()
    trainee.task = NanAt(step=3 + 2)  # 3 steps per epoch: epoch 2, step 2
    parts = {"model": trainee.model, "optimizer": trainee.optimizer, "schedule": trainee.schedule}
    state = TrainState()
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 2\b"):
        fit(trainee, batches(), None, 4, None, [Checkpoint(tmp_path, parts)], state)
    saved = load_state(tmp_path)
    assert saved["state"]["epoch"] == 1 and state.epoch == 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_exploding_lr_is_caught_as_a_non_finite_loss():
    trainee = make_trainee(lr=1e38)
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, step \d"):
        fit(trainee, batches(), None, 3, None, [], TrainState())


def test_epoch_line_is_one_keras_like_line():
    out = io.StringIO()
    line = EpochLine(Console(file=out, width=200), epochs=3)
    state = TrainState(epoch=2)
    logs = {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.7}
    line.on_epoch_end(state, {**logs, "lr": 1e-3, "seconds": 1.3})
    assert out.getvalue() == (
        "Epoch 2/3 - loss: 0.5000 - accuracy: 0.7500 - val_loss: 0.6000 - "
        "val_accuracy: 0.7000 - lr: 1.00e-03 - 1.3s\n"
    )
