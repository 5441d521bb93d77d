"""Every file a run folder holds, by name, and the one tolerant reader of them.

```
config.yaml  manifest.json  health.json  split.csv  summary.txt  normalization.json
history.csv  metrics.json  predictions.csv  model.safetensors  report.html
checkpoints/last.pt  checkpoints/previous.pt  (the last two complete epochs' training state)
interpretation.json  (report.interpret: embedding coordinates, Grad-CAM tiles)
reconstructions.npz  (task: reconstruction: the report's input / output / target images)
tracking.json  (tracking.mlflow: the MLflow run to continue on --resume)
classifier.safetensors  classifier.json  (a features run's classifier, instead of the weights)
evaluations/<name>/evaluation.json  metrics.json  predictions.csv  (`cnnlab evaluate`, later)
```

The writer is cnnlab.runs.folder.RunFolder, the strict reader of a finished run
cnnlab.runs.finished.FinishedRun; both name files through the constants here. `read_run` is
the tolerant reader the report uses: a report is most wanted when a run went wrong, so a missing
or damaged file becomes a note on the page, never an exception.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnlab.atomic import write_text

CONFIG = "config.yaml"  # the resolved experiment, every default filled in
MANIFEST = "manifest.json"  # versions, device, seed, data fingerprint, split sizes, timings
HEALTH = "health.json"  # the full data health check
SPLIT = "split.csv"  # path,label,split,sha256 of every usable file
SUMMARY = "summary.txt"  # the Keras-style model summary
NORMALIZATION = "normalization.json"  # uint8 image -> model input, as evaluation applies it
HISTORY = "history.csv"  # one row per epoch
METRICS = "metrics.json"  # final metrics per split
PREDICTIONS = "predictions.csv"  # one row per evaluated image (val and test)
WEIGHTS = "model.safetensors"  # the kept (best) weights
CLASSIFIER = "classifier.safetensors"  # a features run's fitted classifier: its arrays
CLASSIFIER_INFO = "classifier.json"  # ... and what they are (kind, classes, shapes)
CHECKPOINT = "checkpoints/last.pt"  # the last complete epoch's training state, for --resume
# the epoch before's, kept so a damaged last.pt falls back to it (train/checkpoint.py)
PREVIOUS_CHECKPOINT = "checkpoints/previous.pt"
LR_FIND = "lr_find.png"  # train.optimizer.lr: auto's range test: loss against lr, the suggestion
REPORT = "report.html"
# report.interpret: what the report's interpretation needs of the network, kept so the page can be
# written again without it: embedding coordinates, Grad-CAM tiles (runs/interpretation.py)
INTERPRETATION = "interpretation.json"
# `cnnlab evaluate`: evaluations/<name>/ holds evaluation.json (what was evaluated: data, split,
# augmentation, TTA, seed), metrics.json and predictions.csv; the run's own files stay as they are
EVALUATIONS = "evaluations"
EVALUATION = "evaluation.json"
# task: reconstruction: the report's images (input / output / target uint8 arrays of the first
# and the worst test images, their paths and losses; numpy's npz, read without pickle)
RECONSTRUCTIONS = "reconstructions.npz"
# tracking.mlflow: the MLflow run this folder logs to ({"mlflow": {uri, experiment_id, run_id}}),
# so that --resume continues it (track/tracker.py)
TRACKING = "tracking.json"
EXPORT = "export"  # `cnnlab export`'s default folder: model files, MODEL_CARD.md

SPLIT_ORDER = ("train", "val", "test")


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_history(path: Path, history: list[dict[str, float]], columns: Sequence[str]) -> None:
    """history.csv: `columns` in order; a value an epoch did not log is an empty cell."""
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    write_text(path, out.getvalue())


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"


@dataclass
class Evaluation:
    """One `cnnlab evaluate` of the finished run: evaluations/<name>/."""

    name: str  # the folder's name
    info: dict[str, Any]  # evaluation.json: source, split, augment, tta, images, created, ...
    metrics: dict[str, Any]  # its metrics.json: one split's, as in the run's metrics.json


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
    evaluations: list[Evaluation] = field(default_factory=list)  # sorted by name
    notes: list[str] = field(default_factory=list)  # files that were missing or unreadable

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def trained(self) -> bool:
        """False for a features run (a classifier on a network's features) and an ensemble of
        finished runs: no epochs, so no history.csv to miss and no learning curves to show."""
        config = mapping(self.config)
        return not (config.get("classifier") or config.get("ensemble"))


def read_run(folder: Path) -> RunFiles:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a run folder (no such directory)")
    run = RunFiles(folder=folder)
    run.config_text = _read_text(folder / CONFIG, run.notes)
    run.config = _parse(folder / CONFIG, run.config_text, yaml.safe_load, run.notes)
    run.manifest = _parse(
        folder / MANIFEST,
        _read_text(folder / MANIFEST, run.notes),
        json.loads,
        run.notes,
    )
    run.metrics = _parse(
        folder / METRICS,
        _read_text(folder / METRICS, run.notes),
        json.loads,
        run.notes,
    )
    run.summary = _read_text(folder / SUMMARY, run.notes)
    if run.trained:
        run.history = read_history(folder / HISTORY, run.notes)
    run.evaluations = read_evaluations(folder, run.notes)
    return run


def read_mapping(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing, unreadable or not an object."""
    ignored: list[str] = []
    return _parse(path, _read_text(path, ignored), json.loads, ignored)


def read_evaluations(folder: Path, notes: list[str]) -> list[Evaluation]:
    """Every evaluations/<name>/ whose evaluation.json parses, by name; the rest are notes."""
    root = folder / EVALUATIONS
    if not root.is_dir():
        return []
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        own: list[str] = []
        info = _parse(path / EVALUATION, _read_text(path / EVALUATION, own), json.loads, own)
        metrics = _parse(path / METRICS, _read_text(path / METRICS, own), json.loads, own)
        notes.extend(f"{EVALUATIONS}/{path.name}/{note}" for note in own)
        if info:
            found.append(Evaluation(path.name, info, metrics))
    return found


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
