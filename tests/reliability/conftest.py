"""The reliability tests' tiny digits experiment (the CLI in-process: tests.runs.test_trained)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import write_digits_config


@pytest.fixture
def digits_yaml(tmp_path: Path) -> Callable[..., Path]:
    """digits_yaml(name="digits", train={...}, data={...}): a digits experiment (one epoch of
    Adam, 64 a batch, no interpretation: seconds) writing its runs under tmp_path/runs; the
    entries given update those sections."""

    def write(name: str = "digits", train: dict | None = None, data: dict | None = None) -> Path:
        base_train = {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam"}}
        base_data = {
            "source": "digits",
            "color_mode": "grayscale",
            "validation_split": 0.2,
            "test_split": 0.2,
        }
        train, data = base_train | (train or {}), base_data | (data or {})
        fixed = {"output": {"dir": str(tmp_path / "runs")}, "report": {"interpret": False}}
        return write_digits_config(tmp_path / f"{name}.yaml", train=train, data=data, **fixed)

    return write
