"""One trial: sample the space, run the experiment into trial-NNNN/ as any `cnnlab run`, with a
callback that reports each epoch's metric to Optuna and stops the run when the pruner says so.

A pruned run still finishes as an ordinary run (evaluated with its kept weights, report
written); its trial is then recorded PRUNED. A user error (an invalid combination of sampled
values, bad data) fails the trial with its message in the trial's `error` attribute.
"""

from __future__ import annotations

import math
import socket
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console

from cnnlab import track
from cnnlab.atomic import write_text
from cnnlab.config import Experiment
from cnnlab.errors import CnnlabError, ConfigError, RunInterrupted
from cnnlab.sweep.spec import Param, Sweep
from cnnlab.train.callbacks import Callback, TrainState

if TYPE_CHECKING:
    import optuna


class TrialFailed(Exception):
    """The trial's run failed; its message is in the trial's `error` user attribute."""


class ReportToTrial(Callback):
    """Each epoch's `metric` to the trial (step = the epoch, from 1); `state.stop` when Optuna's
    pruner says this trial falls behind the others at the same epoch."""

    def __init__(self, trial: optuna.Trial, metric: str, pruner: str, epochs: int):
        self.trial, self.metric, self.pruner = trial, metric, pruner
        self.epochs = epochs  # the run's last epoch: a run that reached it is complete
        self.pruned_at: int | None = None
        self.last: float | None = None  # the last value reported
        self.reason = ""

    def on_train_begin(self, state: TrainState) -> None:
        if self.pruned_at is not None:  # a staged run's next stage: a pruned run stays stopped
            state.stop = True

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        value = logs.get(self.metric)
        if value is None:
            raise ConfigError(
                f"metric: {self.metric} was not logged at epoch {state.epoch}: the experiment "
                "has no validation data; set data.validation_split (e.g. 0.2)"
            )
        if not math.isfinite(value):  # a diverged epoch: the run's own guard stops it
            return
        self.trial.report(value, state.epoch)
        self.last = value
        if state.epoch < self.epochs and self.trial.should_prune():
            self.pruned_at = state.epoch
            state.stop = True
            state.stop_reason = self.reason = (
                f"pruned by the sweep ({self.pruner} pruner) after epoch {state.epoch}: "
                f"{self.metric} {value:.4f} fell behind the other trials at that epoch"
            )


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
    """The trial's value of every key of the space (Optuna names each parameter by its key)."""
    values: dict[str, Any] = {}
    for key, param in space.items():
        if param.type == "categorical":
            values[key] = trial.suggest_categorical(key, param.choices or [])
        elif param.type == "int":
            step = int(param.step or 1)
            low, high = int(param.low or 0), int(param.high or 0)
            values[key] = trial.suggest_int(key, low, high, step=step, log=param.log)
        else:
            low_f, high_f = float(param.low or 0), float(param.high or 0)
            values[key] = trial.suggest_float(key, low_f, high_f, step=param.step, log=param.log)
    return values


def run_trial(sweep: Sweep, trial: optuna.Trial, console: Console) -> float:
    """The trial's metric: its run's evaluated validation value (metrics.json). Raises
    optuna.TrialPruned when it was pruned, TrialFailed when its run failed."""
    import optuna

    from cnnlab.runs import run

    clock = time.perf_counter()
    folder = sweep.trial_folder(trial.number)
    trial.set_user_attr("folder", folder.name)
    trial.set_user_attr("host", socket.gethostname())
    params = suggest(trial, sweep.spec.space)
    try:
        experiment = sweep.experiment(params, f"trial {trial.number}")
        reporter = ReportToTrial(
            trial, sweep.spec.metric, sweep.spec.pruner.name, epochs_of(experiment)
        )
        with track.child(trial=trial.number):  # a tracked sweep's trial: a nested MLflow run
            result = run(experiment, folder, callbacks=[reporter], quiet=True)
    except RunInterrupted as stop:  # Ctrl-C: Optuna records FAIL; the folder can be resumed
        trial.set_user_attr("error", f"interrupted (Ctrl-C) after epoch {stop.epoch}")
        trial.set_user_attr("interrupted", True)
        raise
    except CnnlabError as err:
        _fail(trial, str(err), console)
    except Exception as err:  # a bug or out-of-memory: the trace beside the trial's folder
        trace = folder.parent / f"{folder.name}.error.txt"
        write_text(trace, traceback.format_exc())
        _fail(trial, f"{type(err).__name__}: {err} (traceback: {trace})", console)
    value = evaluated(result.metrics, sweep.spec.metric, reporter.last)
    epochs = int(result.manifest.get("epochs_run") or 0)
    trial.set_user_attr("value", value)
    trial.set_user_attr("epochs", epochs)
    seconds = time.perf_counter() - clock
    state = f"pruned after epoch {reporter.pruned_at}" if reporter.pruned_at else "complete"
    console.print(
        f"trial {trial.number}: {state}, {sweep.spec.metric} {value:.4f}, {epochs} epochs, "
        f"{seconds:.1f} s  {_params_text(params)}",
        highlight=False,
        markup=False,
    )
    if not math.isfinite(value):
        _fail(trial, f"{sweep.spec.metric} is {value}: the run diverged (see {folder})", console)
    if reporter.pruned_at is not None:
        raise optuna.TrialPruned(reporter.reason)
    return value


def epochs_of(experiment: Experiment) -> int:
    """The epochs a run trains when nothing stops it (its stages' together), as runs/trained."""
    from cnnlab.train.stages import stages_of

    return sum(stage.epochs for stage in stages_of(experiment.model, experiment.train))


def evaluated(metrics: dict[str, Any], metric: str, last: float | None) -> float:
    """`val_accuracy` -> metrics.json's val accuracy (the kept weights, evaluated); a value the
    evaluation does not hold falls back to the last one an epoch reported."""
    split, _, name = metric.partition("_")
    value = (metrics.get(split) or {}).get(name)
    if isinstance(value, int | float):
        return float(value)
    return math.nan if last is None else last


def _fail(trial: optuna.Trial, message: str, console: Console) -> NoReturn:
    trial.set_user_attr("error", message)
    line = message.replace("\n  ", "; ")  # a validation error's key lines, on one line
    console.print(f"trial {trial.number}: failed: {line}", highlight=False, markup=False)
    raise TrialFailed(message)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
