"""Checkpoints under faults: a save failing midway keeps the previous checkpoint whole (Lightning's
atomic-save test); a damaged latest checkpoint falls back to the previous one, naming the file
(Keras's BackupAndRestore), and the resumed run is still bitwise the uninterrupted one; cnnlab's
own words for an unreadable file, never PyTorch's advice to unpickle it; and the small items of
the same family (the lr history.csv logs, the nan message's --resume)."""

from __future__ import annotations

import contextlib
import errno
import fractions
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from tests.reliability.conftest import assert_same_result, history_without_seconds
from tests.runs.test_trained import assert_user_error, run_cli

import cnnlab
from cnnlab.errors import CnnlabError, RunInterrupted
from cnnlab.train import checkpoint
from cnnlab.train.callbacks import Callback, TrainState
from cnnlab.train.checkpoint import read_checkpoint
from cnnlab.train.loop import NonFiniteLoss

# Three epochs of two steps on 200 digits: a couple of seconds a run
TRAIN = {
    "epochs": 3,
    "batch_size": 32,
    "steps_per_epoch": 2,
    "optimizer": {"name": "adam"},
    "deterministic": True,
}
DATA = {"max_per_class": 20}
FULL_DATA = {
    "source": "digits",
    "color_mode": "grayscale",
    "validation_split": 0.2,
    "test_split": 0.2,
    **DATA,
}
RECORD = ("config.yaml", "health.json", "split.csv", "normalization.json", "summary.txt")


@contextlib.contextmanager
def determinism_kept() -> Iterator[None]:
    """A module fixture's run leaves torch's global determinism as it found it (the per-test
    fixture does not reach module fixtures)."""
    before = torch.are_deterministic_algorithms_enabled()
    flags = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, train_digits) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    return train_digits(root, train=TRAIN, data=FULL_DATA, report={"interpret": False})


