"""The split manifest: stratified, seeded, saved; the source's own parts kept; duplicates
never straddle a split we carve."""

from __future__ import annotations

import csv
import io
import shutil
from collections import Counter
from pathlib import Path

import pytest

from cnnlab.config import DataConfig
from cnnlab.data.health import Sample
from cnnlab.data.pipeline import load_data
from cnnlab.data.split import assign_splits, manifest_csv, write_manifest
from cnnlab.errors import ConfigError


def samples(counts: dict[str, int], split: str | None = None) -> list[Sample]:
    """Distinct synthetic samples: `counts` images per label."""
    return [
        Sample(f"{label}/{k:04d}.png", label, split, f"{label}-{k}", "PNG", "RGB", 8, 8, None)
        for label, count in counts.items()
        for k in range(count)
    ]


def per_split(items: list[Sample], splits: list[str]) -> Counter[tuple[str, str]]:
    return Counter((split, s.label) for s, split in zip(items, splits, strict=True))


def manifest_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("fraction", [0.2, 0.25, 1 / 3])
def test_carved_split_keeps_each_class_proportion_within_one(fraction):
    counts = {"a": 50, "b": 31, "c": 7, "d": 3}
    items = samples(counts)
    found = per_split(items, assign_splits(items, fraction, None, seed=0))
    for label, count in counts.items():
        assert abs(found["val", label] - fraction * count) <= 1, label
        assert found["val", label] >= 1 and found["train", label] >= 1  # both sides see it
        assert found["val", label] + found["train", label] == count


def test_default_is_a_20_percent_validation_hold_out_and_no_test():
    items = samples({"a": 10, "b": 20})
    found = per_split(items, assign_splits(items, None, None, seed=0))
    assert found == {("train", "a"): 8, ("val", "a"): 2, ("train", "b"): 16, ("val", "b"): 4}


def test_sixths_give_four_one_one_per_class():
    # S1: validation_split "1/6" and test_split "1/6" are sixths of the whole pool.
    config = DataConfig(source="digits", validation_split="1/6", test_split="1/6")
    items = samples({str(k): 60 for k in range(6)})
    splits = assign_splits(items, config.validation_split, config.test_split, seed=3)
    found = per_split(items, splits)
    for label in map(str, range(6)):
        assert (found["train", label], found["val", label], found["test", label]) == (40, 10, 10)


def test_same_seed_gives_the_same_manifest_and_another_seed_a_different_one(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 12, "dogs": 12})
    config = DataConfig(source=str(root), validation_split="1/6", test_split="1/6")
    first, again, other = (load_data(config, seed) for seed in (7, 7, 8))
    assert first.manifest == again.manifest
    assert first.fingerprint == again.fingerprint
    assert first.manifest != other.manifest
    assert first.fingerprint != other.fingerprint
    rows = manifest_rows(first.manifest)
    assert Counter((r["split"], r["label"]) for r in rows) == {
        ("train", "cats"): 8,
        ("val", "cats"): 2,
        ("test", "cats"): 2,
        ("train", "dogs"): 8,
        ("val", "dogs"): 2,
        ("test", "dogs"): 2,
    }
    for name, split in first.splits.items():
        assert sorted(split.paths) == sorted(r["path"] for r in rows if r["split"] == name)


def test_manifest_lists_every_sample_with_label_split_and_hash(tmp_path):
    items = samples({"a": 3, "b": 2})
    splits = assign_splits(items, 0.4, None, seed=0)
    path = tmp_path / "run" / "split.csv"
    write_manifest(path, items, splits)
    text = path.read_text(encoding="utf-8")
    assert text == manifest_csv(items, splits)
    assert text.splitlines()[0] == "path,label,split,sha256"
    rows = manifest_rows(text)
    assert [r["path"] for r in rows] == sorted(s.path for s in items)
    assert {r["sha256"] for r in rows} == {s.sha256 for s in items}
    assert [p.name for p in path.parent.iterdir()] == ["split.csv"]  # no temporary file left


def test_identical_files_are_never_split_across_train_and_val():
    items = [
        Sample(f"a/{k}.png", "a", None, f"h{k // 3}", "PNG", "RGB", 8, 8, None) for k in range(30)
    ]  # ten groups of three identical files
    for seed in range(5):
        splits = assign_splits(items, 0.3, None, seed=seed)
        by_hash: dict[str, set[str]] = {}
        for item, split in zip(items, splits, strict=True):
            by_hash.setdefault(item.sha256, set()).add(split)
        assert all(len(found) == 1 for found in by_hash.values())
        assert Counter(splits) == {"train": 21, "val": 9}


def test_real_duplicate_files_move_together(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 6, "dogs": 6})
    for k in range(4):
        shutil.copy(root / "cats" / "cats_000.png", root / "cats" / f"again_{k}.png")
    for seed in range(4):
        data = load_data(DataConfig(source=str(root), validation_split=0.3), seed)
        rows = manifest_rows(data.manifest)
        digest = next(r["sha256"] for r in rows if r["path"].endswith("cats_000.png"))
        assert len({r["split"] for r in rows if r["sha256"] == digest}) == 1


# --- the source's own parts ------------------------------------------------------------


@pytest.fixture
def with_val_folder(tmp_path: Path, make_classes) -> Path:
    root = tmp_path / "data"
    make_classes(root / "train", {"a": 4, "b": 4})
    make_classes(root / "validation", {"a": 2, "b": 2}, seed=50)
    return root


def test_existing_val_part_is_used_as_it_is(with_val_folder):
    data = load_data(DataConfig(source=str(with_val_folder)), seed=0)
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 8, "val": 4}
    assert all("/validation/" in p for p in data.splits["val"].paths)


def test_existing_val_part_and_validation_split_is_a_config_error(with_val_folder):
    config = DataConfig(source=str(with_val_folder), validation_split=0.2)
    with pytest.raises(ConfigError, match=r"^data\.validation_split: the source already has a val"):
        load_data(config, seed=0)


def test_existing_test_part_and_test_split_is_a_config_error():
    items = samples({"a": 4}, split="train") + samples({"b": 4}, split="test")
    with pytest.raises(ConfigError, match=r"^data\.test_split: the source already has a test"):
        assign_splits(items, None, 0.1, seed=0)


def test_val_is_carved_from_train_when_the_source_has_only_train_and_test(tmp_path, make_classes):
    root = tmp_path / "data"
    make_classes(root / "train", {"a": 5, "b": 5})
    make_classes(root / "test", {"a": 2, "b": 2}, seed=50)
    data = load_data(DataConfig(source=str(root)), seed=0)
    assert {name: len(split) for name, split in data.splits.items()} == {
        "train": 8,
        "val": 2,
        "test": 4,
    }
    assert all("/train/" in p for p in data.splits["val"].paths)
    assert all("/test/" in p for p in data.splits["test"].paths)


def test_zero_validation_split_keeps_everything_in_train():
    items = samples({"a": 5, "b": 5})
    assert set(assign_splits(items, 0.0, None, seed=0)) == {"train"}


def test_without_a_test_split_the_data_warns_that_validation_leads(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 5, "dogs": 5})
    held_out = load_data(DataConfig(source=str(root)), seed=0)
    assert set(held_out.splits) == {"train", "val"}
    assert any("no test split" in w and "data.test_split" in w for w in held_out.health.warnings)
    tested = load_data(DataConfig(source=str(root), test_split=0.2), seed=0)
    assert not any("no test split" in w for w in tested.health.warnings)
