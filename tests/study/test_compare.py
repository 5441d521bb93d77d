"""`compare`: finished runs side by side, with McNemar's exact test against the best."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from scipy.stats import binomtest

from cnnlab.errors import ConfigError
from cnnlab.study import stats
from cnnlab.study.compare import compare, compare_runs
from report.fake_run import CLASSES, write_run

IMAGES = 90


def make_run(
    folder: Path,
    accuracy: float,
    wrong: set[int],
    train_accuracy: float = 0.95,
    val_accuracy: float = 0.85,
    classes: list[str] = CLASSES,
    images: int = IMAGES,
) -> Path:
    """A realistic run folder (fake_run.write_run) with its test numbers changed and a
    predictions.csv in which exactly the images in `wrong` are misclassified."""
    write_run(folder, classes=classes)
    metrics = json.loads((folder / "metrics.json").read_text("utf-8"))
    metrics["train"]["accuracy"] = train_accuracy
    metrics["val"]["accuracy"] = val_accuracy
    metrics["test"]["accuracy"] = accuracy
    metrics["test"]["macro_avg"]["f1"] = accuracy - 0.01
    (folder / "metrics.json").write_text(json.dumps(metrics), "utf-8")
    with (folder / "predictions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "path", "label", "predicted", "confidence"])
        for i in range(images):
            label = classes[i % 3]
            predicted = classes[(i + 1) % 3] if i in wrong else label
            writer.writerow(["test", f"test/img_{i:03d}.png", label, predicted, "0.9"])
        writer.writerow(["val", "cats/val_000.png", "cats", "dogs", "0.6"])  # another split
    return folder


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    return [
        make_run(tmp_path / "a", 0.80, set(range(0, 18)), train_accuracy=0.99, val_accuracy=0.81),
        make_run(tmp_path / "b", 0.90, set(range(10, 19))),  # the best
        make_run(tmp_path / "c", 0.70, set(range(40, 67)), classes=["cats", "dogs", "fish"]),
    ]


def test_compare_marks_the_best_and_computes_the_gap(three_runs: list[Path]) -> None:
    comparison = compare_runs(three_runs)

    assert [row.name for row in comparison.runs] == ["a", "b", "c"]
    assert comparison.best == 1
    first = comparison.runs[0]
    assert (first.split, first.accuracy, first.macro_f1) == ("test", 0.80, pytest.approx(0.79))
    assert first.gap == pytest.approx(0.99 - 0.81)
    assert comparison.runs[1].gap == pytest.approx(0.95 - 0.85)
    assert (first.model, first.total_params, first.epochs_run, first.train_s) == (
        "basenet",
        22499,
        5,
        9.97,
    )
    assert first.best_epoch == 4  # lowest val_loss in fake_run's history


def test_per_class_f1_is_the_union_of_class_names(three_runs: list[Path]) -> None:
    comparison = compare_runs(three_runs)

    assert comparison.classes == ["cats", "dogs", "birds", "fish"]
    assert "fish" not in comparison.runs[0].f1
    assert set(comparison.runs[2].f1) == {"cats", "dogs", "fish"}


def test_mcnemar_against_the_best_equals_scipy_binomtest(three_runs: list[Path]) -> None:
    comparison = compare_runs(three_runs)

    # a is wrong on 0..17, the best (b) on 10..18: only a right on 18, only b right on 0..9
    # c is wrong on 40..66: only c right on 10..18 (9), only b right on 40..66 (27)
    expected = {"a": (1, 10), "c": (9, 27)}
    assert comparison.no_test is None
    assert [test.run for test in comparison.tests] == ["a", "c"]
    raw = []
    for test in comparison.tests:
        only_run, only_best = expected[test.run]
        assert (test.only_run, test.only_best) == (only_run, only_best)
        p = binomtest(only_run, only_run + only_best, 0.5).pvalue
        assert test.p == pytest.approx(p, rel=1e-12)
        raw.append(p)
    assert [t.p_holm for t in comparison.tests] == pytest.approx(stats.holm(raw))
    assert [t.significant for t in comparison.tests] == [p <= 0.05 for p in stats.holm(raw)]


def test_no_test_when_the_runs_saw_different_images(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path / "a", 0.80, {1, 2}),
        make_run(tmp_path / "b", 0.90, {3}, images=80),
    ]

    comparison = compare_runs(runs)

    assert comparison.tests == []
    assert comparison.no_test and "different images" in comparison.no_test
    assert any("No McNemar test" in line for line in comparison.lines())


def test_duplicate_folder_names_get_their_parent(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / p / "seed0", 0.8 + k / 10, set()) for k, p in enumerate("xy")]

    assert [row.name for row in compare_runs(runs).runs] == ["x/seed0", "y/seed0"]


def test_a_folder_that_is_not_a_finished_run_is_named(tmp_path: Path, three_runs) -> None:
    empty = tmp_path / "not-a-run"
    empty.mkdir()

    with pytest.raises(ConfigError, match=r"not-a-run.*metrics\.json"):
        compare_runs([three_runs[0], empty])


def test_compare_needs_at_least_two_runs(three_runs: list[Path]) -> None:
    with pytest.raises(ConfigError, match="at least two"):
        compare_runs(three_runs[:1])


def test_terminal_lines_show_every_run_and_the_best(three_runs: list[Path]) -> None:
    lines = compare_runs(three_runs).lines()
    text = "\n".join(lines)

    assert "b \u2605" in text and "0.9000" in text and "+0.1800" in text
    assert "McNemar's exact test" in lines[-1]


def test_compare_writes_a_page_with_curves(three_runs: list[Path], tmp_path: Path) -> None:
    comparison = compare(three_runs, tmp_path / "out")
    text = (tmp_path / "out" / "compare.html").read_text("utf-8")

    assert len(comparison.runs) == 3
    for heading in ("Runs", "Per-class F1", "McNemar", "Learning curves"):
        assert f"<h2>{heading}</h2>" in text
    assert re.search(r'<tr class="best">\s*<td>b</td>', text)
    sources = re.findall(r'<img[^>]*\ssrc="data:image/png;base64,([^"]*)"', text)
    assert len(sources) == 2  # accuracy and loss
    for source in sources:
        assert Image.open(io.BytesIO(base64.b64decode(source))).width > 100
