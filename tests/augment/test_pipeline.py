"""Augmentation wired into runs: presets, normalisation fitted on train, preview, evaluation."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnlab.augment.normalize import Normalization, fit_normalization
from cnnlab.augment.pipeline import EvalTransform, TrainTransform
from cnnlab.cli import app
from cnnlab.config import AugmentConfig
from cnnlab.data.batches import DeviceBatches
from cnnlab.task.classification import Classification as Objective
from cnnlab.task.inference import infer

SEED_PRESETS = {
    "s0": {"rotation_range": 20, "shear_range": 0.2, "zoom_range": 0.2, "horizontal_flip": True},
    "s1": {
        "horizontal_flip": True,
        "vertical_flip": True,
        "rotation_range": 90,
        "width_shift_range": 0.2,
        "height_shift_range": 0.2,
        "zoom_range": 0.2,
    },
    "s2": {
        "rotation_range": 10,
        "width_shift_range": 0.3,
        "height_shift_range": 0.3,
        "shear_range": 0.3,
        "zoom_range": 0.2,
        "horizontal_flip": True,
    },
}


@pytest.mark.parametrize("name", SEED_PRESETS)
def test_presets_carry_the_reports_settings(name):
    cfg = AugmentConfig(preset=name)
    for key, value in SEED_PRESETS[name].items():
        assert getattr(cfg, key) == value
    assert cfg.fill_mode == "nearest"


def test_a_key_beside_a_preset_overrides_only_that_key():
    cfg = AugmentConfig(preset="s1", rotation_range=30)
    assert cfg.rotation_range == 30
    assert cfg.vertical_flip is True and cfg.zoom_range == 0.2


def test_unknown_preset_is_a_config_error_listing_the_presets(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data: {source: digits}\naugment: {preset: s9}\nmodel: {name: basenet}\n")
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "unknown augmentation preset 's9'" in result.stderr and "s0, s1, s2" in result.stderr


def test_featurewise_statistics_come_from_the_training_images_after_rescale():
    train = np.full((10, 3, 4, 4), 51, dtype=np.uint8)
    train[:, 1] = 102
    normalization = fit_normalization(
        AugmentConfig(rescale=1 / 255, featurewise_center=True), train
    )
    assert normalization.mean == pytest.approx((0.2, 0.4, 0.2))
    centred = normalization(torch.from_numpy(train))
    assert centred.abs().max() < 1e-6


def test_normalization_saved_with_the_run_is_read_back_identically(tmp_path):
    fitted = Normalization(1 / 255, True, False, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    fitted.save(tmp_path / "normalization.json")
    assert Normalization.load(tmp_path / "normalization.json") == fitted
    assert json.loads((tmp_path / "normalization.json").read_text())["mean"] == [0.1, 0.2, 0.3]


def test_keras_standardize_order_samplewise_then_featurewise():
    images = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2)
    out = Normalization(1.0, samplewise_center=True, mean=(1.0,))(images)
    expected = images - images.mean(dim=(1, 2, 3), keepdim=True) - 1.0
    assert torch.allclose(out, expected)


def test_training_transform_is_random_and_evaluation_transform_is_not():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    normalization = Normalization(1 / 255)
    train = TrainTransform(
        AugmentConfig(preset="s0"), normalization, torch.contiguous_format, 0, torch.device("cpu")
    )
    evaluate = EvalTransform(normalization, torch.contiguous_format)
    assert not torch.equal(train(images), train(images))
    assert torch.equal(evaluate(images), evaluate(images))
    assert torch.allclose(evaluate(images), images.float() / 255)


def test_same_seed_and_epoch_give_the_same_augmented_batch():
    images = torch.randint(0, 256, (4, 1, 12, 12), dtype=torch.uint8)
    make = lambda: TrainTransform(  # noqa: E731
        AugmentConfig(preset="s1"),
        Normalization(1 / 255),
        torch.contiguous_format,
        7,
        torch.device("cpu"),
    )
    first, second = make(), make()
    first.begin_epoch(3)
    second.begin_epoch(3)
    assert torch.equal(first(images), second(images))
    second.begin_epoch(4)
    assert not torch.equal(first(images), second(images))


def test_flip_tta_averages_image_and_mirror_predictions():
    images = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    images[:, :, :, 0] = 255  # bright left column: the model below sees left vs right

    class LeftRight(torch.nn.Module):
        def forward(self, x):
            left, right = x[:, 0, :, 0].sum(1), x[:, 0, :, 1].sum(1)
            return torch.stack([left, right], dim=1) * 10

    batches = DeviceBatches(images, torch.tensor([0, 1]), batch_size=2, shuffle=False)
    plain = infer(LeftRight(), batches, Objective(None, 2), lambda x: x.float() / 255, True)
    mirrored = infer(
        LeftRight(), batches, Objective(None, 2), lambda x: x.float() / 255, True, tta=True
    )
    assert plain.predictions[0, 0] > 0.99
    assert torch.allclose(mirrored.predictions, torch.full((2, 2), 0.5))


def test_augment_preview_writes_a_grid_of_originals_and_versions(tmp_path, make_classes):
    source = make_classes(tmp_path / "data", {"a": 6, "b": 6}, size=(16, 16))
    config = tmp_path / "aug.yaml"
    config.write_text(f"data: {{source: {source}}}\naugment: {{preset: s1}}\n")
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        app, ["augment-preview", str(config), "--out", str(out), "--images", "3", "--versions", "5"]
    )
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(io.BytesIO(out.read_bytes())).convert("RGB"))
    tile = 96  # 16 px enlarged to the preview's minimum tile
    assert grid.shape[0] == 3 * tile + 2 * 4 and grid.shape[1] == 6 * tile + 5 * 4
    first_row = [grid[:tile, c * (tile + 4) : c * (tile + 4) + tile] for c in range(6)]
    assert any(not np.array_equal(first_row[0], version) for version in first_row[1:])


def test_augmented_run_records_normalization_and_shows_the_preview_in_its_report(
    tmp_path, make_classes
):
    source = make_classes(tmp_path / "data", {"a": 8, "b": 8}, size=(12, 12))
    config = tmp_path / "aug.yaml"
    config.write_text(
        f"data: {{source: {source}}}\n"
        "augment: {preset: s0, featurewise_center: true, cutmix_alpha: 1.0}\n"
        "model: {layers: [Flatten, {Dense: {units: 2, activation: softmax}}]}\n"
        "train: {epochs: 2, batch_size: 4}\nevaluate: {tta: true}\n"
    )
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "aug"
    assert len(json.loads((run / "normalization.json").read_text())["mean"]) == 3
    html = (run / "report.html").read_text()
    assert "Augmentation" in html
