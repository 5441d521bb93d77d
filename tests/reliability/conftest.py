"""The reliability tests' tiny digits experiment (the CLI in-process: tests.runs.test_trained)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import write_digits_config

from cnnlab.runs.lock import LOCK


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


def temporary(folder: Path) -> set[Path]:
    """The hidden temporary files (`.NAME.*.tmp`) under `folder`."""
    return set(folder.rglob(".*.tmp")) if folder.exists() else set()


def history_without_seconds(folder: Path) -> list[dict[str, str]]:
    with (folder / "history.csv").open(newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def assert_same_result(folder: Path, reference: Path) -> None:
    """`folder` ended as `reference` did, bit for bit, leaving no temporary or lock file."""
    for name in ("model.safetensors", "metrics.json", "predictions.csv"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    assert history_without_seconds(folder) == history_without_seconds(reference)
    left = sorted(p.name for p in (*temporary(folder), *folder.glob(LOCK)))
    assert not left, f"{folder}: {left} left behind"
