"""model.whiten_first_conv: the first Conv2D's responses to training patches are decorrelated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import WhitenConfig
from cnnlab.errors import ConfigError
from cnnlab.models import build_layers, build_model
from cnnlab.models.whiten import whiten_first_conv

DEVICE = torch.device("cpu")


def smooth_images(count: int = 200, size: int = 12, seed: int = 0) -> np.ndarray:
    """uint8 (N, 3, H, W) with strongly correlated neighbours and channels, as photographs."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.normal(size=(count, 1, size + 4, size + 4))).float()
    blurred = F.avg_pool2d(noise, 5, stride=1)  # neighbouring pixels correlate
    colours = torch.tensor([1.0, 0.8, 0.6])[None, :, None, None]  # so do channels
    x = blurred * colours + 0.1 * torch.from_numpy(rng.normal(size=(count, 3, size, size))).float()
    return ((x - x.min()) / (x.max() - x.min()) * 255).round().to(torch.uint8).numpy()


def scale(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255


def output_covariance(conv: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
    """Covariance of the conv's (pre-activation) outputs over every position of every image."""
    with torch.no_grad():
        out = F.conv2d(scale(torch.from_numpy(images)), conv.weight, conv.bias)
    rows = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]).double()
    return torch.cov(rows.T)


def linear_conv(filters: int) -> list[dict]:
    return [{"Conv2D": {"filters": filters, "kernel_size": 2}}, "Flatten", {"Dense": 3}]


def test_whitened_outputs_are_decorrelated_with_unit_variance():
    images = smooth_images()
    model = build_layers(linear_conv(12), (12, 12, 3))
    before = output_covariance(model[0], images)
    off = before - torch.diag(torch.diag(before))
    assert off.abs().max() > 0.1 * torch.diag(before).max()  # glorot kernels: correlated

    conv = whiten_first_conv(model, images, scale, WhitenConfig(eps=1e-8), seed=0, device=DEVICE)
    after = output_covariance(conv, images)
    assert torch.allclose(after, torch.eye(12, dtype=after.dtype), atol=1e-3)
    with torch.no_grad():  # and mean 0: the bias takes the patches' mean out
        out = F.conv2d(scale(torch.from_numpy(images)), conv.weight, conv.bias)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert not conv.weight.requires_grad and conv.bias.requires_grad  # airbench's freezing


def test_eps_damps_the_smallest_directions_and_twice_the_filters_adds_the_negatives():
    images = smooth_images(size=32)
    model = build_model("airbench", (32, 32, 3), 10)  # 24 filters: 2 x 3 x 2 x 2
    conv = whiten_first_conv(model, images, scale, WhitenConfig(), seed=0, device=DEVICE)
    weight = conv.weight.detach()
    assert torch.equal(weight[12:], -weight[:12])
    variances = torch.diag(output_covariance(conv, images))[:12]
    assert torch.all(variances[:-1] >= variances[1:] - 1e-6)  # largest eigenvalue first
    assert variances[0] == pytest.approx(1.0, abs=0.01) and variances[-1] < 0.9  # eps = 5e-4


def test_the_images_used_follow_the_seed():
    images = smooth_images(count=100)
    config = WhitenConfig(images=30)
    kernels = []
    for seed in (0, 0, 1):
        model = build_layers(linear_conv(12), (12, 12, 3))
        kernels.append(whiten_first_conv(model, images, scale, config, seed, DEVICE).weight)
    assert torch.equal(kernels[0], kernels[1]) and not torch.equal(kernels[0], kernels[2])


def test_trainable_keeps_the_kernels_training():
    model = build_layers(linear_conv(12), (12, 12, 3))
    config = WhitenConfig(trainable=True)
    assert whiten_first_conv(
        model, smooth_images(20), scale, config, 0, DEVICE
    ).weight.requires_grad


@pytest.mark.parametrize(
    ("layers", "needle"),
    [
        (["Flatten", {"Dense": 3}], "must be a Conv2D; this model starts with Flatten"),
        (
            linear_conv(10),
            "the first Conv2D has 10 filters; whitening its 3 x 2 x 2 patches sets 12",
        ),
    ],
)
def test_a_model_it_cannot_whiten_is_named(layers, needle):
    model = build_layers(layers, (12, 12, 3))
    with pytest.raises(ConfigError, match=r"model\.whiten_first_conv: ") as caught:
        whiten_first_conv(model, smooth_images(10), scale, WhitenConfig(), 0, DEVICE)
    assert needle in str(caught.value)
