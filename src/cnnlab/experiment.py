"""One experiment, top to bottom: data, model, fit, evaluate, record, report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnlab.atomic import write_text
from cnnlab.augment.pipeline import TrainTransform, build_transforms
from cnnlab.config import Experiment
from cnnlab.config_io import read_yaml, validate
from cnnlab.data.batches import DeviceBatches
from cnnlab.data.pipeline import Data, load_data
from cnnlab.errors import ConfigError
from cnnlab.evaluate.predict import infer
from cnnlab.models import count_params, format_summary, model_from_config
from cnnlab.record import HistoryCSV, now, run_manifest, write_predictions
from cnnlab.runfolder import record_data, write_json
from cnnlab.train.callbacks import BestWeights, Checkpoint, EarlyStopping, EpochLine, TrainState
from cnnlab.train.checkpoint import load_state, load_weights, restore_rng
from cnnlab.train.compiled import compile_model
from cnnlab.train.loop import Trainee
from cnnlab.train.objective import Objective
from cnnlab.train.runtime import IMAGE_LAYOUT, seed_everything, select_device, set_deterministic
from cnnlab.train.stages import run_stages, total_epochs

WEIGHTS = "model.safetensors"
SHOWN_MISTAKES = 32
GPU_EVAL_BATCH = 256  # evaluate.batch_size unset, on a GPU


@dataclass
class RunResult:
    folder: Path
    metrics: dict[str, Any]
    manifest: dict[str, Any]
    report: Path | None


def run_experiment(
    cfg: Experiment, folder: Path, resume: bool = False, console: Console | None = None
) -> RunResult:
    console = console or Console()
    if cfg.classifier is not None:  # a features run: a classifier on a network's features
        from cnnlab.features_run import run_features

        return run_features(cfg, folder, console)
    timings: dict[str, float] = {}
    started, clock = now(), time.perf_counter()
    device = select_device(cfg.train.device)
    set_deterministic(cfg.train.deterministic)
    seed_everything(cfg.seed)

    data = load_data(data_config(cfg), cfg.seed)  # scan, check, split, cache
    record_data(folder, cfg, data)
    timings["data_s"] = time.perf_counter() - clock

    model = model_from_config(cfg.model, data.input_shape, data.num_classes)
    write_text(folder / "summary.txt", format_summary(model, data.input_shape) + "\n")
    if getattr(model, "info", None) is not None:
        console.print(weights_line(model.info), highlight=False)
    model = model.to(device, memory_format=IMAGE_LAYOUT)
    if cfg.train.compile != "off":
        compile_model(model, cfg.train.compile)
    base = make_trainee(model, cfg, data, device)
    base.preprocess.normalization.save(folder / "normalization.json")
    saved = load_state(folder) if resume else None
    state = restore(saved, model) if saved else TrainState()

    clock = time.perf_counter()
    train = DeviceBatches(
        data.splits["train"].images,
        data.splits["train"].labels,
        batch_size=cfg.train.batch_size,
        device=device,
        seed=cfg.seed,
    )
    val = eval_batches(data, "val", cfg, device)

    def callbacks(trainee: Trainee, _end: int):
        return default_callbacks(cfg, folder, trainee, console, has_val=val is not None)

    stages = run_stages(base, cfg, train, val, state, saved, callbacks, console)
    timings["train_s"] = time.perf_counter() - clock
    if cfg.train.compile != "off":
        timings["compile_s"] = sum(stage.get("compile_s", 0.0) for stage in stages)

    clock = time.perf_counter()
    load_weights(model, folder / WEIGHTS)  # evaluate the kept (best) weights
    metrics, predicted = evaluate_all(base, data, cfg, device)
    write_json(folder / "metrics.json", metrics)
    write_predictions(folder / "predictions.csv", predicted)
    timings["evaluate_s"] = time.perf_counter() - clock

    manifest = run_manifest(
        cfg.seed,
        device,
        started,
        timings,
        model_manifest(cfg, model),
        data,
        deterministic=cfg.train.deterministic,
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        stopped_early=state.stop,
        stop_reason=state.stop_reason,
        stages=stages,
    )
    write_json(folder / "manifest.json", manifest)
    report = write_report(folder, data, predicted, base.augment, cfg.seed)
    return RunResult(folder, metrics, manifest, report)


def data_config(cfg: Experiment):
    """The data section, with a backbone's own input size where the file sets none."""
    if cfg.model is None or cfg.model.backbone is None or cfg.data.target_size is not None:
        return cfg.data
    from cnnlab.models.backbones import preprocessing_for, resolved_weights

    weights = resolved_weights(cfg.model.backbone, cfg.model.weights)
    size = preprocessing_for(cfg.model.backbone, weights).input_size
    return cfg.data.model_copy(update={"target_size": size})


def weights_line(info) -> str:
    line = f"Backbone weights: {info.weights}"
    if info.ignored_keys:  # say what was left out, e.g. the pretrained classifier
        shown = ", ".join(info.ignored_keys[:4]) + (", ..." if len(info.ignored_keys) > 4 else "")
        line += f" ({len(info.ignored_keys)} tensors of the file not used: {shown})"
    return line


