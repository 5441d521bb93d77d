"""Finding samples: class folders, zips read in place, split layouts, labels from file names or
a CSV, and sources that are already arrays (IDX files, scikit-learn's digits)."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cnnlab.config import DataConfig
from cnnlab.data.pipeline import examine, load_data
from cnnlab.data.sources import Scan, scan_files
from cnnlab.errors import DataError

OUTSIDE = "outside the train/val/test parts"


def relative(path: str, root: Path) -> str:
    return path[len(str(root)) + 1 :]


def layout(scan: Scan) -> Counter[tuple[str | None, str]]:
    """How many entries per (split, label)."""
    return Counter((e.split, e.label) for e in scan.entries)


def skipped(scan: Scan, root: Path) -> dict[str, str]:
    return {relative(path, root): reason for path, reason in scan.skipped}


# --- class folders, as a folder and as a zip ------------------------------------------------


def test_class_folders_give_one_label_each_and_no_split(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 3, "dogs": 2})
    scan = scan_files(str(root))
    assert layout(scan) == {(None, "cats"): 3, (None, "dogs"): 2}
    assert scan.skipped == [] and scan.empty_classes == []


def test_messy_tree_zipped_is_read_in_place_with_the_same_result(
    tmp_path, messy_tree, zip_folder, messy_expectations
):
    archive = zip_folder(messy_tree, tmp_path / "messy.zip")
    folder, zipped = scan_files(str(messy_tree)), scan_files(str(archive))

    assert layout(zipped) == layout(folder) == {(None, "cats"): 8, (None, "dogs"): 8}
    assert skipped(zipped, archive) == skipped(folder, messy_tree)
    assert [relative(p, archive) for p in zipped.empty_classes] == ["birds/"]
    assert {relative(p, archive) for p in zipped.ignored} == messy_expectations["ignored"]
    assert {relative(p, messy_tree) for p in folder.ignored} == messy_expectations["ignored"]
    # Nothing was extracted beside the archive.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy", "messy.zip"]


def test_zipped_tree_decodes_to_the_same_pixels_as_the_folder(tmp_path, make_classes, zip_folder):
    root = make_classes(tmp_path / "pets", {"cats": 3, "dogs": 3})
    archive = zip_folder(root, tmp_path / "pets.zip")
    from_folder = load_data(DataConfig(source=str(root), validation_split=0.0), seed=0)
    from_zip = load_data(DataConfig(source=str(archive), validation_split=0.0), seed=0)
    assert from_zip.classes == from_folder.classes == ["cats", "dogs"]
    np.testing.assert_array_equal(
        from_zip.splits["train"].images, from_folder.splits["train"].images
    )
    assert [relative(p, archive) for p in from_zip.splits["train"].paths] == [
        relative(p, root) for p in from_folder.splits["train"].paths
    ]


def test_missing_source_names_the_key_and_the_path(tmp_path):
    with pytest.raises(DataError, match=r"data\.source: .*nowhere: no such folder"):
        scan_files(str(tmp_path / "nowhere"))
    text = tmp_path / "notes.txt"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"not a folder or a \.zip archive"):
        scan_files(str(text))


def test_loose_files_beside_class_folders_are_skipped_and_named(
    tmp_path, make_classes, write_image
):
    root = make_classes(tmp_path / "pets", {"cats": 2, "dogs": 2})
    write_image(root / "loose.png")
    (root / "readme.txt").write_text("about", encoding="utf-8")
    scan = scan_files(str(root))
    assert skipped(scan, root) == {"loose.png": "not inside a class folder"}
    assert {relative(p, root) for p in scan.ignored} == {"readme.txt"}  # not an image by name
    assert len(scan.entries) == 4


# --- split layouts ------------------------------------------------------------------------


@pytest.mark.parametrize("val_name", ["val", "validation", "valid"])
def test_train_val_test_folders_are_the_splits(tmp_path, make_classes, val_name):
    root = tmp_path / "data"
    make_classes(root / "train", {"a": 3, "b": 3})
    make_classes(root / val_name, {"a": 2, "b": 1}, seed=100)
    make_classes(root / "test", {"a": 1, "b": 2}, seed=200)
    scan = scan_files(str(root))
    assert layout(scan) == {
        ("train", "a"): 3,
        ("train", "b"): 3,
        ("val", "a"): 2,
        ("val", "b"): 1,
        ("test", "a"): 1,
        ("test", "b"): 2,
    }


def test_sibling_split_zips_are_the_splits_and_other_files_are_named(
    tmp_path, make_classes, zip_folder
):
    root = tmp_path / "fingers"
    zip_folder(make_classes(tmp_path / "tr", {"a": 3, "b": 2}), root / "train.zip")
    zip_folder(make_classes(tmp_path / "te", {"a": 1, "b": 1}, seed=50), root / "test.zip")
    (root / "README.md").write_text("# about", encoding="utf-8")
    make_classes(root / "extra", {"a": 1}, seed=90)
    scan = scan_files(str(root))
    assert layout(scan) == {
        ("train", "a"): 3,
        ("train", "b"): 2,
        ("test", "a"): 1,
        ("test", "b"): 1,
    }
    assert skipped(scan, root) == {"extra/a/a_000.png": OUTSIDE}
    assert {relative(p, root) for p in scan.ignored} == {"README.md"}
    assert all(".zip/" in e.path for e in scan.entries)  # read inside the zips


def test_zip_with_a_wrapper_folder_is_looked_through(tmp_path, make_classes, zip_folder):
    # Like cats_and_dogs_filtered.zip: cats_and_dogs_filtered/{train,validation}/{cats,dogs}.
    inner = tmp_path / "inner"
    make_classes(inner / "train", {"cats": 3, "dogs": 3})
    make_classes(inner / "validation", {"cats": 1, "dogs": 2}, seed=40)
    archive = zip_folder(inner, tmp_path / "filtered.zip", prefix="cats_and_dogs_filtered/")
    scan = scan_files(str(archive))
    assert layout(scan) == {
        ("train", "cats"): 3,
        ("train", "dogs"): 3,
        ("val", "cats"): 1,
        ("val", "dogs"): 2,
    }


def test_split_zip_holding_its_own_wrapper_and_split_folder_is_looked_through(
    tmp_path, make_classes, zip_folder
):
    # cats_vs_dogs: train.zip holds cats_and_dogs_filtered/train/{cats,dogs}.
    root = tmp_path / "cats_vs_dogs"
    for split, seed in (("train", 0), ("validation", 50)):
        folder = make_classes(tmp_path / split / split, {"cats": 2, "dogs": 2}, seed=seed)
        zip_folder(folder.parent, root / f"{split}.zip", prefix="cats_and_dogs_filtered/")
    scan = scan_files(str(root))
    assert layout(scan) == {
        ("train", "cats"): 2,
        ("train", "dogs"): 2,
        ("val", "cats"): 2,
        ("val", "dogs"): 2,
    }


def test_zip_whose_single_top_folder_is_an_upper_case_split(tmp_path, make_classes, zip_folder):
    # blood_cells/train.zip holds TRAIN/<CLASS>/*.jpeg.
    folder = make_classes(
        tmp_path / "x" / "TRAIN", {"EOSINOPHIL": 2, "MONOCYTE": 3}, suffix=".jpeg"
    )
    archive = zip_folder(folder.parent, tmp_path / "train.zip")
    scan = scan_files(str(archive))
    assert layout(scan) == {("train", "EOSINOPHIL"): 2, ("train", "MONOCYTE"): 3}


def test_files_outside_the_split_folders_are_skipped_with_the_reason(tmp_path, make_classes):
    root = tmp_path / "data"
    make_classes(root / "train", {"a": 2, "b": 2})
    make_classes(root / "test", {"a": 1, "b": 1}, seed=20)
    make_classes(root / "unsorted", {"a": 1}, seed=30)
    (root / "labels.txt").write_text("a\nb\n", encoding="utf-8")
    scan = scan_files(str(root))
    assert skipped(scan, root) == {"unsorted/a/a_000.png": OUTSIDE}
    assert {relative(p, root) for p in scan.ignored} == {"labels.txt"}
    assert {e.split for e in scan.entries} == {"train", "test"}


def test_two_parts_for_the_same_split_are_refused(tmp_path, make_classes):
    root = tmp_path / "data"
    make_classes(root / "val", {"a": 1, "b": 1})
    make_classes(root / "validation", {"a": 1, "b": 1}, seed=10)
    make_classes(root / "train", {"a": 1, "b": 1}, seed=20)
    with pytest.raises(DataError, match="more than one part for the same split"):
        scan_files(str(root))


# --- labels from file names ----------------------------------------------------------------


@pytest.fixture
def finger_files(tmp_path, write_image) -> Path:
    root = tmp_path / "fingers"
    for k, name in enumerate(["u1_0L.png", "u2_0R.png", "u3_3L.png", "u4_5R.png", "u5_5L.png"]):
        write_image(root / name, mode="L", seed=k)
    write_image(root / "preview.png", seed=99)
    return root


def test_label_pattern_group_one_is_the_class_and_misses_are_named(finger_files):
    pattern = r"_(\d)[LR]\.png$"
    scan = scan_files(str(finger_files), label_pattern=pattern)
    assert Counter(e.label for e in scan.entries) == {"0": 2, "3": 1, "5": 2}
    assert skipped(scan, finger_files) == {
        "preview.png": f"file name does not match label_pattern {pattern!r}"
    }


def test_label_pattern_named_group_label_wins_over_group_one(finger_files):
    scan = scan_files(str(finger_files), label_pattern=r"_(?P<count>\d)(?P<label>[LR])\.png$")
    assert Counter(e.label for e in scan.entries) == {"L": 3, "R": 2}


def test_label_pattern_works_inside_split_zips(tmp_path, write_image, zip_folder):
    folder = tmp_path / "x"
    for k, name in enumerate(["a_1L.png", "b_2R.png", "c_1R.png"]):
        write_image(folder / "train" / name, seed=k)
    archive = zip_folder(folder, tmp_path / "train.zip")
    scan = scan_files(str(archive), label_pattern=r"_(\d)[LR]\.png$")
    assert layout(scan) == {("train", "1"): 2, ("train", "2"): 1}


# --- labels from a CSV --------------------------------------------------------------------


def test_labels_csv_labels_and_splits_files_and_names_every_mismatch(tmp_path, write_image):
    root = tmp_path / "images"
    for k in range(5):
        write_image(root / f"img{k}.png", seed=k)
    write_image(root / "sub" / "deep.png", seed=10)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,label,split\n"
        "img0.png,cat,\n"
        "img1.png,dog,train\n"
        "img2.png,cat,validation\n"
        "sub/deep.png,dog,test\n"
        "img9.png,cat,\n",
        encoding="utf-8",
    )
    scan = scan_files(str(root), labels_csv=str(labels))
    by_name = {relative(e.path, root): (e.label, e.split) for e in scan.entries}
    assert by_name == {
        "img0.png": ("cat", None),
        "img1.png": ("dog", "train"),
        "img2.png": ("cat", "val"),
        "sub/deep.png": ("dog", "test"),
    }
    reasons = {path: reason for path, reason in scan.skipped}
    assert reasons["img9.png"] == f"listed in {labels} but not found in the source"
    assert reasons[str(root / "img3.png")] == "not listed in labels_csv"
    assert reasons[str(root / "img4.png")] == "not listed in labels_csv"
    assert len(reasons) == 3


def test_labels_csv_without_split_column(tmp_path, write_image):
    root = tmp_path / "images"
    for k in range(4):
        write_image(root / f"img{k}.png", seed=k)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nimg0.png,a\nimg1.png,a\nimg2.png,b\nimg3.png,b\n", "utf-8")
    scan = scan_files(str(root), labels_csv=str(labels))
    assert layout(scan) == {(None, "a"): 2, (None, "b"): 2}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("file,class\nimg0.png,a\n", "needs a header with columns path,label"),
        ("path,label,split\nimg0.png,a,holdout\n", r"labels.csv:2: split 'holdout' is not"),
    ],
)
def test_bad_labels_csv_names_the_key_and_the_problem(tmp_path, write_image, text, problem):
    write_image(tmp_path / "images" / "img0.png")
    labels = tmp_path / "labels.csv"
    labels.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=rf"data\.labels_csv: .*{problem}"):
        scan_files(str(tmp_path / "images"), labels_csv=str(labels))


def test_labels_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_is_read(tmp_path, write_image):
    for k in range(2):
        write_image(tmp_path / "images" / f"img{k}.png", seed=k)
    labels = tmp_path / "labels.csv"
    labels.write_bytes("path,label\r\nimg0.png,a\r\nimg1.png,b\r\n".encode("utf-8-sig"))
    scan = scan_files(str(tmp_path / "images"), labels_csv=str(labels))
    assert layout(scan) == {(None, "a"): 1, (None, "b"): 1}


def test_labels_csv_with_only_a_header_names_every_file_as_unlisted(tmp_path, write_image):
    write_image(tmp_path / "images" / "img0.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n", encoding="utf-8")
    scan = scan_files(str(tmp_path / "images"), labels_csv=str(labels))
    assert skipped(scan, tmp_path / "images") == {"img0.png": "not listed in labels_csv"}


def test_labels_csv_that_is_not_utf8_is_a_data_error(tmp_path, write_image):
    write_image(tmp_path / "images" / "img0.png")
    labels = tmp_path / "labels.csv"
    labels.write_bytes("path,label\nimg0.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"data\.labels_csv: .* is not UTF-8 text"):
        scan_files(str(tmp_path / "images"), labels_csv=str(labels))


def test_missing_labels_csv_is_a_data_error(tmp_path, make_classes):
    root = make_classes(tmp_path / "pets", {"cats": 1})
    with pytest.raises(DataError, match=r"data\.labels_csv: cannot read"):
        scan_files(str(root), labels_csv=str(tmp_path / "absent.csv"))


# --- IDX files and the built-in digits ------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        path = folder / f"{prefix}-{kind}-ubyte{suffix}"
        path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def idx_folder(tmp_path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(0)
    arrays = {
        "train": (rng.integers(0, 256, (12, 5, 4), dtype=np.uint8), np.arange(12) % 3),
        "test": (rng.integers(0, 256, (6, 5, 4), dtype=np.uint8), np.arange(6) % 3),
    }
    folder = tmp_path / "mnist"
    write_idx(folder, "train", *arrays["train"], gz=True)
    write_idx(folder, "t10k", *arrays["test"], gz=False)
    return folder, arrays


def test_idx_files_gzipped_or_not_give_train_and_test_splits(idx_folder):
    folder, _ = idx_folder
    report = examine(DataConfig(source=str(folder)), None).report
    assert report.splits == {"train": {"0": 4, "1": 4, "2": 4}, "test": {"0": 2, "1": 2, "2": 2}}
    assert report.sizes == {"4x5": 18} and report.modes == {"L": 18}
    assert report.skipped == []


def test_idx_pixels_and_labels_load_exactly(idx_folder):
    folder, arrays = idx_folder
    data = load_data(DataConfig(source=str(folder), color_mode="grayscale"), seed=0)
    assert set(data.splits) == {"train", "val", "test"}
    assert data.input_shape == (5, 4, 1) and data.classes == ["0", "1", "2"]
    test = data.splits["test"]
    np.testing.assert_array_equal(test.images[:, 0], arrays["test"][0])
    np.testing.assert_array_equal(test.labels, arrays["test"][1])
    assert test.paths[0] == "t10k-images-idx3-ubyte#0"


def test_idx_images_without_labels_file_are_refused(tmp_path):
    folder = tmp_path / "mnist"
    write_idx(folder, "train", np.zeros((2, 3, 3)), np.zeros(2), gz=False)
    (folder / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="has no labels file train-labels-idx1-ubyte"):
        examine(DataConfig(source=str(folder)), None)


def test_truncated_idx_file_is_refused(tmp_path):
    folder = tmp_path / "mnist"
    write_idx(folder, "train", np.zeros((2, 3, 3)), np.zeros(2), gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-1])
    with pytest.raises(DataError, match="is truncated"):
        examine(DataConfig(source=str(folder)), None)


def test_builtin_digits_has_1797_images_of_10_classes():
    found = examine(DataConfig(source="digits"), None)
    assert found.report.total == 1797 and len(found.report.classes) == 10
    assert found.report.sizes == {"8x8": 1797}
    data = load_data(DataConfig(source="digits", color_mode="grayscale"), seed=0)
    assert sum(len(s) for s in data.splits.values()) == 1797
    assert data.input_shape == (8, 8, 1)
    assert data.classes == [str(k) for k in range(10)]
    train = data.splits["train"]
    assert train.images.dtype == np.uint8 and train.images.max() == 255
