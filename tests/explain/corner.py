"""A task whose class is decided by a patch in one corner, for the tests of explanations.

32x32 RGB PNG files of grey noise; the top-right 8x8 corner is red (class `red`) or blue
(class `blue`), and every image also has an equally saturated green 8x8 patch at a random place
in its bottom half, which says nothing about the class: a heat map that only followed
saturated colour would light it as much as the corner. The corner is off the diagonal, so a
heat map with height and width swapped would point at the wrong corner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

SIZE, PATCH = 32, 8
COLOURS = {"blue": (30, 30, 230), "red": (230, 30, 30)}
GREEN = (30, 200, 30)
PER_CLASS = 60  # images per class: 120 in all, 24 of them for test
CORNER = (slice(0, PATCH), slice(SIZE - PATCH, SIZE))  # rows, columns of the class patch
# A layer-list CNN whose last conv block keeps a 16x16 map; global pooling, as CAM assumes.
# It learns the task in 30 steps from every seed tried (eight) on standardised inputs
# (featurewise statistics, CNN_TRAINING); on 0..1 inputs its ReLUs may all die in the first few.
CORNER_CNN = [
    {"Conv2D": {"filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"}},
    {"MaxPooling2D": {"pool_size": 2}},
    {"Conv2D": {"filters": 32, "kernel_size": 3, "padding": "same", "activation": "relu"}},
    {"GlobalAveragePooling2D": {}},
    {"Dense": {"units": 2, "activation": "softmax"}},
]
CNN_TRAINING = {
    "augment": {"featurewise_center": True, "featurewise_std_normalization": True},
    "train": {"epochs": 6, "batch_size": 16, "optimizer": {"name": "adam", "lr": 0.005}},
}
TIMM_BACKBONE = "timm/test_resnet"  # timm's own small ResNet (372,688 parameters): a real one
TIMM_TRAINING = {
    "train": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}},
}


def write_corner_images(root: Path, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            pixels = rng.integers(60, 200, (SIZE, SIZE, 3)).astype(np.uint8)
            top, left = rng.integers(SIZE // 2, SIZE - PATCH), rng.integers(0, SIZE - PATCH)
            pixels[top : top + PATCH, left : left + PATCH] = GREEN
            pixels[CORNER] = colour
            Image.fromarray(pixels).save(root / name / f"{name}_{k:03d}.png")
    return root


def corner_config(path: Path, source: Path, model: dict[str, Any], **sections: Any) -> Path:
    """An experiment on the corner images; `sections` replace whole sections (train, ...)."""
    raw = {
        "seed": 0,
        "data": {
            "source": str(source),
            "target_size": [SIZE, SIZE],
            "validation_split": 0.2,
            "test_split": 0.2,
        },
        "model": model,
        **sections,
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path
