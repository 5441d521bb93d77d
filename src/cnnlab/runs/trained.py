"""A trained run, top to bottom: data, model, fit (in stages), evaluate, record, report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from cnnlab import distributed, runfiles
from cnnlab.augment.pipeline import EvalTransform, TrainTransform, build_transforms
from cnnlab.config import Experiment
from cnnlab.data.batches import DeviceBatches
from cnnlab.data.health import remedy_note
from cnnlab.data.pipeline import Data, load_data
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.models import count_params, format_summary, model_from_config
from cnnlab.models.whiten import whiten_first_conv
from cnnlab.runs import reconstruction
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.interpretation import interpret_trained
from cnnlab.runs.kinds import KINDS, RunKind
from cnnlab.runs.skeleton import (
    Predicted,
    RunResult,
    Started,
    begin,
    data_config,
    eval_batches,
    evaluated,
    finish,
    finish_with,
    image_batches,
)
from cnnlab.runs.tuner import SAVED as TUNED
from cnnlab.runs.tuner import Tuned, tune
from cnnlab.runtime import IMAGE_LAYOUT
from cnnlab.task import history_columns
from cnnlab.task.classification import Classification, class_weights, split_metrics
from cnnlab.task.inference import Inference, infer
from cnnlab.train.averaging import WeightAverage, weight_average
from cnnlab.train.batch_size import (
    CPU_BATCH,
    is_out_of_memory,
    release_memory,
    rescaled,
    with_batch_size,
)
from cnnlab.train.callbacks import (
    BestWeights,
    Callback,
    Checkpoint,
    EarlyStopping,
    EpochLine,
    HistoryCSV,
    RankRandomness,
    StopOnNonFinite,
    TrainState,
)
from cnnlab.train.checkpoint import load_state, load_weights, restore_rng
from cnnlab.train.compiled import compile_model
from cnnlab.train.loop import Trainee
from cnnlab.train.probe import restore as restore_probe
from cnnlab.train.probe import snapshot
from cnnlab.train.stages import run_stages, stages_of

# run_stages's summary: what each stage trained, for the manifest
Fitted = list[dict[str, Any]]


def run_trained(
    cfg: Experiment,
    folder: RunFolder,
    console: Console,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train and evaluate `cfg` into `folder`; `callbacks` join the run's own in every stage."""
    assert cfg.model is not None  # the caller's check (a run needs a model)
    # a resumed run's checkpoint first: unreadable, it stops the run before any file is rewritten
    # (a damaged last.pt falls back to previous.pt, with a warning naming it)
    saved = load_state(folder.path, lambda note: warn(console, note)) if resume else None
    run = begin(cfg, folder, console, data_config(cfg))
    data, device = run.data, run.device
    reconstructs = cfg.task == "reconstruction"
    imbalance = remedy_note(data.health)  # the report shows it too; here unless remedied
    if imbalance and cfg.train.class_weight is None and cfg.data.sampler == "shuffle":
        console.print(f"[yellow]warning:[/] {imbalance}", highlight=False)

    shape = network_input(cfg, data.input_shape)
    model = model_from_config(cfg.model, shape, data.num_classes)
    main = distributed.is_main()  # torchrun: rank 0 alone writes the folder
    if main:
        folder.write_summary(format_summary(model, shape) + "\n")
    if getattr(model, "info", None) is not None:
        console.print(weights_line(model.info), highlight=False)
    # Module.to takes memory_format with a device at runtime; torch's overloads leave it out
    model = model.to(device, memory_format=IMAGE_LAYOUT)  # type: ignore[call-overload]
    if cfg.train.sync_batchnorm and distributed.current() is not None:
        model = distributed.sync_batchnorm(model)  # before the optimiser and weight average
    base = task_trainee(model, cfg, data, device)
    if cfg.model.whiten_first_conv is not None:  # from the data; a resumed run loads it after
        train_images = data.splits["train"].images
        whiten_first_conv(
            model, train_images, base.preprocess, cfg.model.whiten_first_conv, cfg.seed, device
        )
    # train.ema / train.swa: a copy of the (whitened) model, before compiling
    average = base.average = weight_average(cfg.train, model)
    preprocess = cast(EvalTransform, base.preprocess)  # make_trainee's (build_transforms)
    if main:
        preprocess.normalization.save(folder.file(runfiles.NORMALIZATION))
    state = restore(saved, model, average) if saved else TrainState()
    train = (reconstruction.train_batches if reconstructs else train_batches)(cfg, data, device)
    clock = time.perf_counter()
    tuned = tune(cfg, base, train, device, saved, folder, console)  # auto values, before epoch 1
    cfg, train = tuned.experiment(cfg), with_batch_size(train, tuned.batch_size)
    if tuned.halves or tuned.lr is not None:
        run.timings["tune_s"] = time.perf_counter() - clock
    if cfg.train.compile != "off":  # after the finders, which train the model uncompiled
        compile_model(model, cfg.train.compile)

    clock = time.perf_counter()
    val = split_batches(data, "val", cfg, device)
    stages = stages_of(cfg.model, cfg.train)
    epochs = sum(stage.epochs for stage in stages)

    part = distributed.current()
    ranked = [RankRandomness(cfg.seed, part.rank)] if part is not None and part.world > 1 else []

    def stage_callbacks(trainee: Trainee, _end: int) -> list[Callback]:
        own = default_callbacks(cfg, folder, trainee, console, epochs, val is not None, tuned)
        return [*ranked, *(own if main else deciding(own)), *callbacks]

    def fit(batches: DeviceBatches, saved: dict[str, Any] | None, state: TrainState) -> Fitted:
        return run_stages(
            base, cfg.train, stages, batches, val, state, saved, stage_callbacks, console
        )

    per_epoch = cfg.train.steps_per_epoch
    summary, state, train = fit_halving(
        fit, tuned, train, saved, state, base, folder, console, per_epoch
    )
    cfg = tuned.experiment(cfg)  # the batch size trained last, if it was halved
    run.timings["train_s"] = time.perf_counter() - clock
    if cfg.train.compile != "off":
        run.timings["compile_s"] = sum(stage.get("compile_s", 0.0) for stage in summary)

    clock = time.perf_counter()
    # torchrun: rank 0 keeps the weights (SWA's mean too) and gives every process them
    evaluated_weights = distributed.from_rank_zero(
        lambda: keep_weights(cfg, folder, base, train, state, console)
    )
    distributed.broadcast_state(model)
    details: dict[str, Any] = dict(
        deterministic=cfg.train.deterministic,
        epochs_run=state.epoch,
        best_epoch=state.epoch if evaluated_weights == "swa" else state.best_epoch,
        weights_evaluated=evaluated_weights,  # raw, or the average: ema, swa
        stopped_early=state.stop,
        stop_reason=state.stop_reason,
        stages=summary,
        class_weight=recorded_weights(base, data),
        **tuned.manifest(),  # auto_batch_size, lr_find
        **distributed.described(),  # torchrun: the processes that trained it
    )
    if reconstructs:  # torchrun: rank 0 evaluates and writes; every process gets the result
        described = model_manifest(cfg, model)
        return distributed.from_rank_zero(
            lambda: finish_reconstruction(run, cfg, base, described, clock, details)
        )
    metrics, predicted = evaluate_all(base, data, cfg, device)
    run.timings["evaluate_s"] = time.perf_counter() - clock
    if not main:  # the other processes evaluated their blocks; rank 0 writes the rest
        return RunResult(folder.path, metrics, {}, folder.file(runfiles.REPORT))
    interpret_trained(run, base, predicted)  # report.interpret: embedding, Grad-CAM
    augment = cast("TrainTransform | None", base.augment)  # make_trainee's (build_transforms)
    return finish(run, metrics, predicted, model_manifest(cfg, model), augment, **details)


