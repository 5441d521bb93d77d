"""Learning curves in words: what a run's history says, with its numbers, and what to try next.

`diagnose(history)` reads the columns `runfiles.read_history` returns (loss, accuracy, val_loss,
val_accuracy, ... one float per epoch, NaN where nothing was logged) and returns findings:

  overfitting      validation loss past its minimum and staying up while training loss falls
  underfitting     training accuracy below UNDERFIT_ACCURACY and flat over the last epochs
  instability      validation accuracy or loss zig-zags, by a lot relative to its level
  still_improving  the monitored loss (val_loss, else loss) still falling at the last epoch
  healthy          none of the above
  too_few_epochs   fewer than MIN_EPOCHS epochs: nothing to judge

They are hints read off the curves, shown under them on the report page, not a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_EPOCHS = 3  # a trend needs at least two epoch-to-epoch steps

# Overfitting: the last RISE_EPOCHS validation losses all at least RISE_FRACTION above the
# minimum. 10 % is beyond the epoch-to-epoch noise of a validation loss near its best, and
# asking it of two epochs in a row means one bad epoch at the end is not called a trend.
RISE_FRACTION = 0.10
RISE_EPOCHS = 2

# Underfitting: a CNN with enough capacity fits its own training images well past 90 %; a
# curve that stays below that and moved less than PLATEAU_CHANGE (2 points) over the last
# PLATEAU_EPOCHS is not going to get there by training longer.
UNDERFIT_ACCURACY = 0.90
PLATEAU_EPOCHS = 3
PLATEAU_CHANGE = 0.02

# Instability: a smooth curve rarely turns; pure noise turns about 2 of 3 steps. Called when at
# least half of the steps reverse direction and the reversals (the smaller of the two steps
# around each turn) average at least 5 % of the curve's median: more than evaluation noise.
ZIGZAG_MIN_EPOCHS = 5  # four steps: three chances to turn
ZIGZAG_FRACTION = 0.5
ZIGZAG_AMPLITUDE = 0.05
ZIGZAG_COLUMNS = {True: ("val_accuracy", "val_loss"), False: ("accuracy", "loss")}  # by has-val

# Still improving: the monitored loss is at its lowest at the last epoch and fell at least 5 %
# over the last IMPROVING_EPOCHS: more epochs would very likely lower it further.
IMPROVING_EPOCHS = 3
IMPROVING_FRACTION = 0.05

NAMES = {
    "loss": "training loss",
    "accuracy": "training accuracy",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
}


@dataclass(frozen=True)
class Finding:
    """One thing the curves show: `text` gives the numbers behind it, `advice` a next step."""

    kind: str  # overfitting, underfitting, instability, still_improving, healthy, too_few_epochs
    title: str
    text: str
    advice: str
    numbers: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict: non-finite numbers are left out (JSON has no NaN)."""
        numbers = {k: float(v) for k, v in self.numbers.items() if math.isfinite(v)}
        return {
            "kind": self.kind,
            "title": self.title,
            "text": self.text,
            "advice": self.advice,
            "numbers": numbers,
        }


@dataclass(frozen=True)
class _Curve:
    """One column's logged values and the epochs they belong to (NaN cells dropped)."""

    name: str
    epochs: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def at(self, epoch: float) -> float:
        hit = np.flatnonzero(self.epochs == epoch)
        return float(self.values[hit[0]]) if len(hit) else math.nan


def diagnose(history: Mapping[str, Sequence[float]]) -> list[Finding]:
    """What the learning curves say; "healthy" alone when none of the problems shows."""
    curves = {name: _curve(history, name) for name in NAMES}
    loss = curves["loss"]
    if len(loss) < MIN_EPOCHS:
        return [_too_few(len(loss))]
    val = len(curves["val_loss"]) > 0
    checks = (
        _overfitting(curves),
        _underfitting(curves["accuracy"]),
        _instability([curves[n] for n in ZIGZAG_COLUMNS[val]]),
        _still_improving(curves["val_loss"] if val else loss),
    )
    return [finding for finding in checks if finding] or [_healthy(curves)]


def _curve(history: Mapping[str, Sequence[float]], name: str) -> _Curve:
    values = np.asarray(history.get(name, []), dtype=float)
    epochs = np.asarray(history.get("epoch", []), dtype=float)
    if len(epochs) != len(values) or not np.isfinite(epochs).all():
        epochs = np.arange(1, len(values) + 1, dtype=float)
    kept = np.isfinite(values)
    return _Curve(name, epochs[kept], values[kept])


