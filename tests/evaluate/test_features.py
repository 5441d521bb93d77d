"""Feature extraction: a network's vectors for a split, pooled, in the split's order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import ConfigError
from cnnlab.evaluate.features import extract_features, penultimate, pooled
from cnnlab.models import build_layers
from cnnlab.runtime import autocast, select_device

DEVICE = select_device("auto")  # the GPU when there is one
TOLERANCE = 2e-2 if DEVICE.type == "cuda" else 1e-5  # bf16 autocast on the GPU
CONV_NET = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"MaxPooling2D": {}},
    {"Flatten": {}},
    {"Dense": {"units": 6, "activation": "relu"}},
    {"Dropout": 0.5},
    {"Dense": {"units": 3, "activation": "softmax"}},
]


def images_and_labels(count: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
    return images, torch.arange(count) % 3


def scaled(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255


def test_features_are_float32_rows_in_the_split_order_across_batches():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3).to(DEVICE)
    extractor = pooled([("conv", conv)], "avg", "conv_features").to(DEVICE)
    images, labels = images_and_labels(10)
    batches = DeviceBatches(images, labels, batch_size=4, device=DEVICE, shuffle=False)

    features = extract_features(extractor, batches, scaled)

    with torch.no_grad(), autocast(DEVICE):
        expected = conv(scaled(images.to(DEVICE))).float().mean(dim=(2, 3)).cpu().numpy()
    assert isinstance(features, np.ndarray) and features.dtype == np.float32
    assert features.shape == (10, 5)
    np.testing.assert_allclose(features, expected, atol=TOLERANCE)


def test_avg_pool_gives_one_value_per_channel_and_flatten_keeps_keras_order():
    conv = torch.nn.Conv2d(3, 2, 1).to(DEVICE)
    images, labels = images_and_labels(3, size=4)
    batches = DeviceBatches(images, labels, batch_size=8, device=DEVICE, shuffle=False)

    averaged = extract_features(pooled([("c", conv)], "avg", "a").to(DEVICE), batches, scaled)
    flat = extract_features(pooled([("c", conv)], "flatten", "f").to(DEVICE), batches, scaled)

    assert averaged.shape == (3, 2) and flat.shape == (3, 4 * 4 * 2)
    # Keras's Flatten walks (h, w, C): the channels of one pixel are neighbours
    by_pixel = flat.reshape(3, 4, 4, 2)
    np.testing.assert_allclose(by_pixel.mean(axis=(1, 2)), averaged, atol=TOLERANCE)


def test_extraction_runs_in_eval_mode_without_gradients_and_restores_the_mode():
    torch.manual_seed(0)
    model = build_layers(CONV_NET, (8, 8, 3), num_classes=3).to(DEVICE)
    extractor = penultimate(model, "avg", "net_features").train()
    images, labels = images_and_labels(6)
    batches = DeviceBatches(images, labels, batch_size=4, device=DEVICE, shuffle=False)

    first = extract_features(extractor, batches, scaled)
    second = extract_features(extractor, batches, scaled)

    np.testing.assert_array_equal(first, second)  # Dropout was off: eval mode
    assert extractor.training
    assert not any(p.requires_grad for p in extractor.parameters())  # frozen: nothing trains it


def test_penultimate_is_every_layer_but_the_output_and_pools_only_a_feature_map():
    model = build_layers(CONV_NET, (8, 8, 3), num_classes=3)
    vector = penultimate(model, "avg", "net_features")
    assert [name for name, _ in vector.named_children()] == [
        "conv2d",
        "max_pooling2d",
        "flatten",
        "dense",
        "dropout",
    ]
    conv_only = [CONV_NET[0], {"Dense": {"units": 3, "activation": "softmax"}}]
    as_map = penultimate(build_layers(conv_only, (8, 8, 3)), "avg", "conv_features")
    assert list(dict(as_map.named_children())) == ["conv2d", "global_average_pooling2d"]


def test_a_single_layer_model_has_no_penultimate_layer():
    model = build_layers([{"Dense": {"units": 3, "activation": "softmax"}}], (4,))
    with pytest.raises(ConfigError, match=r"model\.from_run: the run's model has a single layer"):
        penultimate(model, "avg", "x")


def test_a_pool_layer_never_replaces_a_layer_of_the_same_name():
    conv = torch.nn.Conv2d(3, 2, 1)
    extractor = pooled([("flatten", conv)], "flatten", "x")
    assert list(dict(extractor.named_children())) == ["flatten", "flatten_features"]