def keep_weights(
    cfg: Experiment,
    folder: RunFolder,
    trainee: Trainee,
    train: DeviceBatches,
    state: TrainState,
    console: Console,
) -> str:
    """Load the weights the run evaluates into the model: the raw network's best epoch (kept by
    BestWeights; EMA's best too), or SWA's mean, made now. Returns which: raw, ema or swa."""
    evaluated_weights = "raw"  # BestWeights kept the raw network's best epoch
    average = trainee.average
    if average is not None:  # EMA: its best epoch is kept already; SWA: the mean, now
        plain = (trainee.preprocess(images) for images, _ in train.epoch(0))
        evaluated_weights = average.finish(plain, folder.weights)
    if evaluated_weights == "swa" and cfg.train.swa is not None:
        console.print(
            f"SWA: the mean of the weights of epochs {cfg.train.swa.start_epoch}-{state.epoch} "
            "is kept and evaluated",
            highlight=False,
        )
    if not folder.weights.is_file():  # every epoch's monitored value was nan or inf
        raise CnnlabError(
            f"{folder.path}: no epoch gave a finite {monitor_of(cfg)} (see {runfiles.HISTORY}), "
            "so no weights were kept: the network diverged. Lower train.optimizer.lr or check "
            "the schedule and augment.rescale"
        )
    load_weights(trainee.model, folder.weights)  # evaluate the kept (best) weights
    return evaluated_weights


