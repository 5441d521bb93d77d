"""Fixtures: a fake but realistic run folder (see fake_run.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .fake_run import write_run


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    return write_run(tmp_path / "basenet-seed0")


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "run", **kwargs: Any) -> Path:
        return write_run(tmp_path / name, **kwargs)

    return make
