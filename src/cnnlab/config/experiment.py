"""`Experiment`: the whole file, its sections and the checks across them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    model_validator,
)

from cnnlab.config.augment import AugmentConfig
from cnnlab.config.base import Section
from cnnlab.config.data import DataConfig
from cnnlab.config.model import ClassifierConfig, ModelConfig
from cnnlab.config.outputs import (
    EnsembleConfig,
    EvaluateConfig,
    OutputConfig,
    ReportConfig,
    TrackingConfig,
)
from cnnlab.config.reconstruction import ReconstructionConfig
from cnnlab.config.training import TrainConfig

TASK_MONITORS = {
    "classification": ("val_loss", "val_accuracy"),
    "reconstruction": ("val_loss", "val_accuracy", "val_threshold_accuracy", "val_psnr"),
}


class Experiment(Section):
    """One experiment. With a `classifier` section it is a features run: the network only
    extracts features and no training loop runs, so `train.*` is ignored (except
    train.device, where the features are computed). With an `ensemble` section it combines
    finished runs (no model; `train.*` ignored but train.device, data.* is its members')."""

    # split, shuffling, initialisation and augmentation all follow it; below 2**32, as
    # scikit-learn's random_state and NumPy's legacy seeding need
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    # classification: a class per image; reconstruction: an image per image (see
    # ReconstructionConfig), trained by the same loop, evaluated and reported by its own task
    task: Literal["classification", "reconstruction"] = "classification"
    data: DataConfig
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig | None = None
    classifier: ClassifierConfig | None = None  # None: train the network end to end
    ensemble: EnsembleConfig | None = None  # finished runs combined: no model, nothing trained
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    output: OutputConfig = OutputConfig()
    reconstruction: ReconstructionConfig | None = None  # task: reconstruction's settings
    # None: the run is recorded in its folder only; tracking.mlflow: in MLflow too
    tracking: TrackingConfig | None = None

    @model_validator(mode="after")
    def _task_settings(self) -> Experiment:
        monitor = self.train.early_stopping.monitor if self.train.early_stopping else None
        if monitor is not None and monitor not in TASK_MONITORS[self.task]:
            raise ValueError(
                f"train.early_stopping.monitor: {monitor} is not logged by task {self.task}; "
                f"use one of {', '.join(TASK_MONITORS[self.task])}"
            )
        if self.task == "classification":
            for key in ("reconstruction", "data.targets"):
                section, _, field = key.partition(".")
                value = getattr(self, section)
                if (getattr(value, field) if field else value) is not None:
                    raise ValueError(
                        f"{key}: only for task: reconstruction; set task: reconstruction "
                        f"or remove {key}"
                    )
            return self
        return self._reconstruction_run()

    def _reconstruction_run(self) -> Experiment:
        """What a reconstruction run cannot take: a classifier, class weights, class-based
        augmentation (a degradation pipeline makes its inputs) and flip TTA."""
        if self.model is None or self.classifier is not None:
            raise ValueError("task: reconstruction trains a network; set model (e.g. name: ...)")
        refused = {
            "classifier": self.classifier is not None,
            "train.class_weight": self.train.class_weight is not None,
            "train.label_smoothing": self.train.label_smoothing != 0,
            "evaluate.tta": bool(self.evaluate.tta),
            "train.swa": self.train.swa is not None,
            "data.sampler": self.data.sampler != "shuffle",
            "model.whiten_first_conv": self.model.whiten_first_conv is not None,
        }
        refused |= {
            f"augment.{key}": getattr(self.augment, key) != default
            for key, default in AugmentConfig()
        }
        for key, given in refused.items():
            if given:
                raise ValueError(
                    f"{key}: not for task: reconstruction (its inputs are made by "
                    "reconstruction.degrade); remove it"
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _reconstruction_defaults(cls, data: Any) -> Any:
        """task: reconstruction without its section: the section's defaults, spelt out in the
        saved config.yaml."""
        if isinstance(data, dict) and data.get("task") == "reconstruction":
            return {"reconstruction": {}, **data}
        return data

    @model_validator(mode="after")
    def _features_run(self) -> Experiment:
        model, features = self.model, self.classifier is not None
        if model and model.from_run and not features:
            raise ValueError(
                "model.from_run: a run's network only extracts features; add classifier:"
            )
        if not features:
            return self
        if model is None or not (model.backbone or model.from_run):
            raise ValueError(
                "classifier: needs a feature extractor; set model.backbone (e.g. "
                "efficientnet_lite0) or model.from_run (a finished run's folder)"
            )
        trained = [key for key in ("head", "stages") if getattr(model, key) is not None]
        if trained:
            raise ValueError(f"model.{trained[0]}: a features run trains no network; remove it")
        augmented = [
            key for key, default in AugmentConfig() if getattr(self.augment, key) != default
        ]
        if augmented:
            raise ValueError(
                f"augment.{augmented[0]}: a features run sees each image once, as it is "
                "(normalised as its extractor expects); remove it"
            )
        return self

    @model_validator(mode="after")
    def _ensemble_trains_nothing(self) -> Experiment:
        if self.ensemble is None:
            return self
        own = [key for key in ("model", "classifier") if getattr(self, key) is not None]
        if own:
            raise ValueError(
                f"{own[0]}: an ensemble has no network of its own (its members have); remove it"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _epochs_from_stages(cls, data: Any) -> Any:
        """With model.stages, train.epochs is the run's total: the stages' epochs added up
        (so a saved config.yaml, which spells it out, loads again)."""
        try:
            total = sum(int(stage["epochs"]) for stage in data["model"]["stages"])
        except (KeyError, TypeError, ValueError):
            return data  # no stages, or malformed ones: the fields' own checks report them
        train = data.get("train") or {}
        if not isinstance(train, dict):
            return data
        if train.get("epochs", total) != total:
            raise ValueError(
                f"train.epochs: {train['epochs']}, but model.stages add up to {total} epochs; "
                "remove train.epochs (each stage sets its own: model.stages.N.epochs)"
            )
        return {**data, "train": {**train, "epochs": total}}

    @model_validator(mode="after")
    def _swa_without_stages(self) -> Experiment:
        if self.train.swa is not None and self.model and self.model.stages:
            raise ValueError(
                "train.swa: not with model.stages (each stage builds its own optimiser, and "
                "update_bn would recompute the frozen blocks' BatchNorm statistics); use "
                "train.ema, or train one stage"
            )
        return self

    @model_validator(mode="after")
    def _backbone_takes_rgb(self) -> Experiment:
        if self.model and self.model.backbone and self.data.color_mode != "rgb":
            raise ValueError(
                f"data.color_mode: the backbone {self.model.backbone} takes RGB images; set "
                "data.color_mode: rgb (grayscale files are converted)"
            )
        return self

    @model_validator(mode="after")
    def _backbone_normalises(self) -> Experiment:
        """A backbone's inputs are 0..1 images standardised by its weights' mean/std, in trained
        and features runs alike (augment/normalize.py builds them)."""
        if not (self.model and self.model.backbone):
            return self
        rescale = self.augment.rescale
        if rescale is not None and abs(rescale - 1 / 255) > 1e-9:
            raise ValueError(
                f"augment.rescale: {rescale:g}, but a backbone takes images scaled to 0..1 and "
                "then its own mean/std (model.mean, model.std); remove augment.rescale or set 1/255"
            )
        own = [
            key
            for key in (
                "featurewise_center",
                "featurewise_std_normalization",
                "samplewise_center",
                "samplewise_std_normalization",
            )
            if getattr(self.augment, key)
        ]
        if own:
            raise ValueError(
                f"augment.{own[0]}: a backbone normalises by its weights' mean/std; remove it "
                "(model.mean and model.std change that mean/std)"
            )
        return self
