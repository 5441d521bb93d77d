"""`cnnlab study` end to end on scikit-learn's digits: runs, reruns that skip finished runs and
resume a killed one, failures that do not stop the others, cross-evaluation, and the ladder."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.study.runner import run_study

TINY = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"Flatten": {}},
    {"Dense": {"units": 10, "activation": "softmax"}},
]


def experiment(root: Path, epochs: int = 1) -> dict:
    return {
        "data": {
            "source": "digits",
            "color_mode": "grayscale",
            "validation_split": 0.2,
            "test_split": 0.2,
        },
        "model": {"layers": TINY},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": {"name": "adam"}},
        "output": {"dir": str(root / "runs")},
    }


def write_study(root: Path, epochs: int = 1, **keys) -> Path:
    path = root / "study.yaml"
    study = {"name": "digits", "experiment": experiment(root, epochs), **keys}
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file of a run folder: its content and modification time."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Adam against SGD over two seeds, each run also evaluated on augmented test images."""
    root = tmp_path_factory.mktemp("grid")
    path = write_study(
        root,
        matrix={"train.optimizer.name": ["adam", "sgd"]},
        seeds=[0, 1],
        evaluate_on={"shifted_test": {"split": "test", "augment": "s1"}},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(root / "cache"))
        return path, run_study(path)


def test_every_cell_and_seed_is_an_ordinary_run_and_the_study_files_are_written(grid):
    _, result = grid
    assert result.failures == []
    for cell in ("adam", "sgd"):
        for seed in (0, 1):
            run = result.folder / cell / f"seed{seed}"
            assert json.loads((run / "manifest.json").read_text())["seed"] == seed
            assert (run / "report.html").is_file()
    names = {path.name for path in result.files}
    assert names == {"study.json", "study.html", "study.csv", "study.md", "study.tex"}
    record = json.loads((result.folder / "study.json").read_text())
    assert [c["name"] for c in record["cells"]] == ["adam", "sgd"]
    titles = [t["title"] for t in record["tables"]]
    assert "Test accuracy" in titles and "shifted_test accuracy" in titles


def test_the_table_is_the_runs_own_numbers_with_scipys_statistics(grid):
    from scipy import stats

    _, result = grid
    record = result.record
    table = next(t for t in record["tables"] if t["title"] == "Test accuracy")
    by_cell = {row["cell"]: row for row in table["rows"]}
    for cell, row in by_cell.items():
        own = [
            json.loads((result.folder / cell / f"seed{s}" / "metrics.json").read_text())["test"][
                "accuracy"
            ]
            for s in (0, 1)
        ]
        assert row["values"] == own
        assert row["summary"]["mean"] == pytest.approx(sum(own) / 2)
    best = next(row for row in table["rows"] if row["best"])
    other = next(row for row in table["rows"] if not row["best"])
    expected = stats.ttest_rel(other["values"], best["values"]).pvalue
    assert other["vs_best"]["paired"]["p"] == pytest.approx(expected)
    assert other["vs_best"]["p_holm"] == pytest.approx(expected)  # one comparison: unchanged
    assert table["notes"]  # two seeds: the page says they are too few


def test_the_cross_evaluation_table_is_what_cnnlab_evaluate_wrote(grid):
    _, result = grid
    cross = result.record["cross_evaluation"]
    assert cross["sets"] == ["shifted_test"]
    for row in cross["rows"]:
        written = [
            json.loads(
                (
                    result.folder
                    / row["cell"]
                    / f"seed{s}"
                    / "evaluations"
                    / "shifted_test"
                    / "metrics.json"
                ).read_text()
            )["accuracy"]
            for s in (0, 1)
        ]
        assert row["values"][0]["mean"] == pytest.approx(sum(written) / 2)
        assert row["values"][0]["n"] == 2


