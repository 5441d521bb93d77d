"""The sweep's figures, drawn by Optuna's own matplotlib plots and returned as PNG bytes:
optimisation history, validation curves per trial, parameter importances, parallel
coordinates.

Optuna draws through pyplot, so each figure is closed once saved (no figure piles up in a
long session, none pops up in a notebook); on a machine without a display matplotlib uses
Agg, which is all savefig needs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from cnnlab.report.figures import png_bytes
from cnnlab.sweep.storage import optuna_module


def figures(study: Any, metric: str, complete: int, importances: bool, seed: int) -> dict[str, Any]:
    """name -> PNG bytes, or the sentence saying why that figure is not drawn."""
    plots = optuna_module().visualization.matplotlib
    evaluator = optuna_module().importance.FanovaImportanceEvaluator(seed=seed)
    wanted: dict[str, tuple[bool, str, Callable[[], Any]]] = {
        "history": (
            complete >= 1,
            "no complete trial yet",
            lambda: plots.plot_optimization_history(study, target_name=metric),
        ),
        "curves": (
            True,
            "",
            lambda: plots.plot_intermediate_values(study),
        ),
        "importances": (
            importances,
            "see the note on importances",
            lambda: plots.plot_param_importances(study, evaluator=evaluator, target_name=metric),
        ),
        "parallel": (
            complete >= 2,
            "needs two complete trials or more",
            lambda: plots.plot_parallel_coordinate(study, target_name=metric),
        ),
    }
    return {
        name: _draw(plot) if shown else reason for name, (shown, reason, plot) in wanted.items()
    }


def _draw(plot: Callable[[], Any]) -> bytes | str:
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # Optuna's matplotlib plots are marked experimental
        warnings.simplefilter("ignore")
        try:
            axes = plot()
        except (ValueError, RuntimeError) as err:  # a plot Optuna cannot draw from these trials
            return f"Optuna could not draw it: {err}"
    figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
    figure.set_size_inches(10, 4.8)
    try:
        return png_bytes(figure)
    finally:
        plt.close(figure)
