"""A trained run, top to bottom: data, model, fit (in stages), evaluate, record, report."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from rich.console import Console

from cnnlab import runfiles
from cnnlab.augment.pipeline import EvalTransform, TrainTransform, build_transforms
from cnnlab.config import Experiment
from cnnlab.data.batches import DeviceBatches
from cnnlab.data.pipeline import Data, load_data
from cnnlab.errors import ConfigError
from cnnlab.models import count_params, format_summary, model_from_config
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.kinds import KINDS, RunKind
from cnnlab.runs.skeleton import (
    Predicted,
    RunResult,
    begin,
    data_config,
    eval_batches,
    evaluated,
    finish,
    image_batches,
)
from cnnlab.runtime import IMAGE_LAYOUT
from cnnlab.task import history_columns
from cnnlab.task.classification import Classification, split_metrics
from cnnlab.task.inference import Inference, infer
from cnnlab.train.callbacks import (
    BestWeights,
    Callback,
    Checkpoint,
    EarlyStopping,
    EpochLine,
    HistoryCSV,
    TrainState,
)
from cnnlab.train.checkpoint import load_state, load_weights, restore_rng
from cnnlab.train.compiled import compile_model
from cnnlab.train.loop import Trainee
from cnnlab.train.stages import run_stages, stages_of


def run_trained(
    cfg: Experiment,
    folder: RunFolder,
    console: Console,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train and evaluate `cfg` into `folder`; `callbacks` join the run's own in every stage."""
    assert cfg.model is not None  # the caller's check (a run needs a model)
    run = begin(cfg, folder, console, data_config(cfg))
    data, device = run.data, run.device

    model = model_from_config(cfg.model, data.input_shape, data.num_classes)
    folder.write_summary(format_summary(model, data.input_shape) + "\n")
    if getattr(model, "info", None) is not None:
        console.print(weights_line(model.info), highlight=False)
    # Module.to takes memory_format with a device at runtime; torch's overloads leave it out
    model = model.to(device, memory_format=IMAGE_LAYOUT)  # type: ignore[call-overload]
    if cfg.train.compile != "off":
        compile_model(model, cfg.train.compile)
    base = make_trainee(model, cfg, data, device)
    preprocess = cast(EvalTransform, base.preprocess)  # make_trainee's (build_transforms)
    preprocess.normalization.save(folder.file(runfiles.NORMALIZATION))
    saved = load_state(folder.path) if resume else None
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
    stages = stages_of(cfg.model, cfg.train)
    epochs = sum(stage.epochs for stage in stages)

    def stage_callbacks(trainee: Trainee, _end: int) -> list[Callback]:
        own = default_callbacks(cfg, folder, trainee, console, epochs, has_val=val is not None)
        return [*own, *callbacks]

    summary = run_stages(
        base, cfg.train, stages, train, val, state, saved, stage_callbacks, console
    )
    run.timings["train_s"] = time.perf_counter() - clock
    if cfg.train.compile != "off":
        run.timings["compile_s"] = sum(stage.get("compile_s", 0.0) for stage in summary)

    clock = time.perf_counter()
    load_weights(model, folder.weights)  # evaluate the kept (best) weights
    metrics, predicted = evaluate_all(base, data, cfg, device)
    run.timings["evaluate_s"] = time.perf_counter() - clock
    return finish(
        run,
        metrics,
        predicted,
        model_manifest(cfg, model),
        cast("TrainTransform | None", base.augment),  # make_trainee's (build_transforms)
        deterministic=cfg.train.deterministic,
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        stopped_early=state.stop,
        stop_reason=state.stop_reason,
        stages=summary,
    )


def weights_line(info) -> str:
    line = f"Backbone weights: {info.weights}"
    if info.ignored_keys:  # say what was left out, e.g. the pretrained classifier
        shown = ", ".join(info.ignored_keys[:4]) + (", ..." if len(info.ignored_keys) > 4 else "")
        line += f" ({len(info.ignored_keys)} tensors of the file not used: {shown})"
    return line


def make_trainee(
    model: torch.nn.Module, cfg: Experiment, data: Data, device: torch.device
) -> Trainee:
    """Model, task and transforms; each stage adds its optimiser and schedule."""
    task = Classification.for_model(model, data.num_classes, cfg.train.label_smoothing)
    augment, evaluate = build_transforms(
        cfg.augment,
        data.splits["train"].images,
        cfg.seed,
        device,
        getattr(model, "preprocessing", None),
    )
    return Trainee(model, None, None, task, evaluate, None if augment.is_identity else augment)


