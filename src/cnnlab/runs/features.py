"""A features run, S2's hybrid CNN: a network extracts features, a scikit-learn classifier
learns from them, and the run folder and report are those of a trained run (no curves).

The network is a pretrained backbone (model.backbone) or a finished run's model without its
last layer (model.from_run). Nothing trains it, so train.* is ignored except train.device.
Features are standardised on the training split (StandardScaler in the pipeline), and every
classifier gives probabilities, so loss (log-loss), top-k and the rest mean what they mean for
a trained run. The fitted classifier is kept without pickle (scikit-learn saves by pickling,
and a pickle runs code when loaded): its arrays in classifier.safetensors, what they are in
classifier.json (cnnlab.evaluate.saved_classifier). A finished run classifies new images with
it (`classify`: the extractor rebuilt from the config, with the run's normalization.json); the
extractor's weights are not copied: they stay the backbone's or model.from_run's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from rich.console import Console

from cnnlab import runfiles
from cnnlab.augment.normalize import Normalization, fit_normalization
from cnnlab.augment.pipeline import EvalTransform
from cnnlab.config import Experiment
from cnnlab.data.pipeline import Data, load_data
from cnnlab.errors import ConfigError
from cnnlab.evaluate.features import (
    Pool,
    extract_features,
    penultimate,
    penultimate_is_map,
    pooled,
)
from cnnlab.evaluate.saved_classifier import (
    SavedClassifier,
    has_saved_classifier,
    load_classifier,
    save_classifier,
)
from cnnlab.models import KerasModel, count_params, format_summary
from cnnlab.progress import progress_bar
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.interpretation import interpret_features
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
    sized_for,
)
from cnnlab.runtime import IMAGE_LAYOUT
from cnnlab.task.classification import split_metrics
from cnnlab.train.callbacks import Callback

if TYPE_CHECKING:
    from types import ModuleType

    from sklearn.pipeline import Pipeline

NOT_SAVED = (
    "features run: no network was trained (train.* ignored). The fitted classifier is saved "
    f"without pickle: its arrays in {runfiles.CLASSIFIER}, their description in "
    f"{runfiles.CLASSIFIER_INFO}; the feature extractor is rebuilt from config.yaml."
)


def sklearn_classifiers() -> ModuleType:
    """cnnlab.evaluate.classifiers, imported on first use: scikit-learn (and scipy) cost 70 MB
    resident and 1.5 s at import, and a trained run never needs them."""
    from cnnlab.evaluate import classifiers

    return classifiers


@dataclass
class FeatureSource:
    extractor: torch.nn.Module  # images -> (N, D) vectors
    normalization: Normalization  # uint8 images -> the extractor's input
    label: str  # "efficientnet_lite0 features": the report's model name, with the classifier
    described: dict[str, Any]  # for the manifest's model section


def run_features(
    cfg: Experiment,
    folder: RunFolder,
    console: Console,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Data, features of every split, classifier on the training split, metrics, report.
    Nothing trains in epochs, so there is nothing to resume and no callback is called."""
    assert cfg.model is not None and cfg.classifier is not None  # the config's validator
    source_run = (
        FinishedRun.open(cfg.model.from_run, "model.from_run") if cfg.model.from_run else None
    )
    run = begin(cfg, folder, console, features_data_config(cfg, source_run))
    data, timings = run.data, run.timings
    train = data.splits["train"]

    source = feature_source(cfg, data, source_run)
    folder.write_summary(
        f"{format_summary(source.extractor, data.input_shape)}\n"
        f"Classifier: {sklearn_classifiers().describe(cfg.classifier)}\n"
    )
    source.normalization.save(folder.file(runfiles.NORMALIZATION))
    clock = time.perf_counter()
    features = extract_splits(source, data, cfg, run.device, only=evaluated(data, cfg))
    timings["extract_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    classifier, fit_warnings = fitted_classifier(cfg, data, features["train"])
    timings["fit_s"] = time.perf_counter() - clock
    save_classifier(classifier, folder.path, cfg.classifier.name, data.classes)
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
    timings["evaluate_s"] = time.perf_counter() - clock
    interpret_features(run, features, predicted, source.label)  # report.interpret: embedding
    model = {
        "name": f"{source.label} + {cfg.classifier.name}",
        **source.described,
        "feature_dimension": int(dims),
        "classifier": sklearn_classifiers().classifier_manifest(cfg.classifier, classifier),
    }
    return finish(run, metrics, predicted, model, None, fit_warnings=fit_warnings, note=NOT_SAVED)


def features_data_config(cfg: Experiment, source_run: FinishedRun | None):
    """A finished run's network takes its own input size and colour mode."""
    if source_run is None:
        return data_config(cfg)
    return sized_for(cfg.data, source_run.input_shape, source_run.folder)


def feature_source(
    cfg: Experiment,
    data: Data | None,
    source_run: FinishedRun | None,
    normalization: Normalization | None = None,
) -> FeatureSource:
    """The extractor and its input's normalisation: fitted on `data` (a backbone with
    featurewise statistics), or `normalization` as a finished run saved it (then no data)."""
    assert cfg.classifier is not None
    if source_run is not None:
        source = from_run_source(source_run, cfg.classifier.pool)
        return source if normalization is None else replace(source, normalization=normalization)
    return backbone_source(cfg, data, normalization)


def fitted_classifier(
    cfg: Experiment, data: Data, train_features: np.ndarray
) -> tuple[Pipeline, list[str]]:
    """The classifier fitted on the training split's features, and what it warned about."""
    assert cfg.classifier is not None
    train = data.splits["train"]
    classifiers = sklearn_classifiers()
    classifier = classifiers.make_classifier(cfg.classifier, cfg.seed, train.labels, data.classes)
    return classifier, classifiers.fit(classifier, train_features, train.labels)


def predict_again(run: FinishedRun, split: str, device: torch.device) -> np.ndarray:
    """A finished features run's probabilities of `split`: the same features into the saved
    classifier; a run from before it was saved fits it again on the same training features
    (deterministic: seeded by the run's seed)."""
    cfg = run.config
    data = load_data(run.data_config(), cfg.seed)
    if has_saved_classifier(run.folder):
        source = saved_source(run)
        features = extract_splits(source, data, cfg, device, only=(split,))
        classifier: Pipeline | SavedClassifier = load_classifier(run.folder)
    else:
        source = feature_source(cfg, data, source_run_of(cfg))
        features = extract_splits(source, data, cfg, device, only=("train", split))
        classifier, _ = fitted_classifier(cfg, data, features["train"])
    return sklearn_classifiers().probabilities_of(classifier, features[split], data.num_classes)


def classify(
    run: FinishedRun, images: np.ndarray, device: torch.device, tta: bool = False
) -> np.ndarray:
    """(N, classes) probabilities of uint8 (N, C, H, W) images at the run's input size: the
    run's extractor, then its saved classifier; with `tta`, the mean of the probabilities of
    each image and of its mirror image (as a trained run's test-time augmentation)."""
    classifier = saved_classifier(run)
    height, width, channels = run.input_shape
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, height, width):
        raise ConfigError(
            f"{run.folder}: the run takes ({channels}, {height}, {width}) images, got an array "
            f"of shape {tuple(images.shape)}"
        )
    if len(images) == 0:
        return np.zeros((0, len(run.classes)), dtype=np.float64)
    source = saved_source(run)
    # Module.to takes memory_format with a device at runtime; torch's overloads leave it out
    extractor = source.extractor.to(device, memory_format=IMAGE_LAYOUT)  # type: ignore[call-overload]
    preprocess = EvalTransform(source.normalization, IMAGE_LAYOUT)
    batches = image_batches(images, run.config, device)
    probabilities_of, count = sklearn_classifiers().probabilities_of, len(run.classes)
    probabilities = probabilities_of(
        classifier, extract_features(extractor, batches, preprocess), count
    )
    if tta:
        mirrored = extract_features(extractor, batches, lambda x: preprocess(x.flip(-1)))
        probabilities = (probabilities + probabilities_of(classifier, mirrored, count)) / 2
    return probabilities


