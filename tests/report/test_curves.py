"""The report's ROC, precision-recall and calibration section: drawn from a run folder's files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cnnlab.report import render_report
from cnnlab.report.view import class_curves, ranking_section, split_predictions
from cnnlab.runfiles import read_run
from cnnlab.task.metrics import classification_metrics

from .fake_run import CLASSES, write_run
from .test_html import embedded_images


def scored_run(
    folder: Path, classes: list[str], absent: str | None = None, size: int = 90
) -> dict[str, object]:
    """A fake run whose test split has real metrics.json entries and predictions.csv rows."""
    write_run(folder)  # the page takes the classes from metrics.json's test entry
    rng = np.random.default_rng(0)
    present = [k for k, c in enumerate(classes) if c != absent]
    labels = np.array([present[i % len(present)] for i in range(size)])
    logits = rng.normal(size=(size, len(classes))) + 2.0 * np.eye(len(classes))[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    metrics = json.loads((folder / "metrics.json").read_text("utf-8"))
    metrics["test"] = classification_metrics(labels, probabilities, classes, 0.5, 5)
    (folder / "metrics.json").write_text(json.dumps(metrics), "utf-8")
    with (folder / "predictions.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["split", "path", "label", "predicted", "confidence"] + [f"p_{c}" for c in classes]
        )
        for i, row in enumerate(probabilities):
            best = int(row.argmax())
            writer.writerow(
                ["test", f"img_{i}.png", classes[labels[i]], classes[best], f"{row[best]:.6f}"]
                + [f"{p:.6f}" for p in row]
            )
    return metrics["test"]


def section(html: str) -> str:
    start = html.index('<section id="ranking">')
    return " ".join(html[start : html.index("</section>", start)].split())


def test_the_section_shows_curves_auc_table_and_reliability_with_ece(tmp_path: Path) -> None:
    metrics = scored_run(tmp_path / "run", CLASSES)
    html = render_report(tmp_path / "run").read_text("utf-8")
    part = section(html)
    assert "ROC, precision-recall and calibration <small>(test)</small>" in part
    assert '<a href="#ranking">' in html
    assert len(embedded_images(part)) == 2  # curves, reliability diagram
    for name in CLASSES:
        assert f"<td>{name}</td><td>{metrics['roc_auc']['per_class'][name]:.3f}</td>" in part
    assert f"<td>{metrics['roc_auc']['macro']:.3f}</td>" in part
    assert f"Expected calibration error {metrics['ece']:.4f}: over 15" in part
    curves, reliability = embedded_images(part)
    assert curves.width > 2 * curves.height // 2 and reliability.height > reliability.width


def test_a_class_absent_from_the_split_is_named_and_the_page_renders(tmp_path: Path) -> None:
    metrics = scored_run(tmp_path / "run", CLASSES, absent="birds")
    assert metrics["roc_auc"]["undefined"] == ["birds"]
    part = section(render_report(tmp_path / "run").read_text("utf-8"))
    assert "left out of the macro average: birds." in part
    assert "<td>birds</td><td>\u2013</td><td>\u2013</td>" in part
    assert len(embedded_images(part)) == 2


def ranking(folder: Path) -> dict:
    """The section's data without the rest of the page (whose figures take seconds)."""
    section = ranking_section(read_run(folder))
    assert section is not None
    return section


def test_two_classes_draw_the_positive_class(tmp_path: Path) -> None:
    scored_run(tmp_path / "run", ["cat", "dog"])
    shown = ranking(tmp_path / "run")
    assert shown["binary"] and shown["curves_src"] and shown["reliability_src"]
    labels, probabilities = split_predictions(tmp_path / "run", "test", ["cat", "dog"])  # type: ignore[misc]
    curves, macro = class_curves(labels, probabilities, ["cat", "dog"], {}, {})
    assert [c.name for c in curves] == ["dog"] and macro is None


def test_many_classes_draw_thin_lines_and_the_macro_average(tmp_path: Path) -> None:
    classes = [f"class_{k:02d}" for k in range(30)]
    scored_run(tmp_path / "run", classes, size=300)
    shown = ranking(tmp_path / "run")
    assert shown["many"] and shown["curves_src"]
    assert [row["name"] for row in shown["rows"]] == classes


def test_without_predictions_csv_the_numbers_and_reliability_stay(tmp_path: Path) -> None:
    metrics = scored_run(tmp_path / "run", CLASSES)
    (tmp_path / "run" / "predictions.csv").write_text("split,path,label\n", "utf-8")
    shown = ranking(tmp_path / "run")
    assert shown["curves_src"] is None and shown["reliability_src"]
    assert shown["macro"]["auc"] == f"{metrics['roc_auc']['macro']:.3f}"


def test_a_run_without_these_metrics_has_no_section(run_folder: Path) -> None:
    assert ranking_section(read_run(run_folder)) is None


def test_curves_are_scikit_learns_and_the_macro_curve_averages_them(tmp_path: Path) -> None:
    from sklearn.metrics import roc_curve

    scored_run(tmp_path / "run", CLASSES)
    scored = split_predictions(tmp_path / "run", "test", CLASSES)
    assert scored is not None
    labels, probabilities = scored
    assert probabilities.shape == (90, 3) and set(labels) == {0, 1, 2}
    curves, macro = class_curves(labels, probabilities, CLASSES, {"cats": 0.9}, {})
    fpr, tpr, _ = roc_curve(labels == 0, probabilities[:, 0])
    assert np.array_equal(curves[0].fpr, fpr) and np.array_equal(curves[0].tpr, tpr)
    assert curves[0].auc == 0.9 and curves[1].auc is None
    assert macro is not None
    grid, mean = macro
    assert mean[0] >= 0 and mean[-1] == pytest.approx(1.0)
    assert mean[100] == pytest.approx(np.mean([np.interp(grid[100], c.fpr, c.tpr) for c in curves]))
