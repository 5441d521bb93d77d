"""Predicting new images with a finished run: `cnnlab predict` and FinishedRun.predict."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.data.arrays import read_array_source


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, train_digits) -> Path:
    """A small trained run on scikit-learn's 8x8 digits."""
    layers = [
        {"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
        {"Flatten": {}},
        {"Dense": {"units": 10, "activation": "softmax"}},
    ]
    return train_digits(
        tmp_path_factory.mktemp("predict"),
        data={"source": "digits", "color_mode": "grayscale", "validation_split": 0.2},
        model={"layers": layers},
        train={"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
    )


@pytest.fixture
def digit_files(tmp_path) -> tuple[Path, list[str]]:
    """A flat folder (sub-folders too, no class folders) of 12 digit PNGs, a text file (left
    out by its name), a file named .png that is no image and a broken symlink."""
    part = read_array_source("digits")[0]
    folder = tmp_path / "new"
    labels = []
    for k in range(12):
        target = folder / ("deeper" if k % 3 == 0 else "") / f"img_{k:02d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(part.images[k]), mode="L").save(target)
        labels.append(str(int(part.labels[k])))
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    (folder / "junk.png").write_text("not an image either", encoding="utf-8")
    (folder / "broken.png").symlink_to(folder / "gone.png")
    return folder, labels


def read_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_predict_command_classifies_a_flat_folder_and_lists_what_it_skipped(
    digits_run, digit_files, tmp_path
):
    folder, _labels = digit_files
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(
        app, ["predict", str(digits_run), str(folder), "--out", str(out), "--top-k", "3"]
    )

    assert result.exit_code == 0, result.output
    assert "12 predictions (2 skipped" in result.stdout
    assert "junk.png" in result.stderr and "not an image" in result.stderr
    assert "broken.png" in result.stderr and "broken symlink" in result.stderr
    rows = read_rows(out.read_text(encoding="utf-8"))
    predicted = [row for row in rows if not row["skipped"]]
    assert len(predicted) == 12 and {r["path"].rsplit("/", 1)[-1] for r in predicted} >= {
        "img_00.png",
        "img_11.png",
    }
    first = predicted[0]
    assert first["top_1"] == first["predicted"] and first["top_3"]
    assert sum(float(first[f"p_{k}"]) for k in range(10)) == pytest.approx(1, abs=1e-4)
    skipped = [row for row in rows if row["skipped"]]
    assert [row["path"].rsplit("/", 1)[-1] for row in skipped] == ["broken.png", "junk.png"]


def test_load_run_predict_gives_the_classes_the_command_gives(digits_run, digit_files):
    folder, _labels = digit_files
    paths = sorted(folder.rglob("img_*.png"))
    api = cnnlab.load_run(digits_run).predict(paths)
    result = CliRunner().invoke(app, ["predict", str(digits_run), *map(str, paths)])

    assert result.exit_code == 0, result.output
    command = {row["path"]: row["predicted"] for row in read_rows(result.stdout)}
    assert {r["path"]: r["predicted"] for r in api.records()} == command
    assert len(command) == 12


def test_in_memory_images_zips_and_arrays_agree_with_files(digits_run, digit_files, tmp_path):
    folder, _labels = digit_files
    paths = sorted(folder.rglob("img_*.png"))
    run = cnnlab.load_run(digits_run)
    from_files = [r["predicted"] for r in run.predict(paths).records()]
    images = [Image.open(p) for p in paths]
    arrays = [np.asarray(image) for image in images]
    archive = tmp_path / "new.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in paths:
            zipped.write(path, path.name)

    assert [r["predicted"] for r in run.predict(images).records()] == from_files
    assert [r["predicted"] for r in run.predict(arrays).records()] == from_files
    zipped_names = sorted(p.name for p in paths)
    by_name = dict(zip([p.name for p in paths], from_files, strict=True))
    assert [r["predicted"] for r in run.predict(archive).records()] == [
        by_name[name] for name in zipped_names
    ]
    wrong = run.predict([np.zeros((4, 4), dtype=np.float32)])
    assert not wrong.items and "uint8" in wrong.skipped[0][1]


def test_kaggle_submission_has_an_id_and_a_label_per_image(digits_run, digit_files, tmp_path):
    folder, _labels = digit_files
    result = CliRunner().invoke(
        app,
        ["predict", str(digits_run), str(folder), "--format", "kaggle", "--columns", "id,label"],
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(result.stdout)
    assert len(rows) == 12 and set(rows[0]) == {"id", "label"}
    assert {row["id"] for row in rows} == {f"img_{k:02d}" for k in range(12)}


def test_predict_with_a_folder_that_is_no_run_exits_2(tmp_path, digit_files):
    folder, _labels = digit_files
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "nowhere"), str(folder)])
    assert result.exit_code == 2 and "holds no finished run" in result.stderr


def test_s0_validation_images_in_one_flat_folder_predict_at_the_runs_accuracy(
    tmp_path, require, monkeypatch
):
    """S0 end to end: the transfer example trains on cats_vs_dogs (one short stage here); its
    validation images, copied flat into one folder beside a README (left out), go through
    `cnnlab predict`; the CSV's accuracy against the names' labels is the run's own."""
    root = Path(__file__).resolve().parents[2]
    validation = require(root.parent / "shared" / "datasets" / "cats_vs_dogs" / "validation.zip")
    monkeypatch.chdir(root)
    stage = "model.stages=[{epochs: 1, unfreeze: 0, lr: 0.001}]"
    result = cnnlab.run(
        "examples/s0_efficientnet_catsdogs.yaml",
        overrides=[stage, "data.target_size=[96,96]"],
        output_dir=tmp_path / "runs",
        quiet=True,
    )
    flat = tmp_path / "competition"
    flat.mkdir()
    with zipfile.ZipFile(validation) as zipped:
        for name in zipped.namelist():
            if name.endswith(".jpg"):
                (flat / name.rsplit("/", 1)[-1]).write_bytes(zipped.read(name))
    (flat / "README.txt").write_text("the test images", encoding="utf-8")

    out = tmp_path / "submission.csv"
    invoked = CliRunner().invoke(app, ["predict", str(result.folder), str(flat), "--out", str(out)])

    assert invoked.exit_code == 0, invoked.output
    assert "README.txt" not in out.read_text(encoding="utf-8")  # left out by its name
    rows = [row for row in read_rows(out.read_text(encoding="utf-8")) if not row["skipped"]]
    assert len(rows) == 150
    truth = [("cats" if Path(r["path"]).name.startswith("cat.") else "dogs") for r in rows]
    accuracy = np.mean([row["predicted"] == label for row, label in zip(rows, truth, strict=True)])
    assert accuracy == pytest.approx(result.metrics["val"]["accuracy"], abs=1e-9)