def _overfitting(curves: dict[str, _Curve]) -> Finding | None:
    val, loss = curves["val_loss"], curves["loss"]
    if len(val) < MIN_EPOCHS:
        return None
    best = int(np.argmin(val.values))
    lowest, end = float(val.values[best]), float(val.values[-1])
    after = len(val) - 1 - best  # epochs since the minimum
    if after < RISE_EPOCHS or val.values[-RISE_EPOCHS:].min() < lowest * (1 + RISE_FRACTION):
        return None
    best_epoch, last_epoch = float(val.epochs[best]), float(val.epochs[-1])
    train_then, train_end = loss.at(best_epoch), loss.at(last_epoch)
    if not train_end < train_then:  # training loss rising too: not overfitting (and NaN-safe)
        return None
    rise = 100 * (end / lowest - 1)
    numbers = {
        "best_epoch": best_epoch,
        "best_val_loss": lowest,
        "final_val_loss": end,
        "rise_percent": rise,
        "train_loss_at_best": train_then,
        "final_train_loss": train_end,
    }
    text = (
        f"Validation loss is lowest at epoch {best_epoch:.0f} ({_n(lowest)}) and rises to "
        f"{_n(end)} by epoch {last_epoch:.0f} (+{rise:.0f} %) while training loss falls from "
        f"{_n(train_then)} to {_n(train_end)}"
    )
    text += _accuracy_end(curves, numbers) + "."
    advice = (
        "Stop sooner: train.early_stopping (monitor: val_loss) ends training once validation "
        f"stops improving, or set train.epochs to about {best_epoch:.0f}. Regularise: more "
        "augmentation (augment.preset: s0, s1 or s2, or keys such as augment.rotation_range, "
        "augment.horizontal_flip, augment.random_erasing), a Dropout layer before the dense head "
        "({Dropout: 0.5} in model.layers or model.head), weight decay "
        "(train.optimizer.weight_decay, e.g. with train.optimizer.name: adamw). With few images, "
        "start from pretrained weights (model.backbone with model.weights)."
    )
    return Finding("overfitting", "Overfitting", text, advice, numbers)


def _accuracy_end(curves: dict[str, _Curve], numbers: dict[str, float]) -> str:
    train, val = curves["accuracy"], curves["val_accuracy"]
    if not len(train) or not len(val):
        return ""
    a, b = float(train.values[-1]), float(val.values[-1])
    numbers |= {"final_accuracy": a, "final_val_accuracy": b, "accuracy_gap": a - b}
    return (
        f"; at the end training accuracy is {a:.2f} and validation accuracy {b:.2f} "
        f"(gap {a - b:.2f})"
    )


def _underfitting(accuracy: _Curve) -> Finding | None:
    if len(accuracy) < MIN_EPOCHS:
        return None
    window = accuracy.values[-PLATEAU_EPOCHS:]
    end, change = float(window[-1]), float(window.max() - window.min())
    if end >= UNDERFIT_ACCURACY or change >= PLATEAU_CHANGE:
        return None
    text = (
        f"Training accuracy ends at {end:.2f} and moved only {change:.3f} over the last "
        f"{len(window)} epochs: below {UNDERFIT_ACCURACY:.2f}, the model does not fit even its "
        "training images, and more of the same training will not change that."
    )
    advice = (
        "Give the model more capacity: a bigger model (more filters or layers in model.layers, "
        "or a pretrained model.backbone), a higher learning rate (train.optimizer.lr), more "
        "epochs (train.epochs), and less regularisation: lower Dropout rates, weaker "
        "augmentation (augment.preset, augment.mixup_alpha, augment.cutmix_alpha), less "
        "train.optimizer.weight_decay or train.label_smoothing."
    )
    numbers = {"final_accuracy": end, "plateau_change": change, "plateau_epochs": len(window)}
    return Finding("underfitting", "Underfitting", text, advice, numbers)


def _instability(candidates: list[_Curve]) -> Finding | None:
    for curve in candidates:
        if len(curve) < ZIGZAG_MIN_EPOCHS:
            continue
        steps = np.diff(curve.values)
        turns = steps[:-1] * steps[1:] < 0
        reversals = np.minimum(np.abs(steps[:-1]), np.abs(steps[1:]))[turns]
        level = float(np.median(np.abs(curve.values)))
        fraction = turns.sum() / len(turns)
        size = float(reversals.mean()) if len(reversals) else 0.0
        if fraction >= ZIGZAG_FRACTION and level > 0 and size >= ZIGZAG_AMPLITUDE * level:
            return _unstable(curve, int(turns.sum()), len(turns), size, level)
    return None


