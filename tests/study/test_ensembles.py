"""A study's `ensemble:` key: its cells per seed, or each cell's seeds, made into ensemble runs
that join the study's tables as rows, compared with the best like any cell; an ensemble that
cannot be made is a failure with its reason; the file's mistakes are refused up front."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from cnnlab.errors import ConfigError
from cnnlab.study.collect import RunRecord, comparison_table
from cnnlab.study.runner import run_study
from cnnlab.study.spec import Statistics, load_study


def write_study(root: Path, blind_spots, data: Path, **keys) -> Path:
    experiment = blind_spots.experiment(data, "a", root / "runs")
    path = root / "study.yaml"
    study = {"name": "spots", "experiment": experiment, **keys}
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def labels(data: Path, *members: str) -> list[str]:
    return [str(data / f"labels_{m}.csv") for m in members]


def finished_before(runs: dict[str, Path], root: Path, cells: dict[str, str]) -> None:
    """The session's trained members as the study's seed-0 runs of `cells` (cell -> member):
    the study finds them finished, as a rerun would, and skips them."""
    for cell, member in cells.items():
        shutil.copytree(runs[member], root / "runs" / "spots" / cell / "seed0")


def table(record: dict, title: str) -> dict[str, dict]:
    found = next(t for t in record["tables"] if t["title"] == title)
    return {row["cell"]: row for row in found["rows"]}


def test_an_ensemble_of_the_cells_is_one_more_row_and_beats_every_cell(
    tmp_path, blind_spots, blind_spot_runs
):
    data = blind_spot_runs["data"]
    path = write_study(
        tmp_path,
        blind_spots,
        data,
        matrix={"data.labels_csv": labels(data, "a", "b", "c")},
        ensemble={"over": "cells", "method": "vote"},
    )
    cells = {"labels_csv1": "a", "labels_csv2": "b", "labels_csv3": "c"}  # by matrix position
    finished_before(blind_spot_runs, tmp_path, cells)
    result = run_study(path)
    assert result.failures == []
    rows = table(result.record, "Test accuracy")
    cells = [cell for cell in rows if cell != "ensemble"]
    assert len(cells) == 3 and rows["ensemble"]["best"]
    for cell in cells:
        assert rows[cell]["summary"]["mean"] <= 2 / 3 + 1e-9
        assert rows[cell]["vs_best"]["mcnemar"]["only_b"] > 0  # images only the ensemble got
    assert rows["ensemble"]["summary"]["mean"] == 1.0
    folder = tmp_path / "runs" / "spots" / "ensemble" / "seed0"
    assert json.loads((folder / "manifest.json").read_text())["ensemble"]["method"] == "vote"
    with (result.folder / "study.csv").open(newline="") as handle:
        assert "ensemble" in {row["cell"] for row in csv.DictReader(handle)}
    assert "ensemble" in (result.folder / "study.html").read_text(encoding="utf-8")

    before = (folder / "metrics.json").stat().st_mtime_ns
    again = run_study(path)  # the runs are skipped, and so is the ensemble of the same members
    assert again.failures == [] and (folder / "metrics.json").stat().st_mtime_ns == before


def test_an_ensemble_of_seeds_stands_beside_its_cell_or_fails_with_the_reason(
    tmp_path, blind_spots, blind_spot_runs
):
    """a: val and test fixed by its labels file, the same for every seed; carved: its val split
    follows the seed, so its seeds were evaluated on other images."""
    data = blind_spot_runs["data"]
    path = write_study(
        tmp_path,
        blind_spots,
        data,
        matrix={"data.labels_csv": labels(data, "a", "carved")},
        seeds=[0, 1],
        ensemble={"over": "seeds", "method": "mean"},
    )
    a_cell, carved_cell = "labels_csv1", "labels_csv2"  # the matrix's values, by position
    finished_before(blind_spot_runs, tmp_path, {a_cell: "a"})
    result = run_study(path)
    rows = table(result.record, "Test accuracy")
    made = rows[f"{a_cell}+ensemble"]
    assert made["summary"]["n"] == 1 and made["values"] == [None, None]  # no seed of its own
    assert (tmp_path / "runs" / "spots" / a_cell / "ensemble" / "metrics.json").is_file()
    [failure] = result.failures
    assert failure["cell"] == f"{carved_cell}+ensemble" and "other val images" in failure["error"]
    assert rows[f"{carved_cell}+ensemble"]["summary"]["n"] == 0


def test_an_ensemble_of_seeds_is_paired_with_every_seed_of_the_other_cell():
    """McNemar: the one ensemble against each seed's run, image by image, pooled."""
    runs = []
    for seed in (0, 1):
        run = RunRecord("single", seed, Path(f"single/seed{seed}"), None)
        run.scores["test"] = {"accuracy": 0.5, "macro_f1": 0.5, "loss": 1.0}
        run.correct["test"] = {"x": True, "y": False}
        runs.append(run)
    ensemble = RunRecord("single+ensemble", None, Path("single/ensemble"), None)
    ensemble.scores["test"] = {"accuracy": 1.0, "macro_f1": 1.0, "loss": 0.1}
    ensemble.correct["test"] = {"x": True, "y": True}
    by_cell = {"single": runs, "single+ensemble": [ensemble]}
    found = comparison_table(by_cell, [0, 1], "test", "accuracy", "accuracy", True, Statistics())
    rows = {row["cell"]: row for row in found["rows"]}
    assert rows["single+ensemble"]["best"] and rows["single+ensemble"]["summary"]["mean"] == 1.0
    assert rows["single"]["vs_best"]["mcnemar"]["only_b"] == 2  # y, in each of the two seeds
    assert not any("seed per cell" in note for note in found["notes"])  # the cell has two


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"matrix": {"train.epochs": [1, 2]}, "ensemble": {"over": "seeds"}}, "two seeds"),
        ({"seeds": [0, 1], "ensemble": {"over": "cells"}}, "two cells or more"),
        ({"variants": {"ensemble": {}, "b": {}}, "ensemble": {"over": "cells"}}, "is named ens"),
        ({"seeds": [0, 1], "ensemble": {"over": "runs"}}, "ensemble.over"),
        (
            {"ensemble": {"over": "seeds"}, "ladder": {"steps": [{"name": "x", "set": {}}]}},
            "a ladder keeps one configuration",
        ),
    ],
)
def test_ensemble_mistakes_in_the_study_file_are_refused_before_anything_runs(
    tmp_path, blind_spots, keys, message
):
    with pytest.raises(ConfigError, match=message):
        load_study(write_study(tmp_path, blind_spots, tmp_path / "data", **keys))
