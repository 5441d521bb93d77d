"""The MLflow store: opened and checked before any data is read, its experiment found or made,
and one MLflow run written through it. MLflow is imported here only, when a config asks for it
(the `track` extra), so `import cnnlab` and every untracked run go without it.

A store that cannot be reached stops the run at once (a ConfigError naming tracking.mlflow.uri,
exit 2): nothing has been trained yet. Once training runs, a failed write only warns: the run
folder keeps everything, and losing the training to a tracker would be the worse outcome.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rich.console import Console

from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

KEY = "tracking.mlflow.uri"
DATABASE = "mlflow.db"  # the default store, beside the run folders
ARTIFACTS = "mlartifacts"  # a local store's artifacts, beside its database (as `mlflow server`)
SERVER_SCHEMES = ("http://", "https://", "databricks")  # the server keeps the artifacts
PROBE_TIMEOUT_S = 5.0  # a server's /health, before MLflow's own client retries for minutes
# MLflow's log_batch limits: 100 params or tags, 1,000 metrics per call
PARAMS_PER_CALL, METRICS_PER_CALL = 100, 1000


def load_mlflow() -> ModuleType:
    """The mlflow package, or a ConfigError saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "tracking.mlflow: MLflow is not installed; pip install cnnlab[track] "
            "(or remove the tracking section to run without it)"
        ) from None
    # its store prints INFO lines while it makes a new database's tables; cnnlab says nothing
    # on the terminal unless asked
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def default_uri(beside: Path) -> str:
    """sqlite:///<folder>/mlflow.db, absolute: a resumed run finds it from any folder."""
    return "sqlite:///" + (beside.resolve() / DATABASE).as_posix()


def connect(uri: str) -> MlflowClient:
    """A client of the store at `uri`, checked by one read (a new SQLite file gets its tables
    now); any failure is a ConfigError naming tracking.mlflow.uri."""
    load_mlflow()
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://")):
        _probe_server(uri)
    database = _sqlite_path(uri)
    if database is not None:
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _unreachable(uri, f"cannot make {database.parent}: {err.strerror}") from None
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as err:  # MLflow's, SQLAlchemy's, the network's: all mean "not usable"
        raise _unreachable(uri, _first_line(err)) from None
    return client


def experiment_id(client: MlflowClient, uri: str, name: str, beside: Path) -> str:
    """The id of experiment `name`, made when missing, its artifacts kept beside a local store
    (MLflow's own default is ./mlruns in whatever folder the command ran)."""
    try:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(
                client.create_experiment(name, artifact_location=_artifacts(uri, name, beside))
            )
        except Exception:  # made meanwhile by another process of the same study
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)
    except Exception as err:
        raise _unreachable(uri, f"experiment {name!r}: {_first_line(err)}") from None


