"""Augmentation alone: cnnlab's batched KerasAugmenter vs Keras's ImageDataGenerator vs
torchvision v2 per-sample transforms in a DataLoader, with the same S0 parameters.

Random uint8 images (numpy's default_rng(0), the same pixels for every pipeline) at 28x28x1,
128x128x1 and 150x150x3, batch 64. Per shape, in this order:

1. cnnlab `KerasAugmenter` on whole batches on the CPU, torch limited to 2 threads;
2. the same on CUDA (images already on the GPU, as cnnlab's batches are), synchronised around
   the timed region;
3. torchvision `RandomAffine` + `RandomHorizontalFlip` per sample, in
   `DataLoader(num_workers=2, batch_size=64, persistent_workers=True)`;
4. Keras `ImageDataGenerator(S0).flow(x, batch_size=64, shuffle=False)`, run by bench/keras_peer.py
   in .venv-bench (`make bench-env`) in a subprocess, before the others; without that
   environment its row says "not run".

Every pipeline gets an untimed warm-up (a batch; the DataLoader a whole epoch, so its workers'
start-up is not counted) and each row is the median of the repeats.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from bench.common import (
    REPO_ROOT,
    Ratio,
    Row,
    busy_warning,
    gpu_name,
    keras_line,
    load_average,
    machine_info,
    machine_line,
    progress,
    ratios_table,
    timed,
    write_outputs,
)
from cnnlab.augment.keras import KerasAugmenter, KerasParams
from cnnlab.config import AugmentConfig

NAME = "augment"
SHAPES = ((28, 28, 1), (128, 128, 1), (150, 150, 3))  # (height, width, channels)
IMAGES, QUICK_IMAGES = 2048, 128  # per shape and run
BATCH_SIZE = 64
CPU_THREADS = 2  # torch threads, DataLoader workers, Keras's OMP/TF threads
PRESET = "s0"  # rotation 20, shear 0.2 (degrees), zoom 0.2, horizontal flip, fill nearest
BENCH_PYTHON = REPO_ROOT / ".venv-bench" / "bin" / "python"
PEER_SCRIPT = Path(__file__).with_name("keras_peer.py")
PEER_TIMEOUT_S = 3600
PIPELINES = {
    "cnnlab": "cnnlab KerasAugmenter, whole batches",
    "torchvision": f"torchvision v2 RandomAffine + RandomHorizontalFlip, "
    f"DataLoader(num_workers={CPU_THREADS})",
    "keras": "Keras ImageDataGenerator.flow",
}
PER_SHAPE = {"shape", "images", "batch", "runs", "seconds", "img_per_s"}  # keras_peer.py's
GOALS = {"cpu": 2.0, "cuda": 100.0}  # cnnlab img/s ÷ Keras img/s, from the issue


@dataclass
class NotRun:
    key: str
    pipeline: str
    reason: str


@dataclass
class Result:
    rows: list[Row]
    not_run: list[NotRun]
    ratios: list[Ratio]
    machine: dict[str, Any]
    settings: dict[str, Any]
    markdown: str
    files: list[Path]


class AugmentedImages(Dataset):
    """uint8 CHW tensors, each transformed when fetched, as a per-sample pipeline does."""

    def __init__(self, images: torch.Tensor, transform: v2.Transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.images[index])


def torchvision_transform() -> v2.Compose:
    """S0 in torchvision's words: shear in degrees along x, one zoom for both axes, bilinear."""
    bilinear = v2.InterpolationMode.BILINEAR
    affine = v2.RandomAffine(degrees=20, shear=0.2, scale=(0.8, 1.2), interpolation=bilinear)
    return v2.Compose([affine, v2.RandomHorizontalFlip()])


