"""H2: a nan or inf validation loss with a finite training loss never becomes the kept weights;
training stops there, and diverged weights are refused with a message, not by scikit-learn."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from tests.runs.test_trained import assert_user_error, run_cli

import cnnlab
from cnnlab.config import EarlyStoppingConfig
from cnnlab.runs import trained
from cnnlab.train.callbacks import Callback, EarlyStopping, TrainState

# The recipe: SGD whose lr a step schedule multiplies by 1e30 each epoch, one step an
# epoch. Epoch 1 ends at lr 1e29: its one step already diverges the weights, but its training
# loss was measured before that step, so it is finite while the validation loss is nan.
DIVERGING = {
    "steps_per_epoch": 1,
    "optimizer": {"name": "sgd", "lr": 0.1},
    "schedule": {"name": "step", "step_epochs": 1, "gamma": 1e30},
}


class Snapshots(Callback):
    """The model's weights at the end of each epoch (after the run's own callbacks)."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.model: torch.nn.Module | None = None

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        assert self.model is not None
        self.weights[state.epoch] = {k: v.clone() for k, v in self.model.state_dict().items()}


def test_nan_validation_loss_keeps_the_last_finite_epochs_weights(digits_yaml, monkeypatch):
    """Epoch 1 is finite, epoch 2's validation loss is nan: model.safetensors holds epoch 1's
    weights, the run stops after epoch 2 saying why (not at epoch 3's nan training loss),
    and the test split is evaluated with the kept weights."""
    snapshots = Snapshots()
    build = trained.model_from_config

    def remembered(*args, **kwargs):
        snapshots.model = build(*args, **kwargs)
        return snapshots.model

    monkeypatch.setattr(trained, "model_from_config", remembered)
    config = digits_yaml(train={**DIVERGING, "epochs": 4})
    result = cnnlab.run(config, quiet=True, callbacks=[snapshots])

    history = (result.folder / "history.csv").read_text(encoding="utf-8").splitlines()
    assert len(history) == 1 + 2 and history[2].split(",")[3] == "nan"  # val_loss of epoch 2
    kept = load_file(str(result.folder / "model.safetensors"))
    assert all(kept[k].equal(v) for k, v in snapshots.weights[1].items())
    assert max(v.abs().max() for v in snapshots.weights[2].values()) > 1e20  # diverged
    manifest = json.loads((result.folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["best_epoch"] == 1 and manifest["stopped_early"]
    assert "validation loss became nan at epoch 2" in manifest["stop_reason"]
    assert math.isfinite(result.metrics["test"]["accuracy"])


def test_nan_validation_loss_from_the_first_epoch_exits_2_keeping_no_weights(digits_yaml):
    config = digits_yaml(train={**DIVERGING, "optimizer": {"name": "sgd", "lr": 1e30}})
    result = run_cli("run", str(config))
    assert_user_error(result, "no epoch gave a finite val_loss", "no weights were kept")
    folder = config.parent / "runs" / "digits"
    assert (folder / "history.csv").is_file()  # the record of what happened stays
    assert not (folder / "model.safetensors").exists()


def test_diverged_weights_without_validation_are_refused_naming_the_split(digits_yaml):
    """Without validation data the last weights are kept, whatever they are: their nan
    probabilities give a message, not scikit-learn's 'Input contains NaN'."""
    config = digits_yaml(
        train={**DIVERGING, "optimizer": {"name": "sgd", "lr": 1e30}},
        data={"validation_split": 0},
    )
    result = run_cli("run", str(config))
    assert_user_error(result, "non-finite probabilities", "of the train split", "diverged")
    assert "Input contains NaN" not in result.output


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_early_stopping_counts_a_non_finite_value_as_no_improvement(bad):
    stopping = EarlyStopping(EarlyStoppingConfig(patience=2))
    state = TrainState()
    stopping.on_train_begin(state)
    for epoch, value in enumerate([1.0, bad, bad], start=1):
        state.epoch = epoch
        stopping.on_epoch_end(state, {"val_loss": value})
    assert stopping.best == 1.0 and stopping.best_epoch == 1
    assert state.stop and "best at epoch 1" in state.stop_reason


def test_an_infinite_first_value_is_not_a_best():
    stopping = EarlyStopping(EarlyStoppingConfig(patience=5))
    state = TrainState(epoch=1)
    stopping.on_train_begin(state)
    stopping.on_epoch_end(state, {"val_loss": math.inf})
    assert stopping.best is None
