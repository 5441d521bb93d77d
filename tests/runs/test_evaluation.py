"""`cnnlab evaluate`: a finished run evaluated again, on its own split, on augmented images, with
TTA or on another labelled source, into evaluations/<name>/ and never over its own metrics."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.data.arrays import read_array_source
from cnnlab.errors import ConfigError
from cnnlab.runs.evaluation import EvaluationSpec, evaluate_run

TRAIN = {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}}
AUGMENT = {"rotation_range": 15, "width_shift_range": 0.1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_digits) -> Path:
    """A digits run that trained with augmentation (kept pristine: tests evaluate copies)."""
    return train_digits(tmp_path_factory.mktemp("evaluate"), train=TRAIN, augment=AUGMENT)


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def digit_folders(root: Path, classes: list[str], count: int = 6) -> Path:
    """Class folders of real digit PNGs (the run's own classes are "0".."9")."""
    part = read_array_source("digits")[0]
    for name in classes:
        if not name.isdigit():
            picks = list(range(count))
        else:
            picks = [i for i, label in enumerate(part.labels) if int(label) == int(name)][:count]
        for k, index in enumerate(picks):
            target = root / name / f"{name}_{k}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(part.images[index][0]), mode="L").save(target)
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_runs_own_test_split_gives_the_runs_own_numbers_in_a_record_of_its_own(run):
    before = {name: sha256(run / name) for name in ("metrics.json", "predictions.csv")}
    evaluation = evaluate_run(run)
    own = json.loads((run / "metrics.json").read_text())["test"]
    assert evaluation.name == "test" and evaluation.record["same_data"] is True
    assert evaluation.metrics["accuracy"] == own["accuracy"]
    assert evaluation.metrics["loss"] == pytest.approx(own["loss"], rel=1e-5)
    assert evaluation.metrics["confusion_matrix"] == own["confusion_matrix"]
    assert {p.name for p in evaluation.folder.iterdir()} == {
        "evaluation.json",
        "metrics.json",
        "predictions.csv",
    }
    assert {name: sha256(run / name) for name in before} == before  # the run's own, untouched
    assert "Evaluations" in (run / "report.html").read_text()


def test_augmented_evaluation_is_reproducible_and_differs_from_the_plain_one(run):
    first = evaluate_run(run, EvaluationSpec(augment="train"))
    again = evaluate_run(run, EvaluationSpec(augment="train"), name="again")
    plain = evaluate_run(run, EvaluationSpec())
    assert first.name == "test-augment-train"
    assert sha256(first.folder / "predictions.csv") == sha256(again.folder / "predictions.csv")
    assert sha256(first.folder / "predictions.csv") != sha256(plain.folder / "predictions.csv")
    other_seed = evaluate_run(run, EvaluationSpec(augment="train", seed=5), name="seed5")
    assert sha256(other_seed.folder / "predictions.csv") != sha256(first.folder / "predictions.csv")


def test_a_preset_augments_a_run_that_trained_without_augmentation(tmp_path, train_digits):
    plain_run = train_digits(tmp_path, train=TRAIN)
    with pytest.raises(ConfigError, match="trained without augmentation"):
        evaluate_run(plain_run, EvaluationSpec(augment="train"))
    evaluation = evaluate_run(plain_run, EvaluationSpec(augment="s1"))
    assert evaluation.name == "test-augment-s1" and evaluation.record["augment"] == "s1"


def test_tta_is_an_evaluation_and_a_name_is_never_written_over(run):
    evaluation = evaluate_run(run, EvaluationSpec(split="val", tta=True))
    assert evaluation.name == "val-tta" and evaluation.record["tta"] is True
    written = sha256(evaluation.folder / "metrics.json")
    with pytest.raises(ConfigError, match="never written over"):
        evaluate_run(run, EvaluationSpec(split="val", tta=True))
    assert sha256(evaluation.folder / "metrics.json") == written


def test_another_source_is_matched_by_class_name_and_may_lack_classes(run, tmp_path):
    source = digit_folders(tmp_path / "new", ["3", "7", "9"])
    evaluation = evaluate_run(run, EvaluationSpec(data=str(source)))
    assert evaluation.name == "new-all" and evaluation.record["images"] == 18
    assert evaluation.record["classes_absent"] == ["0", "1", "2", "4", "5", "6", "8"]
    assert evaluation.metrics["classes"] == [str(k) for k in range(10)]  # the run's, in order
    per_class = evaluation.metrics["per_class"]
    assert per_class["3"]["support"] == per_class["7"]["support"] == 6
    assert per_class["0"]["support"] == 0
    predicted = cnnlab.load_run(run).predict(source).records()  # the same files, predicted
    right = [r["predicted"] == Path(r["path"]).parent.name for r in predicted]
    assert evaluation.metrics["accuracy"] == pytest.approx(np.mean(right))


def test_a_source_with_classes_the_run_does_not_know_is_refused_naming_them(run, tmp_path):
    source = digit_folders(tmp_path / "odd", ["3", "eleven"])
    with pytest.raises(ConfigError, match=r"classes the run does not know: eleven") as caught:
        evaluate_run(run, EvaluationSpec(data=str(source)))
    assert "0, 1, 2" in str(caught.value)  # the run's classes, to compare with
    assert not (run / "evaluations").exists()


def test_resuming_a_finished_run_to_evaluate_it_otherwise_is_refused(run, tmp_path):
    config = tmp_path / "again.yaml"
    shutil.copy(run / "config.yaml", config)
    with pytest.raises(ConfigError, match="cnnlab evaluate"):
        cnnlab.run(config, run, resume=True, overrides=["evaluate.tta=true"], quiet=True)


def test_a_run_that_holds_test_out_neither_evaluates_nor_predicts_it(tmp_path, train_digits):
    folder = train_digits(tmp_path, train=TRAIN, evaluate={"test": False})
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"train", "val"}
    assert "test" not in (folder / "predictions.csv").read_text()
    assert "test" in json.loads((folder / "manifest.json").read_text())["data"]["split_sizes"]
    assert evaluate_run(folder, EvaluationSpec(split="test")).record["images"] > 0


def test_the_command_prints_the_numbers_and_refuses_bad_input_with_exit_2(run):
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(run), "--split", "val", "--name", "again"])
    assert result.exit_code == 0, result.output
    assert "again:" in result.output and "accuracy:" in result.output
    assert (run / "evaluations" / "again" / "metrics.json").is_file()
    refused = runner.invoke(app, ["evaluate", str(run), "--split", "holdout"])
    assert refused.exit_code == 2 and "no holdout split" in refused.output
    assert "Traceback" not in refused.output
