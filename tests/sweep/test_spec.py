"""The sweep file's checks: every one made before a trial runs, each message naming the dotted
key and the fix (tests/test_cli.py: `cnnlab sweep` turns them into exit 2, nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.errors import ConfigError
from cnnlab.sweep.keys import key_problem
from cnnlab.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[2]


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    return str(caught.value)


def test_a_misspelt_sweep_key_is_refused_with_a_suggestion(tmp_path, sweep_file):
    message = refused(sweep_file(tmp_path, trails=20))
    assert "trails: unknown key; did you mean 'trials'?" in message


def test_a_space_key_the_experiment_does_not_have_is_named_with_a_suggestion(tmp_path, sweep_file):
    space = {"train.optimiser.lr": {"type": "float", "low": 0.001, "high": 0.1}}
    message = refused(sweep_file(tmp_path, space=space))
    assert "space.train.optimiser.lr: train.optimiser: not a setting of the experiment" in message
    assert "did you mean 'optimizer'?" in message


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("train.epochs.0", "train.epochs is a value, not a section"),
        ("model.stages.first.epochs", "model.stages is a list; number its items from 0"),
    ],
)
def test_a_key_into_a_value_or_a_list_says_what_is_there(key, problem):
    assert problem in key_problem(key)


def test_keys_into_lists_and_free_form_sections_are_accepted():
    for key in ("model.stages.1.lr", "model.layers.0.Conv2D.filters", "data.target_size.0"):
        assert key_problem(key) is None


def test_a_bound_that_makes_the_experiment_invalid_is_refused_before_any_trial(
    tmp_path, sweep_file
):
    space = {"train.optimizer.lr": {"type": "float", "low": 0.0, "high": 0.1}}
    message = refused(sweep_file(tmp_path, space=space))
    assert "space.train.optimizer.lr = 0.0: invalid configuration" in message
    assert "train.optimizer.lr:" in message
    assert not (tmp_path / "runs").exists()  # nothing written


def test_each_categorical_choice_is_checked_against_the_base_experiment(tmp_path, sweep_file):
    # nesterov needs SGD: with the base's adam, the choice `true` alone is invalid
    path = sweep_file(tmp_path, set={"train.optimizer.name": "adam"})
    message = refused(path)
    assert "space.train.optimizer.nesterov = True: invalid configuration" in message
    assert "Nesterov momentum needs SGD" in message


@pytest.mark.parametrize(
    ("param", "problem"),
    [
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log: true needs low > 0"),
        ({"type": "float", "low": 0.5, "high": 0.1}, "low (0.5) must be below high (0.1)"),
        ({"type": "int", "low": 16, "high": 100, "step": 16}, "not a multiple of step"),
        ({"type": "int", "low": 1.5, "high": 4}, "type: int needs whole numbers"),
        ({"type": "float", "high": 4}, "type: float needs low: and high:"),
        ({"type": "categorical", "choices": [{"name": "adam"}]}, "choices must be numbers"),
        ({"type": "categorical", "choices": [8, 8]}, "a value is given twice"),
        ({"type": "real", "low": 0, "high": 1}, "'real' is not allowed"),
    ],
)
def test_a_malformed_dimension_names_its_key(tmp_path, sweep_file, param, problem):
    message = refused(sweep_file(tmp_path, space={"train.batch_size": param}))
    assert "space.train.batch_size" in message
    assert problem in message


def test_the_metric_must_be_a_logged_validation_value(tmp_path, sweep_file):
    message = refused(sweep_file(tmp_path, metric="val_acc"))
    assert "metric: val_acc is not a validation value" in message
    assert "val_loss, val_accuracy" in message
    held_out = refused(sweep_file(tmp_path, metric="test_accuracy"))
    assert "the test split stays held out" in held_out


@pytest.mark.parametrize(
    ("keys", "direction"),
    [
        ({}, "maximize"),
        ({"metric": "val_loss"}, "minimize"),
        ({"metric": "val_loss", "direction": "maximize"}, "maximize"),
    ],
)
def test_the_direction_follows_the_metric_unless_given(tmp_path, sweep_file, keys, direction):
    assert load_sweep(sweep_file(tmp_path, **keys)).direction == direction


def test_the_sweep_folder_and_study_name_come_from_the_file_or_its_keys(tmp_path, sweep_file):
    sweep = load_sweep(sweep_file(tmp_path, name="lr_search"))
    assert sweep.name == "lr_search"
    assert sweep.folder == tmp_path / "runs" / "lr_search"  # the experiment's output.dir
    assert sweep.default_storage == f"sqlite:///{sweep.folder.resolve()}/optuna.db"
    other = load_sweep(sweep_file(tmp_path, output={"dir": str(tmp_path / "x"), "name": "y"}))
    assert (other.name, other.folder) == ("sweep", tmp_path / "x" / "y")


def test_a_missing_base_experiment_says_paths_are_relative_to_the_current_folder(
    tmp_path, sweep_file
):
    message = refused(sweep_file(tmp_path, experiment="nowhere.yaml"))
    assert "experiment: nowhere.yaml: no such file (looked beside the sweep file" in message


def test_an_experiment_that_trains_no_network_is_refused(tmp_path, sweep_file):
    inline = {"data": {"source": "digits"}, "model": {"backbone": "resnet18"}, "classifier": {}}
    message = refused(sweep_file(tmp_path, experiment=inline, set={}))
    assert "a sweep tunes a network trained epoch by epoch" in message


def test_the_output_keys_are_the_sweeps_own(tmp_path, sweep_file):
    message = refused(sweep_file(tmp_path, space={"output.name": ["a", "b"]}))
    assert "space.output.name: output: the sweep names its trials' folders" in message


def test_the_example_sweep_passes_every_check(monkeypatch):
    monkeypatch.chdir(ROOT)  # its experiment path is relative to the repository root
    sweep = load_sweep("examples/digits_sweep.yaml")
    assert sweep.spec.trials == 20 and sweep.spec.pruner.name == "median"
    assert set(sweep.spec.space) == {
        "train.optimizer.lr",
        "train.optimizer.name",
        "train.batch_size",
    }


def test_a_missing_or_binary_sweep_file_is_named_as_a_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such sweep file"):
        load_sweep(tmp_path / "nope.yaml")
    binary = tmp_path / "sweep.yaml"
    binary.write_bytes(b"metric: \xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"not a text file in UTF-8 .* a sweep file is YAML"):
        load_sweep(binary)
