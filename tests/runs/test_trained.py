"""`cnnlab run` end to end on real image folders: the run folder, resume, the non-finite guard,
config errors and a sigmoid head.

One test runs the command as a real process (that is its point); the others call the same
command in this process, which is several times faster.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from typer.testing import CliRunner, Result

from cnnlab.cli import app
from cnnlab.task.classification import Classification as Objective

HISTORY_HEADER = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"
# Conv2D 4 filters -> MaxPooling2D -> Flatten -> Dropout -> Dense softmax: tiny, and with
# Dropout, so the random-number state matters for resuming.
SOFTMAX_LAYERS: list[dict[str, Any]] = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"MaxPooling2D": {}},
    {"Flatten": {}},
    {"Dropout": 0.25},
    {"Dense": {"units": 3, "activation": "softmax"}},
]
COLOURS = {"circle": (220, 40, 40), "square": (40, 180, 40), "cross": (40, 40, 220)}


def draw_shape(shape: str, colour: tuple[int, int, int], seed: int) -> Image.Image:
    """A 16x16 coloured shape, placed and tinted a little differently per seed, on noise."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    x, y = (int(v) for v in rng.integers(1, 5, 2))
    tint = tuple(int(c) for c in np.clip(np.array(colour) + rng.integers(-25, 25, 3), 0, 255))
    if shape == "circle":
        draw.ellipse((x, y, x + 10, y + 10), fill=tint)
    elif shape == "square":
        draw.rectangle((x, y, x + 10, y + 10), fill=tint)
    else:
        draw.line((x, y, x + 10, y + 10), fill=tint, width=3)
        draw.line((x, y + 10, x + 10, y), fill=tint, width=3)
    return image


def shapes_folder(root: Path, classes: list[str], per_class: int) -> Path:
    """One folder per class of real images, every third a JPEG, the rest PNG."""
    seed = 0
    for name in classes:
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            seed += 1
            suffix = ".jpg" if k % 3 == 0 else ".png"
            draw_shape(name, COLOURS[name], seed).save(root / name / f"{name}_{k:02d}{suffix}")
    return root


