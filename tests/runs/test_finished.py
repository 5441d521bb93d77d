"""Finished runs open again (FinishedRun / cnnlab.load_run), callbacks join a run from outside,
a quiet run prints nothing, and run-folder files respect the umask."""

from __future__ import annotations

import csv
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import cnnlab
from cnnlab.data.pipeline import load_data
from cnnlab.errors import ConfigError
from cnnlab.runs.kinds import KINDS
from cnnlab.runtime import select_device

TWO_EPOCHS = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam"}}


@pytest.fixture
def two_epochs(digits_config) -> Callable[..., Path]:
    """digits_config with two epochs: scikit-learn's 8x8 digits, a small network."""

    def write(path: Path, **sections: Any) -> Path:
        return digits_config(path, **{"train": TWO_EPOCHS, **sections})

    return write


def written_test_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["split"] == "test"]


@pytest.fixture(scope="module")
def finished_folder(tmp_path_factory, train_digits) -> Iterator[Path]:
    """One trained run (two epochs) for the tests that only read it, made under umask 022."""
    previous = os.umask(0o022)
    try:
        yield train_digits(tmp_path_factory.mktemp("finished"), train=TWO_EPOCHS)
    finally:
        os.umask(previous)


@pytest.fixture
def damaged_copy(finished_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_folder, tmp_path / "copy"))


def assert_reproduces_test_predictions(folder: Path) -> None:
    finished = cnnlab.load_run(folder)
    probabilities = finished.predict_split("test")
    rows = written_test_rows(folder)
    classes = finished.classes
    assert probabilities.shape == (len(rows), len(classes))
    written = [[row[f"p_{c}"] for c in classes] for row in rows]
    assert [[f"{p:.6f}" for p in image] for image in probabilities] == written
    assert [classes[k] for k in probabilities.argmax(1)] == [row["predicted"] for row in rows]


def test_a_finished_trained_run_reproduces_its_test_predictions(finished_folder):
    finished = cnnlab.load_run(finished_folder)

    assert finished.kind == "trained" and finished.input_shape == (8, 8, 1)
    assert finished.classes == [str(k) for k in range(10)]
    assert 0 < finished.metrics["test"]["accuracy"] <= 1
    assert [int(row["epoch"]) for row in finished.history] == [1, 2]
    model = finished.model()
    assert sum(p.numel() for p in model.parameters()) == 40 + 6 * 6 * 4 * 10 + 10
    assert_reproduces_test_predictions(finished_folder)


def test_a_finished_features_run_reproduces_its_test_predictions(
    tmp_path, finished_folder, digits_config
):
    hybrid = digits_config(
        tmp_path / "hybrid.yaml",
        model={"from_run": str(finished_folder)},
        classifier={"name": "logistic", "C": 0.5},
    )
    result = cnnlab.run(hybrid, output_dir=tmp_path, quiet=True)

    finished = cnnlab.load_run(result.folder)
    assert finished.kind == "features"
    with pytest.raises(ConfigError, match="trains no network"):
        finished.model()
    assert_reproduces_test_predictions(result.folder)


CLASSIFIER_KINDS = ("logistic", "linear_svm", "svm", "knn")


@pytest.fixture(scope="module")
def features_folders(finished_folder: Path, tmp_path_factory, digits_config) -> dict[str, Path]:
    """A features run of each classifier on the trained run's penultimate features."""
    root = tmp_path_factory.mktemp("features")
    folders = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(root / "cache"))
        for kind in CLASSIFIER_KINDS:
            config = digits_config(
                root / f"{kind}.yaml",
                model={"from_run": str(finished_folder)},
                classifier={"name": kind},
            )
            folders[kind] = cnnlab.run(config, output_dir=root, quiet=True).folder
    return folders


def split_test_images(finished: cnnlab.FinishedRun) -> np.ndarray:
    """The run's test images, uint8 (N, C, H, W), in predictions.csv's order."""
    return load_data(finished.data_config(), finished.config.seed).splits["test"].images


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_a_features_run_keeps_its_classifier_and_classifies_images_as_it_did(
    features_folders, kind
):
    folder = features_folders[kind]
    info = yaml.safe_load((folder / "classifier.json").read_text(encoding="utf-8"))  # JSON
    assert info["kind"] == kind and info["class_names"] == [str(k) for k in range(10)]
    assert (folder / "classifier.safetensors").is_file()
    assert not (folder / "model.safetensors").exists()
    assert not [p for p in folder.rglob("*") if p.suffix in {".pt", ".pkl", ".joblib"}]
    finished = cnnlab.load_run(folder)
    assert "classifier.safetensors" in finished.manifest["note"]

    probabilities = KINDS.get("features").classify(
        finished, split_test_images(finished), select_device("auto"), False
    )

    rows = written_test_rows(folder)
    written = [[row[f"p_{c}"] for c in finished.classes] for row in rows]
    assert [[f"{p:.6f}" for p in image] for image in probabilities] == written
    assert_reproduces_test_predictions(folder)  # predict_split, through the saved classifier


