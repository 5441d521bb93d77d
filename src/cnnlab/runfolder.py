"""The run folder: one per experiment run, never overwriting an earlier one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cnnlab.atomic import write_text
from cnnlab.config import Experiment

if TYPE_CHECKING:
    from cnnlab.data.pipeline import Data


def new_run_folder(parent: Path, name: str) -> Path:
    """`parent/name`, or `name-2`, `name-3`, ... when that exists: earlier results stay intact."""
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"{parent}: too many runs named {name}")


def discard_unstarted(folder: Path) -> None:
    """Remove a run folder this command made when it failed before any epoch completed
    (a config or data error found while running): no empty run is left to mislead."""
    if not (folder / "checkpoints").exists():
        shutil.rmtree(folder, ignore_errors=True)


def write_config(folder: Path, experiment: Experiment) -> None:
    """The resolved experiment, every default filled in, loadable with `cnnlab run`."""
    resolved = experiment.model_dump(mode="json")
    write_text(folder / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def record_data(folder: Path, experiment: Experiment, data: Data) -> None:
    """The data half of a run folder: resolved config, health check, split manifest."""
    write_config(folder, experiment)
    write_json(folder / "health.json", data.health.to_json())
    write_text(folder / "split.csv", data.manifest)


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")