def _unstable(curve: _Curve, turns: int, steps: int, size: float, level: float) -> Finding:
    text = (
        f"{NAMES[curve.name].capitalize()} changes direction in {turns} of {steps} "
        f"epoch-to-epoch steps, by {_n(size)} on average ({100 * size / level:.0f} % of its "
        f"median {_n(level)}; called unstable from {100 * ZIGZAG_FRACTION:.0f} % of steps and "
        f"{100 * ZIGZAG_AMPLITUDE:.0f} %)."
    )
    advice = (
        "Lower the learning rate (train.optimizer.lr, e.g. by a factor of 3), let a schedule "
        "lower it over training (train.schedule.name: cosine, with train.schedule.warmup_epochs), "
        "or use a larger batch (train.batch_size) for less noisy steps. A small validation split "
        "is noisy by itself: a larger data.validation_split steadies its curve."
    )
    numbers = {
        "turns": turns,
        "steps": steps,
        "mean_reversal": size,
        "median": level,
        "relative_reversal": size / level,
    }
    return Finding("instability", f"Unstable {NAMES[curve.name]}", text, advice, numbers)


def _still_improving(monitored: _Curve) -> Finding | None:
    window = min(IMPROVING_EPOCHS, len(monitored) - 1)
    before, end = float(monitored.values[-1 - window]), float(monitored.values[-1])
    drop = (before - end) / before if before > 0 else 0.0
    if end > monitored.values.min() or drop < IMPROVING_FRACTION:
        return None
    name = NAMES[monitored.name]
    first_epoch, last_epoch = float(monitored.epochs[-1 - window]), float(monitored.epochs[-1])
    text = (
        f"{name.capitalize()} is still falling at the end: from {_n(before)} at epoch "
        f"{first_epoch:.0f} to {_n(end)} at epoch {last_epoch:.0f} (-{100 * drop:.0f} % over "
        f"the last {window} epochs), its lowest so far."
    )
    advice = (
        f"Train longer: raise train.epochs (e.g. to {2 * last_epoch:.0f}); `cnnlab run --resume` "
        "continues this run from its last checkpoint (only train.epochs may change)."
    )
    numbers = {"start": before, "final": end, "drop_percent": 100 * drop, "epochs": window}
    return Finding("still_improving", f"Still improving ({name})", text, advice, numbers)


def _healthy(curves: dict[str, _Curve]) -> Finding:
    loss, val = curves["loss"], curves["val_loss"]
    first, end = float(loss.values[0]), float(loss.values[-1])
    numbers = {"epochs": len(loss), "first_train_loss": first, "final_train_loss": end}
    text = f"Training loss falls from {_n(first)} to {_n(end)} over {len(loss)} epochs"
    if len(val):
        best = int(np.argmin(val.values))
        lowest, last = float(val.values[best]), float(val.values[-1])
        epoch = float(val.epochs[best])
        numbers |= {"best_epoch": epoch, "best_val_loss": lowest, "final_val_loss": last}
        text += (
            f"; validation loss is lowest at epoch {epoch:.0f} ({_n(lowest)}) and ends "
            f"at {_n(last)}"
        )
    accuracy = _accuracy_end(curves, numbers)
    if not accuracy and len(curves["accuracy"]):
        numbers["final_accuracy"] = float(curves["accuracy"].values[-1])
        accuracy = f"; at the end training accuracy is {numbers['final_accuracy']:.2f}"
    text += accuracy + ". No overfitting, underfitting, instability or unfinished descent shows."
    advice = (
        "Nothing in the curves asks for a change. Before comparing setups, repeat the run with "
        "other seeds (a study over seed) to see how much the numbers vary."
    )
    return Finding("healthy", "The curves look sound", text, advice, numbers)


def _too_few(epochs: int) -> Finding:
    text = f"{epochs} epoch(s) recorded; judging the curves needs at least {MIN_EPOCHS}."
    advice = "Train for more epochs (train.epochs) to see how the curves develop."
    return Finding("too_few_epochs", "Too few epochs to judge", text, advice, {"epochs": epochs})


def _n(value: float) -> str:
    """Three significant digits: 0.412, 0.05, 1.07, 12.3."""
    return f"{value:.3g}"