def experiment_file(path: Path, source: Path, layers: list[dict[str, Any]], **sections) -> Path:
    raw: dict[str, Any] = {
        "seed": 0,
        "data": {"source": str(source), "validation_split": 0.25},
        "model": {"layers": layers},
        "train": {"batch_size": 4, "epochs": 2},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def run_cli(*args: str) -> Result:
    """`cnnlab ARGS` in this process."""
    return CliRunner().invoke(app, list(args))


def assert_user_error(result: Result, *needles: str) -> None:
    """Exit 2 from the CLI's user-error path (message printed, no exception escaping)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def three_shapes(tmp_path: Path) -> Path:
    return shapes_folder(tmp_path / "shapes", list(COLOURS), per_class=20)


@pytest.fixture
def two_shapes(tmp_path: Path) -> Path:
    return shapes_folder(tmp_path / "two", ["circle", "square"], per_class=12)


# --- the whole run, as a user runs it ------------------------------------------------------------


def test_run_command_writes_a_complete_run_folder_and_one_line_per_epoch(tmp_path, three_shapes):
    (three_shapes / "cross" / "broken.jpg").write_text("not an image", encoding="utf-8")
    config = experiment_file(
        tmp_path / "shapes.yaml",
        three_shapes,
        SOFTMAX_LAYERS,
        data={"validation_split": 0.2, "test_split": 0.2},
        train={"batch_size": 8, "epochs": 5},
        evaluate={"top_k": 2},
    )
    runs = tmp_path / "runs"
    command = ["run", str(config), "--output", str(runs), "--set", "train.epochs=2"]
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", *command],
        cwd=tmp_path,
        env={**os.environ},  # CNNLAB_CACHE: this test's own cache (conftest)
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    folder = runs / "shapes"

    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("Epoch")]
    number = r"\d+\.\d{4}"
    for epoch, line in enumerate(epoch_lines, start=1):
        assert re.fullmatch(
            rf"Epoch {epoch}/2 - loss: {number} - accuracy: {number} - val_loss: {number} - "
            rf"val_accuracy: {number} - lr: 1\.00e-03 - \d+\.\ds",
            line,
        ), line
    assert len(epoch_lines) == 2
    assert f"Run folder: {folder}" in result.stdout and "test accuracy:" in result.stdout

    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["model"]["layers"] == SOFTMAX_LAYERS

    manifest = json.loads((folder / "manifest.json").read_text())
    assert torch.__version__.startswith(manifest["versions"]["torch"])
    assert {"python", "cnnlab", "numpy", "pillow", "scikit-learn"} <= set(manifest["versions"])
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert manifest["device"].startswith(expected_device)
    assert manifest["seed"] == 0 and manifest["epochs_run"] == 2
    assert re.fullmatch(r"[0-9a-f]{8,}", manifest["data"]["fingerprint"])
    assert manifest["data"]["split_sizes"] == {"train": 36, "val": 12, "test": 12}
    assert manifest["data"]["classes"] == ["circle", "cross", "square"]
    assert manifest["data"]["skipped"] == [
        {"path": str(three_shapes / "cross" / "broken.jpg"), "reason": "not an image"}
    ]
    assert {"data_s", "train_s", "evaluate_s"} <= set(manifest["timings"])
    assert manifest["model"]["total_params"] == 4 * (3 * 9 + 1) + (7 * 7 * 4 + 1) * 3  # Keras's

    history = (folder / "history.csv").read_text().splitlines()
    assert history[0] == HISTORY_HEADER and len(history) == 3
    assert [row["epoch"] for row in read_csv(folder / "history.csv")] == ["1", "2"]

    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"train", "val", "test"}
    test = metrics["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and np.isfinite(test["loss"])
    assert set(test["per_class"]) == {"circle", "cross", "square"}
    assert sum(c["support"] for c in test["per_class"].values()) == 12
    assert np.array(test["confusion_matrix"]).shape == (3, 3)
    assert np.array(test["confusion_matrix"]).sum() == 12
    assert 0.0 <= test["top_2_accuracy"] <= 1.0

    predictions = read_csv(folder / "predictions.csv")
    assert list(predictions[0]) == [
        "split",
        "path",
        "label",
        "predicted",
        "confidence",
        "p_circle",
        "p_cross",
        "p_square",
    ]
    assert len(predictions) == 24 and {row["split"] for row in predictions} == {"val", "test"}
    for row in predictions:
        assert row["label"] in COLOURS and row["predicted"] in COLOURS
        assert Path(row["path"]).parent.name == row["label"]
        total = sum(float(row[f"p_{name}"]) for name in COLOURS)
        assert total == pytest.approx(1.0, abs=1e-5)
        assert float(row["confidence"]) == float(row[f"p_{row['predicted']}"])

    weights = load_file(str(folder / "model.safetensors"))
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    checkpoint = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["state"]["epoch"] == 2
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "<html" in page.lower()


def test_sigmoid_head_trains_and_predicts_both_classes(tmp_path, two_shapes):
    layers = [*SOFTMAX_LAYERS[:-1], {"Dense": {"units": 1, "activation": "sigmoid"}}]
    config = experiment_file(tmp_path / "binary.yaml", two_shapes, layers)
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "binary"

    shapes = {tuple(t.shape) for t in load_file(str(folder / "model.safetensors")).values()}
    assert (1, 7 * 7 * 4) in shapes and (1,) in shapes  # a one-unit head
    predictions = read_csv(folder / "predictions.csv")
    assert list(predictions[0])[-2:] == ["p_circle", "p_square"]
    for row in predictions:
        assert float(row["p_circle"]) + float(row["p_square"]) == pytest.approx(1.0, abs=1e-5)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["val"]["per_class"]) == {"circle", "square"}
    assert np.array(metrics["val"]["confusion_matrix"]).shape == (2, 2)
    history = read_csv(folder / "history.csv")
    assert len(history) == 2 and all(np.isfinite(float(row["loss"])) for row in history)


# --- resume --------------------------------------------------------------------------------------


def resumable_config(tmp_path: Path, source: Path, augment: dict | None = None) -> Path:
    two_class_layers = [*SOFTMAX_LAYERS[:-1], {"Dense": {"units": 2, "activation": "softmax"}}]
    return experiment_file(
        tmp_path / "resume.yaml",
        source,
        two_class_layers,
        train={"deterministic": True, "device": "cpu"},
        augment=augment or {},
    )


# Random augmentation too: Keras transforms, kornia ops and MixUp draw from seeded generators
# and torch's global state, all of which a resumed run must replay.
AUGMENTED = {
    "preset": "s1",
    "random_erasing": 0.5,
    "color_jitter": [0.2, 0.2, 0, 0],
    "mixup_alpha": 0.4,
}


@pytest.mark.parametrize("augment", [None, AUGMENTED], ids=["plain", "augmented"])
def test_resumed_run_equals_an_uninterrupted_run_bitwise(tmp_path, two_shapes, augment):
    config = resumable_config(tmp_path, two_shapes, augment)
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"

    first = run_cli("run", str(config), "--output", str(stopped), "--set", "train.epochs=2")
    assert first.exit_code == 0, first.output
    resumed = run_cli(
        "run", str(config), "--output", str(stopped), "--resume", "--set", "train.epochs=4"
    )
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch 3/4" in resumed.stdout and "Epoch 1/4" not in resumed.stdout  # continued
    uninterrupted = run_cli("run", str(config), "--output", str(whole), "--set", "train.epochs=4")
    assert uninterrupted.exit_code == 0, uninterrupted.output

    a, b = stopped / "resume", whole / "resume"
    history_a, history_b = read_csv(a / "history.csv"), read_csv(b / "history.csv")
    assert len(history_a) == len(history_b) == 4
    for row in (*history_a, *history_b):
        row.pop("seconds")
    assert history_a == history_b

    state_a = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    state_b = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    for saved in (state_a, state_b):
        for row in saved["state"]["history"]:
            row.pop("seconds")
    assert state_a["state"] == state_b["state"]  # full-precision history, best epoch, ...
    assert same_tensors(state_a["model"], state_b["model"])
    assert torch.equal(state_a["rng"]["torch"], state_b["rng"]["torch"])
    optimizer_a, optimizer_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    assert optimizer_a.keys() == optimizer_b.keys()
    for key in optimizer_a:
        assert same_tensors(optimizer_a[key], optimizer_b[key])
    assert same_tensors(
        load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    )
    metrics_a = json.loads((a / "metrics.json").read_text())
    assert metrics_a == json.loads((b / "metrics.json").read_text())


def test_resume_with_a_changed_setting_exits_2_naming_the_key(tmp_path, two_shapes):
    config = resumable_config(tmp_path, two_shapes)
    runs = tmp_path / "runs"
    assert run_cli("prepare", str(config), "--output", str(runs)).exit_code == 0
    result = run_cli(
        "run", str(config), "--output", str(runs), "--resume", "--set", "train.optimizer.lr=0.5"
    )
    assert_user_error(result, "train.optimizer.lr", "only train.epochs may change")
    assert not (runs / "resume" / "checkpoints").exists()


def test_resume_of_a_folder_without_a_checkpoint_starts_the_run_in_it(tmp_path, two_shapes):
    """Issue 17's M5 (more cases in tests/reliability/test_resume_unstarted.py)."""
    config = resumable_config(tmp_path, two_shapes)
    runs = tmp_path / "runs"
    assert run_cli("prepare", str(config), "--output", str(runs)).exit_code == 0
    result = run_cli("run", str(config), "--output", str(runs), "--resume")
    assert result.exit_code == 0, result.output
    assert "has no checkpoint" in result.output and "from the beginning" in result.output
    assert (runs / "resume" / "metrics.json").is_file()


def test_resume_of_a_folder_that_holds_no_run_exits_2(tmp_path, two_shapes):
    config = resumable_config(tmp_path, two_shapes)
    result = run_cli("run", str(config), "--output", str(tmp_path / "empty"), "--resume")
    assert_user_error(result, "holds no run to resume")


def test_a_model_that_does_not_fit_the_data_exits_2_and_leaves_no_run_folder(tmp_path, two_shapes):
    # a three-way softmax for two classes: found only once the data is read
    config = experiment_file(tmp_path / "wrong.yaml", two_shapes, SOFTMAX_LAYERS)
    runs = tmp_path / "runs"
    result = run_cli("run", str(config), "--output", str(runs))
    assert_user_error(result, "units: 2")
    assert list(runs.iterdir()) == []


# --- the non-finite guard ------------------------------------------------------------------------


def test_non_finite_loss_exits_2_naming_epoch_and_step_and_keeps_last_checkpoint(
    tmp_path, two_shapes, monkeypatch
):
    # 18 training images in batches of 4: 5 steps an epoch; the 8th step is epoch 2, step 3.
    calls = {"train": 0}
    original = Objective.loss

    def nan_at_step_8(self, logits, labels, reduction="mean"):
        loss = original(self, logits, labels, reduction)
        if reduction == "mean":  # training steps; evaluation sums
            calls["train"] += 1
            if calls["train"] == 8:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(Objective, "loss", nan_at_step_8)
    config = experiment_file(
        tmp_path / "nan.yaml",
        two_shapes,
        [*SOFTMAX_LAYERS[:-1], {"Dense": {"units": 2, "activation": "softmax"}}],
        train={"epochs": 3},
    )
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))

    assert_user_error(result, "non-finite", "epoch 2, step 3")
    folder = tmp_path / "runs" / "nan"
    checkpoint = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert len(read_csv(folder / "history.csv")) == 1
    assert not (folder / "metrics.json").exists()


