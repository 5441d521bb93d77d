"""The epoch's progress bar: running loss and accuracy, read from the device only when the bar
redraws them (time-based), never once per step."""

from __future__ import annotations

import io
import re

import pytest
import torch
from rich.console import Console
from rich.progress import Progress

from cnnlab import progress
from cnnlab.progress import REFRESH_S, progress_bar
from cnnlab.train.callbacks import TrainState
from cnnlab.train.loop import fit, train_epoch

from .test_loop import batches, make_trainee

FIGURES = re.compile(r"loss: (\d+\.\d{4}) - accuracy: (\d\.\d{4})")


class FakeClock:
    """Time that moves `tick` seconds each time it is read."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """A terminal console whose output the test reads."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    monkeypatch.setattr(progress, "_console", console)
    return out


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of a tensor's values into Python (a host synchronisation on a GPU)."""
    reads: list[str] = []
    for name in ("tolist", "item"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name):
            reads.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


@pytest.fixture
def redraws(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The figures text of each time the bar was given new figures."""
    shown: list[str] = []
    original = Progress.update

    def update(self, task, **fields):
        if "figures" in fields:
            shown.append(fields["figures"])
        return original(self, task, **fields)

    monkeypatch.setattr(Progress, "update", update)
    return shown


def one_epoch(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    monkeypatch.setattr(progress, "_clock", clock)
    trainee, data = make_trainee(), batches(n=160, batch_size=4)  # 40 steps
    with progress_bar("Epoch 1/1", total=len(data)) as advance:
        return train_epoch(trainee, data.epoch(0, None), 0, advance)


def test_host_reads_are_bounded_by_redraws_not_steps(screen, syncs, redraws, monkeypatch):
    clock = FakeClock(tick=0.1)
    one_epoch(clock, monkeypatch)
    assert 1 <= len(redraws) <= clock.now / REFRESH_S  # the bar's rate, from the fake clock
    assert len(redraws) < 40 / 2  # fewer than one read every two steps
    assert len(syncs) == len(redraws) + 1  # one per redraw, and the epoch's own at the end


def test_a_bar_that_never_comes_due_reads_the_device_once_per_epoch(screen, syncs, monkeypatch):
    one_epoch(FakeClock(tick=0.0), monkeypatch)
    assert syncs == ["tolist"]  # the epoch's totals, read once at its end


def test_a_silent_bar_never_reads_the_figures(syncs, redraws, monkeypatch):
    monkeypatch.setattr(progress, "_console", Console(file=io.StringIO()))  # not a terminal
    one_epoch(FakeClock(tick=10.0), monkeypatch)
    assert syncs == ["tolist"] and redraws == []


def test_the_bar_shows_the_running_loss_and_accuracy(screen, monkeypatch):
    one_epoch(FakeClock(tick=0.1), monkeypatch)
    shown = FIGURES.findall(screen.getvalue())
    assert shown, screen.getvalue()[-500:]
    assert all(0.0 <= float(accuracy) <= 1.0 and float(loss) > 0 for loss, accuracy in shown)


def test_the_figures_are_the_epoch_so_far(screen, redraws, monkeypatch):
    logs = one_epoch(FakeClock(tick=REFRESH_S), monkeypatch)  # due at every step, the last too
    assert len(redraws) == 40
    loss, accuracy = FIGURES.fullmatch(redraws[-1]).groups()  # type: ignore[union-attr]
    assert float(loss) == pytest.approx(logs["loss"], abs=5e-5)
    assert float(accuracy) == pytest.approx(logs["accuracy"], abs=5e-5)


def test_figures_are_drawn_as_given_after_the_count(screen, monkeypatch):
    monkeypatch.setattr(progress, "_clock", FakeClock(tick=REFRESH_S))
    with progress_bar("Epoch 3/5", total=4) as advance:
        advance(1, lambda: {"loss": 0.5, "accuracy": 0.75})
    assert re.search(r"Epoch 3/5 .* 1/4 .* loss: 0\.5000 - accuracy: 0\.7500", screen.getvalue())


def test_fit_shows_the_figures_on_each_epochs_bar(screen, monkeypatch):
    monkeypatch.setattr(progress, "_clock", FakeClock(tick=0.2))
    fit(make_trainee(), batches(n=40), None, 2, None, [], TrainState())
    text = screen.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert FIGURES.search(text)
