"""Decode into cnnlab's cache once vs re-decode every epoch with torchvision's DataLoader.

cats_vs_dogs (real JPEGs, extracted to a folder), 150x150 RGB, bilinear stretch (S4's setting,
Keras's behaviour). Each repeat runs, in this process and in this order:

1. cnnlab cold: `load_data` with an empty cache dir: scan + health check + decode into the cache
   (worker processes on all cores from 256 files on);
2. cnnlab warm: the same call again, served from the cache;
3. an epoch from the cache: `DeviceBatches(batch_size=40, device="cpu")` over the train split,
   each batch made float in [0, 1], as the DataLoader's are;
4. torchvision `ImageFolder` on the train folder + the same Pillow bilinear resize + float
   tensor, `DataLoader(batch_size=40, num_workers=2, shuffle=True)`: two epochs, each decoding
   every file again (workers are not persistent, so each epoch starts its own).

Each row reports the median over repeats. Ratios divide img/s by img/s, as the pipelines see
different numbers of images (the cold decode reads train and validation, the epochs train only).
"""

from __future__ import annotations

import gc
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader
from torchvision.transforms import v2

from bench.cats_vs_dogs import TOP, extract
from bench.common import (
    Ratio,
    Row,
    busy_warning,
    load_average,
    machine_info,
    machine_line,
    progress,
    ratios_table,
    rows_table,
    timed,
    write_outputs,
)
from cnnlab.config import DataConfig
from cnnlab.data.batches import DeviceBatches
from cnnlab.data.pipeline import Split, load_data

NAME = "decode_cache"
TARGET_SIZE = (150, 150)  # (height, width)
BATCH_SIZE = 40
LOADER_WORKERS = 2
QUICK_PER_CLASS = 10  # per split and class: 40 images in all
PEER = f"torchvision ImageFolder + DataLoader(num_workers={LOADER_WORKERS})"
ROWS = {
    "cold": "cnnlab cold: load_data into an empty cache (scan + check + decode)",
    "warm": "cnnlab warm: load_data again, served from the cache",
    "cache_epoch": "cnnlab epoch from the cache: DeviceBatches(cpu) + float",
    "loader_epoch_1": f"{PEER}, epoch 1",
    "loader_epoch_2": f"{PEER}, epoch 2",
}


@dataclass
class Result:
    rows: list[Row]
    ratios: list[Ratio]
    machine: dict[str, Any]
    settings: dict[str, Any]
    pixels: dict[str, Any]  # how equal the two pipelines' images are
    markdown: str
    files: list[Path]