def test_a_rerun_skips_finished_runs_and_leaves_their_files_untouched(grid):
    path, result = grid
    runs = [result.folder / cell / f"seed{s}" for cell in ("adam", "sgd") for s in (0, 1)]
    before = {run: fingerprint(run) for run in runs}
    again = CliRunner().invoke(
        app, ["study", str(path)], env={"CNNLAB_CACHE": str(path.parent / "cache")}
    )
    assert again.exit_code == 0, again.output
    assert again.output.count("finished before") == 4
    assert {run: fingerprint(run) for run in runs} == before


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path):
    path = write_study(
        tmp_path,
        variants={"good": {}, "broken": {"data.source": str(tmp_path / "no-such-folder")}},
    )
    result = CliRunner().invoke(app, ["study", str(path)])
    assert result.exit_code == 1
    assert "failed: broken seed 0" in result.output and "no-such-folder" in result.output
    assert (tmp_path / "runs" / "digits" / "good" / "seed0" / "metrics.json").is_file()
    record = json.loads((tmp_path / "runs" / "digits" / "study.json").read_text())
    assert [f["cell"] for f in record["failures"]] == ["broken"]


def test_a_study_killed_in_the_middle_of_a_run_resumes_it_and_skips_the_finished_one(tmp_path):
    path = write_study(tmp_path, variants={"quick": {}, "long": {"train.epochs": 40}})
    folder = tmp_path / "runs" / "digits"
    quick, long = folder / "quick" / "seed0", folder / "long" / "seed0"
    env = {**os.environ, "CNNLAB_CACHE": str(tmp_path / "cache")}
    command = [str(Path(sys.executable).parent / "cnnlab"), "study", str(path)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (long / "checkpoints" / "last.pt").is_file():
            assert process.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the long run never checkpointed"
            time.sleep(0.05)
        time.sleep(0.5)  # a few more epochs
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert (quick / "metrics.json").is_file() and not (long / "metrics.json").exists()
    done_before = fingerprint(quick)
    history_before = (long / "history.csv").read_text().splitlines()
    assert len(history_before) >= 2  # header and at least one epoch

    result = CliRunner().invoke(
        app, ["study", str(path)], env={"CNNLAB_CACHE": env["CNNLAB_CACHE"]}
    )
    assert result.exit_code == 0, result.output
    assert "quick seed 0: finished before" in result.output
    assert "long seed 0: resumed and finished" in result.output
    assert fingerprint(quick) == done_before
    history = (long / "history.csv").read_text().splitlines()
    assert len(history) == 41 and history[: len(history_before) - 1] == history_before[:-1]


def test_the_ladder_adopts_what_helps_rejects_what_does_not_and_tests_once(tmp_path):
    path = write_study(
        tmp_path,
        seeds=[0, 1],
        ladder={
            "metric": "val_accuracy",
            "min_delta": 0.01,
            "steps": [
                {"name": "frozen", "set": {"train.optimizer.lr": 1e-9}},  # cannot learn
                {"name": "longer", "set": {"train.epochs": 6}},  # learns much more
            ],
        },
    )
    result = run_study(path)
    ladder = result.record["ladder"]
    assert [(s["name"], s["adopted"]) for s in ladder["steps"]] == [
        ("frozen", False),
        ("longer", True),
    ]
    assert ladder["steps"][1]["reference_cell"] == "00-baseline"  # compared with what was kept
    assert ladder["final"]["cell"] == "02-longer"
    for cell in ("00-baseline", "01-frozen", "02-longer"):
        for seed in (0, 1):
            run = result.folder / cell / f"seed{seed}"
            assert "test" not in json.loads((run / "metrics.json").read_text())
            assert ",test," not in (run / "predictions.csv").read_text()
            tested = (run / "evaluations" / "test" / "metrics.json").is_file()
            assert tested == (cell == "02-longer")
    final = [
        json.loads(
            (
                result.folder / "02-longer" / f"seed{s}" / "evaluations" / "test" / "metrics.json"
            ).read_text()
        )["accuracy"]
        for s in (0, 1)
    ]
    assert ladder["final"]["test"]["values"] == final
    assert [t["split"] for t in result.record["tables"]] == ["val"] * 3  # choices on val only


def test_jobs_run_cells_in_separate_processes_with_the_same_results_files(tmp_path):
    path = write_study(tmp_path, matrix={"train.optimizer.name": ["adam", "sgd"]}, jobs=2)
    result = CliRunner().invoke(
        app, ["study", str(path)], env={"CNNLAB_CACHE": str(tmp_path / "c")}
    )
    assert result.exit_code == 0, result.output
    for cell in ("adam", "sgd"):
        run = tmp_path / "runs" / "digits" / cell / "seed0"
        assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0
    assert result.output.count("finished in") == 2