def make_trainee(
    model: torch.nn.Module, cfg: Experiment, data: Data, device: torch.device
) -> Trainee:
    """Model, objective and transforms; each stage adds its optimiser and schedule."""
    outputs = model.output_shape[-1] if hasattr(model, "output_shape") else data.num_classes
    objective = Objective(
        getattr(model, "head_activation", None), outputs, cfg.train.label_smoothing
    )
    augment, evaluate = build_transforms(
        cfg.augment,
        data.splits["train"].images,
        cfg.seed,
        device,
        getattr(model, "preprocessing", None),
    )
    return Trainee(model, None, None, objective, evaluate, None if augment.is_identity else augment)


def restore(saved: dict[str, Any], model: torch.nn.Module) -> TrainState:
    """Weights, random state and progress of the last complete epoch; each stage restores its
    own optimiser (see run_stages)."""
    model.load_state_dict(saved["model"])
    restore_rng(saved["rng"])
    return TrainState(**saved["state"])


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


def eval_batch_size(cfg: Experiment, device: torch.device) -> int:
    """See EvaluateConfig.batch_size."""
    if cfg.evaluate.batch_size is not None:
        return cfg.evaluate.batch_size
    return GPU_EVAL_BATCH if device.type == "cuda" else cfg.train.batch_size


def default_callbacks(
    cfg: Experiment, folder: Path, trainee: Trainee, console: Console, has_val: bool
):
    stopping = cfg.train.early_stopping
    monitor = stopping.monitor if stopping else "val_loss"
    if stopping and not has_val:
        raise ConfigError(
            "train.early_stopping: needs a validation split; set data.validation_split"
        )
    callbacks = [
        BestWeights(
            trainee.model,
            folder / WEIGHTS,
            monitor if has_val else "",
            stopping.min_delta if stopping else 0.0,
        )
    ]
    if stopping:
        callbacks.append(EarlyStopping(stopping))
    parts = {"model": trainee.model, "optimizer": trainee.optimizer, "schedule": trainee.schedule}
    return [
        *callbacks,
        HistoryCSV(folder / "history.csv"),
        Checkpoint(folder, parts),
        EpochLine(console, total_epochs(cfg)),
    ]


def evaluate_all(trainee: Trainee, data: Data, cfg: Experiment, device: torch.device):
    # scikit-learn (and scipy) only once training is over: 70 MB resident and 1.5 s at import
    from cnnlab.evaluate.metrics import split_metrics

    metrics: dict[str, Any] = {}
    predicted = {}
    for name, split in data.splits.items():
        batches = eval_batches(data, name, cfg, device)
        result = infer(
            trainee.model,
            batches,
            trainee.objective,
            trainee.preprocess,
            keep_probabilities=True,
            tta=cfg.evaluate.tta,
        )
        probabilities = result.probabilities.numpy()
        metrics[name] = split_metrics(
            split.labels, probabilities, data.classes, result.loss, cfg.evaluate.top_k
        )
        if name != "train":
            predicted[name] = (split, probabilities)
    return metrics, predicted


def model_manifest(cfg: Experiment, model: torch.nn.Module) -> dict[str, Any]:
    trainable, frozen = count_params(model)
    described = {
        "name": cfg.model.name or cfg.model.backbone or "layers",
        "total_params": trainable + frozen,
        "trainable_params": trainable,
        "non_trainable_params": frozen,
    }
    info = getattr(model, "info", None)
    if info is not None:  # a backbone: where its weights came from and what they expect
        described["weights"] = info.weights
        described["weights_keys_not_used"] = list(info.ignored_keys)
        described["input_mean"] = list(info.preprocessing.mean)
        described["input_std"] = list(info.preprocessing.std)
    return described


def write_report(
    folder: Path, data: Data, predicted, augment: TrainTransform | None, seed: int
) -> Path:
    from cnnlab.augment.preview import split_preview
    from cnnlab.report import Misclassified, render_report

    name = "test" if "test" in predicted else ("val" if "val" in predicted else None)
    mistakes = None
    if name is not None:
        split, probabilities = predicted[name]
        best = probabilities.argmax(1)
        wrong = np.flatnonzero(best != split.labels)[:SHOWN_MISTAKES]
        mistakes = Misclassified(
            images=np.asarray(split.images[wrong]),
            true=[data.classes[k] for k in split.labels[wrong]],
            predicted=[data.classes[k] for k in best[wrong]],
            confidence=[float(probabilities[i, best[i]]) for i in wrong],
            paths=[split.paths[i] for i in wrong],
        )
    grid = None
    if augment is not None:  # the same preview as `cnnlab augment-preview`
        grid = split_preview(data.splits["train"].images, augment, seed)
    return render_report(folder, mistakes, grid)


def resume_check(folder: Path, cfg: Experiment) -> None:
    """A resumed run must be the same experiment; only train.epochs may grow. How fast it runs
    (train.compile) and how it is evaluated (evaluate.*) may change too: they do not change the
    training. Keys added to cnnlab since the run began take their defaults."""
    saved_path = folder / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"--resume: {folder} holds no run to resume (config.yaml is missing)")
    saved = validate(read_yaml(saved_path), Experiment, str(saved_path)).model_dump(mode="json")
    current = cfg.model_dump(mode="json")
    for section in (saved, current):
        for key in ("epochs", "compile"):
            section["train"].pop(key)
        section.pop("output")
        section.pop("evaluate")
    if saved != current:
        changed = sorted(_differences(saved, current))
        raise ConfigError(
            f"--resume: {folder} was run with a different configuration ({', '.join(changed)}); "
            "resume with the same settings (only train.epochs may change), or start a new run"
        )


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]
