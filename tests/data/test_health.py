"""The health report: what is there, what was skipped and why, what repeats, and when the data
is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cnnlab.config import DataConfig
from cnnlab.data.health import HealthReport
from cnnlab.data.pipeline import examine
from cnnlab.errors import DataError


def health(source: Path, **settings: object) -> HealthReport:
    return examine(DataConfig(source=str(source), **settings), None).report


def relative(path: str, root: Path) -> str:
    return path[len(str(root)) + 1 :]


def reasons(report: HealthReport, root: Path) -> dict[str, str]:
    return {relative(s["path"], root): s["reason"] for s in report.skipped}


# --- the messy tree ---------------------------------------------------------------------


def test_truncated_jpeg_zero_byte_and_text_files_are_skipped_and_named(
    messy_tree, messy_expectations
):
    report = health(messy_tree)
    assert reasons(report, messy_tree) == messy_expectations["unusable"]
    assert report.unreadable == 3
    assert report.total == 16


def test_png_named_jpg_is_used_because_content_decides(messy_tree):
    report = health(messy_tree)
    assert "dogs/really_a_png.jpg" not in reasons(report, messy_tree)
    assert report.classes == {"cats": 7, "dogs": 6}
    assert report.formats == {"JPEG": 7, "PNG": 6}


def test_hidden_and_system_entries_are_ignored_never_classes_or_samples(
    messy_tree, messy_expectations
):
    found = examine(DataConfig(source=str(messy_tree)), None)
    assert set(found.report.classes) == {"cats", "dogs"}
    assert {relative(p, messy_tree) for p in found.report.ignored} == messy_expectations["ignored"]
    litter = ("__MACOSX", ".DS_Store", "Thumbs.db", ".git", ".ipynb_checkpoints", "._x")
    paths = [s.path for s in found.samples] + [s["path"] for s in found.report.skipped]
    assert not [p for p in paths if any(name in p for name in litter)]


def test_every_mode_is_read_and_counted(messy_tree):
    report = health(messy_tree)
    assert report.modes == {"RGB": 8, "L": 1, "RGBA": 1, "P": 1, "1": 1, "I;16": 1}
    assert sum(report.sizes.values()) == 13
    assert report.sizes["10x8"] == 7  # the six dogs and cats/gray.jpg
    assert list(report.sizes) == sorted(report.sizes, key=report.sizes.get, reverse=True)


def test_empty_class_folder_is_an_error_naming_it(messy_tree):
    report = health(messy_tree, max_bad_fraction=1.0)
    assert [relative(p, messy_tree) for p in report.empty_classes] == ["birds/"]
    with pytest.raises(DataError, match=r"empty class\(es\) with no usable image: .*/birds/"):
        report.raise_for_errors(max_bad_fraction=1.0)


def test_class_folder_holding_only_system_files_counts_as_empty(messy_tree):
    (messy_tree / "birds" / ".DS_Store").write_bytes(b"\0")
    report = health(messy_tree)
    assert [relative(p, messy_tree) for p in report.empty_classes] == ["birds/"]


def test_class_whose_every_file_is_broken_is_an_empty_class(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 2, "dogs": 2})
    (root / "owls").mkdir()
    (root / "owls" / "owl.jpg").write_bytes(b"")
    report = health(root)
    assert "owls" in report.empty_classes
    with pytest.raises(DataError, match="owls"):
        report.raise_for_errors(max_bad_fraction=1.0)


def test_too_many_unreadable_files_fail_naming_the_key_and_a_file(messy_tree):
    shutil.rmtree(messy_tree / "birds")
    report = health(messy_tree)
    assert report.bad_fraction == pytest.approx(3 / 16)
    with pytest.raises(DataError) as caught:
        report.raise_for_errors(max_bad_fraction=0.1)
    message = str(caught.value)
    assert "3 of 16 files cannot be used" in message
    assert "data.max_bad_fraction 0.1" in message
    assert "cats/broken.jpg (truncated image)" in message


def test_bad_fraction_message_gives_an_unreadable_file_as_its_example(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 2, "dogs": 2})
    (root / "a_readme.txt").write_text("not a sample", encoding="utf-8")  # skipped by the scan
    (root / "dogs" / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"1 of 5 files .* e\.g\. .*/dogs/zero\.png \(zero-byte"):
        health(root).raise_for_errors(max_bad_fraction=0.0)


def test_raising_max_bad_fraction_lets_the_same_data_pass(messy_tree):
    shutil.rmtree(messy_tree / "birds")
    health(messy_tree).raise_for_errors(max_bad_fraction=0.2)


def test_one_class_is_refused_with_a_hint(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 3})
    with pytest.raises(DataError, match=r"found 1 class\(es\) \(cats\); a classifier needs"):
        health(root).raise_for_errors(max_bad_fraction=0.05)


# --- duplicates and leakage ---------------------------------------------------------------


def test_identical_files_in_one_split_are_a_duplicate_group_not_leakage(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 3, "dogs": 3})
    shutil.copy(root / "cats" / "cats_000.png", root / "cats" / "copy.png")
    report = health(root)
    assert len(report.duplicates) == 1
    group = report.duplicates[0]
    assert sorted(relative(p, root) for p in group["paths"]) == [
        "cats/cats_000.png",
        "cats/copy.png",
    ]
    assert group["across_splits"] is False and group["conflicting_labels"] is False
    assert report.leakage == []
    assert not any("leakage" in w for w in report.warnings)


def test_identical_files_in_train_and_test_are_flagged_as_leakage(tmp_path, make_classes):
    root = tmp_path / "data"
    make_classes(root / "train", {"a": 3, "b": 3})
    make_classes(root / "test", {"a": 1, "b": 1}, seed=50)
    shutil.copy(root / "train" / "a" / "a_001.png", root / "test" / "a" / "leaked.png")
    report = health(root)
    assert len(report.leakage) == 1
    group = report.leakage[0]
    assert group["across_splits"] is True and group["splits"] == ["test", "train"]
    warning = next(w for w in report.warnings if "leakage" in w)
    assert "test/a/leaked.png" in warning and "train/a/a_001.png" in warning


def test_identical_files_with_different_labels_are_warned_about(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 2, "dogs": 2})
    shutil.copy(root / "cats" / "cats_000.png", root / "dogs" / "cat_in_dogs.png")
    report = health(root)
    assert report.duplicates[0]["conflicting_labels"] is True
    assert report.duplicates[0]["labels"] == ["cats", "dogs"]
    assert any("carry different labels" in w for w in report.warnings)


# --- balance, splits, JSON ---------------------------------------------------------------


def test_imbalance_ratio_is_largest_over_smallest_class_and_warned(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 6, "dogs": 2, "owls": 3})
    report = health(root)
    assert report.imbalance_ratio == 3.0
    assert any("imbalanced" in w and "3x" in w for w in report.warnings)


def test_balanced_classes_give_no_imbalance_warning(tmp_path, make_classes):
    report = health(make_classes(tmp_path / "pets", {"cats": 2, "dogs": 2}))
    assert report.imbalance_ratio == 1.0 and report.warnings == []


def test_split_missing_a_class_is_warned(tmp_path, make_classes):
    root = tmp_path / "data"
    make_classes(root / "train", {"a": 2, "b": 2})
    make_classes(root / "val", {"a": 2}, seed=50)
    report = health(root)
    assert report.splits == {"train": {"a": 2, "b": 2}, "val": {"a": 2}}
    assert "split val has no image of class(es) b" in report.warnings


def test_report_is_json_serialisable_with_its_findings(messy_tree):
    payload = json.loads(json.dumps(health(messy_tree).to_json()))
    assert {"classes", "skipped", "duplicates", "ignored", "empty_classes"} <= set(payload)
    assert payload["classes"] == {"cats": 7, "dogs": 6}
    assert {s["reason"] for s in payload["skipped"]} == {
        "truncated image",
        "zero-byte file",
        "not an image",
    }
    assert payload["bad_fraction"] == pytest.approx(3 / 16)
