"""A cnnlab run as an MLflow run: params when it starts (before any data is read), each epoch's
history.csv values at step = epoch, the split metrics and the run's files at the end, and the
MLflow status of how it ended: FINISHED, FAILED (an error) or KILLED (Ctrl-C).

The run folder's tracking.json names the MLflow run, so `--resume` (and a study run again)
continues the same one. It is written once config.yaml is there (when training begins, or at
the end of a run without epochs): a folder killed while its data was read must still look
like one, which `--resume` starts again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from cnnlab import __version__, runfiles
from cnnlab.config import Experiment, MlflowConfig
from cnnlab.track.nesting import Parent, current, within
from cnnlab.track.store import (
    MlflowRun,
    connect,
    continue_run,
    default_uri,
    experiment_id,
    start_run,
)
from cnnlab.track.values import epoch_metrics, final_metrics, params_of
from cnnlab.train.callbacks import Callback, TrainState

DEFAULT_EXPERIMENT = "cnnlab"  # a run's MLflow experiment when tracking.mlflow.experiment is unset
# what a finished run's MLflow run holds of its folder (those that the kind of run wrote)
ARTIFACTS = (
    runfiles.REPORT,
    runfiles.WEIGHTS,
    runfiles.CLASSIFIER,
    runfiles.CLASSIFIER_INFO,
    runfiles.CONFIG,
    runfiles.MANIFEST,
    runfiles.METRICS,
    runfiles.HISTORY,
)
ERROR_TAG_LENGTH = 2000  # of the error message kept as the tag cnnlab.error


class Tracker:
    """What a run gives its tracker: `callbacks` join the run's own, `finish` gets the metrics
    once the run's files are written. This one tracks nothing (no tracking: section)."""

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []

    def finish(self, metrics: dict[str, Any]) -> None:
        return None


class MlflowTracker(Tracker):
    def __init__(self, run: MlflowRun, folder: Path):
        super().__init__()
        self.run, self.folder = run, folder
        self.callbacks.append(EpochMetrics(run, self.save))

    def save(self) -> None:
        save(self.run, self.folder)

    def finish(self, metrics: dict[str, Any]) -> None:
        self.save()
        self.run.log_metrics(final_metrics(metrics), step=0)
        self.run.log_artifacts(self.folder / name for name in ARTIFACTS)


class EpochMetrics(Callback):
    """Each epoch's logged values at step = epoch. When training begins (again, in a resumed
    run or a later stage), epochs of the history the MLflow run lacks are logged first: a kill
    between the checkpoint and this callback leaves none out."""

    def __init__(self, run: MlflowRun, begun: Callable[[], None]):
        self.run, self.begun = run, begun
        self.logged: int | None = None  # the last epoch the MLflow run holds

    def on_train_begin(self, state: TrainState) -> None:
        self.begun()
        if self.logged is None:
            first = epoch_metrics(state.history[-1]) if state.history else {}
            self.logged = self.run.last_step(next(iter(first))) if first else 0
        for number, logs in enumerate(state.history, start=1):
            epoch = int(logs.get("epoch", number))
            if epoch > self.logged:
                self.on_epoch(logs, epoch)

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        self.on_epoch(logs, state.epoch)

    def on_epoch(self, logs: dict[str, float], epoch: int) -> None:
        self.run.log_metrics(epoch_metrics(logs), step=epoch)
        self.logged = max(self.logged or 0, epoch)


@contextmanager
def tracked(cfg: Experiment, folder: Path, resume: bool, console: Console) -> Iterator[Tracker]:
    """The run into `folder` tracked as `cfg.tracking` says (a plain Tracker without it; MLflow
    is then never imported). The store is opened and the params logged on entering, before
    any data is read: an unusable store is a ConfigError then. With `resume`, the MLflow run
    of the folder's tracking.json continues."""
    settings = cfg.tracking.mlflow if cfg.tracking is not None else None
    if settings is None:
        yield Tracker()
        return
    run = open_run(settings, folder, DEFAULT_EXPERIMENT, resume, console)
    run.log_params(params_of(cfg.model_dump(mode="json")))
    with ended(run):
        yield MlflowTracker(run, folder)


