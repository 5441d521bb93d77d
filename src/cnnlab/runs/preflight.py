"""What a run would use, without training it: its data prepared, its augmentation previewed,
its model summarised, its learning rate swept. `cnnlab prepare`, `augment-preview`, `summary`
and `lr-find` are these calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnlab.augment.pipeline import build_transforms
from cnnlab.augment.preview import split_preview
from cnnlab.config import Experiment, ModelConfig
from cnnlab.data.pipeline import Data, load_data
from cnnlab.errors import ConfigError
from cnnlab.models import format_summary, model_from_config
from cnnlab.models.zoo import REPORT_INPUTS
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.skeleton import data_config, fetch_weights
from cnnlab.runs.trained import make_trainee, train_batches
from cnnlab.runs.tuner import choose_batch, sweep
from cnnlab.runtime import IMAGE_LAYOUT, seed_everything, select_device, set_deterministic
from cnnlab.train.batch_size import with_batch_size
from cnnlab.train.lr_find import END, START, LRFind


def prepare(cfg: Experiment, parent: Path, name: str) -> tuple[RunFolder, Data]:
    """The data half of a run: health check, split, decode into the cache, and a run folder
    with config.yaml, health.json and split.csv."""
    data = load_data(data_config(cfg), cfg.seed)
    folder = RunFolder.create(parent, name)
    folder.write_data(cfg, data)
    return folder, data


def lr_find(
    cfg: Experiment, steps: int | None = None, start: float = START, end: float = END
) -> tuple[LRFind, int, dict[str, Any] | None]:
    """The learning-rate range test a run of `cfg` with lr: auto makes before epoch 1 (its
    data, augmentation, model, first stage, optimiser and batch size, an auto batch chosen as
    the run would), without a run: nothing is written. (result, batch size, the auto batch's
    record or None)."""
    if cfg.model is None or cfg.classifier is not None:
        raise ConfigError("lr-find: needs a network that trains: model: without classifier:")
    if not 0 < start < end:
        raise ConfigError(f"lr-find: --start {start:g} must be above 0 and below --end {end:g}")
    device = select_device(cfg.train.device)
    fetch_weights(cfg)
    set_deterministic(cfg.train.deterministic)
    seed_everything(cfg.seed)
    data = load_data(data_config(cfg), cfg.seed)
    model = model_from_config(cfg.model, data.input_shape, data.num_classes)
    # Module.to takes memory_format with a device at runtime; torch's overloads leave it out
    model = model.to(device, memory_format=IMAGE_LAYOUT)  # type: ignore[call-overload]
    base = make_trainee(model, cfg, data, device)
    train = train_batches(cfg, data, device)
    size, record = choose_batch(cfg, base, train, device)
    return sweep(cfg, base, with_batch_size(train, size), steps, start, end), size, record


def augment_preview(cfg: Experiment, images: int = 4, versions: int = 8) -> bytes:
    """PNG grid: `images` training images, each followed by `versions` augmented copies."""
    train = load_data(data_config(cfg), cfg.seed).splits["train"]
    device = select_device(cfg.train.device)
    transform, _ = build_transforms(cfg.augment, train.images, cfg.seed, device)
    return split_preview(train.images, transform, cfg.seed, images, versions)


def model_summary(
    model: ModelConfig,
    input_shape: Sequence[int] | None,
    num_classes: int | None,
    experiment: Experiment | None = None,
) -> str:
    """The Keras-style table of `model`. What is not given comes from `experiment`: the input
    shape from its data section (or its backbone's input size), the classes from its source
    (file and folder names only: nothing is decoded). A backbone with 0 classes is the
    convolutional base alone, as Keras's include_top=False."""
    if experiment is not None and (input_shape is None or num_classes is None):
        found_shape, found_classes = shape_and_classes(experiment, need_classes=num_classes is None)
        if found_shape is not None and experiment.task == "reconstruction":
            from cnnlab.runs.reconstruction import network_input

            found_shape = network_input(experiment, found_shape)  # the degraded image's
        input_shape = input_shape or found_shape
        num_classes = found_classes if num_classes is None else num_classes
    if experiment is None and model.name in REPORT_INPUTS:  # the report's, unless given
        report_shape, report_classes = REPORT_INPUTS[model.name]
        input_shape = input_shape or report_shape
        num_classes = report_classes if num_classes is None else num_classes
    if input_shape is None or num_classes is None:
        raise ConfigError("summary: pass --input-shape H,W,C and --num-classes K")
    shape = tuple(input_shape)
    if model.backbone is not None:  # the architecture only: no weights file is read
        model = model.model_copy(update={"weights": "none"})
        if num_classes == 0:
            from cnnlab.models.backbones import create_backbone

            assert model.backbone is not None  # model_copy changed only the weights
            return format_summary(create_backbone(model.backbone), shape)
    return format_summary(model_from_config(model, shape, num_classes), shape)


def shape_and_classes(
    cfg: Experiment, need_classes: bool
) -> tuple[tuple[int, int, int] | None, int | None]:
    """(H, W, C) when the experiment fixes the size, and the source's class count if asked."""
    data = data_config(cfg)
    channels = 1 if data.color_mode == "grayscale" else 3
    shape = (*data.target_size, channels) if data.target_size is not None else None
    return shape, (
        len(class_names(data.source, data.label_pattern, data.labels_csv)) if need_classes else None
    )


def class_names(source: str, label_pattern: str | None, labels_csv: str | None) -> list[str]:
    """The source's classes from its names alone (array sources: their label arrays)."""
    from cnnlab.data.arrays import is_array_source, read_array_source
    from cnnlab.data.sources import scan_files

    if is_array_source(source):
        return sorted({str(int(k)) for part in read_array_source(source) for k in part.labels})
    return sorted({entry.label for entry in scan_files(source, label_pattern, labels_csv).entries})
