"""A tracked sweep: one MLflow parent run for the sweep, each trial's run a child of it, tagged
with its trial number; the parent holds the best value and sweep.html."""

from __future__ import annotations

import json

import pytest
from tests.sweep.conftest import write_sweep

pytest.importorskip("mlflow")
pytest.importorskip("optuna")
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from cnnlab.sweep.runner import run_sweep

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def test_a_sweeps_trials_are_nested_under_its_mlflow_run(tmp_path, shared_store):
    path = write_sweep(
        tmp_path,
        name="tracked",
        set={"train.epochs": 1, "train.steps_per_epoch": 2, "tracking.mlflow.uri": shared_store},
        space={"train.optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        pruner={"name": "none"},
        trials=2,
    )
    result = run_sweep(path)
    assert result.counts["complete"] == 2
    saved = json.loads((result.folder / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=saved["uri"])
    parent = client.get_run(saved["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["cnnlab.kind"] == "sweep"
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(result.best["value"])
    assert "sweep.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent.info.run_id}'"
    )
    assert sorted(run.data.tags["cnnlab.trial"] for run in children) == ["0", "1"]
    assert all(run.info.status == "FINISHED" for run in children)
