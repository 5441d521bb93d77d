"""A fake but realistic run folder: what `cnnlab run` writes for 3 classes and 5 epochs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnlab.report import Misclassified

CLASSES = ["cats", "dogs", "birds"]
CONFUSION = [[27, 2, 1], [3, 25, 2], [1, 1, 28]]  # test split, rows: true class
SUMMARY = """Model: "basenet"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ conv2d (Conv2D)                 │ (None, 30, 30, 32)     │           896 │
│ max_pooling2d (MaxPooling2D)    │ (None, 15, 15, 32)     │             0 │
│ flatten (Flatten)               │ (None, 7200)           │             0 │
│ dense (Dense)                   │ (None, 3)              │        21,603 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 22,499
 Trainable params: 22,499
 Non-trainable params: 0
"""
HISTORY = [  # epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds
    (1, 1.0712, 0.4213, 0.9521, 0.5333, 0.001, 2.31),
    (2, 0.8123, 0.6402, 0.7012, 0.7111, 0.001, 1.92),
    (3, 0.6011, 0.7521, 0.5523, 0.7889, 0.001, 1.90),
    (4, 0.4702, 0.8233, 0.4810, 0.8333, 0.001, 1.93),
    (5, 0.3911, 0.8610, 0.4987, 0.8222, 0.001, 1.91),
]


def class_report(confusion: list[list[int]], classes: list[str]) -> dict[str, Any]:
    matrix = np.asarray(confusion, dtype=float)
    correct = np.diag(matrix)
    precision, recall = correct / matrix.sum(axis=0), correct / matrix.sum(axis=1)
    f1 = 2 * precision * recall / (precision + recall)
    per_class = {
        name: {"precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, matrix.sum(axis=1), strict=True)
    }
    macro = {
        "precision": precision.mean(),
        "recall": recall.mean(),
        "f1": f1.mean(),
        "support": int(matrix.sum()),
    }
    return {
        "loss": 0.4213,
        "accuracy": correct.sum() / matrix.sum(),
        "top_2_accuracy": 0.9667,
        "per_class": per_class,
        "macro_avg": macro,
        "confusion_matrix": confusion,
        "classes": classes,
    }


def manifest(classes: list[str], splits: tuple[str, ...]) -> dict[str, Any]:
    sizes = {"train": 420, "val": 90, "test": 90}
    counts = {"train": [150, 140, 130], "val": [32, 30, 28], "test": [30, 30, 30]}
    return {
        "cnnlab": "0.1.0",
        "versions": {"python": "3.11.2", "torch": "2.5.1", "numpy": "2.1.3"},
        "device": "cpu",
        "seed": 0,
        "started": "2025-01-01T10:00:00+00:00",
        "finished": "2025-01-01T10:00:12+00:00",
        "timings": {"data_s": 1.2, "train_s": 9.97, "evaluate_s": 0.5},
        "model": {
            "name": "basenet",
            "total_params": 22499,
            "trainable_params": 22499,
            "non_trainable_params": 0,
        },
        "data": {
            "source": "/data/animals",
            "fingerprint": "sha256:3f9a0c41d2",
            "classes": classes,
            "split_sizes": {s: sizes[s] for s in splits},
            "class_counts": {s: dict(zip(classes, counts[s], strict=True)) for s in splits},
            "skipped": [
                {"path": "cats/broken.jpg", "reason": "truncated image"},
                {"path": "dogs/empty.jpg", "reason": "zero-byte file"},
            ],
            "ignored": 3,
            "duplicates": 0,
            "warnings": ["class 'birds' has 13% fewer images than 'cats'"],
        },
        "stopped_early": False,
        "epochs_run": 5,
    }


def write_run(
    folder: Path,
    classes: list[str] = CLASSES,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> Path:
    """A run folder as the recorder writes it; without "val", history has empty val cells."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "seed": 0,
        "data": {"source": "/data/animals", "validation_split": 0.15},
        "model": {"name": "basenet"},
        "train": {"epochs": 5, "batch_size": 32, "early_stopping": None},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    (folder / "manifest.json").write_text(json.dumps(manifest(classes, splits)), "utf-8")
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"]
    for epoch, loss, acc, val_loss, val_acc, lr, secs in HISTORY:
        val = f"{val_loss},{val_acc}" if "val" in splits else ","
        lines.append(f"{epoch},{loss},{acc},{val},{lr},{secs}")
    (folder / "history.csv").write_text("\n".join(lines) + "\n", "utf-8")
    metrics: dict[str, Any] = {"train": {"loss": 0.3702, "accuracy": 0.8714}}
    if "val" in splits:
        metrics["val"] = {"loss": 0.4810, "accuracy": 0.8333, "top_2_accuracy": 0.9556}
    if "test" in splits:
        metrics["test"] = class_report(CONFUSION, classes)
    elif "val" in splits:
        metrics["val"] |= class_report(CONFUSION, classes) | {"loss": 0.4810}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), "utf-8")
    (folder / "summary.txt").write_text(SUMMARY, "utf-8")
    return folder


