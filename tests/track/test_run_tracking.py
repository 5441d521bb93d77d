"""A real digits run logged to a real MLflow SQLite store, read back with MLflow's own client:
params, the epochs' metrics (history.csv's values), the split metrics, the artifacts, the
status; Ctrl-C and --resume continuing the same MLflow run; a store failing mid-run."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console
from tests.conftest import write_digits_config

import cnnlab
from cnnlab.errors import RunInterrupted
from cnnlab.train.callbacks import Callback, TrainState

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient

# MLflow's SQL store with SQLAlchemy 2.1 (hidden from users: Python shows DeprecationWarning
# only for __main__'s own code)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")

TRAIN = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam"}}
TRACKED = {"mlflow": None}  # `tracking: {mlflow:}`: a SQLite store beside the run folders


def tracked_config(path: Path, **sections: object) -> Path:
    """Digits, 2 epochs, the report without its interpretation (seconds saved), tracked."""
    defaults: dict[str, object] = {"train": TRAIN, "report": {"interpret": False}}
    return write_digits_config(path, **{**defaults, "tracking": TRACKED, **sections})


def mlflow_run(folder: Path) -> tuple[MlflowClient, str]:
    saved = json.loads((folder / "tracking.json").read_text())["mlflow"]
    return MlflowClient(tracking_uri=saved["uri"]), saved["run_id"]


def history(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((folder / "history.csv").read_text())))


@pytest.fixture(scope="module")
def finished(tracked_root: Path) -> Path:
    """A finished tracked run with the default store, runs/mlflow.db (made ready beforehand)."""
    root = tracked_root
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(root / "cache"))
        config = tracked_config(root / "digits.yaml")
        return cnnlab.run(config, output_dir=root / "runs", quiet=True).folder


def test_the_default_store_is_a_sqlite_file_beside_the_run_folders(finished):
    saved = json.loads((finished / "tracking.json").read_text())["mlflow"]
    assert saved["uri"] == f"sqlite:///{finished.parent.resolve() / 'mlflow.db'}"
    assert (finished.parent / "mlflow.db").is_file()
    client, run_id = mlflow_run(finished)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "digits"
    assert client.get_experiment(run.info.experiment_id).name == "cnnlab"
    # artifacts beside the store, not in an ./mlruns of whatever folder the test ran in
    assert run.info.artifact_uri.startswith((finished.parent / "mlartifacts").resolve().as_uri())


def test_params_are_the_experiment_and_tags_the_folder_and_version(finished):
    client, run_id = mlflow_run(finished)
    data = client.get_run(run_id).data
    assert data.params["train.epochs"] == "2"
    assert data.params["data.source"] == "digits"
    assert data.params["model.layers.0.Conv2D.filters"] == "4"
    assert data.params["tracking.mlflow.uri"] == "null"  # as config.yaml says it
    assert data.tags["cnnlab.folder"] == str(finished.resolve())
    assert data.tags["cnnlab.version"] == cnnlab.__version__


def test_each_epoch_of_history_csv_is_a_metric_at_step_epoch(finished):
    client, run_id = mlflow_run(finished)
    rows = history(finished)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for column in rows[0]:
        if column == "epoch":
            continue
        logged = client.get_metric_history(run_id, column)
        assert [m.step for m in logged] == [1, 2], column
        for row, metric in zip(rows, logged, strict=True):
            # history.csv keeps 6 significant digits of the value MLflow holds whole
            assert math.isclose(metric.value, float(row[column]), rel_tol=1e-5), column


def test_final_split_metrics_and_the_runs_files_are_logged(finished):
    client, run_id = mlflow_run(finished)
    metrics = client.get_run(run_id).data.metrics
    written = json.loads((finished / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(written["test"]["accuracy"])
    assert metrics["test_loss"] == pytest.approx(written["test"]["loss"])
    assert metrics["final_val_accuracy"] == pytest.approx(written["val"]["accuracy"])
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    wanted = {"report.html", "model.safetensors", "config.yaml", "metrics.json", "history.csv"}
    assert wanted <= artifacts
    kept = Path(client.download_artifacts(run_id, "model.safetensors", str(finished.parent)))
    assert kept.read_bytes() == (finished / "model.safetensors").read_bytes()


def test_a_finished_tracked_run_still_opens(finished):
    assert cnnlab.load_run(finished).metrics["test"]["accuracy"] >= 0


class CtrlCAfter(Callback):
    """Ctrl-C at the end of epoch `epoch`, after the checkpoint (the run's own callbacks come
    first) and before the tracker has logged the epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def in_store(uri: str, experiment: str) -> dict[str, object]:
    return {"mlflow": {"uri": uri, "experiment": experiment}}


def test_ctrl_c_ends_the_mlflow_run_killed_and_resume_continues_it(tmp_path, shared_store):
    config = tracked_config(tmp_path / "digits.yaml", tracking=in_store(shared_store, "resume"))
    runs = tmp_path / "runs"
    with pytest.raises(RunInterrupted):
        cnnlab.run(config, output_dir=runs, quiet=True, callbacks=[CtrlCAfter(1)])
    folder = runs / "digits"
    client, run_id = mlflow_run(folder)
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_metric_history(run_id, "loss") == []  # stopped before the tracker logged

    # resumed with one more epoch (the one key --resume may change)
    cnnlab.run(config, folder, overrides=["train.epochs=3"], resume=True, quiet=True)
    again, same = mlflow_run(folder)
    assert same == run_id
    run = again.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(again.search_runs([run.info.experiment_id])) == 1  # no second MLflow run
    logged = again.get_metric_history(run_id, "val_loss")
    assert [m.step for m in logged] == [1, 2, 3]  # epoch 1 logged on resume, once
    values = [float(row["val_loss"]) for row in history(folder)]
    assert [m.value for m in logged] == pytest.approx(values, rel=1e-5)
    assert "test_accuracy" in run.data.metrics
    # MLflow's params never change: the first value stays, the new one is a tag
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["resumed.train.epochs"] == "3"


class StoreGone(Callback):
    """The store fails from epoch 1 on: every MLflow write raises."""

    def __init__(self, patch: pytest.MonkeyPatch):
        self.patch = patch

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        def refused(*_args: object, **_kwargs: object) -> None:
            raise OSError("disk I/O error")

        self.patch.setattr(MlflowClient, "log_batch", refused)
        self.patch.setattr(MlflowClient, "log_artifact", refused)


def test_a_store_failing_mid_run_warns_once_and_the_run_finishes(
    tmp_path, monkeypatch, shared_store
):
    tracking = in_store(shared_store, "failing")
    config = tracked_config(
        tmp_path / "digits.yaml", train={**TRAIN, "epochs": 1}, tracking=tracking
    )
    shown = io.StringIO()
    console = Console(file=shown, width=400)
    result = cnnlab.run(
        config, output_dir=tmp_path / "runs", console=console, callbacks=[StoreGone(monkeypatch)]
    )
    assert (result.folder / "metrics.json").is_file() and result.report is not None
    text = shown.getvalue()
    assert text.count("warning:") == 1
    assert "MLflow" in text and "logging the metrics of step 1 failed (disk I/O error)" in text
    assert "the run goes on and its folder keeps everything" in text
    monkeypatch.undo()
    client, run_id = mlflow_run(result.folder)
    assert client.get_metric_history(run_id, "loss") == []
