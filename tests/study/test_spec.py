"""The study file: matrix x variants x seeds expand as documented, and mistakes are refused
before anything runs, naming the cell and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnnlab.errors import ConfigError
from cnnlab.study.spec import load_study

EXPERIMENT = {
    "data": {"source": "digits", "color_mode": "grayscale"},
    "model": {"name": "basenet"},
    "train": {"epochs": 2},
    "output": {"dir": "out"},
}


def write_study(folder: Path, **keys) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(EXPERIMENT), encoding="utf-8")
    path = folder / "compare.yaml"
    path.write_text(
        yaml.safe_dump({"experiment": "base.yaml", **keys}, sort_keys=False), encoding="utf-8"
    )
    return path


def test_matrix_times_variants_times_seeds(tmp_path):
    study = load_study(
        write_study(
            tmp_path,
            set={"train.batch_size": 16},
            matrix={"train.optimizer.name": ["adam", "sgd"], "augment.preset": [None, "s1"]},
            variants={"short": {"train.epochs": 1}, "long": {"train.epochs": 5}},
            seeds=[3, 4],
        )
    )
    cells = study.cells()
    assert [c.name for c in cells] == [
        f"{opt}-{aug}-{length}"
        for opt in ("adam", "sgd")
        for aug in ("none", "s1")
        for length in ("short", "long")
    ]
    planned = [run for cell in cells for run in study.plan(cell)]
    assert len(planned) == 16
    first = planned[0]
    assert first.folder == Path("out") / "compare" / "adam-none-short" / "seed3"
    assert (first.experiment.seed, first.experiment.train.optimizer.name) == (3, "adam")
    assert first.experiment.train.batch_size == 16  # the study's `set`, in every cell
    assert first.experiment.train.epochs == 1  # the variant, after the matrix
    last = planned[-1].experiment
    assert (last.seed, last.augment.rotation_range, last.train.epochs) == (4, 90.0, 5)


def test_sections_in_a_matrix_are_named_by_their_name_and_set_forces_every_run(tmp_path):
    path = write_study(
        tmp_path,
        matrix={"train.optimizer": [{"name": "adam", "lr": 0.001}, {"name": "sgd", "lr": 0.01}]},
        variants={"long": {"train.epochs": 30}},
    )
    study = load_study(path, ["train.epochs=1"])
    assert [c.name for c in study.cells()] == ["adam-long", "sgd-long"]
    runs = study.plan(study.cells()[1])
    assert runs[0].experiment.train.optimizer.lr == 0.01
    assert runs[0].experiment.train.epochs == 1  # --set over the variant's 30


def test_a_cell_with_a_bad_value_is_refused_naming_the_cell_and_the_key(tmp_path):
    study = load_study(write_study(tmp_path, matrix={"train.epochs": [2, -1]}))
    bad = study.cells()[1]
    with pytest.raises(ConfigError, match=r"(?s)cell -1.*train\.epochs"):
        study.plan(bad)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "nothing to compare"),
        (
            {
                "matrix": {"train.epochs": [1, 2]},
                "ladder": {"steps": [{"name": "x", "set": {"train.epochs": 3}}]},
            },
            "write them as two studies",
        ),
        ({"variants": {"a": {}}, "seeds": [0, 0]}, "repeated seeds: 0"),
        ({"variants": {"a": {}}, "experiment": "absent.yaml"}, "absent.yaml: no such file"),
        ({"variants": {"a": {}}, "sedes": [1]}, "sedes: unknown key"),
    ],
)
def test_study_file_mistakes_are_refused_before_anything_runs(tmp_path, keys, message):
    with pytest.raises(ConfigError, match=message):
        load_study(write_study(tmp_path, **keys))


def test_the_experiment_is_found_beside_the_study_file_wherever_it_is_run_from(
    tmp_path, monkeypatch
):
    path = write_study(tmp_path, seeds=[0, 1])
    monkeypatch.chdir(tmp_path.parent)
    study = load_study(path)
    assert [c.name for c in study.cells()] == ["base"]
    assert study.name == "compare"


def test_a_missing_study_file_is_named_as_a_study_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such study file"):
        load_study(tmp_path / "nope.yaml")
