"""`cnnlab auto`: a folder of real images to two ordinary runs, their comparison and the YAML
used, within the time budget."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.config_io import load_experiment
from cnnlab.data.arrays import read_array_source
from cnnlab.errors import ConfigError
from cnnlab.study import auto
from cnnlab.study.auto import TimeBudget, parse_duration, run_auto
from cnnlab.train.callbacks import TrainState

BUDGET_S = 120.0


@pytest.fixture
def digit_folder(tmp_path: Path) -> Path:
    """Class folders of real handwritten digits (scikit-learn's), 6 PNG files per class."""
    part = read_array_source("digits")[0]
    root, seen = tmp_path / "digits", dict.fromkeys(range(10), 0)
    for index, label in enumerate(part.labels.tolist()):
        if seen[label] < 6:
            seen[label] += 1
            target = root / str(label) / f"{index}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(part.images[index][0]), mode="L").save(target)
    return root


def test_auto_writes_both_runs_and_their_yaml_within_the_budget(digit_folder, tmp_path):
    started = time.monotonic()
    result = run_auto(str(digit_folder), BUDGET_S, "fast", tmp_path / "runs")
    elapsed = time.monotonic() - started
    assert elapsed <= 1.1 * BUDGET_S, f"{elapsed:.0f} s for a {BUDGET_S:.0f} s budget"
    folder = result.folder
    for name in ("baseline", "finetune"):
        assert (folder / name / "metrics.json").is_file()
        experiment = load_experiment(folder / f"{name}.yaml")  # the YAML it used, loadable
        assert experiment.data.source == str(digit_folder)
    assert load_experiment(folder / "baseline.yaml").classifier is not None
    assert load_experiment(folder / "finetune.yaml").model.stages is not None
    assert (folder / "compare.html").is_file()
    record = json.loads((folder / "auto.json").read_text())
    assert record["winner"] in ("baseline", "finetune")
    assert result.winner == folder / record["winner"]


def test_the_budget_stops_an_epoch_that_would_overrun_and_a_stage_with_no_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(auto.time, "monotonic", lambda: now[0])
    budget, state = TimeBudget(deadline=130.0, expected=5.0), TrainState()
    budget.on_train_begin(state)
    assert not state.stop
    now[0] = 112.0
    budget.on_epoch_end(state, {"seconds": 12.0})  # 112 + 12 < 130: one more fits
    assert not state.stop
    now[0] = 124.0
    budget.on_epoch_end(state, {"seconds": 12.0})  # 124 + 12 > 130: it would not
    assert state.stop and "time budget" in state.stop_reason
    late = TrainState()
    TimeBudget(deadline=130.0, expected=40.0).on_train_begin(late)
    assert late.stop  # a stage whose first epoch cannot fit does not start


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("45", 45)]
)
def test_durations_read_as_users_write_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "0s", "5x"])
def test_a_duration_that_is_not_one_is_refused(text):
    with pytest.raises(ConfigError, match="--time"):
        parse_duration(text)