def test_exploding_lr_stops_the_run_with_exit_2(tmp_path, two_shapes):
    config = experiment_file(
        tmp_path / "boom.yaml",
        two_shapes,
        [*SOFTMAX_LAYERS[:-1], {"Dense": {"units": 2, "activation": "softmax"}}],
        train={"optimizer": {"name": "sgd", "lr": 1e38}},
    )
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert_user_error(result, "non-finite")
    assert re.search(r"epoch \d+, step \d+", result.stderr)


# --- config errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochz=3", "train.epochz: unknown key; did you mean 'epochs'?"),
        ("train.optimizer.lr=fast", "train.optimizer.lr: expected a number, got 'fast'"),
        ("train.optimizer.name=adamw2", "train.optimizer.name: 'adamw2' is not allowed"),
        ("train.epochs=0", "train.epochs"),
    ],
)
def test_run_with_a_config_error_exits_2_naming_the_key(tmp_path, two_shapes, override, message):
    config = resumable_config(tmp_path, two_shapes)
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"), "--set", override)
    assert_user_error(result, message)
    assert not (tmp_path / "runs").exists()


def test_run_without_a_model_exits_2_saying_it_is_required(tmp_path, two_shapes):
    config = tmp_path / "nomodel.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": str(two_shapes)}}), encoding="utf-8")
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert_user_error(result, "model: required")
    assert not (tmp_path / "runs").exists()