def saved_classifier(run: FinishedRun) -> SavedClassifier:
    """The classifier the run saved; a run from before cnnlab saved them has none."""
    if not has_saved_classifier(run.folder):
        raise ConfigError(
            f"{run.folder}: this features run has no saved classifier (no "
            f"{runfiles.CLASSIFIER} and {runfiles.CLASSIFIER_INFO}: an older cnnlab did not "
            f"keep them); rerun the experiment (cnnlab run {run.folder / runfiles.CONFIG}) to "
            "save its classifier"
        )
    return load_classifier(run.folder)


def saved_source(run: FinishedRun) -> FeatureSource:
    """A finished features run's extractor, rebuilt from its config, with its own saved
    normalisation (so no data is read)."""
    return feature_source(run.config, None, source_run_of(run.config), run.normalization())


def source_run_of(cfg: Experiment) -> FinishedRun | None:
    assert cfg.model is not None
    return FinishedRun.open(cfg.model.from_run, "model.from_run") if cfg.model.from_run else None


def extract_splits(
    source: FeatureSource,
    data: Data,
    cfg: Experiment,
    device: torch.device,
    only: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The features of every split (or of the splits `only` names)."""
    # Module.to takes memory_format with a device at runtime; torch's overloads leave it out
    extractor = source.extractor.to(device, memory_format=IMAGE_LAYOUT)  # type: ignore[call-overload]
    preprocess = EvalTransform(source.normalization, IMAGE_LAYOUT)
    features = {}
    for name in data.splits:
        if only is not None and name not in only:
            continue
        batches = eval_batches(data, name, cfg, device)
        assert batches is not None
        with progress_bar(f"features ({name})", batches.num_samples) as advance:
            features[name] = extract_features(extractor, batches, preprocess, advance)
    return features


def evaluate_splits(
    classifier: Pipeline, features: dict[str, np.ndarray], data: Data, top_k: int
) -> tuple[dict[str, Any], Predicted]:
    """Metrics of every split with features, and the probabilities of val and test for
    predictions.csv."""
    metrics: dict[str, Any] = {}
    predicted: Predicted = {}
    for name in features:
        split = data.splits[name]
        classifiers = sklearn_classifiers()
        probabilities = classifiers.probabilities_of(classifier, features[name], data.num_classes)
        loss = classifiers.log_loss(split.labels, probabilities)
        metrics[name] = split_metrics(split.labels, probabilities, data.classes, loss, top_k)
        if name != "train":
            predicted[name] = (split, probabilities)
    return metrics, predicted


# --- where the features come from --------------------------------------------------------------


def backbone_source(
    cfg: Experiment, data: Data | None, normalization: Normalization | None = None
) -> FeatureSource:
    """The pretrained backbone, pooled; its normalisation fitted on the training split unless
    given (a finished run's)."""
    from cnnlab.models.backbones import build_backbone  # imports timm: only when needed

    model = cfg.model
    # Experiment's validator: a features run has a classifier and model.backbone or from_run
    # (and feature_source takes the from_run ones elsewhere)
    assert model is not None and model.backbone is not None and cfg.classifier is not None
    backbone, info = build_backbone(model.backbone, model.weights)
    preprocessing = info.preprocessing.overridden(model.mean, model.std)
    if normalization is None:
        assert data is not None  # a run fits it; a finished run gives its own
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


def from_run_source(run: FinishedRun, pool: Pool) -> FeatureSource:
    """The run's model with its kept weights, up to (not including) its last layer."""
    try:
        model = cast(KerasModel, run.model())  # model_from_config's: a KerasModel or TransferModel
    except ConfigError as err:
        raise ConfigError(f"model.from_run: {err}") from None
    extractor = penultimate(model, pool, f"{run.model_name}_features")
    described = {
        "pool": pool if penultimate_is_map(model) else None,  # None: already a vector
        "extractor": run.model_name,
        "from_run": str(run.folder),
        "feature_layer": list(extractor.named_children())[-1][0],
    }
    label = f"{run.model_name} penultimate features (run {run.folder.name})"
    return FeatureSource(extractor, run.normalization(), label, described | params(extractor))


def params(module: torch.nn.Module) -> dict[str, int]:
    trainable, frozen = count_params(module)
    return {
        "total_params": trainable + frozen,
        "trainable_params": trainable,
        "non_trainable_params": frozen,
    }


KINDS.register("features")(RunKind(run_features, predict_again, classify))
