"""A features run, S2's hybrid CNN: a network extracts features, a scikit-learn classifier
learns from them, and the run folder and report are those of a trained run (no curves).

The network is a pretrained backbone (model.backbone) or a finished run's model without its
last layer (model.from_run). Nothing trains it, so train.* is ignored except train.device.
Features are standardised on the training split (StandardScaler in the pipeline), and every
classifier gives probabilities, so loss (log-loss), top-k and the rest mean what they mean for
a trained run. The fitted classifier is not saved: scikit-learn saves models by pickling, and a
pickle runs code when it is loaded; the same experiment refits it in seconds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from sklearn.pipeline import Pipeline

from cnnlab.atomic import write_text
from cnnlab.augment.normalize import Normalization, fit_normalization
from cnnlab.augment.pipeline import EvalTransform
from cnnlab.config import DataConfig, Experiment, ModelConfig
from cnnlab.config_io import read_yaml, validate
from cnnlab.data.pipeline import Data, load_data
from cnnlab.errors import ConfigError
from cnnlab.evaluate.classifiers import (
    classifier_manifest,
    describe,
    fit,
    log_loss,
    make_classifier,
    probabilities_of,
)
from cnnlab.evaluate.features import (
    Pool,
    extract_features,
    penultimate,
    penultimate_is_map,
    pooled,
)
from cnnlab.evaluate.metrics import split_metrics
from cnnlab.experiment import WEIGHTS, RunResult, data_config, eval_batches, write_report
from cnnlab.models import count_params, format_summary, model_from_config
from cnnlab.progress import progress_bar
from cnnlab.record import now, run_manifest, write_predictions
from cnnlab.runfolder import record_data, write_json
from cnnlab.train.checkpoint import load_weights
from cnnlab.train.runtime import IMAGE_LAYOUT, seed_everything, select_device

RUN_FILES = ("config.yaml", "manifest.json", WEIGHTS, "normalization.json")
NOT_SAVED = (
    "features run: no network was trained (train.* ignored). The fitted classifier is not "
    "saved (scikit-learn saves by pickling, which runs code when loaded); rerun to refit it."
)


@dataclass
class FeatureSource:
    extractor: torch.nn.Module  # images -> (N, D) vectors
    normalization: Normalization  # uint8 images -> the extractor's input
    label: str  # "efficientnet_lite0 features": the report's model name, with the classifier
    described: dict[str, Any]  # for the manifest's model section


@dataclass
class FinishedRun:
    folder: Path
    model: ModelConfig  # the run's model section
    input_shape: tuple[int, int, int]  # (H, W, C) its model was built for
    classes: list[str]
    model_name: str


def run_features(cfg: Experiment, folder: Path, console: Console) -> RunResult:
    """Data, features of every split, classifier on the training split, metrics, report."""
    assert cfg.model is not None and cfg.classifier is not None  # the config's validator
    timings: dict[str, float] = {}
    started, clock = now(), time.perf_counter()
    device = select_device(cfg.train.device)
    seed_everything(cfg.seed)
    finished = open_run(cfg.model.from_run) if cfg.model.from_run else None
    data = load_data(
        run_data_config(cfg.data, finished) if finished else data_config(cfg), cfg.seed
    )
    record_data(folder, cfg, data)
    train = data.splits["train"]
    classifier = make_classifier(cfg.classifier, cfg.seed, train.labels, data.classes)
    timings["data_s"] = time.perf_counter() - clock

    pool = cfg.classifier.pool
    source = from_run_source(finished, pool) if finished else backbone_source(cfg, data)
    clock = time.perf_counter()
    features = extract_splits(source, data, cfg, device, folder)
    timings["extract_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    fit_warnings = fit(classifier, features["train"], train.labels)
    timings["fit_s"] = time.perf_counter() - clock
    for message in fit_warnings:
        console.print(f"[yellow]warning:[/] {cfg.classifier.name}: {message}", highlight=False)
    dims = features["train"].shape[1]
    console.print(
        f"{dims} features per image in {timings['extract_s']:.1f} s; "
        f"{cfg.classifier.name} fitted on {len(train)} images in {timings['fit_s']:.1f} s",
        highlight=False,
    )

    clock = time.perf_counter()
    metrics, predicted = evaluate_splits(classifier, features, data, cfg.evaluate.top_k)
    write_json(folder / "metrics.json", metrics)
    write_predictions(folder / "predictions.csv", predicted)
    timings["evaluate_s"] = time.perf_counter() - clock

    model = {
        "name": f"{source.label} + {cfg.classifier.name}",
        **source.described,
        "feature_dimension": int(dims),
        "classifier": classifier_manifest(cfg.classifier, classifier),
    }
    manifest = run_manifest(
        cfg.seed,
        device,
        started,
        timings,
        model,
        data,
        fit_warnings=fit_warnings,
        note=NOT_SAVED,
    )
    write_json(folder / "manifest.json", manifest)
    report = write_report(folder, data, predicted, None, cfg.seed)
    return RunResult(folder, metrics, manifest, report)


def extract_splits(
    source: FeatureSource, data: Data, cfg: Experiment, device: torch.device, folder: Path
) -> dict[str, np.ndarray]:
    """Every split's features; the extractor's summary and normalisation go into the folder."""
    extractor = source.extractor.to(device, memory_format=IMAGE_LAYOUT)
    summary = format_summary(extractor, data.input_shape)
    write_text(folder / "summary.txt", f"{summary}\nClassifier: {describe(cfg.classifier)}\n")
    source.normalization.save(folder / "normalization.json")
    preprocess = EvalTransform(source.normalization, IMAGE_LAYOUT)
    features = {}
    for name in data.splits:
        batches = eval_batches(data, name, cfg, device)
        with progress_bar(f"features ({name})", batches.num_samples) as advance:
            features[name] = extract_features(extractor, batches, preprocess, advance)
    return features


def evaluate_splits(
    classifier: Pipeline, features: dict[str, np.ndarray], data: Data, top_k: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of every split, and the probabilities of val and test for predictions.csv."""
    metrics: dict[str, Any] = {}
    predicted = {}
    for name, split in data.splits.items():
        probabilities = probabilities_of(classifier, features[name], data.num_classes)
        loss = log_loss(split.labels, probabilities)
        metrics[name] = split_metrics(split.labels, probabilities, data.classes, loss, top_k)
        if name != "train":
            predicted[name] = (split, probabilities)
    return metrics, predicted