def deciding(callbacks: list[Callback]) -> list[Callback]:
    """A torchrun process's own callbacks besides rank 0's: those that decide when training
    stops (on the logs every process shares), not those that write or print."""
    return [c for c in callbacks if isinstance(c, EarlyStopping | StopOnNonFinite)]


def warn(console: Console, note: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)  # paths may hold [


def network_input(cfg: Experiment, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(H, W, C) the network takes: the images, or for reconstruction their degraded copies."""
    if cfg.task == "reconstruction":
        return reconstruction.network_input(cfg, image_shape)
    return image_shape


def task_trainee(
    model: torch.nn.Module, cfg: Experiment, data: Data, device: torch.device
) -> Trainee:
    if cfg.task == "reconstruction":
        return reconstruction.make_trainee(model, cfg, data, device)
    return make_trainee(model, cfg, data, device)


def split_batches(
    data: Data, name: str, cfg: Experiment, device: torch.device
) -> DeviceBatches | None:
    """A split as evaluation batches of the run's task."""
    if cfg.task == "reconstruction":
        return reconstruction.eval_batches(data, name, cfg, device)
    return eval_batches(data, name, cfg, device)


def finish_reconstruction(
    run: Started,
    cfg: Experiment,
    trainee: Trainee,
    model: dict[str, Any],
    clock: float,
    details: dict[str, Any],
) -> RunResult:
    """Evaluate every split, then metrics, per-image predictions, images and the report."""
    data, device = run.data, run.device
    metrics, rows, shown = reconstruction.evaluate_all(
        trainee, data, cfg, device, evaluated(data, cfg)
    )
    run.timings["evaluate_s"] = time.perf_counter() - clock
    reconstruction.save_shown(run.folder.path, shown)

    def report() -> Path:
        from cnnlab.report import render_report

        return render_report(run.folder.path)

    text = reconstruction.predictions_csv(rows)
    return finish_with(run, metrics, text, model, report, **details)


def weights_line(info) -> str:
    line = f"Backbone weights: {info.weights}"
    if info.ignored_keys:  # say what was left out, e.g. the pretrained classifier
        shown = ", ".join(info.ignored_keys[:4]) + (", ..." if len(info.ignored_keys) > 4 else "")
        line += f" ({len(info.ignored_keys)} tensors of the file not used: {shown})"
    return line


def make_trainee(
    model: torch.nn.Module,
    cfg: Experiment,
    data: Data,
    device: torch.device,
    average: WeightAverage | None = None,
) -> Trainee:
    """Model, task, transforms and weight average; each stage adds its optimiser and schedule."""
    output = getattr(model, "output_shape", ())
    if len(output) == 3:  # e.g. S4's upsampling networks
        raise ConfigError(
            f"model: the network outputs {'x'.join(map(str, output))} images, not class scores; "
            "set task: reconstruction to train it to rebuild images"
        )
    weights = class_weights(cfg.train.class_weight, data.classes, data.splits["train"].labels)
    smoothing = cfg.train.label_smoothing
    task = Classification.for_model(model, data.num_classes, smoothing, weights)
    augment, evaluate = build_transforms(
        cfg.augment,
        data.splits["train"].images,
        cfg.seed,
        device,
        getattr(model, "preprocessing", None),
    )
    augment_or_none = None if augment.is_identity else augment
    return Trainee(model, None, None, task, evaluate, augment_or_none, average)


def recorded_weights(trainee: Trainee, data: Data) -> dict[str, float] | None:
    """manifest.json's class_weight: the weight of each class the training loss used."""
    weights = getattr(trainee.task, "class_weights", None)
    return None if weights is None else dict(zip(data.classes, weights, strict=True))


def restore(
    saved: dict[str, Any], model: torch.nn.Module, average: WeightAverage | None = None
) -> TrainState:
    """Weights, weight average, random state and progress of the last complete epoch; each
    stage restores its own optimiser (see run_stages)."""
    model.load_state_dict(saved["model"])
    if average is not None:
        average.load_state_dict(saved["average"])
    restore_rng(saved["rng"])
    return TrainState.from_saved(saved["state"])


def train_batches(cfg: Experiment, data: Data, device: torch.device) -> DeviceBatches:
    """The training split on `device`, shuffled per epoch; an auto batch size starts at
    Keras's 32 until runs/tuner.py chooses."""
    split, size = data.splits["train"], cfg.train.batch_size
    return DeviceBatches(
        split.images,
        split.labels,
        batch_size=CPU_BATCH if size == "auto" else size,
        device=device,
        seed=cfg.seed,
        sampler=cfg.data.sampler,
    )


def fit_halving(
    fit: Callable[[DeviceBatches, dict[str, Any] | None, TrainState], Fitted],
    tuned: Tuned,
    train: DeviceBatches,
    saved: dict[str, Any] | None,
    state: TrainState,
    base: Trainee,
    folder: RunFolder,
    console: Console,
    steps_per_epoch: int | None,
) -> tuple[Fitted, TrainState, DeviceBatches]:
    """`fit(train, saved, state)`. With an auto batch, out of device memory halves the batch
    and fits again from the last complete epoch: the checkpoint's (as --resume would, the
    schedule moved to the same point in the new count of steps), or the start's."""
    start = snapshot(base) if tuned.halves else None
    while True:
        try:
            return fit(train, saved, state), state, train
        except Exception as error:
            if not (tuned.halves and is_out_of_memory(error)):
                raise
        release_memory(train.device)  # out of the except block, the failed step's tensors are free
        steps = len(train)
        train = with_batch_size(train, tuned.halve(state.epoch + 1, console))
        if folder.started_training:
            saved = load_state(folder.path)
            if steps_per_epoch is None:  # an epoch is one pass: now in twice the steps
                saved = rescaled(saved, steps, len(train))
            state = restore(saved, base.model, base.average)
        else:
            assert start is not None
            restore_probe(base, start)
            saved, state = None, TrainState()


def monitor_of(cfg: Experiment) -> str:
    """The logged value the kept weights are chosen by."""
    stopping = cfg.train.early_stopping
    return stopping.monitor if stopping else "val_loss"


def default_callbacks(
    cfg: Experiment,
    folder: RunFolder,
    trainee: Trainee,
    console: Console,
    epochs: int,
    has_val: bool,
    tuned: Tuned | None = None,
) -> list[Callback]:
    stopping = cfg.train.early_stopping
    monitor = monitor_of(cfg)
    if stopping and not has_val:
        raise ConfigError(
            "train.early_stopping: needs a validation split; set data.validation_split"
        )
    callbacks: list[Callback] = [
        BestWeights(
            trainee.validated,  # the EMA of the weights when there is one
            folder.weights,
            monitor if has_val else "",
            stopping.min_delta if stopping else 0.0,
        )
    ]
    if stopping:
        callbacks.append(EarlyStopping(stopping))
    if has_val:
        callbacks.append(StopOnNonFinite())
    parts: dict[str, Any] = {
        "model": trainee.model,
        "optimizer": trainee.optimizer,
        "schedule": trainee.schedule,
    }
    if trainee.average is not None:
        parts["average"] = trainee.average
    if tuned is not None:  # the auto values, so a resumed run keeps them
        parts[TUNED] = tuned
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
        result = split_inference(trainee, data, name, cfg, device, distributed.current())
        assert result.predictions is not None
        probabilities = result.predictions.numpy()
        if not np.isfinite(probabilities).all():
            raise non_finite_outputs(name, probabilities)
        metrics[name] = split_metrics(
            split.labels, probabilities, data.classes, result.loss, cfg.evaluate.top_k
        )
        if name != "train":
            predicted[name] = (split, probabilities)
    return metrics, predicted


def non_finite_outputs(split: str, probabilities: np.ndarray) -> CnnlabError:
    """The kept weights give nan or inf: said with the split and the count, not left to
    scikit-learn's "Input contains NaN"."""
    bad = int((~np.isfinite(probabilities)).any(axis=1).sum())
    return CnnlabError(
        f"the kept weights ({runfiles.WEIGHTS}) give non-finite probabilities (nan or inf) for "
        f"{bad} of {len(probabilities)} images of the {split} split: the network diverged in "
        f"training (see {runfiles.HISTORY}); no metrics were written. Lower "
        "train.optimizer.lr or check the schedule and augment.rescale"
    )


def split_inference(
    trainee: Trainee,
    data: Data,
    name: str,
    cfg: Experiment,
    device: torch.device,
    part: distributed.Part | None = None,
) -> Inference:
    """Loss, statistics and probabilities of one split, as the run evaluates it; with `part`
    (torchrun), each process infers its block and all get the whole split's."""
    batches = eval_batches(data, name, cfg, device)
    assert batches is not None, f"no {name} split"
    return infer(
        trainee.model,
        batches,
        trainee.task,
        trainee.preprocess,
        keep_predictions=True,
        tta=cfg.evaluate.tta,
        part=part,
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
# task: reconstruction: the same run; its network's outputs are images
KINDS.register("reconstruction")(
    RunKind(run_trained, reconstruction.predict_again, reconstruction.reconstruct)
)
