"""The demo: scikit-learn's digits as a real folder of PNG files, used as a user would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.data.arrays import read_array_source


def write_digits_folder(root: Path) -> Path:
    """`root/digits/<class>/<index>.png`: 1,797 8x8 grayscale images, one folder per class."""
    part = read_array_source("digits")[0]
    folder = root / "digits"
    for index, (pixels, label) in enumerate(zip(part.images, part.labels, strict=True)):
        target = folder / str(int(label)) / f"{index:04d}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(target)
    return folder


def demo_config(folder: Path) -> str:
    """The experiment file the demo writes beside its data, for the user to copy."""
    return (
        "# cnnlab demo: scikit-learn's digits as a folder of PNG files\n"
        f"data:\n  source: {folder}\n  color_mode: grayscale\n"
        "  target_size: [16, 16]\n  validation_split: 0.15\n  test_split: 0.15\n"
        "seed: 0\n"
    )
