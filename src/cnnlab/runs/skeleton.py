"""What every kind of run does around its own middle: set up, read and record the data, build
evaluation batches, and finish with metrics, predictions, manifest and report.

    started = begin(cfg, folder, data_cfg)        # device, seeds, data (checked, split, cached)
    ...                                           # the kind's own work: train, or fit features
    return finish(started, metrics, predicted, model, augment, **details)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnlab import distributed, runfiles
from cnnlab.augment.pipeline import TrainTransform
from cnnlab.config import DataConfig, Experiment
from cnnlab.data.batches import DeviceBatches
from cnnlab.data.pipeline import Data, Split, load_data
from cnnlab.data.split import no_test_note
from cnnlab.errors import ConfigError
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.gallery import gallery, shown_split
from cnnlab.runs.manifest import now, run_manifest
from cnnlab.runtime import seed_everything, select_device, set_deterministic
from cnnlab.task.classification import predictions_csv
from cnnlab.train.batch_size import CPU_BATCH

GPU_EVAL_BATCH = 256  # evaluate.batch_size unset, on a GPU

# split name -> (the split, its (N, classes) probabilities): what predictions.csv shows
Predicted = dict[str, tuple[Split, np.ndarray]]


@dataclass
class RunResult:
    folder: Path
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    report: Path | None


@dataclass
class Started:
    cfg: Experiment
    folder: RunFolder
    console: Console
    device: torch.device
    data: Data
    started: str  # ISO time
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, for the manifest


def begin(cfg: Experiment, folder: RunFolder, console: Console, data_cfg: DataConfig) -> Started:
    """Device, determinism and seeds, then the data: scanned, checked, split, cached, recorded."""
    started, clock = now(), time.perf_counter()
    device = select_device(cfg.train.device)
    fetch_weights(cfg)
    set_deterministic(cfg.train.deterministic)
    seed_everything(cfg.seed)
    data = load_data(data_cfg, cfg.seed)
    held_out = no_test_note(data.splits)
    if held_out is not None:
        console.print(f"[yellow]warning:[/] {held_out}", highlight=False)
    if distributed.is_main():  # torchrun: rank 0 alone writes the run folder
        folder.write_data(cfg, data)
    return Started(cfg, folder, console, device, data, started, {"data_s": _since(clock)})


def fetch_weights(cfg: Experiment) -> None:
    """Pretrained weights the libraries download (weights: imagenet, timm:TAG, ...), fetched
    into their caches before any data is read: offline, the run stops at once, not after the
    data has been checked and decoded. The backbone then finds the file in the cache."""
    model = cfg.model
    if model is None or model.backbone is None:
        return
    from cnnlab.models import hub
    from cnnlab.models.backbones import hub_weights, resolved_weights

    weights = resolved_weights(model.backbone, model.weights)
    if hub.is_hub_weights(weights):
        hub_weights(model.backbone, weights).fetch(model.backbone)


def data_config(cfg: Experiment) -> DataConfig:
    """The data section, with a backbone's own input size where the file sets none."""
    if cfg.model is None or cfg.model.backbone is None or cfg.data.target_size is not None:
        return cfg.data
    from cnnlab.models.backbones import preprocessing_for, resolved_weights

    weights = resolved_weights(cfg.model.backbone, cfg.model.weights)
    size = preprocessing_for(cfg.model.backbone, weights).input_size
    return cfg.data.model_copy(update={"target_size": size})


def sized_for(data: DataConfig, input_shape: tuple[int, int, int], folder: Path) -> DataConfig:
    """The data section at a network's input size and colour mode, which that network needs."""
    height, width, channels = input_shape
    mode = "grayscale" if channels == 1 else "rgb"
    if data.target_size not in (None, (height, width)):
        raise ConfigError(
            f"data.target_size: the network of {folder} takes {height}x{width} images; "
            f"remove data.target_size or set it to [{height}, {width}]"
        )
    if "color_mode" in data.model_fields_set and data.color_mode != mode:
        raise ConfigError(
            f"data.color_mode: the network of {folder} takes {mode} images; remove "
            f"data.color_mode or set it to {mode}"
        )
    return data.model_copy(update={"target_size": (height, width), "color_mode": mode})


def eval_batches(
    data: Data, name: str, cfg: Experiment, device: torch.device
) -> DeviceBatches | None:
    split = data.splits.get(name)
    if split is None:
        return None
    return DeviceBatches(
        split.images,
        split.labels,
        batch_size=eval_batch_size(cfg, device),
        device=device,
        shuffle=False,
    )


def evaluated(data: Data, cfg: Experiment) -> list[str]:
    """The splits a run evaluates: all of them, less test when evaluate.test is false."""
    return [name for name in data.splits if cfg.evaluate.test or name != "test"]


def image_batches(images: np.ndarray, cfg: Experiment, device: torch.device) -> DeviceBatches:
    """New, unlabelled uint8 (N, C, H, W) images in evaluation batches, in their order (the
    batches carry zero labels, which prediction never reads)."""
    labels = np.zeros(len(images), dtype=np.int64)
    size = eval_batch_size(cfg, device)
    return DeviceBatches(images, labels, batch_size=size, device=device, shuffle=False)


def eval_batch_size(cfg: Experiment, device: torch.device) -> int:
    """See EvaluateConfig.batch_size."""
    if cfg.evaluate.batch_size is not None:
        return cfg.evaluate.batch_size
    if device.type == "cuda":
        return GPU_EVAL_BATCH
    # a finished run's config.yaml keeps auto, which is Keras's 32 on the CPU (train/batch_size.py)
    return CPU_BATCH if cfg.train.batch_size == "auto" else cfg.train.batch_size


def finish(
    run: Started,
    metrics: dict[str, Any],
    predicted: Predicted,
    model: dict[str, Any],
    augment: TrainTransform | None,
    **details: Any,
) -> RunResult:
    """metrics.json, predictions.csv, manifest.json (with `details`) and report.html."""
    cfg = run.cfg

    def report() -> Path:
        return write_report(
            run.folder, run.data, predicted, augment, cfg.seed, cfg.report.interpret
        )

    return finish_with(run, metrics, predictions_csv(predicted), model, report, **details)


def finish_with(
    run: Started,
    metrics: dict[str, Any],
    predictions: str,
    model: dict[str, Any],
    report: Callable[[], Path],
    **details: Any,
) -> RunResult:
    """finish for any task: its metrics, its predictions.csv text, the manifest, and `report`
    (which writes report.html once the other files are there)."""
    folder = run.folder
    folder.write_json(runfiles.METRICS, metrics)
    folder.write_predictions(predictions)
    manifest = run_manifest(
        run.cfg.seed, run.device, run.started, run.timings, model, run.data, **details
    )
    folder.write_json(runfiles.MANIFEST, manifest)
    return RunResult(folder.path, metrics, manifest, report())


def write_report(
    folder: RunFolder,
    data: Data,
    predicted: Predicted,
    augment: TrainTransform | None,
    seed: int,
    interpret: bool = True,  # report.interpret: the gallery by loss (and interpretation.json)
) -> Path:
    from cnnlab.augment.preview import split_preview
    from cnnlab.report import render_report

    name = shown_split(predicted)
    wrong = None if name is None else gallery(*predicted[name], by_loss=interpret)
    grid = None
    if augment is not None:  # the same preview as `cnnlab augment-preview`
        grid = split_preview(data.splits["train"].images, augment, seed)
    return render_report(folder.path, wrong, grid)


def _since(clock: float) -> float:
    return time.perf_counter() - clock
