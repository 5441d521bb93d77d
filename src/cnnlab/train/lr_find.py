"""The learning-rate range test (Leslie Smith's; fastai's `lr_find`, Lightning's tuner): train
for up to `steps` batches with the lr growing exponentially from `start` to `end`, record the
loss, stop when it diverges, suggest an lr, then put model, optimiser and random state back.

The rules, each as the anchors have it:
- smoothing: the loss's exponential moving average, beta 0.98, debiased (fastai and Lightning);
- divergence: stop once the smoothed loss exceeds 4x the best smoothed loss so far, or is not
  finite (both; fastai's `stop_div`, Lightning's `early_stop_threshold`);
- suggestion: the lr at the smoothed loss's minimum, divided by 10 (fastai's `minimum`), over
  fastai's window: the first tenth of the planned steps and the last 5 points left out.
  Lightning suggests the steepest descent instead. Both read the same smoothed curve; the
  minimum is a level, one point, where the slope is a difference of neighbouring points, noise
  where the curve is flat (why Lightning skips its first 10). A tenth of the minimum keeps clear
  of the divergence just beyond it. Measured on the digits (the tests' tiny network, Adam,
  batches of 64, 200 steps, seeds 0-3): minimum / 10 suggested 0.057-0.119, the steepest descent
  0.020-0.032; 5 epochs at lr 0.025 to 0.11 reached val accuracy 0.964-0.992 (seeds 0 and 1),
  within their seed spread of each other, Keras's 0.001 0.788 (seed 0).

Every param group keeps its ratio to the lr the optimiser was built from (a transfer head's
groups, a backbone's lower lr, train.optimizer.groups' own), so the suggestion is that lr:
what train.optimizer.lr sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cnnlab.progress import progress_bar
from cnnlab.train.loop import Trainee
from cnnlab.train.probe import restore, snapshot, train_step

if TYPE_CHECKING:
    from matplotlib.figure import Figure

START, END = 1e-7, 10.0  # fastai's lr_find range (Lightning's: 1e-8 to 1)
# Both anchors sweep in 100 steps; the smoothed loss trails the last ~50 (beta 0.98): 4 of the
# 8 decades at 100 steps, 2 at 200. On the digits (as above, seeds 0-3) minimum / 10 suggested
# 0.089-0.187 in 100 steps, 0.057-0.119 in 200; 5 epochs at 0.187 reached val accuracy 0.947,
# at 0.068 0.975 (seed 0).
STEPS = 200
BETA = 0.98  # the smoothing of both anchors: about the last 50 steps
DIVERGES = 4.0  # smoothed loss above 4x its best so far: stop (both anchors)
SKIP_END = 5  # fastai leaves out the last 5 points (the divergence) when it suggests
RULE = "minimum of the smoothed loss / 10; stop above 4x its best"


@dataclass(frozen=True)
class LRFind:
    lrs: list[float]  # the swept lr at each step taken (the base of every param group's)
    losses: list[float]  # each step's training loss
    smoothed: list[float]
    suggested: float
    minimum: int  # index of the smoothed loss's minimum in the window
    planned: int  # steps asked for; fewer were taken when the loss diverged
    start: float
    end: float

    @property
    def diverged(self) -> bool:
        return len(self.lrs) < self.planned

    @property
    def stopped(self) -> str:
        if self.diverged:
            return f"the smoothed loss diverged at lr {self.lrs[-1]:.2e}"
        return f"reached lr {self.lrs[-1]:.2e}"

    def record(self) -> dict[str, Any]:
        """manifest.json's lr_find."""
        return {
            "suggested": self.suggested,
            "rule": RULE,
            "steps": len(self.lrs),
            "planned_steps": self.planned,
            "start": self.start,
            "end": self.end,
            "minimum_lr": self.lrs[self.minimum],
            "stopped": self.stopped,
        }

    def line(self) -> str:
        return (
            f"Learning-rate finder: lr {self.suggested:.2e} ({RULE}), {len(self.lrs)} steps "
            f"from {self.start:.0e}: {self.stopped}"
        )