def test_a_features_run_with_tta_averages_each_image_and_its_mirror(features_folders):
    finished = cnnlab.load_run(features_folders["svm"])
    images, device = split_test_images(finished)[:40], select_device("auto")
    classify = KINDS.get("features").classify

    averaged = classify(finished, images, device, True)

    plain = classify(finished, images, device, False)
    mirrored = classify(finished, np.ascontiguousarray(images[..., ::-1]), device, False)
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0)
    assert not np.allclose(averaged, plain)
    with pytest.raises(ConfigError, match=r"takes \(1, 8, 8\) images, got an array of shape"):
        classify(finished, images[:, :, :4], device, False)


def test_a_features_run_from_before_classifiers_were_saved_opens_and_says_to_rerun(
    features_folders, tmp_path
):
    old = Path(shutil.copytree(features_folders["logistic"], tmp_path / "old"))
    (old / "classifier.safetensors").unlink()
    (old / "classifier.json").unlink()

    finished = cnnlab.load_run(old)
    assert finished.kind == "features"
    with pytest.raises(ConfigError, match="no saved classifier") as err:
        KINDS.get("features").classify(
            finished, split_test_images(finished)[:2], torch.device("cpu"), False
        )
    assert str(old) in str(err.value) and "rerun the experiment" in str(err.value)
    assert_reproduces_test_predictions(old)  # predict_split fits the classifier again


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda folder: (folder / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda folder: (folder / "metrics.json").unlink(), "no metrics.json"),
        (lambda folder: (folder / "manifest.json").write_text("{", encoding="utf-8"), "JSON"),
        (lambda folder: (folder / "config.yaml").write_text("data: [", encoding="utf-8"), "YAML"),
    ],
)
def test_a_damaged_run_folder_names_what_is_missing(damaged_copy, damage, named):
    damage(damaged_copy)
    with pytest.raises(ConfigError) as err:
        cnnlab.load_run(damaged_copy)
    assert str(damaged_copy) in str(err.value) and named in str(err.value)


def test_load_run_of_a_folder_that_is_no_run_says_so(tmp_path):
    with pytest.raises(ConfigError, match="holds no finished run"):
        cnnlab.load_run(tmp_path / "nowhere")


class Recorder(cnnlab.Callback):
    """Records every moment it is shown; stops training after `stop_after` epochs."""

    def __init__(self, stop_after: int | None = None):
        self.calls: list[tuple[str, Any]] = []
        self.stop_after = stop_after

    def on_train_begin(self, state):
        self.calls.append(("train_begin", state.epoch))

    def on_epoch_begin(self, state, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, state, logs):
        self.calls.append(("epoch_end", dict(logs)))
        if self.stop_after is not None and state.epoch >= self.stop_after:
            state.stop, state.stop_reason = True, "stopped by the recorder"

    def on_train_end(self, state):
        self.calls.append(("train_end", state.epoch))


def test_a_callback_passed_from_outside_sees_every_moment_of_a_quiet_fit(
    tmp_path, capfd, two_epochs
):
    recorder = Recorder()
    cnnlab.run(
        two_epochs(tmp_path / "tiny.yaml"), output_dir=tmp_path, callbacks=[recorder], quiet=True
    )

    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""  # quiet: no epoch lines, no bars
    moments = [name for name, _ in recorder.calls]
    assert moments == [
        "train_begin",
        "epoch_begin",
        "epoch_end",
        "epoch_begin",
        "epoch_end",
        "train_end",
    ]
    logs = recorder.calls[2][1]
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(logs)
    assert logs["epoch"] == 1 and 0 <= logs["val_accuracy"] <= 1


def test_a_callback_from_outside_can_stop_the_run_and_the_run_still_finishes(
    tmp_path, digits_config
):
    config = digits_config(tmp_path / "tiny.yaml", train={"epochs": 5, "batch_size": 64})
    result = cnnlab.run(config, output_dir=tmp_path, callbacks=[Recorder(stop_after=2)], quiet=True)

    assert result.manifest["epochs_run"] == 2 and result.manifest["stopped_early"]
    assert result.manifest["stop_reason"] == "stopped by the recorder"
    assert (result.folder / "report.html").is_file()


def test_run_folder_files_respect_the_umask(finished_folder):
    files = [path for path in finished_folder.rglob("*") if path.is_file()]
    assert {"report.html", "model.safetensors", "last.pt"} <= {path.name for path in files}
    modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in files}
    assert set(modes.values()) == {"0o644"}, modes


def test_predictions_of_a_finished_run_match_its_metrics(finished_folder):
    finished = cnnlab.load_run(finished_folder)
    rows = [row for row in finished.predictions if row["split"] == "test"]
    accuracy = np.mean([row["label"] == row["predicted"] for row in rows])
    assert accuracy == pytest.approx(finished.metrics["test"]["accuracy"])


def test_a_run_into_a_folder_that_holds_files_is_refused_and_the_files_stay(
    tmp_path, digits_config
):
    folder = tmp_path / "earlier"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="not empty"):
        cnnlab.run(digits_config(tmp_path / "tiny.yaml"), folder, quiet=True)
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]
