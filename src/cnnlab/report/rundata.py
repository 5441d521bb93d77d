"""Read a run folder's files for the report, tolerating any that are missing or unreadable.

A report is most wanted when a run went wrong, so a missing or damaged file becomes a note on
the page, never an exception.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


@dataclass
class RunFiles:
    """What a run folder holds; empty values stand for files that are absent."""

    folder: Path
    config_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)  # column -> one value per row
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    notes: list[str] = field(default_factory=list)  # files that were missing or unreadable

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def trained(self) -> bool:
        """False for a features run (a classifier on a network's features): no epochs, so no
        history.csv to miss and no learning curves to show."""
        return not mapping(self.config).get("classifier")


def read_run(folder: Path) -> RunFiles:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a run folder (no such directory)")
    run = RunFiles(folder=folder)
    run.config_text = _read_text(folder / "config.yaml", run.notes)
    run.config = _parse(folder / "config.yaml", run.config_text, yaml.safe_load, run.notes)
    run.manifest = _parse(
        folder / "manifest.json",
        _read_text(folder / "manifest.json", run.notes),
        json.loads,
        run.notes,
    )
    run.metrics = _parse(
        folder / "metrics.json",
        _read_text(folder / "metrics.json", run.notes),
        json.loads,
        run.notes,
    )
    run.summary = _read_text(folder / "summary.txt", run.notes)
    if run.trained:
        run.history = read_history(folder / "history.csv", run.notes)
    return run


def read_history(path: Path, notes: list[str]) -> dict[str, list[float]]:
    """history.csv as columns of floats; empty cells (no validation split) become NaN."""
    text = _read_text(path, notes)
    if not text:
        return {}
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        notes.append(f"{path.name}: no epochs recorded")
        return {}
    columns = [name for name in rows[0] if name]
    history = {name: [_number(row.get(name)) for row in rows] for name in columns}
    if "epoch" not in history or any(math.isnan(e) for e in history["epoch"]):
        history["epoch"] = [float(k) for k in range(1, len(rows) + 1)]
    return history


def has_values(values: list[float] | None) -> bool:
    return bool(values) and any(not math.isnan(v) for v in values or [])


def mapping(value: Any) -> dict[str, Any]:
    """`value` when it is a mapping, else {}: lets callers walk JSON of any shape safely."""
    return value if isinstance(value, dict) else {}


def _number(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _read_text(path: Path, notes: list[str]) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        notes.append(f"{path.name}: not found in the run folder")
    except (OSError, UnicodeDecodeError) as error:
        notes.append(f"{path.name}: could not be read ({error})")
    return ""


def _parse(path: Path, text: str, loads: Any, notes: list[str]) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = loads(text)
    except (ValueError, yaml.YAMLError) as error:
        notes.append(f"{path.name}: could not be parsed ({error})")
        return {}
    if not isinstance(value, dict):
        notes.append(f"{path.name}: expected a mapping, found {type(value).__name__}")
        return {}
    return value