def start_run(
    client: MlflowClient,
    uri: str,
    experiment: str,
    name: str,
    tags: dict[str, str],
    console: Console,
    parent_run: str | None = None,
) -> MlflowRun:
    """A new MLflow run, RUNNING, named `name`; a child of `parent_run` when given."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    if parent_run is not None:
        tags = {**tags, MLFLOW_PARENT_RUN_ID: parent_run}
    try:
        made = client.create_run(experiment, tags=tags, run_name=name)
    except Exception as err:
        raise _unreachable(uri, f"a new run: {_first_line(err)}") from None
    return MlflowRun(client, uri, experiment, made.info.run_id, console)


def continue_run(client: MlflowClient, uri: str, run_id: str, console: Console) -> MlflowRun | None:
    """The MLflow run `run_id` RUNNING again (--resume, a study run again); None when the
    store no longer holds it (deleted in the MLflow UI), so a new one is started."""
    try:
        found = client.get_run(run_id)
        if found.info.lifecycle_stage == "deleted":
            return None
        client.update_run(run_id, status="RUNNING")
    except Exception:  # not found, or unreadable: a new run keeps the tracking going
        return None
    return MlflowRun(client, uri, found.info.experiment_id, run_id, console)


@dataclass
class MlflowRun:
    """One MLflow run, written through `client`. Every write after the start goes through
    `_safely`: the first failure warns once and the run's tracking stops there."""

    client: MlflowClient
    uri: str
    experiment_id: str
    run_id: str
    console: Console
    broken: bool = False

    def log_params(self, params: dict[str, str]) -> None:
        """`params`, less those the run holds already. MLflow's params never change: a value
        that differs (a resumed run's train.epochs) is kept as the tag `resumed.KEY`."""
        from mlflow.entities import Param, RunTag

        def write() -> None:
            held = self.client.get_run(self.run_id).data.params
            new = [Param(k, v) for k, v in params.items() if k not in held]
            changed = [RunTag(f"resumed.{k}", v) for k, v in params.items() if held.get(k, v) != v]
            for part in _chunks(new, PARAMS_PER_CALL):
                self.client.log_batch(self.run_id, params=part)
            for part in _chunks(changed, PARAMS_PER_CALL):
                self.client.log_batch(self.run_id, tags=part)

        self._safely("logging the params", write)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, step) for key, value in values.items()]

        def write() -> None:
            for part in _chunks(metrics, METRICS_PER_CALL):
                self.client.log_batch(self.run_id, metrics=part)

        self._safely(f"logging the metrics of step {step}", write)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(key, value) for key, value in tags.items()]
        self._safely("setting tags", lambda: self.client.log_batch(self.run_id, tags=batch))

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if path.is_file():
                self._safely(f"copying {path.name}", partial(self._copy, path))

    def _copy(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def last_step(self, key: str) -> int:
        """The highest step logged for `key` (0: none), so a resumed run logs on from there."""
        steps: list[int] = []
        self._safely(
            "reading the logged epochs",
            lambda: steps.extend(m.step for m in self.client.get_metric_history(self.run_id, key)),
        )
        return max(steps, default=0)

    def end(self, status: str) -> None:
        """FINISHED, FAILED or KILLED (MLflow's RunStatus names). Tried even after a failed
        write (the store may be back), without a second warning."""
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as err:  # the store's failure; the run itself is over
            if not self.broken:
                self.broken = True
                self._warn(f"ending the run as {status}", err)

    def _safely(self, what: str, write: Callable[[], Any]) -> None:
        if self.broken:
            return
        try:
            write()
        except Exception as err:  # any failure of the store: the training must not stop for it
            self.broken = True
            self._warn(what, err)

    def _warn(self, what: str, err: Exception) -> None:
        self.console.print(
            f"[yellow]warning:[/] MLflow ({self.uri}): {what} failed ({_first_line(err)}); "
            f"the run goes on and its folder keeps everything, but MLflow run {self.run_id} "
            "is incomplete from here",
            highlight=False,
        )


def _probe_server(uri: str) -> None:
    """A tracking server answers its /health at once; MLflow's client would retry a dead one
    with back-off for minutes before it said anything."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:  # it answered: a proxy's path or an older server
        return
    except (OSError, ValueError) as err:  # refused, unknown host, timed out, not a URL
        reason = getattr(err, "reason", err)
        raise _unreachable(uri, f"no server answers ({reason})") from None


def _unreachable(uri: str, reason: str) -> ConfigError:
    return ConfigError(
        f"{KEY}: {uri}: the MLflow store cannot be used ({reason}); nothing was trained. Start "
        "the server, give a store you can write to (e.g. sqlite:///runs/mlflow.db), or leave "
        "uri out for a SQLite file beside the runs"
    )


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative to the working folder, as SQLAlchemy
    reads it), None for other stores or an in-memory one."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _artifacts(uri: str, experiment: str, beside: Path) -> str | None:
    if uri.startswith(SERVER_SCHEMES):
        return None
    database = _sqlite_path(uri)
    folder = database.resolve().parent if database is not None else beside.resolve()
    return (folder / ARTIFACTS / re.sub(r"[^\w.-]", "_", experiment)).as_uri()


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]
