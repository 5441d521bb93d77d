"""A tracked study: one MLflow parent run for the study, each cell's run a child of it (MLflow's
mlflow.parentRunId tag) with its cell and seed; running the study again continues the parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from tests.conftest import TINY_DIGITS_NET

from cnnlab import track
from cnnlab.config import MlflowConfig
from cnnlab.study.runner import run_study

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def write_study(root: Path, uri: str) -> Path:
    experiment = {
        "data": {"source": "digits", "color_mode": "grayscale", "validation_split": 0.2},
        "model": {"layers": TINY_DIGITS_NET},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam"}},
        "report": {"interpret": False},
        "output": {"dir": str(root / "runs")},
        "tracking": {"mlflow": {"uri": uri}},
    }
    study = {
        "name": "lrs",
        "experiment": experiment,
        "matrix": {"train.optimizer.lr": [1e-3, 1e-2]},
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def test_a_study_is_a_parent_run_and_its_cells_runs_are_nested_under_it(tmp_path, shared_store):
    result = run_study(write_study(tmp_path, shared_store))
    assert result.failures == []
    saved = json.loads((result.folder / "tracking.json").read_text())["mlflow"]
    assert saved["uri"] == shared_store
    client = MlflowClient(tracking_uri=saved["uri"])
    parent = client.get_run(saved["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "lrs"
    assert client.get_experiment(parent.info.experiment_id).name == "lrs"  # the study's name
    assert parent.data.tags["cnnlab.kind"] == "study"
    assert parent.data.params["study.seeds"] == "[0]"
    assert parent.data.metrics["failures"] == 0
    assert {"study.json", "study.html"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }

    children = client.search_runs(
        [parent.info.experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent.info.run_id}'"
    )
    cells = {run.data.tags["cnnlab.cell"]: run for run in children}
    assert sorted(cells) == ["0.001", "0.01"]
    for cell, run in cells.items():
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"{cell}/seed0"  # its folder, from the study's
        assert run.data.tags["cnnlab.seed"] == "0"
        assert float(run.data.params["train.optimizer.lr"]) == float(cell)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1]
        folder = result.folder / cell / "seed0"
        own = json.loads((folder / "tracking.json").read_text())["mlflow"]
        assert own["run_id"] == run.info.run_id


def test_a_parent_run_continues_when_its_folder_is_tracked_again(tmp_path, shared_store):
    settings = MlflowConfig(uri=shared_store, experiment="api")
    quiet = Console(quiet=True)
    with track.parent(settings, "sweep", tmp_path / "sweep", quiet, kind="sweep") as first:
        assert first is not None
        nest = track.current()
        assert nest is not None and nest.run_id == first.run_id
        with track.child(trial=3):
            tagged = track.current()
            assert tagged is not None and tagged.tags == {"cnnlab.trial": "3"}
        first.log_metrics({"best_value": 0.5}, step=1)
    assert track.current() is None
    with track.parent(settings, "sweep", tmp_path / "sweep", quiet, kind="sweep") as second:
        assert second is not None and second.run_id == first.run_id
    client = MlflowClient(tracking_uri=shared_store)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["cnnlab.kind"] == "sweep"
    assert run.data.metrics["best_value"] == 0.5
    with (
        pytest.raises(ValueError),
        track.parent(settings, "broken", tmp_path / "b", quiet) as third,
    ):
        assert third is not None
        raise ValueError("a trial's bug")
    failed = client.get_run(third.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["cnnlab.error"] == "ValueError: a trial's bug"