def torchvision_transform() -> v2.Compose:
    """On the PIL image, as cnnlab resizes: Pillow's antialiased bilinear, then a float tensor."""
    bilinear = v2.InterpolationMode.BILINEAR
    return v2.Compose(
        [
            v2.Resize(TARGET_SIZE, interpolation=bilinear, antialias=True),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def run(dataset: Path, out_dir: Path, *, repeats: int = 3, quick: bool = False) -> Result:
    """Run every pipeline `repeats` times; write `decode_cache.{md,json}` into out_dir."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    rows = {key: Row(key, label, 0) for key, label in ROWS.items()}
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as work_dir:
        work = Path(work_dir)
        progress(f"{NAME}: extracting {dataset} into {work / 'data'}")
        source = extract(dataset, work / "data", QUICK_PER_CLASS if quick else None)
        for repeat in range(repeats):
            train = _one_repeat(source, work / f"cache-{repeat}", rows)
            progress(f"{NAME}: repeat {repeat + 1}/{repeats}: " + _repeat_summary(rows))
        pixels = _pixel_difference(train)
    settings = {
        "dataset": str(dataset),
        "quick": quick,
        "repeats": repeats,
        "target_size": list(TARGET_SIZE),
        "color_mode": "rgb",
        "resize": "stretch",
        "interpolation": "bilinear (Pillow, antialiased)",
        "batch_size": BATCH_SIZE,
        "loader_workers": LOADER_WORKERS,
    }
    ordered = [rows[key] for key in ROWS]
    _require_every_row(ordered)
    ratios = _ratios(rows)
    machine = machine_info() | {"load_avg_before": load_before, "load_avg_after": load_average()}
    markdown = _markdown(ordered, ratios, machine, settings, pixels)
    payload = {
        "benchmark": NAME,
        "settings": settings,
        "machine": machine,
        "rows": [row.as_dict() for row in ordered],
        "ratios": [vars(r) for r in ratios],
        "pixels": pixels,
    }
    files = write_outputs(out_dir, NAME, markdown, payload)
    return Result(ordered, ratios, machine, settings, pixels, markdown, files)


def _one_repeat(source: Path, cache_dir: Path, rows: dict[str, Row]) -> Split:
    """One timing of every row, appended to `rows`; returns the train split it loaded."""
    config = DataConfig(
        source=str(source),
        target_size=TARGET_SIZE,
        color_mode="rgb",
        resize="stretch",
        interpolation="bilinear",
        cache_dir=str(cache_dir),  # fresh per repeat: every cold run decodes everything
    )
    for key in ("cold", "warm"):
        gc.collect()
        seconds, data = timed(lambda: load_data(config, seed=0))
        _record(rows[key], sum(len(s) for s in data.splits.values()), seconds)
    train = data.splits["train"]
    gc.collect()
    _record(rows["cache_epoch"], *_swap(timed(lambda: _cache_epoch(train))))
    torch.manual_seed(0)
    loader = DataLoader(
        ImageFolder(str(source / TOP / "train"), transform=torchvision_transform()),
        batch_size=BATCH_SIZE,
        num_workers=LOADER_WORKERS,
        shuffle=True,
    )
    for key in ("loader_epoch_1", "loader_epoch_2"):
        gc.collect()
        _record(rows[key], *_swap(timed(lambda: _loader_epoch(loader))))
    if rows["cache_epoch"].images != rows["loader_epoch_1"].images:
        raise RuntimeError(
            f"the epochs differ in size: cnnlab's train split has {len(train)} images, "
            f"ImageFolder {rows['loader_epoch_1'].images}"
        )
    return train


def _cache_epoch(train: Split) -> int:
    batches = DeviceBatches(train.images, train.labels, batch_size=BATCH_SIZE, device="cpu")
    seen = 0
    for images, _labels in batches.epoch(0):
        images.float().div_(255)  # what the DataLoader hands over: float in [0, 1]
        seen += len(images)
    return seen


def _loader_epoch(loader: DataLoader) -> int:
    seen = 0
    for images, _labels in loader:
        seen += len(images)
    return seen


def _swap(pair: tuple[float, int]) -> tuple[int, float]:
    return pair[1], pair[0]


def _record(row: Row, images: int, seconds: float) -> None:
    if row.runs and images != row.images:
        raise RuntimeError(f"{row.key}: {images} images this repeat, {row.images} before")
    row.images = images
    row.runs.append(seconds)


def _repeat_summary(rows: dict[str, Row]) -> str:
    return ", ".join(f"{key} {row.runs[-1]:.3f}s" for key, row in rows.items())


def _require_every_row(rows: list[Row]) -> None:
    for row in rows:
        if row.images <= 0 or not row.runs or row.img_per_s <= 0:
            raise RuntimeError(f"{row.key}: produced no measurement ({row})")


def _ratios(rows: dict[str, Row]) -> list[Ratio]:
    # The peer gets its better epoch, so the ratios never flatter cnnlab.
    best = max((rows["loader_epoch_1"], rows["loader_epoch_2"]), key=lambda r: r.img_per_s)
    peer = f"DataLoader epoch (epoch {best.key[-1]})"
    return [
        Ratio(
            "epoch from cache vs DataLoader epoch",
            rows["cache_epoch"].img_per_s / best.img_per_s,
            f"img/s of an epoch from cnnlab's cache ÷ img/s of the better {peer}",
        ),
        Ratio(
            "cold decode vs one DataLoader epoch",
            rows["cold"].img_per_s / best.img_per_s,
            f"img/s of cnnlab's one-time decode into the cache ÷ img/s of the better {peer}",
        ),
    ]


def _pixel_difference(train: Split) -> dict[str, Any]:
    """Largest |difference| (0-255) between cnnlab's cached train images and the torchvision
    transform of the same files: evidence that both pipelines do the same work."""
    transform = torchvision_transform()
    worst, total = 0, 0.0
    for path, ours in zip(train.paths, train.images, strict=True):
        theirs = transform(default_loader(path)).mul(255).round().to(torch.int16)
        diff = (theirs - torch.from_numpy(np.asarray(ours, dtype=np.int16))).abs()
        worst, total = max(worst, int(diff.max())), total + float(diff.float().mean())
    return {"images": len(train), "max_abs_diff": worst, "mean_abs_diff": total / len(train)}


def _markdown(
    rows: list[Row],
    ratios: list[Ratio],
    machine: dict[str, Any],
    settings: dict[str, Any],
    pixels: dict[str, Any],
) -> str:
    height, width = settings["target_size"]
    subset = f", quick subset ({QUICK_PER_CLASS} per split and class)" if settings["quick"] else ""
    parts = [
        f"## decode into cache vs DataLoader re-decoding: cats_vs_dogs{subset}",
        f"{height}x{width} RGB, bilinear stretch, batch {settings['batch_size']}; "
        f"median of {settings['repeats']} repeat(s), seconds by time.perf_counter.",
        f"Machine: {machine_line(machine)}. 1-minute load average: "
        f"{_load(machine['load_avg_before'])} before the run, "
        f"{_load(machine['load_avg_after'])} after.",
        busy_warning(machine["load_avg_before"], machine["cpu_count"]),
        rows_table(rows),
        ratios_table(ratios),
        f"Same pixels: over the {pixels['images']} train images, cnnlab's cache and the "
        f"torchvision transform differ by at most {pixels['max_abs_diff']}/255 "
        f"(mean {pixels['mean_abs_diff']:.4f}/255).",
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _load(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"