def find_lr(
    trainee: Trainee,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    start: float = START,
    end: float = END,
    steps: int = STEPS,
    base: float | None = None,
) -> LRFind:
    """The range test on `trainee` (with its optimiser) over the first `steps` of `batches`
    (augmented as in training); `trainee` is restored bitwise afterwards. `base`: the lr the
    optimiser's groups were built from, which the sweep stands for (each group keeps its ratio
    to it); None: the first group's."""
    if not 0 < start < end or steps < 2:
        raise ValueError(f"the sweep needs 0 < start < end and 2 steps or more; got {start}, {end}")
    optimizer = trainee.optimizer
    assert optimizer is not None, "the learning-rate finder needs a trainee with an optimiser"
    groups = optimizer.param_groups
    base = groups[0]["lr"] if base is None else base
    ratios = [group["lr"] / base for group in groups]
    schedule = np.geomspace(start, end, steps)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    saved = snapshot(trainee)
    try:
        trainee.model.train()
        average, best = 0.0, math.inf
        with progress_bar("Learning-rate finder", total=steps) as advance:
            for step, (lr, (images, labels)) in enumerate(zip(schedule, batches, strict=False)):
                for group, ratio in zip(groups, ratios, strict=True):
                    group["lr"] = float(lr) * ratio
                loss = float(train_step(trainee, images, labels))  # the rule needs it each step
                average = BETA * average + (1 - BETA) * loss
                smooth = average / (1 - BETA ** (step + 1))
                lrs.append(float(lr))
                losses.append(loss)
                smoothed.append(smooth)
                advance(1)
                if not math.isfinite(smooth) or smooth > DIVERGES * best:
                    break
                best = min(best, smooth)
    finally:
        restore(trainee, saved)
    if not lrs:
        raise ValueError("the learning-rate finder got no training batches")
    suggested, minimum = suggest(lrs, smoothed, steps)
    return LRFind(lrs, losses, smoothed, suggested, minimum, steps, start, end)


def suggest(lrs: list[float], smoothed: list[float], planned: int) -> tuple[float, int]:
    """(the lr at the smoothed loss's minimum / 10, that minimum's index), over fastai's
    window; all finite points when the window holds none."""
    values = np.asarray(smoothed, dtype=float)
    values[~np.isfinite(values)] = np.inf
    first, last = planned // 10, len(values) - SKIP_END
    window = values[first:last] if last > first else values
    offset = first if last > first else 0
    index = offset + int(np.argmin(window))
    return lrs[index] / 10, index


def plot(result: LRFind) -> bytes:
    """PNG of `figure`."""
    import io

    buffer = io.BytesIO()
    figure(result).savefig(buffer, format="png", dpi=110, facecolor="white")
    return buffer.getvalue()


def figure(result: LRFind) -> Figure:
    """Loss against lr on a log axis, raw and smoothed, the minimum and the suggestion marked,
    the rule in the title (matplotlib's object API: no pyplot, no display needed)."""
    from matplotlib.figure import Figure

    drawn = Figure(figsize=(7, 4.2), layout="constrained")
    ax = drawn.subplots()
    ax.plot(result.lrs, result.losses, color="#1f77b4", alpha=0.3, lw=1, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="#1f77b4", lw=2, label="smoothed (EMA, 0.98)")
    lowest = result.lrs[result.minimum]
    ax.axvline(lowest, color="#7f7f7f", ls=":", label=f"minimum: {lowest:.2e}")
    ax.axvline(
        result.suggested, color="#d62728", ls="--", label=f"suggested: {result.suggested:.2e}"
    )
    ax.set_xscale("log")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite and finite[0] > 0:  # the divergence would squash the rest: up to 2x the start
        bottom = min([0.0, *finite, *(v for v in result.losses if math.isfinite(v))])
        ax.set_ylim(bottom, finite[0] * 2)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"Learning-rate finder: {RULE}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return drawn
