"""What a run leaves in its folder besides weights: manifest, history, metrics, predictions."""

from __future__ import annotations

import csv
import io
import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.atomic import write_text
from cnnlab.data.pipeline import Data, Split
from cnnlab.train.callbacks import Callback, TrainState

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("cnnlab", "torch", "torchvision", "numpy", "pillow", "scikit-learn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def run_manifest(
    seed: int,
    device: object,
    started: str,
    timings: dict[str, float],
    model: dict[str, Any],
    data: Data,
    **details: Any,
) -> dict[str, Any]:
    """manifest.json: what ran, where, with which libraries, on which data; then `details`."""
    library_versions = versions()
    return {
        "cnnlab": library_versions["cnnlab"],
        "versions": library_versions,
        "device": str(device),
        "seed": seed,
        "started": started,
        "finished": now(),
        "timings": timings,
        "model": model,
        "data": data_manifest(data),
        **details,
    }


def data_manifest(data: Data) -> dict[str, Any]:
    health = data.health
    return {
        "source": health.source,
        "fingerprint": data.fingerprint,
        "classes": data.classes,
        "input_shape": list(data.input_shape),
        "split_sizes": {name: len(split) for name, split in data.splits.items()},
        "class_counts": {
            name: {
                data.classes[k]: int(n)
                for k, n in enumerate(np.bincount(split.labels, minlength=data.num_classes))
            }
            for name, split in data.splits.items()
        },
        "skipped": health.skipped,
        "ignored": len(health.ignored),
        "duplicates": len(health.duplicates),
        "leakage": len(health.leakage),
        "warnings": health.warnings,
    }


class HistoryCSV(Callback):
    """history.csv rewritten after every epoch, so a crashed run still shows its curves."""

    def __init__(self, path: Path):
        self.path = path

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        write_history(self.path, state.history)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _cell(row.get(k)) for k in HISTORY_COLUMNS})
    write_text(path, out.getvalue())


def write_predictions(path: Path, predicted: dict[str, tuple[Split, np.ndarray]]) -> None:
    """One row per evaluated image: split, path, label, predicted, confidence, p_<class>..."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    classes = next(iter(predicted.values()))[0].classes if predicted else []
    writer.writerow(
        ["split", "path", "label", "predicted", "confidence", *(f"p_{c}" for c in classes)]
    )
    for name, (split, probabilities) in predicted.items():
        best = probabilities.argmax(1)
        for i, path_ in enumerate(split.paths):
            row = probabilities[i]
            writer.writerow(
                [
                    name,
                    path_,
                    classes[split.labels[i]],
                    classes[best[i]],
                    f"{row[best[i]]:.6f}",
                    *(f"{p:.6f}" for p in row),
                ]
            )
    write_text(path, out.getvalue())


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"
