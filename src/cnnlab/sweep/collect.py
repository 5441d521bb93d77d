"""A sweep's study read back from its storage into sweep.json: every trial (state, values,
epochs, time, run folder, error), the best, and Optuna's parameter importances."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import cnnlab
from cnnlab.sweep.spec import Sweep
from cnnlab.sweep.storage import optuna_module, shown

SWEEP_JSON = "sweep.json"
# fANOVA fits a random forest on the complete trials: fewer than this tells nothing
MIN_IMPORTANCE_TRIALS = 4


def collect(sweep: Sweep, study: Any, url: str, trials_wanted: int) -> dict[str, Any]:
    optuna = optuna_module()
    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    rows = [_row(sweep, trial) for trial in trials]
    complete = [t for t in trials if t.state == states.COMPLETE]
    best = max(complete, key=lambda t: _sign(sweep) * t.value) if complete else None
    importances, note = importances_of(sweep, study, len(complete))
    count = {name.lower(): sum(r["state"] == name for r in rows) for name in _STATE_NAMES}
    return {
        "sweep": sweep.name,
        "file": str(sweep.path),
        "folder": str(sweep.folder),
        "storage": shown(url),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cnnlab": cnnlab.__version__,
        "optuna": optuna.__version__,
        "metric": sweep.spec.metric,
        "direction": sweep.direction,
        "sampler": sweep.spec.sampler,
        "seed": sweep.spec.seed,
        "pruner": sweep.spec.pruner.model_dump(mode="json"),
        "space": {key: p.model_dump(mode="json") for key, p in sweep.spec.space.items()},
        "trials_wanted": trials_wanted,
        "counts": {**count, "finished": count["complete"] + count["pruned"]},
        "best": None if best is None else next(r for r in rows if r["number"] == best.number),
        "importances": importances,
        "importance_note": note,
        "trials": rows,
    }


_STATE_NAMES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _row(sweep: Sweep, trial: Any) -> dict[str, Any]:
    attrs = trial.user_attrs
    folder = sweep.trial_folder(trial.number)
    report = folder / "report.html"
    start, end = trial.datetime_start, trial.datetime_complete
    # complete: the objective; pruned: its run's evaluation at the stop (Optuna keeps none)
    value = trial.value if trial.value is not None else attrs.get("value")
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(trial.params),
        "value": _finite(value),
        "epochs": attrs.get("epochs", len(trial.intermediate_values)),
        "pruned_at": max(trial.intermediate_values) if trial.state.name == "PRUNED" else None,
        "seconds": (end - start).total_seconds() if start and end else None,
        "folder": attrs.get("folder") if folder.is_dir() else None,
        "report": f"{folder.name}/report.html" if report.is_file() else None,
        "host": attrs.get("host"),
        "error": attrs.get("error"),
        "surplus": bool(attrs.get("surplus")),
        "curve": {str(step): _finite(v) for step, v in sorted(trial.intermediate_values.items())},
    }


def importances_of(sweep: Sweep, study: Any, complete: int) -> tuple[dict[str, float] | None, str]:
    """Optuna's fANOVA importances (seeded by the sweep's seed), or why there are none."""
    optuna = optuna_module()
    if len(sweep.spec.space) < 2:
        return None, "one parameter only: nothing to rank it against"
    if complete < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"needs {MIN_IMPORTANCE_TRIALS} complete trials or more (has {complete}); pruned "
            "and failed trials do not count"
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=sweep.spec.seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as err:  # e.g. a parameter with one value only
        return None, f"Optuna could not rank them: {err}"
    note = "fANOVA over the complete trials (Optuna's default evaluator); they sum to 1"
    return {key: float(value) for key, value in found.items()}, note


def _sign(sweep: Sweep) -> float:
    return 1.0 if sweep.direction == "maximize" else -1.0


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