def test_run_with_a_bad_layer_exits_2_naming_it(tmp_path, two_shapes):
    layers = [{"Conv2D": {"filtres": 4, "kernel_size": 3}}, {"Flatten": {}}, {"Dense": 2}]
    config = experiment_file(tmp_path / "bad.yaml", two_shapes, layers)
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert_user_error(result, "model.layers[0].Conv2D.filtres", "did you mean 'filters'")


def test_resume_accepts_a_run_begun_before_newer_keys_and_another_evaluation_batch(
    tmp_path, two_shapes
):
    # config.yaml as an earlier cnnlab wrote it: no train.compile, evaluate.batch_size 256
    config = resumable_config(tmp_path, two_shapes)
    runs = tmp_path / "runs"
    first = run_cli("run", str(config), "--output", str(runs))
    assert first.exit_code == 0, first.output
    saved_path = runs / "resume" / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text())
    del saved["train"]["compile"]
    saved["evaluate"]["batch_size"] = 256
    saved_path.write_text(yaml.safe_dump(saved))

    resumed = run_cli(
        "run", str(config), "--output", str(runs), "--resume", "--set", "train.epochs=3"
    )
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch 3/3" in resumed.stdout and "Epoch 1/3" not in resumed.stdout
    assert len(read_csv(runs / "resume" / "history.csv")) == 3