@contextmanager
def parent(
    settings: MlflowConfig | None,
    name: str,
    folder: Path,
    console: Console,
    params: dict[str, Any] | None = None,
    kind: str = "study",
) -> Iterator[MlflowRun | None]:
    """One MLflow run for many cnnlab runs (a study's cells, a sweep's trials), in experiment
    `name` unless tracking.mlflow.experiment says another; every tracked run started in the
    block is its child. Its id is kept in `folder`'s tracking.json, so running the study again
    continues it. `params` (a mapping, flattened as a run's config is) describe it; the run
    it yields takes more: log_params, log_metrics, set_tags, log_artifacts. None without
    tracking."""
    if settings is None:
        yield None
        return
    run = open_run(settings, folder, name, True, console, {"cnnlab.kind": kind})
    save(run, folder)
    if params:
        run.log_params(params_of(params))
    nest = Parent(run.uri, run.experiment_id, run.run_id, str(folder.resolve()))
    with ended(run), within(nest):
        yield run


def open_run(
    settings: MlflowConfig,
    folder: Path,
    experiment: str,
    resume: bool,
    console: Console,
    tags: dict[str, str] | None = None,
) -> MlflowRun:
    """The MLflow run of `folder`: the saved one continued (with `resume`), else a new one, a
    child of the current parent when there is one (in its store and experiment)."""
    nest, saved = current(), (read_saved(folder) if resume else {})
    uri = nest.uri if nest else (settings.uri or saved.get("uri") or default_uri(folder.parent))
    client = connect(uri)
    if saved.get("uri") == uri and saved.get("run_id"):
        continued = continue_run(client, uri, str(saved["run_id"]), console)
        if continued is not None:
            return continued
    named = {
        **(tags or {}),
        "cnnlab.folder": str(folder.resolve()),
        "cnnlab.version": __version__,
        **(nest.tags if nest else {}),
    }
    if nest is None:
        exp = experiment_id(client, uri, settings.experiment or experiment, folder.parent)
        return start_run(client, uri, exp, folder.name, named, console)
    name = _relative(folder, Path(nest.folder))
    return start_run(client, uri, nest.experiment_id, name, named, console, nest.run_id)


@contextmanager
def ended(run: MlflowRun) -> Iterator[None]:
    """The MLflow run's status as the block ends: KILLED on Ctrl-C, FAILED (with the error as
    the tag cnnlab.error) on any other exception, else FINISHED."""
    try:
        yield
    except KeyboardInterrupt:
        run.end("KILLED")
        raise
    except BaseException as err:
        run.set_tags({"cnnlab.error": f"{type(err).__name__}: {err}"[:ERROR_TAG_LENGTH]})
        run.end("FAILED")
        raise
    run.end("FINISHED")


def save(run: MlflowRun, folder: Path) -> None:
    record = {"uri": run.uri, "experiment_id": run.experiment_id, "run_id": run.run_id}
    if read_saved(folder) != record:
        folder.mkdir(parents=True, exist_ok=True)
        runfiles.write_json(folder / runfiles.TRACKING, {"mlflow": record})


def read_saved(folder: Path) -> dict[str, Any]:
    """tracking.json's MLflow run, {} when there is none (or it is unreadable)."""
    saved = runfiles.read_mapping(folder / runfiles.TRACKING).get("mlflow")
    return saved if isinstance(saved, dict) else {}


def _relative(folder: Path, root: Path) -> str:
    """A child's run name: its folder from the parent's (adam/seed0), else its own name."""
    try:
        return folder.resolve().relative_to(root).as_posix()
    except ValueError:
        return folder.name
