"""The tracking section of an experiment, and what cnnlab's files become as MLflow params and
metrics (no MLflow store needed)."""

from __future__ import annotations

import pytest
import yaml

from cnnlab.config import Experiment
from cnnlab.config_io import validate
from cnnlab.errors import ConfigError
from cnnlab.track.values import (
    epoch_metrics,
    final_metrics,
    metric_key,
    params_of,
    value_text,
)

DIGITS = {"source": "digits"}


def experiment(**sections: object) -> Experiment:
    return validate({"data": DIGITS, **sections}, Experiment, "e.yaml")


def test_no_tracking_section_means_no_tracker_and_an_empty_mlflow_key_means_defaults():
    assert experiment().tracking is None
    # `tracking:\n  mlflow:` with nothing under it is YAML's null: the user named the tracker
    given = experiment(tracking=yaml.safe_load("mlflow:\n"))
    assert given.tracking is not None and given.tracking.mlflow.uri is None
    assert given.tracking.mlflow.experiment is None


def test_a_tracked_config_yaml_reads_back_as_the_same_experiment():
    for tracking in (None, {"mlflow": {"uri": "http://127.0.0.1:5000", "experiment": "s1"}}):
        cfg = experiment(tracking=tracking)
        dumped = yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json")))
        assert validate(dumped, Experiment, "config.yaml") == cfg


def test_a_bare_path_as_uri_is_refused_with_the_forms_that_work():
    with pytest.raises(ConfigError) as caught:
        experiment(tracking={"mlflow": {"uri": "runs/mlflow.db"}})
    message = str(caught.value)
    assert "tracking.mlflow.uri: 'runs/mlflow.db': is not a tracking URI" in message
    assert "sqlite:///PATH/mlflow.db" in message and "http://HOST:5000" in message
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.experiment"):
        experiment(tracking={"mlflow": {"experiment": ""}})
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.store"):
        experiment(tracking={"mlflow": {"store": "x"}})  # unknown keys are refused


def test_params_are_dotted_keys_with_lists_of_sections_by_index():
    cfg = experiment(
        model={"layers": [{"Conv2D": {"filters": 4, "kernel_size": 3}}, {"Flatten": {}}]},
        data={"source": "digits", "target_size": [8, 8]},
    )
    params = params_of(cfg.model_dump(mode="json"))
    assert params["model.layers.0.Conv2D.filters"] == "4"
    assert params["model.layers.1.Flatten"] == "{}"
    assert params["data.target_size"] == "[8, 8]"
    assert params["data.source"] == "digits"
    assert params["model.backbone"] == "null"
    assert params["train.optimizer.name"] == "rmsprop"  # Keras's default, as cnnlab's


def test_keys_mlflow_refuses_are_cleaned_and_long_values_cut():
    assert metric_key("class_weight.cats & dogs") == "class_weight.cats _ dogs"
    assert metric_key("ratio:1") == "ratio_1"  # colons: Windows stores refuse them
    assert metric_key("a/../b") == "_a_.._b"  # a path MLflow would normalise to another
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    long = value_text("x" * (MAX_PARAM_VAL_LENGTH + 10))
    assert len(long) == MAX_PARAM_VAL_LENGTH and long.endswith("...")
    assert len(metric_key("k" * 400)) == 250


def test_final_metrics_are_the_splits_scalars_and_val_ones_do_not_join_the_epoch_curve():
    metrics = {
        "test": {"accuracy": 0.5, "loss": 1.0, "per_class": {"a": {"f1": 1}}, "classes": ["a"]},
        "val": {"accuracy": 0.6, "loss": 0.9},
        "train": {"accuracy": 0.7, "stopped": True},
    }
    assert final_metrics(metrics) == {
        "test_accuracy": 0.5,
        "test_loss": 1.0,
        "final_val_accuracy": 0.6,
        "final_val_loss": 0.9,
        "train_accuracy": 0.7,
    }
    logs = {"epoch": 3, "loss": 0.5, "val_loss": float("nan"), "lr": 1e-3, "seconds": 2.0}
    assert set(epoch_metrics(logs)) == {"loss", "val_loss", "lr", "seconds"}