def misclassified(count: int = 4, channels: int = 1, size: int = 8) -> Misclassified:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, channels, size, size), dtype=np.uint8)
    return Misclassified(
        images=images,
        true=[CLASSES[k % 3] for k in range(count)],
        predicted=[CLASSES[(k + 1) % 3] for k in range(count)],
        confidence=[0.93 - 0.1 * k for k in range(count)],
        paths=[f"{CLASSES[k % 3]}/img_{k:03d}.png" for k in range(count)],
    )


def write_evaluation(run: Path, name: str, accuracy: float, loss: float, **info: Any) -> Path:
    """evaluations/<name>/ as `cnnlab evaluate` writes it: evaluation.json and metrics.json."""
    folder = run / "evaluations" / name
    folder.mkdir(parents=True, exist_ok=True)
    evaluation = {
        "name": name,
        "source": "/data/animals",
        "same_data": True,
        "split": "test",
        "augment": "none",
        "tta": False,
        "seed": 0,
        "images": 90,
        "classes_absent": [],
        "created": "2026-12-01T12:00:00+00:00",
        "fingerprint": "ab12cd34",
    } | info
    metrics = class_report(CONFUSION, CLASSES) | {"accuracy": accuracy, "loss": loss}
    (folder / "evaluation.json").write_text(json.dumps(evaluation), "utf-8")
    (folder / "metrics.json").write_text(json.dumps(metrics), "utf-8")
    (folder / "predictions.csv").write_text("path,label,predicted\n", "utf-8")
    return folder


def write_interpretation(run: Path, tiles: int = 2) -> dict[str, Any]:
    """interpretation.json as runs/interpretation.py writes it for the fake test split (90
    images, 10 of them wrong as CONFUSION says): PCA and t-SNE coordinates, `tiles` Grad-CAM
    tiles (the first right, the others wrong)."""
    import base64
    import io

    from PIL import Image

    rng = np.random.default_rng(1)
    matrix = np.asarray(CONFUSION)
    pairs = [(i, j) for i in range(3) for j in range(3) for _ in range(matrix[i, j])]
    labels, predicted = [i for i, _ in pairs], [j for _, j in pairs]
    coordinates = {
        m: rng.uniform(-1, 1, (len(pairs), 2)).round(4).tolist() for m in ("PCA", "t-SNE")
    }
    panels = []
    for k in range(tiles):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        true, guess = (0, 0) if k == 0 else (1, 0)
        panels.append(
            {
                "png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                "path": f"{CLASSES[true]}/cam_{k}.png",
                "true": CLASSES[true],
                "predicted": CLASSES[guess],
                "probability": 0.97 if k == 0 else 0.81,
                "correct": k == 0,
            }
        )
    saved = {
        "split": "test",
        "classes": CLASSES,
        "embedding": {
            "features": "the output of flatten, the classifier head's input",
            "seed": 0,
            "dimension": 7200,
            "images": len(pairs),
            "index": list(range(len(pairs))),
            "label": labels,
            "predicted": predicted,
            "coordinates": coordinates,
            "skipped": {"UMAP": "not installed (pip install umap-learn)"},
        },
        "cam": {"method": "Grad-CAM", "layer": "conv2d", "tiles": panels},
        "seconds": 1.5,
    }
    (run / "interpretation.json").write_text(json.dumps(saved), "utf-8")
    return saved
