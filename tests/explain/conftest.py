"""Session fixtures: the corner task's images, and a layer-list CNN and a timm backbone trained
on them (see corner.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import cnnlab

from .corner import (
    CNN_TRAINING,
    CORNER_CNN,
    TIMM_BACKBONE,
    TIMM_TRAINING,
    corner_config,
    write_corner_images,
)


@pytest.fixture(scope="session")
def corner_root(tmp_path_factory) -> Iterator[Path]:
    """The images and the runs, with their own decode cache (the per-test one does not reach
    session fixtures)."""
    folder = tmp_path_factory.mktemp("corner")
    write_corner_images(folder / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(folder / "cache"))
        yield folder


def _train(root: Path, name: str, model: dict[str, Any], sections: dict[str, Any]) -> Path:
    """A finished run; torch's global determinism and cuDNN flags as they were (a run sets
    them, and the per-test fixture that restores them does not reach session fixtures)."""
    config = corner_config(root / f"{name}.yaml", root / "images", model, **sections)
    before = torch.are_deterministic_algorithms_enabled()
    flags = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        return cnnlab.run(config, output_dir=root / "runs", quiet=True).folder
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags


@pytest.fixture(scope="session")
def cnn_run(corner_root: Path) -> Path:
    return _train(corner_root, "cnn", {"layers": CORNER_CNN}, CNN_TRAINING)


@pytest.fixture(scope="session")
def timm_run(corner_root: Path) -> Path:
    backbone = {"backbone": TIMM_BACKBONE, "weights": "none"}
    return _train(corner_root, "timm", backbone, TIMM_TRAINING)
