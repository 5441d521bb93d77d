"""Grad-CAM where the class is decided: trained networks look at the corner patch, not at the
equally saturated green one; binary heads, layer names and Keras's activated outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.config import ModelConfig
from cnnlab.data.pipeline import load_data
from cnnlab.errors import ConfigError
from cnnlab.explain import (
    class_activation_maps,
    feature_maps,
    find_layer,
    overlay,
    predicted_classes,
    spatial_layers,
    target_layer,
)
from cnnlab.models import build_layers, model_from_config
from cnnlab.models.build import KerasModel

from .corner import CORNER, GREEN, PATCH, SIZE, TIMM_BACKBONE

HALF = SIZE // 2


def split_inputs(folder: Path) -> tuple[cnnlab.FinishedRun, np.ndarray, torch.Tensor]:
    run = cnnlab.load_run(folder)
    images = np.asarray(load_data(run.data_config(), run.config.seed).splits["test"].images)
    return run, images, run.normalization()(torch.from_numpy(images))


def heat_shares(heat: np.ndarray, images: np.ndarray, rows: slice, cols: slice):
    """Per image: the share of its heat inside rows x cols, and on the green distractor."""
    total = heat.sum(axis=(1, 2)).clip(min=1e-9)  # an all-zero map: no evidence anywhere
    green = np.all(images.transpose(0, 2, 3, 1) == GREEN, axis=-1)
    return heat[:, rows, cols].sum(axis=(1, 2)) / total, (heat * green).sum(axis=(1, 2)) / total


def peaks_inside(heat: np.ndarray, rows: slice, cols: slice) -> float:
    peaks = [np.unravel_index(np.argmax(one), one.shape) for one in heat]
    return float(
        np.mean([rows.start <= r < rows.stop and cols.start <= c < cols.stop for r, c in peaks])
    )


def test_gradcam_of_a_layer_list_cnn_peaks_in_the_corner_patch(cnn_run):
    run, images, inputs = split_inputs(cnn_run)
    assert run.metrics["test"]["accuracy"] >= 0.95  # it learned the task
    model = run.network
    assert target_layer(model, run.input_shape) == "conv2d_1"  # the last conv block, 16x16

    heat = class_activation_maps(model, inputs)  # the predicted class, the automatic layer
    assert heat.shape == (len(images), SIZE, SIZE) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0, abs=1e-5)
    corner, green = heat_shares(heat, images, *CORNER)
    # the patch is 1/16 of the image; the green patch, as saturated, gets next to nothing
    assert corner.mean() > 0.35 and np.median(corner) > 0.3
    assert green.mean() < 0.05
    near = (slice(0, PATCH + 4), slice(SIZE - PATCH - 4, SIZE))  # the patch and its border
    assert peaks_inside(heat, *near) >= 0.9


def test_gradcam_of_a_timm_backbone_peaks_in_the_corner_quadrant(timm_run):
    run, images, inputs = split_inputs(timm_run)
    assert run.metrics["test"]["accuracy"] >= 0.95
    model = run.network
    # at 32x32 the last stage's map is 1x1 and cannot point: the stage before it, 2x2
    names = [layer.name for layer in spatial_layers(model, run.input_shape)]
    assert names[-2:] == ["layer4.0", TIMM_BACKBONE]
    assert target_layer(model, run.input_shape) == "layer3.0"

    heat = class_activation_maps(model, inputs)
    assert heat.shape == (len(images), SIZE, SIZE)
    # a 2x2 map resolves quadrants: the patch's (top right) holds most of the heat
    quadrants = [(slice(r, r + HALF), slice(c, c + HALF)) for r in (0, HALF) for c in (0, HALF)]
    shares = np.stack([heat_shares(heat, images, *q)[0] for q in quadrants], axis=1)
    corner, others = shares[:, 1], np.delete(shares, 1, axis=1)
    assert corner.mean() > 0.45 and corner.mean() > 2 * others.mean(axis=0).max()
    assert np.mean(shares.argmax(axis=1) == 1) >= 0.85
    assert heat_shares(heat, images, *quadrants[1])[1].mean() < 0.05  # the green patch


def test_a_binary_sigmoid_head_explains_either_class():
    torch.manual_seed(0)
    model = build_layers(
        [
            {"Conv2D": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}},
            {"GlobalAveragePooling2D": {}},
            {"Dense": {"units": 1, "activation": "sigmoid"}},
        ],
        (8, 8, 3),
        num_classes=2,
    )
    inputs = torch.randn(6, 3, 8, 8)
    ones = class_activation_maps(model, inputs, targets=[1] * 6)
    zeros = class_activation_maps(model, inputs, targets=[0] * 6)
    # class 0's score is the negated logit: its evidence is exactly where class 1's is not
    assert np.all(ones * zeros == 0)
    assert (ones.max(axis=(1, 2)) > 0).all() or (zeros.max(axis=(1, 2)) > 0).all()
    predicted = predicted_classes(model, inputs)
    expected = [ones[k] if p == 1 else zeros[k] for k, p in enumerate(predicted)]
    np.testing.assert_allclose(class_activation_maps(model, inputs), np.stack(expected))
    with pytest.raises(ConfigError, match=r"target class 2 is not one of 0\.\.1"):
        class_activation_maps(model, inputs[:1], targets=[2])


def test_unknown_layers_and_methods_are_refused_with_the_valid_names():
    cnn = build_layers(
        [
            {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 2}},
            {"Flatten": {}},
            {"Dense": {"units": 3, "activation": "softmax"}},
        ],
        (16, 16, 3),
        num_classes=3,
    )
    inputs = torch.randn(1, 3, 16, 16)
    with pytest.raises(ConfigError) as cnn_error:
        class_activation_maps(cnn, inputs, layer="conv2d_1")
    assert "did you mean 'conv2d'?" in str(cnn_error.value)
    assert "(give one of conv2d, max_pooling2d;" in str(cnn_error.value)
    with pytest.raises(ConfigError, match="no spatial layer of that name"):
        find_layer(cnn, (16, 16, 3), "dense")  # a layer, but its output is no map
    with pytest.raises(ConfigError, match="did you mean 'gradcam'"):
        class_activation_maps(cnn, inputs, method="gradcm")

    timm = model_from_config(ModelConfig(backbone=TIMM_BACKBONE, weights="none"), (32, 32, 3), 2)
    with pytest.raises(ConfigError) as timm_error:
        find_layer(timm, (32, 32, 3), "layer5")
    message = str(timm_error.value)
    assert "stem, layer1.0, layer2.0, layer3.0, layer4.0, timm/test_resnet" in message
    assert "module path inside the backbone" in message
    # a module path inside the backbone, as timm names it, is a layer too
    inner = find_layer(timm, (32, 32, 3), "layer2.0.conv2")
    assert (
        inner.shape == (4, 4, 48)
        and inner.module is timm.get_submodule("timm/test_resnet").body.layer2[0].conv2
    )
    heat = class_activation_maps(
        timm, torch.randn(2, 3, 32, 32), layer="layer2.0.conv2", method="layercam"
    )
    assert heat.shape == (2, 32, 32)


def test_conv_outputs_are_keras_activated_while_the_model_keeps_its_fast_order():
    model = build_layers(
        [
            {"Conv2D": {"filters": 3, "kernel_size": 3, "activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 2}},
            {"Flatten": {}},
            {"Dense": {"units": 2, "activation": "softmax"}},
        ],
        (10, 10, 1),
        num_classes=2,
    )
    assert isinstance(model, KerasModel)
    conv = model.get_submodule("conv2d")
    assert isinstance(conv.activation, torch.nn.Identity)  # the ReLU runs after the pool
    image = torch.randn(1, 1, 10, 10)
    before = model(image)
    maps = feature_maps(model, image, ["conv2d", "max_pooling2d"])
    raw = torch.nn.functional.conv2d(image, conv.weight, conv.bias)[0]
    np.testing.assert_allclose(maps["conv2d"], raw.clamp(min=0).detach().numpy(), atol=1e-6)
    assert maps["max_pooling2d"].shape == (3, 4, 4) and maps["max_pooling2d"].min() >= 0
    assert isinstance(conv.activation, torch.nn.Identity)  # put back afterwards
    torch.testing.assert_close(model(image), before)


def test_overlay_blends_the_jet_colour_map_over_the_image():
    grey = np.full((2, 1, 4, 4), 100, dtype=np.uint8)
    heat = np.zeros((2, 4, 4), dtype=np.float32)
    heat[1] = 1.0
    blended = overlay(grey, heat)
    assert blended.shape == (2, 3, 4, 4) and blended.dtype == np.uint8
    # jet: 0 is dark blue (0, 0, 0.5), 1 dark red (0.5, 0, 0); each blended half and half
    np.testing.assert_array_equal(blended[0, :, 0, 0], [50, 50, 114])
    np.testing.assert_array_equal(blended[1, :, 0, 0], [114, 50, 50])
    with pytest.raises(ValueError, match="must match"):
        overlay(grey, heat[:, :2])
