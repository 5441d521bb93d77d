"""`train`: the optimiser and its parameter groups, the lr schedule, early stopping, weight
averaging, batch size and device."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cnnlab.config.base import Section, positive_or_auto, refused

PARAM_KINDS = ("bias", "batchnorm", "norm")  # train/optim.py's parameter selectors


def _selectors(selectors: list[str]) -> list[str]:
    """Each a kind of parameter or a glob over names such as `conv2d.weight`: a word that is
    neither can match nothing (every name has a dot), so it is a typo, refused here."""
    import difflib

    for selector in selectors:
        if selector in PARAM_KINDS or any(c in selector for c in ".*?["):
            continue
        close = difflib.get_close_matches(selector, PARAM_KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise refused(
            f"not a kind of parameter{hint} ({', '.join(PARAM_KINDS)}, or a glob over "
            "parameter names such as conv2d.* or *.bias)",
            selector,
        )
    return selectors


class ParamGroupConfig(Section):
    """Parameters that train with their own lr and weight decay (a torch param group)."""

    # bias: every bias; batchnorm: BatchNorm's scales and offsets; norm: those of any
    # normalisation layer; or a glob over parameter names (conv2d.*, as `cnnlab summary` names
    # the layers). A parameter joins the first group that selects it.
    params: list[str]
    lr_scale: PositiveFloat = 1.0  # times train.optimizer.lr (the schedule scales both alike)
    weight_decay: NonNegativeFloat | None = None  # None: train.optimizer's (0 if in no_decay)

    @field_validator("params")
    @classmethod
    def _kinds(cls, selectors: list[str]) -> list[str]:
        if not selectors:
            raise refused("give at least one selector, e.g. [batchnorm]")
        return _selectors(selectors)


class LookaheadConfig(Section):
    """Lookahead (Zhang et al. 2019), timm's wrapper around the optimiser: every k steps the
    slow weights move alpha of the way to the fast ones, and training goes on from them."""

    k: PositiveInt = 5  # the paper's
    alpha: float = Field(default=0.5, gt=0.0, le=1.0)  # the paper's; 1 is the plain optimiser


class OptimizerConfig(Section):
    name: Literal["sgd", "rmsprop", "adam", "adamw"] = "rmsprop"  # S2's best
    # None: Keras's default for the optimiser. auto: the learning-rate finder's suggestion
    # (train/lr_find.py), found before epoch 1 on the first stage, saved in the checkpoint (a
    # resumed run keeps it) and in manifest.json's lr_find
    lr: PositiveFloat | Literal["auto"] | None = None
    momentum: NonNegativeFloat = 0.0  # SGD; Keras's default
    nesterov: bool = False  # SGD's Nesterov momentum (needs momentum > 0)
    weight_decay: NonNegativeFloat | None = None  # None: Keras's (0.004 for AdamW, else 0)
    decay: NonNegativeFloat = 0.0  # Keras's legacy lr / (1 + decay * step)
    # Parameters that never decay, selected as in groups: [bias, norm] is timm's
    # param_groups_weight_decay (decay only shrinks what normalisation rescales anyway).
    # Empty: every parameter decays, as in Keras.
    no_decay: list[str] = []
    groups: list[ParamGroupConfig] = []  # e.g. airbench's BatchNorm biases at 64x the lr
    lookahead: LookaheadConfig | None = None  # true: k 5, alpha 0.5; None: the plain optimiser

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, value: Any) -> Any:
        return positive_or_auto(value, False, "the learning-rate finder's suggestion")

    @field_validator("no_decay")
    @classmethod
    def _no_decay(cls, selectors: list[str]) -> list[str]:
        return _selectors(selectors)

    @field_validator("lookahead", mode="before")
    @classmethod
    def _lookahead_switch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {} if value else None  # lookahead: true, with the paper's k and alpha
        return value

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, on: bool, info: ValidationInfo) -> bool:
        name, momentum = info.data.get("name"), info.data.get("momentum")
        if on and name is not None and momentum is not None and (name != "sgd" or not momentum):
            fix = "set name: sgd" if name != "sgd" else "set momentum, e.g. 0.9"
            raise refused(f"Nesterov momentum needs SGD with momentum > 0; {fix}")
        return on


class ScheduleConfig(Section):
    """Learning rate over training, on top of the optimiser's lr (and Keras's `decay`)."""

    name: Literal["constant", "cosine", "step", "onecycle"] = "constant"  # Keras's behaviour
    warmup_epochs: NonNegativeFloat = 0.0  # linear ramp from 0; fractions of an epoch allowed
    step_epochs: PositiveInt = 10  # step: multiply by gamma every step_epochs
    gamma: PositiveFloat = 0.1
    min_lr_fraction: NonNegativeFloat = 0.0  # cosine/onecycle end at lr * this


class EarlyStoppingConfig(Section):
    patience: PositiveInt = 5  # epochs without improvement before stopping
    # val_loss (Keras's default) or a statistic the task logs (config.TASK_MONITORS)
    monitor: Literal["val_loss", "val_accuracy", "val_threshold_accuracy", "val_psnr"] = "val_loss"
    min_delta: NonNegativeFloat = 0.0


class EmaConfig(Section):
    """An exponential moving average of the weights, updated after every optimiser step
    (torch's AveragedModel; train/averaging.py); validation, the kept weights and the final
    evaluation use it instead of the raw weights."""

    decay: float = 0.999  # per step: remembers about the last 1 / (1 - decay) = 1,000 steps
    # Ultralytics's warm-up, in optimiser steps: the k-th average uses decay * (1 - exp(-k /
    # warmup)), so early averages follow the weights instead of the random initialisation.
    # 200: a fifth of decay's memory, Ultralytics's ratio (2,000 for 0.9999); 0: decay throughout
    warmup: NonNegativeInt = 200

    @field_validator("decay")
    @classmethod
    def _decay(cls, decay: float) -> float:
        if not 0.0 < decay < 1.0:
            raise refused(
                "must be between 0 and 1 (both excluded), e.g. 0.999: an average over about "
                "the last 1,000 steps",
                decay,
            )
        return decay


class SwaConfig(Section):
    """Stochastic weight averaging: the final weights are the mean of the weights at the end of
    every epoch from start_epoch on, with BatchNorm statistics recomputed for that mean on the
    training images (torch's AveragedModel and update_bn; train/averaging.py)."""

    start_epoch: PositiveInt  # the first epoch averaged, numbered as the epoch lines (from 1)
    # None: the run's schedule goes on; a number: from start_epoch the lr anneals to it (torch's
    # SWALR, cosine) over anneal_epochs and then stays there, the SWA paper's constant tail
    lr: PositiveFloat | None = None
    anneal_epochs: NonNegativeInt = 1  # with lr; 0: switch to lr at once

    @model_validator(mode="after")
    def _anneal_needs_lr(self) -> SwaConfig:
        # a saved config.yaml spells out the default: only a changed one is a mistake
        if self.lr is None and self.anneal_epochs != 1:
            raise refused(
                "anneal_epochs anneals the lr to train.swa.lr, which is not set; set lr or "
                "remove anneal_epochs"
            )
        return self


class TrainConfig(Section):
    epochs: PositiveInt = 30  # S0/S3 used 30; early stopping may end sooner
    # Keras's default. auto: the largest power of two up to the training split and 4096 that
    # trains a few steps in device memory (train/batch_size.py; Keras's 32 on the CPU, which has
    # none to fill); halved when the run runs out of memory later. Saved in the checkpoint and
    # in manifest.json's auto_batch_size.
    batch_size: PositiveInt | Literal["auto"] = 32
    steps_per_epoch: PositiveInt | None = None  # None: one pass over the training split
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)  # softmax heads only
    # Keras's class_weight: each training sample's loss times its class's weight (evaluation
    # losses stay unweighted). balanced: scikit-learn's n_samples / (n_classes * count) on the
    # training split; or {class name: weight}, unnamed classes 1. None: every class 1.
    class_weight: Literal["balanced"] | dict[str, float] | None = None
    early_stopping: EarlyStoppingConfig | None = None  # None: train every epoch
    # The best weights (by early_stopping.monitor, else val_loss) are kept as model.safetensors.
    deterministic: bool = False  # bitwise-equal reruns on the same machine, a little slower
    device: str = "auto"  # auto: cuda when present, else cpu
    # Under torchrun: BatchNorm layers normalise with the statistics of the whole global batch
    # (torch's SyncBatchNorm: one all-reduce per layer and step, CUDA only), not of each
    # process's slice. Off by default, as in PyTorch's DDP: slices of 32+ images give nearly the
    # same statistics. One process: nothing to synchronise, the key does nothing.
    sync_batchnorm: bool = False
    # torch.compile's mode, or off; reduce-overhead adds CUDA graphs (small models on a GPU).
    # On 2 CPU cores S4's model trained slower compiled (BENCHMARKS.md): off by default.
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    ema: EmaConfig | None = None  # None: validate, keep and evaluate the raw weights
    swa: SwaConfig | None = None  # None: no stochastic weight averaging

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weights(cls, value: Any) -> Any:
        """Checked here, not by the union's members, so a mistake gets one message."""
        if value is None or value == "balanced":
            return value
        if not isinstance(value, dict) or not value:
            raise refused("give balanced, or weights by class name, e.g. {cats: 2.0}", value)
        weights = {}
        for name, weight in value.items():
            number = isinstance(weight, int | float) and not isinstance(weight, bool)
            if not number or not 0 <= weight < float("inf"):
                raise refused(f"the weight of class {name} must be a number >= 0", weight)
            weights[str(name)] = float(weight)  # YAML reads class folders 0, 1, ... as numbers
        return weights

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_switch(cls, value: Any) -> Any:
        return {True: "default", False: "off"}[value] if isinstance(value, bool) else value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        return positive_or_auto(value, True, "the largest batch that fits the device")

    @field_validator("swa")
    @classmethod
    def _swa_fits(cls, swa: SwaConfig | None, info: ValidationInfo) -> SwaConfig | None:
        """SWA's weights are the mean of the last epochs: it needs them all, and only one kind
        of average can be the weights kept."""
        if swa is None:
            return swa
        if info.data.get("ema") is not None:
            raise refused(
                "train.ema is set too; they are alternative averages of the weights, remove one"
            )
        if info.data.get("early_stopping") is not None:
            raise refused(
                "averages every epoch from start_epoch to the last, which early stopping would "
                "cut short; remove train.early_stopping"
            )
        epochs = info.data.get("epochs")
        if epochs is not None and swa.start_epoch > epochs:
            raise refused(
                f"start_epoch {swa.start_epoch} is after the last epoch ({epochs}); set "
                f"train.swa.start_epoch to at most {epochs}, e.g. {max(1, epochs * 3 // 4)}"
            )
        return swa