# --- where the features come from --------------------------------------------------------------


def backbone_source(cfg: Experiment, data: Data) -> FeatureSource:
    from cnnlab.models.backbones import build_backbone  # imports timm: only when needed

    model = cfg.model
    backbone, info = build_backbone(model.backbone, model.weights)
    preprocessing = info.preprocessing.overridden(model.mean, model.std)
    normalization = fit_normalization(cfg.augment, data.splits["train"].images, preprocessing)
    name = backbone.backbone_name
    extractor = pooled([(name, backbone)], cfg.classifier.pool, f"{name}_features")
    described = {
        "pool": cfg.classifier.pool,
        "extractor": name,
        "weights": info.weights,
        "weights_keys_not_used": list(info.ignored_keys),
        "input_mean": list(preprocessing.mean),
        "input_std": list(preprocessing.std),
    }
    return FeatureSource(
        extractor, normalization, f"{name} features", described | params(extractor)
    )


def open_run(path: str) -> FinishedRun:
    """A finished `cnnlab run` folder: its resolved experiment, input shape and classes."""
    folder = Path(path).expanduser()
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if not folder.is_dir() or missing:
        found = "no such folder" if not folder.is_dir() else f"no {', '.join(missing)}"
        raise ConfigError(
            f"model.from_run: {folder} holds no finished trained run ({found}); give the folder "
            "a `cnnlab run` wrote, e.g. runs/NAME"
        )
    model = read_yaml(folder / "config.yaml").get("model")  # all the run's network needs
    where = f"model.from_run: {folder / 'config.yaml'} (its model section)"
    model_cfg = validate(model if isinstance(model, dict) else {}, ModelConfig, source=where)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        height, width, channels = (int(n) for n in manifest["data"]["input_shape"])
        classes = [str(c) for c in manifest["data"]["classes"]]
        model_name = str(manifest.get("model", {}).get("name", "model"))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"model.from_run: {folder / 'manifest.json'} is not a run manifest ({err!r})"
        ) from None
    return FinishedRun(folder, model_cfg, (height, width, channels), classes, model_name)


def run_data_config(data: DataConfig, run: FinishedRun) -> DataConfig:
    """The data section at the run's input size and colour mode, which its network needs."""
    height, width, channels = run.input_shape
    mode = "grayscale" if channels == 1 else "rgb"
    if data.target_size not in (None, (height, width)):
        raise ConfigError(
            f"data.target_size: the network of {run.folder} takes {height}x{width} images; "
            f"remove data.target_size or set it to [{height}, {width}]"
        )
    if "color_mode" in data.model_fields_set and data.color_mode != mode:
        raise ConfigError(
            f"data.color_mode: the network of {run.folder} takes {mode} images; remove "
            f"data.color_mode or set it to {mode}"
        )
    return data.model_copy(update={"target_size": (height, width), "color_mode": mode})


def from_run_source(run: FinishedRun, pool: Pool) -> FeatureSource:
    """The run's model with its kept weights, up to (not including) its last layer."""
    model_cfg = run.model
    if model_cfg.backbone is not None:  # model.safetensors holds every weight, the base's too
        model_cfg = model_cfg.model_copy(update={"weights": "none"})
    model = model_from_config(model_cfg, run.input_shape, len(run.classes))
    try:
        load_weights(model, run.folder / WEIGHTS)
    except RuntimeError as err:
        raise ConfigError(
            f"model.from_run: {run.folder / WEIGHTS} does not fit the model of its config.yaml "
            f"({str(err).splitlines()[0]})"
        ) from None
    extractor = penultimate(model, pool, f"{run.model_name}_features")
    described = {
        "pool": pool if penultimate_is_map(model) else None,  # None: already a vector
        "extractor": run.model_name,
        "from_run": str(run.folder),
        "feature_layer": list(extractor.named_children())[-1][0],
    }
    normalization = Normalization.load(run.folder / "normalization.json")
    label = f"{run.model_name} penultimate features (run {run.folder.name})"
    return FeatureSource(extractor, normalization, label, described | params(extractor))


def params(module: torch.nn.Module) -> dict[str, int]:
    trainable, frozen = count_params(module)
    return {
        "total_params": trainable + frozen,
        "trainable_params": trainable,
        "non_trainable_params": frozen,
    }
