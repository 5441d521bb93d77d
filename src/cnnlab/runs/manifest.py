"""manifest.json: what ran, where, with which libraries, on which data."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from cnnlab.data.pipeline import Data


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
