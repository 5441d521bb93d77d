"""Keras's `standardize()`: rescale, then sample-wise, then feature-wise normalisation.

Feature-wise statistics are fitted on the training split only and saved with the run
(`normalization.json`), so evaluation and prediction reuse exactly them. Unlike Keras's
`fit()`, which measures the unscaled images and then subtracts that mean from rescaled ones,
the statistics here are measured after `rescale`, so centring gives mean 0 as intended.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.atomic import write_text
from cnnlab.config import AugmentConfig
from cnnlab.preprocessing import Preprocessing
from cnnlab.runtime import device_constant

EPSILON = 1e-6  # Keras's guard against dividing by a zero standard deviation
CHUNK = 4096  # images per pass when fitting: bounded memory on memory-mapped splits


@dataclass(frozen=True)
class Normalization:
    rescale: float
    samplewise_center: bool = False
    samplewise_std: bool = False
    mean: tuple[float, ...] | None = None  # per channel, after rescale
    std: tuple[float, ...] | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.scale(images))

    def scale(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.rescale

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after rescale; modern augmentations run between the two."""
        if self.samplewise_center:
            x = x - x.mean(dim=(1, 2, 3), keepdim=True)
        if self.samplewise_std:
            x = x / (x.std(dim=(1, 2, 3), keepdim=True) + EPSILON)
        if self.mean is not None:
            x = x - device_constant(self.mean, x.device).view(1, -1, 1, 1)
        if self.std is not None:
            x = x / (device_constant(self.std, x.device).view(1, -1, 1, 1) + EPSILON)
        return x

    def save(self, path: Path) -> None:
        write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Normalization:
        raw = json.loads(path.read_text(encoding="utf-8"))
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**fields)


def fit_normalization(
    cfg: AugmentConfig, train_images: np.ndarray, pretrained: Preprocessing | None = None
) -> Normalization:
    """The run's normalisation; feature-wise statistics from the training images only, or the
    mean/std a pretrained backbone's weights expect."""
    if pretrained is not None:
        return _pretrained(cfg, pretrained)
    rescale = cfg.rescale if cfg.rescale is not None else 1 / 255  # Keras scripts' 1/255
    mean = std = None
    if cfg.featurewise_center or cfg.featurewise_std_normalization:
        channel_mean, channel_std = _channel_stats(train_images, rescale)
        mean = channel_mean if cfg.featurewise_center else None
        std = channel_std if cfg.featurewise_std_normalization else None
    return Normalization(
        rescale, cfg.samplewise_center, cfg.samplewise_std_normalization, mean, std
    )


def _pretrained(cfg: AugmentConfig, pretrained: Preprocessing) -> Normalization:
    """A backbone's inputs: 0..1 images standardised by its training data's mean and std.
    (The experiment refuses a rescale or a feature-/sample-wise key beside a backbone.)"""
    return Normalization(1 / 255, mean=tuple(pretrained.mean), std=tuple(pretrained.std))


def _channel_stats(
    images: np.ndarray, rescale: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    channels = images.shape[1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, len(images), CHUNK):
        block = np.asarray(images[start : start + CHUNK], dtype=np.float64) * rescale
        total += block.sum(axis=(0, 2, 3))
        squares += (block**2).sum(axis=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(mean.tolist()), tuple(std.tolist())
