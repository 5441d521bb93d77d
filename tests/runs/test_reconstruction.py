"""task: reconstruction end to end through `cnnlab run`: the run folder, its metrics and
report, early stopping on the task's statistics, --resume bitwise, predict writing images,
paired targets, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from tests.runs.test_trained import assert_user_error, run_cli

# 8x8 digits in, degraded to 4x4 with S4's inversions, back to 8x8
TINY_UPSAMPLER: list[dict[str, Any]] = [
    {"Conv2D": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}},
    {"UpSampling2D": {"size": 2}},
    {"Conv2D": {"filters": 1, "kernel_size": 3, "padding": "same", "activation": "sigmoid"}},
]
DEGRADE = [{"resize": {"size": [4, 4]}}, {"invert": {"p": 0.1}}]


def config_file(path: Path, **sections: Any) -> Path:
    raw: dict[str, Any] = {
        "task": "reconstruction",
        "seed": 0,
        "data": {
            "source": "digits",
            "color_mode": "grayscale",
            "validation_split": 0.2,
            "test_split": 0.2,
        },
        "reconstruction": {"degrade": DEGRADE, "shown": 4},
        "model": {"layers": TINY_UPSAMPLER},
        "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam"}, "device": "cpu"},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished reconstruction run (3 epochs, early stopping watching val_psnr)."""
    root = tmp_path_factory.mktemp("reconstruction")
    config = config_file(
        root / "digits.yaml",
        train={"epochs": 3, "early_stopping": {"monitor": "val_psnr", "patience": 5}},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(root / "cache"))
        result = run_cli("run", str(config), "--output", str(root / "runs"))
    assert result.exit_code == 0, result.output
    return root / "runs" / "digits"


