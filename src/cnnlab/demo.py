"""The demo: scikit-learn's digits as a real folder of PNG files, two models compared on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from rich.console import Console
from rich.table import Table

from cnnlab.config_io import validate
from cnnlab.data.arrays import read_array_source

# Two of the reports' architectures that fit 32x32 inputs: S3's BaseNet and S4's CNN.
MODELS = ("basenet", "catsdogs_cnn")


def write_digits_folder(root: Path) -> Path:
    """`root/digits/<class>/<index>.png`: 1,797 8x8 grayscale images, one folder per class."""
    part = read_array_source("digits")[0]
    folder = root / "digits"
    for index, (pixels, label) in enumerate(zip(part.images, part.labels, strict=True)):
        target = folder / str(int(label)) / f"{index:04d}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(target)
    return folder


def demo_config(images: Path, runs: Path) -> dict:
    """The demo's experiment; `digits.yaml` beside the data holds it for the user to copy."""
    return {
        "seed": 0,
        "data": {
            "source": str(images),
            "color_mode": "grayscale",
            "target_size": [32, 32],  # upscaled from 8x8 so the reports' networks fit
            "validation_split": 0.1,
            "test_split": 0.2,
        },
        "model": {"name": MODELS[0]},
        "train": {
            "epochs": 25,
            "batch_size": 32,
            "optimizer": {"name": "adam", "lr": 0.003},
            "schedule": {"name": "cosine"},
        },
        "output": {"dir": str(runs)},
    }


def run_demo(folder: Path, console: Console) -> list[Path]:
    """Write the data, run each model, print the comparison; returns the report paths."""
    from cnnlab.config import Experiment
    from cnnlab.runs import run_experiment
    from cnnlab.runs.folder import RunFolder

    images = write_digits_folder(folder)
    base = demo_config(images, folder / "runs")
    config_path = folder / "digits.yaml"
    config_path.write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
    console.print(f"Wrote {images} (1,797 PNG files) and {config_path}")
    table = Table("model", "params", "test accuracy", "test loss", "epochs", "train time")
    reports = []
    for name in MODELS:
        experiment = validate(
            {**base, "model": {"name": name}}, Experiment, source=str(config_path)
        )
        run_folder = RunFolder.create(folder / "runs", f"digits-{name}")
        console.print(f"\n[bold]{name}[/] → {run_folder.path}")
        result = run_experiment(experiment, run_folder, console=console)
        manifest, test = result.manifest, result.metrics["test"]
        table.add_row(
            name,
            f"{manifest['model']['trainable_params']:,}",
            f"{test['accuracy']:.4f}",
            f"{test['loss']:.4f}",
            str(manifest["epochs_run"]),
            f"{manifest['timings']['train_s']:.1f} s",
        )
        assert result.report is not None  # finish writes every run's report.html
        reports.append(result.report)
    console.print(table)
    for report in reports:
        console.print(f"Report: {report}")
    return reports