class StopAfter(Callback):
    """Ctrl-C once epoch `epoch` is checkpointed (after the run's own callbacks)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def stopped_after_2(tmp_path_factory) -> Path:
    """A run interrupted after epoch 2: last.pt holds epoch 2, previous.pt epoch 1."""
    from tests.conftest import write_digits_config

    root = tmp_path_factory.mktemp("stopped")
    config = write_digits_config(
        root / "digits.yaml", train=TRAIN, data=FULL_DATA, report={"interpret": False}
    )
    with pytest.MonkeyPatch.context() as patch, determinism_kept():
        patch.setenv("CNNLAB_CACHE", str(root / "cache"))
        with pytest.raises(RunInterrupted):
            cnnlab.run(config, output_dir=root / "runs", quiet=True, callbacks=[StopAfter(2)])
    return root / "runs" / "digits"


def epoch_of(path: Path) -> int:
    return read_checkpoint(path)["state"]["epoch"]


def test_a_save_failing_midway_keeps_the_previous_checkpoint_whole(
    tmp_path, digits_yaml, uninterrupted, monkeypatch
):
    save, saves = torch.save, []

    def disk_full_in_epoch_3(state, file, *args, **kwargs):
        saves.append(file)
        if len(saves) < 3:
            return save(state, file, *args, **kwargs)
        whole = io.BytesIO()
        save(state, whole)
        file.write(whole.getvalue()[: len(whole.getvalue()) // 2])  # the disk fills halfway
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", disk_full_in_epoch_3)
    config = digits_yaml(train=TRAIN, data=DATA)
    result = run_cli("run", str(config))

    message = "could not save the checkpoint of epoch 3 (No space left on device)"
    assert_user_error(result, message, "last.pt still holds epoch 2", "--resume")
    folder = tmp_path / "runs" / "digits"
    assert epoch_of(folder / "checkpoints" / "last.pt") == 2
    assert epoch_of(folder / "checkpoints" / "previous.pt") == 1
    assert not list(folder.rglob(".*.tmp"))  # the half-written file went with the failure

    monkeypatch.undo()  # space again: the run continues from epoch 2 to the same result
    resumed = run_cli("run", str(config), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_result(folder, uninterrupted)


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "junk":
        path.write_bytes(os.urandom(4096))
    else:  # a checkpoint holding a Python object: weights_only refuses it
        torch.save({"model": {}, "state": {}, "rng": {}, "x": fractions.Fraction(1, 3)}, path)


@pytest.mark.parametrize("how", ["truncated", "junk", "pickled object"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, digits_yaml, stopped_after_2, uninterrupted, how
):
    folder = tmp_path / "runs" / "digits"
    shutil.copytree(stopped_after_2, folder)
    last = folder / "checkpoints" / "last.pt"
    damage(last, how)

    result = run_cli("run", str(digits_yaml(train=TRAIN, data=DATA)), "--resume")

    assert result.exit_code == 0, result.output
    output = result.output
    assert f"warning: {last}: not a readable cnnlab checkpoint" in output
    assert "resuming from" in output and "previous.pt (epoch 1), one epoch earlier" in output
    assert "weights_only" not in output  # PyTorch's advice to unpickle it is not given
    assert_same_result(folder, uninterrupted)  # epoch 2 replayed: the same bits


def test_no_readable_checkpoint_exits_2_naming_both_and_rewrites_nothing(
    tmp_path, digits_yaml, stopped_after_2
):
    folder = tmp_path / "runs" / "digits"
    shutil.copytree(stopped_after_2, folder)
    damage(folder / "checkpoints" / "last.pt", "truncated")
    damage(folder / "checkpoints" / "previous.pt", "pickled object")
    before = {name: (folder / name).read_bytes() for name in RECORD}

    result = run_cli("run", str(digits_yaml(train=TRAIN, data=DATA)), "--resume")

    assert_user_error(result, "no readable checkpoint", "last.pt: not a", "previous.pt: not a")
    assert "cut short" in result.stderr and "never unpickles" in result.stderr
    assert "weights_only" not in result.stderr
    assert {name: (folder / name).read_bytes() for name in RECORD} == before


def test_a_damaged_last_checkpoint_never_replaces_the_previous_one(tmp_path):
    """The next save after a fallback keeps the good previous.pt, not the damaged file."""
    folder = tmp_path
    checkpoint.save_state(folder, {"state": {"epoch": 1}, "model": {}, "rng": {}})
    checkpoint.save_state(folder, {"state": {"epoch": 2}, "model": {}, "rng": {}})
    damage(folder / "checkpoints" / "last.pt", "truncated")
    checkpoint.save_state(folder, {"state": {"epoch": 3}, "model": {}, "rng": {}})
    assert epoch_of(folder / "checkpoints" / "last.pt") == 3
    assert epoch_of(folder / "checkpoints" / "previous.pt") == 1
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["last.pt", "previous.pt"]


# --- the small items ------------------------------------------------------------------------------


def test_history_logs_the_lr_each_epoch_used_under_a_step_schedule(tmp_path, digits_yaml):
    schedule = {"name": "step", "step_epochs": 1, "gamma": 0.5}
    train = {**TRAIN, "optimizer": {"name": "adam", "lr": 0.01}, "schedule": schedule}
    result = run_cli("run", str(digits_yaml(train=train, data=DATA)))
    assert result.exit_code == 0, result.output
    rows = history_without_seconds(tmp_path / "runs" / "digits")
    assert [float(row["lr"]) for row in rows] == [0.01, 0.005, 0.0025]  # not 0.005, 0.0025, ...
    assert "lr: 1.00e-02" in result.output  # the epoch line agrees


def test_a_nan_in_the_first_epoch_does_not_suggest_resume(digits_yaml):
    train = {**TRAIN, "optimizer": {"name": "sgd", "lr": 1e38}}
    result = run_cli("run", str(digits_yaml(train=train, data=DATA)))
    assert_user_error(result, "non-finite", "epoch 1, step")
    assert "--resume" not in result.stderr  # no checkpoint to resume from


def test_a_nan_after_a_checkpoint_names_the_epoch_resume_continues_from():
    message = str(NonFiniteLoss(epoch=3, step=2))
    assert "epoch 3, step 2" in message and "epoch 2's checkpoint is kept" in message
    assert "--resume" in message


def test_a_disk_error_saving_the_weights_says_how_to_go_on(tmp_path, monkeypatch):
    def full(tensors, path):
        raise SafetensorError("Error while serializing: I/O error: No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    model, weights = torch.nn.Linear(2, 2), tmp_path / "model.safetensors"
    with pytest.raises(CnnlabError) as before_any:
        checkpoint.save_weights(model, weights)
    assert "could not save the weights (No space left on device)" in str(before_any.value)
    assert str(before_any.value).endswith("then run again")
    checkpoint.save_state(tmp_path, {"state": {"epoch": 4}, "model": {}, "rng": {}})
    with pytest.raises(CnnlabError) as after_4:
        checkpoint.save_weights(model, weights)
    assert "last.pt still holds epoch 4" in str(after_4.value) and "--resume" in str(after_4.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]  # no temporary file
