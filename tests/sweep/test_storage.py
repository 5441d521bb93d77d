"""The study a sweep finds in its storage must be its own: another sweep's (other space, metric
or direction), trial folders without their study, and storages that cannot work are refused
before any trial runs, with the fix."""

from __future__ import annotations

import re

import pytest

from cnnlab.errors import ConfigError
from cnnlab.sweep.runner import run_sweep
from cnnlab.sweep.spec import load_sweep
from cnnlab.sweep.storage import create_or_check, open_storage


def made(tmp_path, sweep_file, **keys):
    """The sweep's study made in its default storage (no trial run); the sweep file's path."""
    path = sweep_file(tmp_path, **keys)
    sweep = load_sweep(path)
    sweep.folder.mkdir(parents=True)
    create_or_check(sweep, open_storage(sweep.default_storage))
    return path


def test_a_study_made_with_another_space_is_refused_not_mixed(tmp_path, sweep_file):
    made(tmp_path, sweep_file)
    space = {"train.optimizer.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}
    path = sweep_file(tmp_path, space=space)
    with pytest.raises(ConfigError, match="made by a sweep with another space; its trials"):
        run_sweep(path)
    assert not list((tmp_path / "runs" / "sweep").glob("trial-*"))


def test_a_study_optimised_the_other_way_is_refused(tmp_path, sweep_file):
    made(tmp_path, sweep_file)
    with pytest.raises(ConfigError, match="is maximized, this sweep minimizes val_accuracy"):
        run_sweep(sweep_file(tmp_path, direction="minimize"))


def test_trial_folders_without_their_study_are_refused(tmp_path, sweep_file):
    path = sweep_file(tmp_path)
    kept = tmp_path / "runs" / "sweep" / "trial-0000"
    kept.mkdir(parents=True)
    (kept / "metrics.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds trial folders, but the storage has no study"):
        run_sweep(path)
    assert (kept / "metrics.json").read_text(encoding="utf-8") == "{}"  # untouched
    assert not (kept.parent / "optuna.db").exists()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqlite://", "an in-memory database dies with each worker"),
        ("not a url", "not a database URL"),
        ("mysql://user@localhost/sweeps", "MySQLdb (SQLAlchemy's driver for this URL)"),
    ],
)
def test_a_storage_that_cannot_work_is_refused_with_the_fix(tmp_path, sweep_file, url, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        run_sweep(sweep_file(tmp_path), storage=url)
