"""Features runs (S2's hybrid CNN): a network's features into a scikit-learn classifier, with
the run folder and report of a trained run, from a pretrained backbone or a finished run."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.config_io import load_experiment
from cnnlab.data.pipeline import load_data
from cnnlab.errors import ConfigError
from cnnlab.runs import run_experiment
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.kinds import KINDS
from cnnlab.runtime import select_device

# Three classes a pretrained network tells apart at a glance: colour and shape together.
SHAPES = {"disc": (220, 40, 40), "square": (40, 180, 40), "cross": (40, 40, 220)}
TINY_NET: list[Any] = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"MaxPooling2D": {}},
    {"Flatten": {}},
    {"Dense": {"units": 3, "activation": "softmax"}},
]


def draw(shape: str, seed: int, size: int) -> Image.Image:
    """A coloured shape on dark noise, placed and tinted a little differently per seed."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
    pen = ImageDraw.Draw(image)
    x, y = (int(v) for v in rng.integers(2, size // 4, 2))
    box = (x, y, x + size // 2, y + size // 2)
    tint = tuple(
        int(c) for c in np.clip(np.array(SHAPES[shape]) + rng.integers(-25, 25, 3), 0, 255)
    )
    if shape == "disc":
        pen.ellipse(box, fill=tint)
    elif shape == "square":
        pen.rectangle(box, fill=tint)
    else:
        pen.line(box, fill=tint, width=size // 8)
        pen.line((box[0], box[3], box[2], box[1]), fill=tint, width=size // 8)
    return image


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    """12 real images per class (PNG and JPEG), 48x48."""
    root = tmp_path / "shapes"
    for k, name in enumerate(SHAPES):
        (root / name).mkdir(parents=True)
        for i in range(12):
            suffix = ".jpg" if i % 3 == 0 else ".png"
            draw(name, 100 * k + i, 48).save(root / name / f"{name}_{i:02d}{suffix}")
    return root


def write_config(path: Path, source: Path, **sections: Any) -> Path:
    raw = {"seed": 0, "data": {"source": str(source), "validation_split": 0.25}, **sections}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_backbone_features_and_svm_write_a_full_run_folder_and_report(tmp_path, shapes):
    config = write_config(
        tmp_path / "hybrid.yaml",
        shapes,
        data={
            "source": str(shapes),
            "target_size": [64, 64],
            "validation_split": 0.25,
            "test_split": 0.25,
        },
        model={"backbone": "efficientnet_lite0"},
        classifier={"name": "svm"},
    )
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "runs")])

    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "hybrid"
    assert "1280 features per image" in result.stdout
    assert "test accuracy:" in result.stdout and "Report:" in result.stdout
    metrics = read_json(folder / "metrics.json")
    assert metrics["test"]["accuracy"] >= 0.75  # chance is 1/3
    assert 0 < metrics["test"]["loss"] < np.log(3)  # log-loss of real probabilities
    assert set(metrics) == {"train", "val", "test"}
    assert metrics["test"]["confusion_matrix"] and metrics["test"]["per_class"]

    manifest = read_json(folder / "manifest.json")
    model = manifest["model"]
    assert model["name"] == "efficientnet_lite0 features + svm"
    assert model["weights"] == "efficientnet-lite0" and model["feature_dimension"] == 1280
    assert model["classifier"]["estimator"] == "SVC" and model["classifier"]["name"] == "svm"
    assert model["trainable_params"] == 0
    assert {"data_s", "extract_s", "fit_s", "evaluate_s"} <= set(manifest["timings"])
    assert "classifier.safetensors" in manifest["note"]
    sizes = manifest["data"]["split_sizes"]

    with (folder / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sizes["val"] + sizes["test"]
    assert {row["split"] for row in rows} == {"val", "test"}

    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "Confusion matrix <small>(test)</small>" in html
    assert "Per-class metrics <small>(test)</small>" in html and "macro average" in html
    assert "efficientnet_lite0 features + svm" in html
    assert "Learning curves" not in html and "history.csv" not in html  # nothing was trained
    assert "Missing or unreadable files" not in html
    # the classifier as arrays and JSON, never a pickle; no network was trained
    assert [p.name for p in folder.glob("*.safetensors")] == ["classifier.safetensors"]
    assert read_json(folder / "classifier.json")["estimator"] == "SVC"
    assert not [p for p in folder.rglob("*") if p.suffix in {".pt", ".pkl", ".joblib"}]

    # a finished backbone run rebuilds its extractor with its saved normalisation (no data)
    finished = FinishedRun.open(folder)
    images = load_data(finished.data_config(), 0).splits["test"].images
    probabilities = KINDS.get("features").classify(finished, images, select_device("auto"), False)
    tests = [row for row in rows if row["split"] == "test"]
    written = [[row[f"p_{c}"] for c in finished.classes] for row in tests]
    assert [[f"{p:.6f}" for p in image] for image in probabilities] == written


def test_a_finished_run_gives_its_penultimate_layer_to_the_classifier(tmp_path, shapes):
    trained = load_experiment(
        write_config(
            tmp_path / "tiny.yaml",
            shapes,
            model={"layers": TINY_NET},
            train={"epochs": 1, "batch_size": 8},
        )
    )
    run_folder = tmp_path / "runs" / "tiny"
    run_folder.mkdir(parents=True)
    run_experiment(trained, run_folder)
    hybrid = load_experiment(
        write_config(
            tmp_path / "from_run.yaml",
            shapes,
            model={"from_run": str(run_folder)},
            classifier={"name": "logistic", "C": 0.5},
        )
    )
    folder = tmp_path / "runs" / "from_run"
    folder.mkdir()

    result = run_experiment(hybrid, folder)

    model = result.manifest["model"]
    assert model["from_run"] == str(run_folder) and model["feature_layer"] == "flatten"
    assert model["feature_dimension"] == 23 * 23 * 4  # the Flatten before the output Dense
    assert model["pool"] is None  # already a vector
    assert model["classifier"]["params"]["C"] == 0.5
    assert result.metrics["val"]["accuracy"] > 1 / 3
    # the run's own input size and normalisation
    assert result.manifest["data"]["input_shape"] == [48, 48, 3]
    assert read_json(folder / "normalization.json") == read_json(run_folder / "normalization.json")
    assert (folder / "report.html").is_file()


def test_knn_with_more_neighbours_than_training_images_names_classifier_k(tmp_path, shapes):
    experiment = load_experiment(
        write_config(
            tmp_path / "knn.yaml",
            shapes,
            data={"source": str(shapes), "target_size": [32, 32], "validation_split": 0.25},
            model={"backbone": "efficientnet_lite0"},
            classifier={"name": "knn", "k": 500},
        )
    )
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"classifier\.k: 500 neighbours, but the training"):
        run_experiment(experiment, tmp_path / "run")


# --- configuration errors ------------------------------------------------------------------------


def test_classifier_with_fine_tuning_stages_names_model_stages(tmp_path):
    config = write_config(
        tmp_path / "x.yaml",
        tmp_path,
        model={"backbone": "efficientnet_lite0", "stages": [{"epochs": 1}]},
        classifier={"name": "svm"},
    )
    with pytest.raises(ConfigError, match=r"model\.stages: a features run trains no network"):
        load_experiment(config)


def test_from_run_without_a_finished_run_names_model_from_run(tmp_path, shapes):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    (empty / "config.yaml").write_text("seed: 0\n", encoding="utf-8")
    experiment = load_experiment(
        write_config(
            tmp_path / "x.yaml", shapes, model={"from_run": str(empty)}, classifier={"name": "knn"}
        )
    )
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match=r"model\.from_run: .*not-a-run holds no finished") as err:
        run_experiment(experiment, tmp_path / "run")
    assert "model.safetensors" in str(err.value)


def test_unknown_classifier_name_lists_the_choices(tmp_path):
    config = write_config(
        tmp_path / "x.yaml",
        tmp_path,
        model={"backbone": "efficientnet_lite0"},
        classifier={"name": "svn"},
    )
    with pytest.raises(ConfigError) as err:
        load_experiment(config)
    message = str(err.value)
    assert "classifier.name: 'svn' is not allowed; did you mean 'svm'?" in message
    assert "(logistic, linear_svm, svm, knn)" in message


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        ({"model": {"from_run": "runs/x"}}, "model.from_run: a run's network only extracts"),
        (
            {"model": {"name": "carlosnet"}, "classifier": {}},
            "classifier: needs a feature extractor",
        ),
        (
            {"model": {"backbone": "efficientnet_lite0"}, "classifier": {"name": "knn", "C": 2}},
            "knn uses k, not C; remove classifier.C",
        ),
        (
            {
                "model": {"backbone": "efficientnet_lite0"},
                "classifier": {},
                "augment": {"preset": "s2"},
            },
            "augment.preset: a features run sees each image once",
        ),
        (
            {"model": {"from_run": "r", "backbone": "vgg16"}, "classifier": {}},
            "set exactly one of model.name, model.layers, model.backbone or model.from_run",
        ),
    ],
    ids=["from-run-alone", "not-a-feature-extractor", "unused-knob", "augmented", "two-sources"],
)
def test_features_run_configuration_errors_name_the_key(tmp_path, sections, needle):
    config = write_config(tmp_path / "x.yaml", tmp_path, **sections)
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        load_experiment(config)
    assert needle in str(err.value)


def test_from_run_at_another_image_size_names_data_target_size(tmp_path, shapes):
    from cnnlab.runs.skeleton import sized_for

    experiment = load_experiment(write_config(tmp_path / "x.yaml", shapes))
    resized = experiment.data.model_copy(update={"target_size": (32, 32)})
    with pytest.raises(ConfigError, match=r"data\.target_size: .* takes 48x48 images"):
        sized_for(resized, (48, 48, 1), tmp_path)
    filled = sized_for(experiment.data, (48, 48, 1), tmp_path)
    assert filled.target_size == (48, 48) and filled.color_mode == "grayscale"
