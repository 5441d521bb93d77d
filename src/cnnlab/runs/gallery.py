"""The report's misclassified gallery: every mistake of the evaluated split counted (the
confusion matrix's off-diagonal sum), the first MAX_MISCLASSIFIED shown, by default the highest
loss first: the most confident mistakes, fastai's `plot_top_losses`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cnnlab.data.pipeline import Split

if TYPE_CHECKING:
    from cnnlab.report.view import Misclassified
    from cnnlab.runs.skeleton import Predicted  # skeleton imports this module


def shown_split(predicted: Predicted) -> str | None:
    """The split the report's gallery and interpretation show: test, else val."""
    return next((name for name in ("test", "val") if name in predicted), None)


def top_losses(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of every wrongly classified image, the highest loss (-log of the true class's
    probability) first, and those losses; ties keep file order."""
    wrong = np.flatnonzero(probabilities.argmax(1) != labels)
    picked = probabilities[wrong, labels[wrong]].astype(np.float64)
    losses = -np.log(np.clip(picked, 1e-12, None))
    order = np.argsort(-losses, kind="stable")
    return wrong[order], losses[order]


def gallery(split: Split, probabilities: np.ndarray, by_loss: bool) -> Misclassified:
    """The report's misclassified gallery: the first MAX_MISCLASSIFIED mistakes by loss (or in
    file order), with the count of them all, the confusion matrix's off-diagonal sum."""
    from cnnlab.report.view import MAX_MISCLASSIFIED, Misclassified  # matplotlib: when drawn

    wrong, losses = top_losses(split.labels, probabilities)
    if not by_loss:
        wrong = np.sort(wrong)  # file order
    shown = wrong[:MAX_MISCLASSIFIED]
    best = probabilities.argmax(1)
    return Misclassified(
        images=np.asarray(split.images[shown]),
        true=[split.classes[k] for k in split.labels[shown]],
        predicted=[split.classes[k] for k in best[shown]],
        confidence=[float(probabilities[i, best[i]]) for i in shown],
        paths=[split.paths[i] for i in shown],
        total=len(wrong),
        loss=[float(x) for x in losses[: len(shown)]] if by_loss else None,
        split=split.name,
    )
