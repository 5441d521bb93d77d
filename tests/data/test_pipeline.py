"""load_data from a config to checked, split, decoded uint8 arrays: what an experiment gets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab.data.ingest as ingest
from cnnlab.config import DataConfig
from cnnlab.data.pipeline import Data, load_data
from cnnlab.errors import DataError


def messy_config(root: Path, **settings: object) -> DataConfig:
    # The messy tree mixes sizes, so it needs a target size to stack.
    return DataConfig(source=str(root), target_size=(8, 8), **settings)


def test_messy_tree_with_an_empty_class_folder_fails_naming_it(messy_tree):
    with pytest.raises(DataError, match=r"empty class\(es\).*messy/birds/; add images or remove"):
        load_data(messy_config(messy_tree, max_bad_fraction=1.0), seed=0)


def test_messy_tree_without_the_empty_folder_fails_on_too_many_bad_files(messy_tree):
    (messy_tree / "birds").rmdir()
    with pytest.raises(DataError, match=r"3 of 16 files .*> data\.max_bad_fraction 0\.05"):
        load_data(messy_config(messy_tree), seed=0)


def test_messy_tree_loads_once_the_folder_is_gone_and_the_limit_raised(
    messy_tree, messy_expectations
):
    (messy_tree / "birds").rmdir()
    data = load_data(messy_config(messy_tree, max_bad_fraction=0.2), seed=0)
    assert data.classes == ["cats", "dogs"] and data.num_classes == 2
    assert data.input_shape == (8, 8, 3)
    assert sum(len(s) for s in data.splits.values()) == 13
    used = [p for split in data.splits.values() for p in split.paths]
    assert any(p.endswith("dogs/really_a_png.jpg") for p in used)
    assert not any(p.endswith(tuple(messy_expectations["unusable"])) for p in used)
    assert len(data.health.skipped) == 3


def test_zipped_messy_tree_loads_the_same_data(tmp_path, messy_tree, zip_folder):
    shutil.rmtree(messy_tree / "birds")
    archive = zip_folder(messy_tree, tmp_path / "messy.zip")
    folder = load_data(messy_config(messy_tree, max_bad_fraction=0.2), seed=0)
    zipped = load_data(messy_config(archive, max_bad_fraction=0.2), seed=0)
    assert zipped.health.classes == folder.health.classes == {"cats": 7, "dogs": 6}
    for name in ("train", "val"):
        np.testing.assert_array_equal(zipped.splits[name].images, folder.splits[name].images)
        np.testing.assert_array_equal(zipped.splits[name].labels, folder.splits[name].labels)


def test_splits_are_uint8_nchw_with_labels_matching_their_folders(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 5, "dogs": 5}, size=(6, 4))
    data = load_data(DataConfig(source=str(root)), seed=0)
    assert set(data.splits) == {"train", "val"}
    for split in data.splits.values():
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (3, 4, 6)
        assert split.labels.dtype == np.int64 and len(split) == len(split.paths)
        for label, path in zip(split.labels, split.paths, strict=True):
            assert f"/{data.classes[label]}/" in path
    assert data.input_shape == (4, 6, 3)


def test_numeric_class_names_sort_as_numbers(tmp_path, make_classes):
    root = make_classes(tmp_path / "counts", {"10": 2, "2": 2, "1": 2})
    assert load_data(DataConfig(source=str(root)), seed=0).classes == ["1", "2", "10"]


def test_grayscale_mode_gives_one_channel(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 2, "dogs": 2})
    data = load_data(DataConfig(source=str(root), color_mode="grayscale"), seed=0)
    assert data.input_shape == (8, 8, 1)


def test_loaded_pixels_are_the_decoded_file(tmp_path):
    root = tmp_path / "flat"
    for label, value in (("black", 0), ("white", 255)):
        for k in range(2):
            path = root / label / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (3, 3), value).save(path)
    data = load_data(DataConfig(source=str(root), validation_split=0.0), seed=0)
    train = data.splits["train"]
    for image, label in zip(train.images, train.labels, strict=True):
        expected = 0 if data.classes[label] == "black" else 255
        assert (image == expected).all()


def test_large_folder_is_read_by_worker_processes_with_the_same_pixels(
    tmp_path, make_classes, monkeypatch
):
    root = make_classes(tmp_path / "many", {"a": 150, "b": 150}, size=(6, 6))
    assert ingest.PARALLEL_FROM < 300
    monkeypatch.setattr(ingest.os, "cpu_count", lambda: 2)  # a pool even on a one-core runner
    pools: list[int] = []
    real_pool = ingest.ProcessPoolExecutor

    def counting_pool(*args, **kwargs):
        pools.append(1)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(ingest, "ProcessPoolExecutor", counting_pool)
    parallel = load_data(DataConfig(source=str(root), cache_dir=str(tmp_path / "c1")), seed=0)
    assert pools == [1]

    monkeypatch.setattr(ingest, "PARALLEL_FROM", 10**9)
    serial = load_data(DataConfig(source=str(root), cache_dir=str(tmp_path / "c2")), seed=0)
    assert pools == [1]  # the second load stayed in this process
    assert serial.manifest == parallel.manifest
    for name in ("train", "val"):
        np.testing.assert_array_equal(parallel.splits[name].images, serial.splits[name].images)
    assert parallel.health.to_json() == serial.health.to_json()


def test_data_fingerprint_changes_with_decode_settings(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 2, "dogs": 2})

    def fingerprint(**settings: object) -> str:
        data: Data = load_data(DataConfig(source=str(root), **settings), seed=0)
        return data.fingerprint

    assert fingerprint() == fingerprint()
    assert fingerprint() != fingerprint(target_size=(4, 4))
