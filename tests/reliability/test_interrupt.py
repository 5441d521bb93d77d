"""Ctrl-C during a run: the library raises RunInterrupted (a KeyboardInterrupt) naming the epoch
its checkpoint holds; the CLI says how to continue and exits 130, as shells expect of SIGINT."""

from __future__ import annotations

import pytest
from tests.runs.test_trained import run_cli

import cnnlab
from cnnlab.errors import RunInterrupted
from cnnlab.train import loop
from cnnlab.train.callbacks import Callback, TrainState


class CtrlC(Callback):
    """Presses Ctrl-C as epoch `at` (numbered from 1) begins."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_begin(self, state: TrainState, epoch: int) -> None:
        if epoch + 1 == self.at:
            raise KeyboardInterrupt


def test_ctrl_c_in_epoch_2_names_epoch_1_and_keeps_the_folder(digits_yaml):
    config = digits_yaml(train={"epochs": 3})
    with pytest.raises(RunInterrupted) as caught:
        cnnlab.run(config, quiet=True, callbacks=[CtrlC(at=2)])
    assert isinstance(caught.value, KeyboardInterrupt)  # callers catching Ctrl-C still do
    assert caught.value.epoch == 1
    folder = config.parent / "runs" / "digits"
    assert caught.value.folder == str(folder)
    assert (folder / "checkpoints" / "last.pt").is_file()


def test_the_cli_says_how_to_continue_and_exits_130(digits_yaml, monkeypatch):
    config = digits_yaml(train={"epochs": 2})
    train_epoch, calls = loop.train_epoch, []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", interrupted_in_epoch_2)
    result = run_cli("run", str(config), "--set", "train.epochs=2")

    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    expected = f"interrupted after epoch 1; continue with `cnnlab run {config} "
    assert expected + "--set=train.epochs=2 --resume`" in result.stderr


def test_ctrl_c_before_the_first_epoch_ends_says_so(digits_yaml, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    config = digits_yaml()
    result = run_cli("run", str(config))
    assert result.exit_code == 130
    assert f"before its first epoch ended; continue with `cnnlab run {config} --resume`" in (
        result.stderr
    )
