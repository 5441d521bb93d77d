"""The page's Evaluations section: `cnnlab evaluate`'s results, read from evaluations/<name>/."""

from __future__ import annotations

from pathlib import Path

from cnnlab.report import render_report
from cnnlab.runfiles import Evaluation, read_run

from .fake_run import CLASSES, CONFUSION, class_report, write_evaluation

F1 = f"{class_report(CONFUSION, CLASSES)['macro_avg']['f1']:.3f}"


def section(html: str) -> str:
    start = html.find('<section id="evaluations">')
    assert start != -1, "no Evaluations section"
    return html[start : html.find("</section>", start)]


def test_two_evaluations_are_rows_with_their_numbers(run_folder: Path) -> None:
    write_evaluation(
        run_folder,
        "other_data",
        0.7125,
        0.9134,
        source="/data/zoo",
        same_data=False,
        split="all",
        tta=True,
        images=1234,
        augment="train",
        classes_absent=["birds"],
        created="2026-12-02T08:30:00+00:00",
    )
    write_evaluation(run_folder, "augmented_test", 0.8125, 0.5312, augment="s1")

    html = render_report(run_folder).read_text(encoding="utf-8")
    part = section(html)
    assert '<a href="#evaluations">Evaluations</a>' in html
    assert "after the run by <code>cnnlab evaluate</code>" in part
    assert "the run's own metrics above are unchanged" in part
    first, second = part.find("<td>augmented_test</td>"), part.find("<td>other_data</td>")
    assert -1 < first < second  # sorted by name
    augmented, other = part[first:second], part[second:]
    for cell in (
        "/data/animals, test (the run's own)",
        ">s1<",
        ">no<",
        ">90<",
        "81.25%",
        "0.5312",
        F1,
        "2026-12-01 12:00 UTC",
    ):
        assert cell in augmented, cell
    for cell in (
        "/data/zoo, all</td>",
        "train (the run&#39;s own)",
        ">yes<",
        "1,234",
        "71.25%",
        "0.9134",
        "2026-12-02 08:30 UTC",
    ):
        assert cell in other, cell
    assert "other_data: no images of birds." in part
    # the run's own numbers stay where they were
    assert "<td>test</td><td>0.4213</td><td>88.89%</td>" in html


def test_read_run_lists_evaluations_by_name(run_folder: Path) -> None:
    write_evaluation(run_folder, "b", 0.5, 1.0)
    write_evaluation(run_folder, "a", 0.6, 0.9)
    evaluations = read_run(run_folder).evaluations
    assert [e.name for e in evaluations] == ["a", "b"]
    assert isinstance(evaluations[0], Evaluation)
    assert evaluations[0].info["split"] == "test" and evaluations[0].metrics["accuracy"] == 0.6


def test_a_damaged_evaluation_is_a_note_not_an_exception(run_folder: Path) -> None:
    write_evaluation(run_folder, "good", 0.8, 0.5)
    broken = write_evaluation(run_folder, "broken", 0.8, 0.5)
    (broken / "evaluation.json").write_text("{not json", encoding="utf-8")
    (write_evaluation(run_folder, "no_metrics", 0.8, 0.5) / "metrics.json").unlink()

    html = render_report(run_folder).read_text(encoding="utf-8")
    assert "evaluations/broken/evaluation.json: could not be parsed" in html
    assert "evaluations/no_metrics/metrics.json: not found" in html
    part = section(html)
    assert "<td>good</td>" in part and "<td>broken</td>" not in part
    assert "<td>no_metrics</td>" in part  # known data, numbers shown as missing


def test_without_evaluations_there_is_no_section(run_folder: Path) -> None:
    (run_folder / "evaluations").mkdir()  # even an empty folder
    html = render_report(run_folder).read_text(encoding="utf-8")
    assert 'id="evaluations"' not in html
    assert "Evaluations" not in html