def test_the_run_folder_holds_the_tasks_metrics_history_and_images(finished):
    metrics = json.loads((finished / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        entry = metrics[split]
        for key in ("loss", "accuracy", "threshold_accuracy", "psnr", "ssim", "accuracy_ceiling"):
            assert np.isfinite(entry[key]), (split, key)
        # Keras's pixel accuracy never beats the ceiling the data sets for it
        assert entry["accuracy"] <= entry["accuracy_ceiling"] + 1e-9
    assert metrics["test"]["accuracy_ceiling"] < 1  # digits' 0..16 grey levels
    header = (finished / "history.csv").read_text().splitlines()[0]
    assert header == (
        "epoch,loss,accuracy,threshold_accuracy,psnr,val_loss,val_accuracy,"
        "val_threshold_accuracy,val_psnr,lr,seconds"
    )
    rows = (finished / "predictions.csv").read_text().splitlines()
    assert rows[0] == "split,path,loss,accuracy,threshold_accuracy,psnr,ssim"
    assert len(rows) - 1 == metrics["val"]["count"] + metrics["test"]["count"]
    with np.load(finished / "reconstructions.npz", allow_pickle=False) as shown:
        assert shown["first_inputs"].shape == (4, 1, 4, 4)  # the network's degraded input
        assert shown["first_outputs"].shape == shown["first_targets"].shape == (4, 1, 8, 8)
        losses = shown["worst_losses"]
        assert list(losses) == sorted(losses, reverse=True)
    summary = (finished / "summary.txt").read_text()
    assert "(None, 4, 4, 8)" in summary and "(None, 8, 8, 1)" in summary


def test_the_report_shows_the_grids_and_the_ceiling(finished):
    html = (finished / "report.html").read_text(encoding="utf-8")
    assert 'id="reconstruction"' in html
    assert "accuracy ceiling" in html and "PSNR (dB)" in html
    assert html.count("<figure") >= 8  # first and worst, 4 columns each
    assert "Misclassified" not in html and "Confusion matrix" not in html
    # the pixel accuracy is capped by the ceiling: no accuracy-threshold "underfitting"
    assert "Underfitting" not in html


def test_the_report_renders_in_chromium(finished, tmp_path):
    from tests.report.test_browser import browse

    dom = browse((finished / "report.html").as_uri(), tmp_path / "profile", "--dump-dom").stdout
    assert "Reconstructions (test)" in dom


def test_predict_writes_a_reconstruction_per_image_and_never_overwrites(finished, tmp_path):
    from sklearn.datasets import load_digits

    images = tmp_path / "new"
    images.mkdir()
    for k, digit in enumerate(load_digits().images[:3]):
        Image.fromarray((digit * 255 / 16).astype(np.uint8)).save(images / f"d{k}.png")
    out = tmp_path / "out"
    result = run_cli("predict", str(finished), str(images), "--out", str(out))
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["d0.png", "d1.png", "d2.png"]
    assert Image.open(out / "d0.png").size == (8, 8)
    again = run_cli("predict", str(finished), str(images), "--out", str(out))
    assert_user_error(again, "d0.png", "would be written twice or over an existing file")
    from cnnlab import load_run
    from cnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="outputs images, not classes"):
        load_run(finished).predict(images)


def test_resumed_run_equals_an_uninterrupted_run_bitwise(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    config = config_file(tmp_path / "resume.yaml", train={"deterministic": True})
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    assert (
        run_cli("run", str(config), "--output", str(stopped), "--set", "train.epochs=1").exit_code
        == 0
    )
    resumed = run_cli(
        "run", str(config), "--output", str(stopped), "--resume", "--set", "train.epochs=2"
    )
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch 2/2" in resumed.stdout and "Epoch 1/2" not in resumed.stdout
    assert (
        run_cli("run", str(config), "--output", str(whole), "--set", "train.epochs=2").exit_code
        == 0
    )
    a, b = stopped / "resume", whole / "resume"
    weights_a, weights_b = (
        load_file(str(a / "model.safetensors")),
        load_file(str(b / "model.safetensors")),
    )
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert json.loads((a / "metrics.json").read_text()) == json.loads(
        (b / "metrics.json").read_text()
    )


def test_paired_targets_come_from_the_same_relative_paths(tmp_path, monkeypatch):
    """data.targets: a noisy copy in, the clean image out (same names, another folder)."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for k in range(12):
            clean = np.zeros((8, 8), dtype=np.uint8)
            clean[2:6, 1 + k % 4 : 3 + k % 4] = 255
            noisy = np.clip(clean + rng.normal(0, 40, clean.shape), 0, 255).astype(np.uint8)
            for root, image in (("noisy", noisy), ("clean", clean)):
                (tmp_path / root / label).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(tmp_path / root / label / f"{k}.png")
    layers = [
        {"Conv2D": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"Conv2D": {"filters": 1, "kernel_size": 3, "padding": "same", "activation": "sigmoid"}},
    ]
    config = config_file(
        tmp_path / "paired.yaml",
        data={
            "source": str(tmp_path / "noisy"),
            "targets": str(tmp_path / "clean"),
            "test_split": 0.25,
        },
        reconstruction={"degrade": []},
        model={"layers": layers},
        train={"epochs": 1, "batch_size": 8},
    )
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "runs" / "paired" / "reconstructions.npz") as shown:
        for path, target, given in zip(
            shown["first_paths"], shown["first_targets"], shown["first_inputs"], strict=True
        ):
            within = Path(str(path)).relative_to(tmp_path / "noisy")
            assert np.array_equal(target[0], np.asarray(Image.open(tmp_path / "clean" / within)))
            assert np.array_equal(given[0], np.asarray(Image.open(tmp_path / "noisy" / within)))
    (tmp_path / "clean" / "a" / "3.png").unlink()
    missing = run_cli("run", str(config), "--output", str(tmp_path / "runs2"))
    assert_user_error(missing, "data.targets", "a/3.png")
    assert not (tmp_path / "runs2" / "paired").exists()


@pytest.mark.parametrize(
    ("sections", "needle"),
    [
        (
            {"augment": {"horizontal_flip": True}},
            "augment.horizontal_flip: not for task: reconstruction",
        ),
        (
            {
                "train": {"early_stopping": {"monitor": "val_psnr"}},
                "task": "classification",
                "reconstruction": None,
            },
            "val_psnr is not logged by task classification",
        ),
        ({"model": {"layers": [TINY_UPSAMPLER[0], TINY_UPSAMPLER[2]]}}, "the targets are 8x8x1"),
        (
            {
                "model": {
                    "layers": [
                        *TINY_UPSAMPLER[:2],
                        {"Conv2D": {"filters": 1, "kernel_size": 3, "padding": "same"}},
                    ]
                }
            },
            "reconstruction.loss: binary_crossentropy",
        ),
    ],
    ids=["augment", "monitor", "size", "sigmoid"],
)
def test_a_mistake_exits_2_naming_the_key_and_leaves_no_run_folder(
    tmp_path, monkeypatch, sections, needle
):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    config = config_file(tmp_path / "bad.yaml", **sections)
    raw = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None}))
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert_user_error(result, needle)
    assert not (tmp_path / "runs" / "bad").exists()


def test_an_image_model_in_a_classification_run_says_to_set_the_task(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    config = config_file(tmp_path / "cls.yaml", task="classification")
    raw = yaml.safe_load(config.read_text())
    del raw["reconstruction"]
    config.write_text(yaml.safe_dump(raw))
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert_user_error(result, "task: reconstruction")
    assert not (tmp_path / "runs" / "cls").exists()


def test_evaluate_of_its_own_test_split_repeats_the_runs_numbers(finished, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(finished.parent.parent / "cache"))
    result = run_cli("evaluate", str(finished), "--name", "again")
    assert result.exit_code == 0, result.output
    assert "(ceiling" in result.stdout and "PSNR" in result.stdout
    again = json.loads((finished / "evaluations" / "again" / "metrics.json").read_text())
    own = json.loads((finished / "metrics.json").read_text())["test"]
    assert again == pytest.approx(own, rel=1e-5)
    assert 'id="reconstruction"' in (finished / "report.html").read_text(encoding="utf-8")
    refused = run_cli("evaluate", str(finished), "--tta", "--name", "tta")
    assert_user_error(refused, "--augment/--tta")


def test_a_reference_classifier_reads_the_reconstructions(tmp_path, monkeypatch, train_digits):
    """reconstruction.reference_run: does a digit classifier still read the rebuilt digits?"""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cls").mkdir()
    reference = train_digits(tmp_path / "cls", train={"epochs": 3, "batch_size": 32})
    config = config_file(
        tmp_path / "ref.yaml",
        reconstruction={"degrade": DEGRADE, "reference_run": str(reference)},
        train={"epochs": 1},
    )
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    test = json.loads((tmp_path / "runs" / "ref" / "metrics.json").read_text())["test"]
    own = json.loads((reference / "metrics.json").read_text())["test"]["accuracy"]
    assert 0.0 <= test["reference_accuracy"] <= 1.0
    assert test["reference_accuracy"] < own + 0.05  # blurrier digits read no better
    html = (tmp_path / "runs" / "ref" / "report.html").read_text(encoding="utf-8")
    assert "reference classifier accuracy" in html


def test_explain_refuses_a_reconstruction_run_saying_why(finished):
    result = run_cli("explain", str(finished))
    assert_user_error(result, "a reconstruction run's network outputs images, not classes")
    assert not (finished / "explain").exists()