def shape_tag(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


def random_images(shape: tuple[int, int, int], count: int, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) uint8: the pixels keras_peer.py draws (NHWC) for the same seed."""
    nhwc = np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)
    return torch.from_numpy(nhwc).permute(0, 3, 1, 2).contiguous()


def run(
    out_dir: Path,
    *,
    repeats: int = 3,
    quick: bool = False,
    devices: tuple[str, ...] = ("cpu",),
    keras_python: Path = BENCH_PYTHON,
) -> Result:
    """Time every pipeline `repeats` times per shape; write `augment.{md,json}` into out_dir."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    images = QUICK_IMAGES if quick else IMAGES
    load_before = load_average()
    keras, peer_about = keras_rows(keras_python, images, repeats)
    rows: list[Row] = []
    not_run: list[NotRun] = []
    with torch_threads(CPU_THREADS):
        machine = machine_info()
        for shape in SHAPES:
            x = random_images(shape, images)
            rows += [cnnlab_row(x, shape, torch.device(d), repeats) for d in devices]
            rows.append(torchvision_row(x, shape, repeats))
            found = keras.get(shape_tag(shape))
            if isinstance(found, Row):
                rows.append(found)
            else:
                not_run.append(NotRun(_key(shape, "keras", "cpu"), PIPELINES["keras"], found))
    machine |= {"load_avg_before": load_before, "load_avg_after": load_average()}
    machine |= {"gpu": gpu_name(devices), "keras_peer": peer_about}
    settings = _settings(images, repeats, quick, devices, keras_python)
    ratios = _ratios(rows)
    markdown = _markdown(rows, not_run, ratios, machine, settings)
    payload = {
        "benchmark": NAME,
        "settings": settings,
        "machine": machine,
        "rows": [row.as_dict() for row in rows],
        "not_run": [vars(item) for item in not_run],
        "ratios": [vars(r) for r in ratios],
    }
    files = write_outputs(out_dir, NAME, markdown, payload)
    return Result(rows, not_run, ratios, machine, settings, markdown, files)


@contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _key(shape: tuple[int, int, int], pipeline: str, device: str) -> str:
    return f"{shape_tag(shape)}/{pipeline}/{device}"


def cnnlab_row(x: torch.Tensor, shape: tuple, device: torch.device, repeats: int) -> Row:
    augment = KerasAugmenter(KerasParams.from_config(AugmentConfig(preset=PRESET)))
    x = x.to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def one_pass(count: int) -> None:
        for start in range(0, count, BATCH_SIZE):
            augment(x[start : start + BATCH_SIZE], generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    one_pass(BATCH_SIZE)  # warm-up: allocator, kernels
    row = Row(_key(shape, "cnnlab", device.type), PIPELINES["cnnlab"], len(x))
    for _ in range(repeats):
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row.runs.append(timed(lambda: one_pass(len(x)))[0])
    progress(f"{NAME}: {row.key}: {row.img_per_s:,.0f} img/s")
    return row


def torchvision_row(x: torch.Tensor, shape: tuple, repeats: int) -> Row:
    torch.manual_seed(0)
    loader = DataLoader(
        AugmentedImages(x, torchvision_transform()),
        batch_size=BATCH_SIZE,
        num_workers=CPU_THREADS,
        persistent_workers=True,
    )

    def one_epoch() -> int:
        return sum(len(batch) for batch in loader)

    one_epoch()  # warm-up: the workers start here, not in a timed epoch
    row = Row(_key(shape, "torchvision", "cpu"), PIPELINES["torchvision"], len(x))
    for _ in range(repeats):
        gc.collect()
        seconds, seen = timed(one_epoch)
        if seen != len(x):
            raise RuntimeError(f"{row.key}: the DataLoader gave {seen} images, not {len(x)}")
        row.runs.append(seconds)
    progress(f"{NAME}: {row.key}: {row.img_per_s:,.0f} img/s")
    return row


def keras_rows(python: Path, images: int, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rows of bench/keras_peer.py (one subprocess for every shape), by shape tag, or the reason
    each did not run; never raises. Also the peer's versions."""
    if not Path(python).is_file():
        return {shape_tag(s): "not run: make bench-env" for s in SHAPES}, {}
    command = [str(python), str(PEER_SCRIPT), "--images", str(images)]
    command += ["--batch", str(BATCH_SIZE), "--repeats", str(repeats), "--threads"]
    command.append(str(CPU_THREADS))
    for shape in SHAPES:
        command += ["--shape", ",".join(map(str, shape))]
    progress(f"{NAME}: Keras ImageDataGenerator in {python} (TensorFlow start-up first)")
    env = os.environ | {name: str(CPU_THREADS) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=PEER_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return {shape_tag(s): f"not run: {type(err).__name__}" for s in SHAPES}, {}
    found: dict[str, Any] = {}
    about: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            shape = tuple(item["shape"])
            row = Row(_key(shape, "keras", "cpu"), PIPELINES["keras"], item["images"])
            row.runs = list(item["runs"])
            found[shape_tag(shape)] = row
            about = {k: v for k, v in item.items() if k not in PER_SHAPE}
            progress(f"{NAME}: {row.key}: {row.img_per_s:,.0f} img/s")
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    failed = f"failed (exit {done.returncode}): {tail}"
    return {shape_tag(s): found.get(shape_tag(s), failed) for s in SHAPES}, about


def _settings(images: int, repeats: int, quick: bool, devices: tuple, python: Path) -> dict:
    return {
        "quick": quick,
        "repeats": repeats,
        "images_per_shape": images,
        "shapes": [list(shape) for shape in SHAPES],
        "batch_size": BATCH_SIZE,
        "cpu_threads": CPU_THREADS,
        "devices": list(devices),
        "preset": PRESET,
        "keras_params": vars(KerasParams.from_config(AugmentConfig(preset=PRESET))),
        "torchvision": repr(torchvision_transform()),
        "keras_python": str(python),
    }


def _ratios(rows: list[Row]) -> list[Ratio]:
    by_key = {row.key: row for row in rows}
    ratios = []
    for shape in SHAPES:
        for device in ("cpu", "cuda"):
            ours = by_key.get(_key(shape, "cnnlab", device))
            if ours is None:
                continue
            for peer, label in (("keras", "Keras"), ("torchvision", "torchvision")):
                theirs = by_key.get(_key(shape, peer, "cpu"))
                if theirs is None:
                    continue
                value = ours.img_per_s / theirs.img_per_s
                goal = ""
                if peer == "keras":
                    met = "met" if value >= GOALS[device] else "NOT met"
                    goal = f"; goal ≥ {GOALS[device]:g}x: {met}"
                ratios.append(
                    Ratio(
                        f"{shape_tag(shape)}: cnnlab {device} vs {label}",
                        value,
                        f"img/s of cnnlab on {device} ÷ img/s of {PIPELINES[peer]} "
                        f"({CPU_THREADS} CPU cores){goal}",
                    )
                )
    return ratios


def _table(rows: list[Row], not_run: list[NotRun]) -> str:
    lines = [
        "| shape | pipeline | device | images | seconds | img/s |",
        "|---|---|---|---:|---:|---:|",
    ]
    tags, pipelines = [shape_tag(shape) for shape in SHAPES], list(PIPELINES)

    def order(item: Row | NotRun) -> tuple[int, int]:  # by shape, then cnnlab, peers
        tag, pipeline, _ = item.key.split("/")
        return tags.index(tag), pipelines.index(pipeline)

    for item in sorted([*rows, *not_run], key=order):
        tag, _, device = item.key.split("/")
        if isinstance(item, NotRun):
            lines.append(f"| {tag} | {item.pipeline} | {device} | — | — | {item.reason} |")
            continue
        lines.append(
            f"| {tag} | {item.pipeline} | {device} | {item.images:,} | {item.seconds:.3f} | "
            f"{item.img_per_s:,.1f} |"
        )
    return "\n".join(lines)


def _markdown(
    rows: list[Row],
    not_run: list[NotRun],
    ratios: list[Ratio],
    machine: dict[str, Any],
    settings: dict[str, Any],
) -> str:
    keras = keras_line(machine["keras_peer"])
    gpu = f" GPU: {machine['gpu']}." if machine["gpu"] else ""
    quick = ", quick run: timings mean nothing" if settings["quick"] else ""
    parts = [
        f"## augmentation alone: cnnlab vs Keras ImageDataGenerator vs torchvision v2{quick}",
        f"Preset S0 (rotation 20, shear 0.2 degrees, zoom 0.2, horizontal flip, fill nearest) on "
        f"{settings['images_per_shape']:,} random uint8 images per shape, batch "
        f"{BATCH_SIZE}; CPU pipelines on {CPU_THREADS} threads/workers; median of "
        f"{settings['repeats']} repeat(s) after a warm-up, seconds by time.perf_counter.",
        f"Machine: {machine_line(machine)}.{gpu} Peer: {keras}. 1-minute load average: "
        f"{_load(machine['load_avg_before'])} before the run, "
        f"{_load(machine['load_avg_after'])} after.",
        busy_warning(machine["load_avg_before"], machine["cpu_count"]),
        _table(rows, not_run),
        ratios_table(ratios) if ratios else "",
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _load(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"
