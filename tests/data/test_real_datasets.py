"""The real datasets in ../shared/datasets, read exactly as any user folder or zip would be.

Kept fast: checks without decoding where the layout is the point, and never all of cifar10.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cnnlab.config import DataConfig
from cnnlab.data.pipeline import examine, load_data
from cnnlab.data.sources import scan_files

FINGER_PATTERN = r"_(\d)[LR]\.png$"


def test_missing_datasets_skip_locally_but_fail_on_ci(tmp_path, monkeypatch, require):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="real datasets not found"):
        require(tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must provide them"):
        require(tmp_path / "absent")


def test_fingers_train_zip_counts_fingers_from_file_names(datasets):
    cfg = DataConfig(source=str(datasets / "fingers" / "train.zip"), label_pattern=FINGER_PATTERN)
    report = examine(cfg, None).report
    assert report.classes == {str(k): 100 for k in range(6)}
    assert report.splits == {"train": report.classes}
    assert report.skipped == [] and report.sizes == {"128x128": 600}
    assert report.modes == {"L": 600}


def test_fingers_folder_of_split_zips_gives_train_and_test(datasets):
    scan = scan_files(str(datasets / "fingers"), label_pattern=FINGER_PATTERN)
    counts = Counter((e.split, e.label) for e in scan.entries)
    assert counts == {
        **{("train", str(k)): 100 for k in range(6)},
        **{("test", str(k)): 40 for k in range(6)},
    }
    # README.md, manifest.csv and SHA256SUMS sit beside the zips: listed as ignored, not used.
    assert {Path(p).name for p in scan.ignored} == {"README.md", "manifest.csv", "SHA256SUMS"}
    assert scan.skipped == []


def test_blood_cells_train_zip_with_upper_case_train_folder(datasets):
    report = examine(DataConfig(source=str(datasets / "blood_cells" / "train.zip")), None).report
    assert report.classes == {
        "EOSINOPHIL": 150,
        "LYMPHOCYTE": 150,
        "MONOCYTE": 150,
        "NEUTROPHIL": 150,
    }
    assert report.splits == {"train": report.classes}
    assert report.skipped == [] and report.formats == {"JPEG": 600}


def test_cats_vs_dogs_loads_resized_with_its_validation_zip(datasets):
    data = load_data(
        DataConfig(source=str(datasets / "cats_vs_dogs"), target_size=(64, 64)), seed=0
    )
    assert data.classes == ["cats", "dogs"]
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 300, "val": 150}
    assert data.splits["train"].images.shape == (300, 3, 64, 64)
    assert data.input_shape == (64, 64, 3)
    assert data.health.leakage == []


def test_mnist_idx_folder_has_60000_train_and_10000_test(datasets):
    report = examine(DataConfig(source=str(datasets / "mnist")), None).report
    assert sum(report.splits["train"].values()) == 60_000
    assert sum(report.splits["test"].values()) == 10_000
    assert report.splits["train"]["1"] == 6742 and report.splits["test"]["5"] == 892
    assert report.sizes == {"28x28": 70_000}