def restore(saved: dict[str, Any], model: torch.nn.Module) -> TrainState:
    """Weights, random state and progress of the last complete epoch; each stage restores its
    own optimiser (see run_stages)."""
    model.load_state_dict(saved["model"])
    restore_rng(saved["rng"])
    return TrainState.from_saved(saved["state"])


def default_callbacks(
    cfg: Experiment,
    folder: RunFolder,
    trainee: Trainee,
    console: Console,
    epochs: int,
    has_val: bool,
) -> list[Callback]:
    stopping = cfg.train.early_stopping
    monitor = stopping.monitor if stopping else "val_loss"
    if stopping and not has_val:
        raise ConfigError(
            "train.early_stopping: needs a validation split; set data.validation_split"
        )
    callbacks: list[Callback] = [
        BestWeights(
            trainee.model,
            folder.weights,
            monitor if has_val else "",
            stopping.min_delta if stopping else 0.0,
        )
    ]
    if stopping:
        callbacks.append(EarlyStopping(stopping))
    parts = {"model": trainee.model, "optimizer": trainee.optimizer, "schedule": trainee.schedule}
    return [
        *callbacks,
        HistoryCSV(folder.file(runfiles.HISTORY), history_columns(trainee.task)),
        Checkpoint(folder.path, parts),
        EpochLine(console, epochs),
    ]


def evaluate_all(
    trainee: Trainee, data: Data, cfg: Experiment, device: torch.device
) -> tuple[dict[str, Any], Predicted]:
    """Metrics of every split, and the probabilities of val and test for predictions.csv."""
    metrics: dict[str, Any] = {}
    predicted: Predicted = {}
    for name in evaluated(data, cfg):
        split = data.splits[name]
        result = split_inference(trainee, data, name, cfg, device)
        assert result.predictions is not None
        probabilities = result.predictions.numpy()
        metrics[name] = split_metrics(
            split.labels, probabilities, data.classes, result.loss, cfg.evaluate.top_k
        )
        if name != "train":
            predicted[name] = (split, probabilities)
    return metrics, predicted


def split_inference(
    trainee: Trainee, data: Data, name: str, cfg: Experiment, device: torch.device
) -> Inference:
    """Loss, statistics and probabilities of one split, as the run evaluates it."""
    batches = eval_batches(data, name, cfg, device)
    assert batches is not None, f"no {name} split"
    return infer(
        trainee.model,
        batches,
        trainee.task,
        trainee.preprocess,
        keep_predictions=True,
        tta=cfg.evaluate.tta,
    )


def predict_again(run: FinishedRun, split: str, device: torch.device) -> np.ndarray:
    """A finished trained run's probabilities of `split`: its kept weights on its data, with
    the normalisation and test-time augmentation it was evaluated with."""
    data = load_data(run.data_config(), run.config.seed)
    result = split_inference(finished_trainee(run, device), data, split, run.config, device)
    assert result.predictions is not None
    return result.predictions.numpy()


def classify(
    run: FinishedRun, images: np.ndarray, device: torch.device, tta: bool = False
) -> np.ndarray:
    """(N, classes) probabilities of uint8 (N, C, H, W) images at the run's input size."""
    trainee = finished_trainee(run, device)
    batches = image_batches(images, run.config, device)
    result = infer(trainee.model, batches, trainee.task, trainee.preprocess, True, tta)
    assert result.predictions is not None
    return result.predictions.numpy()


def finished_trainee(run: FinishedRun, device: torch.device) -> Trainee:
    """A finished run's kept network on `device`, its task and its evaluation transform."""
    # Module.to takes memory_format with a device at runtime; torch's overloads leave it out
    model = run.network.to(device, memory_format=IMAGE_LAYOUT)  # type: ignore[call-overload]
    task = Classification.for_model(model, len(run.classes), run.config.train.label_smoothing)
    return Trainee(model, None, None, task, EvalTransform(run.normalization(), IMAGE_LAYOUT))


def model_manifest(cfg: Experiment, model: torch.nn.Module) -> dict[str, Any]:
    assert cfg.model is not None
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


KINDS.register("trained")(RunKind(run_trained, predict_again, classify))
