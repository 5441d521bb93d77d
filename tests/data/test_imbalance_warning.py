"""Past REMEDY_RATIO in the training part, the health check names the two remedies: in the
report, on `cnnlab inspect`'s screen and in a run's report."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.config import DataConfig
from cnnlab.data.health import REMEDY_RATIO
from cnnlab.data.pipeline import examine

KEYS = ("train.class_weight: balanced", "data.sampler: balanced")


def warnings_of(source) -> list[str]:
    return examine(DataConfig(source=str(source)), None).report.warnings


def test_an_imbalance_past_the_threshold_names_both_keys(tmp_path, make_classes):
    source = make_classes(tmp_path / "pets", {"cats": 4 * 5, "dogs": 5})
    assert REMEDY_RATIO < 4
    (note,) = [w for w in warnings_of(source) if "imbalanced" in w]
    assert "4x the smallest" in note
    assert all(key in note for key in KEYS)


def test_a_mild_imbalance_is_noted_without_remedies(tmp_path, make_classes):
    source = make_classes(tmp_path / "pets", {"cats": 5, "dogs": 2})  # 2.5x
    (note,) = [w for w in warnings_of(source) if "imbalanced" in w]
    assert "2.5x" in note and not any(key in note for key in KEYS)


def test_the_train_part_is_judged_on_its_own(tmp_path, make_classes):
    make_classes(tmp_path / "src" / "train", {"cats": 16, "dogs": 4})
    make_classes(tmp_path / "src" / "val", {"cats": 2, "dogs": 14}, seed=100)
    (note,) = [w for w in warnings_of(tmp_path / "src") if "imbalanced" in w]
    assert "(4x in the train part)" in note  # the whole source is 18 : 18
    assert all(key in note for key in KEYS)


def test_inspect_a_run_and_its_report_show_the_warning_until_remedied(tmp_path, make_classes):
    source = make_classes(tmp_path / "pets", {"cats": 20, "dogs": 5})
    shown = CliRunner().invoke(app, ["inspect", str(source)])
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())  # rich wraps long lines
    assert all(key in flat for key in KEYS)
    config = tmp_path / "pets.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": str(source)},
                "model": {"layers": ["Flatten", {"Dense": {"units": 2, "activation": "softmax"}}]},
                "train": {"epochs": 1, "batch_size": 8},
            }
        )
    )
    ran = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "runs")])
    assert ran.exit_code == 0, ran.output
    assert all(key in " ".join(ran.output.split()) for key in KEYS)
    html = (tmp_path / "runs" / "pets" / "report.html").read_text()
    assert all(key in html for key in KEYS)
    remedied = CliRunner().invoke(
        app,
        ["run", str(config), "--output", str(tmp_path / "again"), "--set", "data.sampler=balanced"],
    )
    assert remedied.exit_code == 0, remedied.output
    assert "imbalanced" not in remedied.output  # the console stays quiet once remedied
