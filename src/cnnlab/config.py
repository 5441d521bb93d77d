"""The experiment file: typed, validated, frozen sections, each default with its reason.

Keras words outside (target_size, validation_split, rotation_range, ...), so a Keras script's
settings carry over one to one. Loading, `--set` overrides and error messages live in
`config_io.py`.
"""

from __future__ import annotations

import math
import re
import typing
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from cnnlab.errors import ConfigError
from cnnlab.presets import AUGMENT_PRESETS

MAX_MAGNITUDE = 30  # RandAugment's magnitude scale, 0..30 (torchvision's 31 bins)


def _fraction(value: Any) -> Any:
    """Accept "1/6" as well as 0.1667: S1 splits its data into sixths."""
    if isinstance(value, str) and "/" in value:
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            return value  # pydantic then reports "expected a number"
    return value


SplitFraction = Annotated[float, BeforeValidator(_fraction), Field(ge=0.0, lt=1.0)]


def _refused(problem: str, value: Any = None) -> PydanticCustomError:
    """A check's complaint, rendered by config_io as `dotted.key: VALUE: problem` (the value as
    the file spells it), or `dotted.key: problem` without one."""
    message = problem if value is None else f"{_shown(value)}: {problem}"
    return PydanticCustomError("refused", "{message}", {"message": message})


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(_shown, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class Section(BaseModel):
    # allow_inf_nan: no option means nan or inf (rescale: .nan would make every image nan)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_switch_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1 and false as 0, so `epochs: true` trained one
        # epoch; a number field takes no true or false (a switch, bool or e.g. augmix, does)
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _holds_a_switch(value) and _wants_a_number(field.annotation):
            return _refuse_switch(value)
        return value


def _holds_a_switch(value: Any) -> bool:
    if isinstance(value, list | tuple):  # target_size: [true, 64]
        return any(isinstance(item, bool) for item in value)
    return isinstance(value, bool)


def _wants_a_number(annotation: Any) -> bool:
    """Whether a field's type is made of numbers (through unions, Annotated, tuples) and has no
    place for true or false (bool, a Literal of them, or Any, e.g. a layer's arguments)."""
    leaves = _leaves(annotation)
    if any(leaf is bool or leaf is Any or leaf is True or leaf is False for leaf in leaves):
        return False
    return any(leaf is int or leaf is float for leaf in leaves)


def _leaves(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if origin is Annotated:
        return _leaves(typing.get_args(annotation)[0])
    if origin is None:
        return [annotation]  # a plain type, or a section, which checks its own fields
    return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]


def _refuse_switch(value: Any) -> Any:
    expected = "numbers" if isinstance(value, list | tuple) else "a number"
    raise _refused(f"expected {expected}, got {_shown(value)}")


class DataConfig(Section):
    # A folder of class sub-folders, a .zip of one, a folder with train/val/test parts (folders
    # or zips), a folder of MNIST IDX files, or "digits" (scikit-learn's, needs no files).
    source: str
    label_pattern: str | None = None  # regex on the file name; group 1 (or `label`) is the class
    labels_csv: str | None = None  # CSV with `path,label` (optional `split`), paths within source
    target_size: tuple[PositiveInt, PositiveInt] | None = None  # (height, width); None: native
    color_mode: Literal["grayscale", "rgb"] = "rgb"  # Keras's default
    resize: Literal["stretch", "pad", "crop"] = "stretch"  # stretch is Keras's behaviour
    # Keras's flow_from_directory uses "nearest"; bilinear (image_dataset_from_directory's
    # default) loses less detail when shrinking photos.
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] = (
        "bilinear"
    )
    background: tuple[int, int, int] = (255, 255, 255)  # alpha is composited onto white
    max_pixels: PositiveInt = 89_478_485  # Pillow's decompression-bomb limit
    # None: use a val/ (validation/) part when the source has one, else hold out 20 % (S0).
    validation_split: SplitFraction | None = None
    # None: use a test/ part when the source has one, else no test split.
    test_split: SplitFraction | None = None
    # K-fold cross-validation (`cnnlab kfold`): the training pool (train and val parts) in
    # `folds` stratified folds, the same for every fold's run of one seed; fold `fold` is the
    # validation split. None: no folds.
    folds: Annotated[int, Field(ge=2)] | None = None
    fold: NonNegativeInt = 0
    # At most this many images per class in each part of the source (train/, val/, test/), the
    # same ones for every seed (chosen by a hash of their paths): a quick run on a CPU, a study's
    # subset. None: every image.
    max_per_class: PositiveInt | None = None
    # task: reconstruction with paired images: a folder or .zip holding each source image's
    # target under the same relative path, read at the same size and colour mode. None: the
    # target is the image itself.
    targets: str | None = None
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0)  # more unreadable files fail the run
    cache_dir: str | None = None  # None: $CNNLAB_CACHE, else ~/.cache/cnnlab
    ram_budget_mb: PositiveInt = 4096  # larger decoded splits are memory-mapped, not loaded
    # Training batches: shuffle (a seeded permutation per epoch, Keras's shuffle=True) or
    # balanced (drawn with replacement, each class equally often; epoch length unchanged).
    sampler: Literal["shuffle", "balanced"] = "shuffle"

    @field_validator("source", "targets")
    @classmethod
    def _names_a_place(cls, source: str | None) -> str | None:
        # An empty path is the working directory to pathlib: it would scan whatever is there.
        if source is not None and not source.strip():
            raise _refused(
                "is empty; give a folder of class folders, a .zip, an IDX folder or 'digits'",
                source,
            )
        return source

    @field_validator("label_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        import re

        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"not a valid regular expression ({err})") from None
        return pattern

    @field_validator("background")
    @classmethod
    def _rgb(cls, colour: tuple[int, int, int]) -> tuple[int, int, int]:
        if not all(0 <= c <= 255 for c in colour):
            raise ValueError("expected three values in 0..255, e.g. [255, 255, 255]")
        return colour

    @model_validator(mode="after")
    def _target_size_fits(self) -> DataConfig:
        if self.target_size is not None:
            height, width = self.target_size
            if height * width > self.max_pixels:
                raise _refused(
                    f"target_size: {height}x{width} is {height * width:,} pixels an image, "
                    f"more than data.max_pixels ({self.max_pixels:,}, Pillow's decompression-bomb "
                    "limit); give a smaller size, e.g. [224, 224]"
                )
        return self

    @model_validator(mode="after")
    def _one_labelling(self) -> DataConfig:
        if self.label_pattern and self.labels_csv:
            raise ValueError("set either label_pattern or labels_csv, not both")
        if self.folds is not None:
            if self.fold >= self.folds:
                raise ValueError(
                    f"data.fold: {self.fold}, but folds are numbered 0 to {self.folds - 1}"
                )
            if self.validation_split is not None:
                raise ValueError(
                    "data.validation_split: with data.folds, the validation split is fold "
                    "data.fold of the training pool; remove data.validation_split"
                )
        elif self.fold:
            raise ValueError("data.fold: needs data.folds (the number of folds), e.g. 5")
        held_out = (self.validation_split or 0.0) + (self.test_split or 0.0)
        if held_out >= 1.0:
            raise ValueError(
                f"validation_split + test_split = {held_out:g} leaves nothing to train on; "
                "keep their sum below 1"
            )
        return self


class AugMixConfig(Section):
    """AugMix (Hendrycks et al. 2020) as torchvision's AugMix, each image its own draws."""

    severity: int = Field(default=3, ge=1, le=10)  # magnitudes from bins 0..severity-1 of 10
    width: PositiveInt = 3  # augmentation chains mixed (torchvision's mixture_width)
    depth: int = -1  # ops per chain; -1: 1 to 3, drawn per image and chain (the paper's)
    alpha: PositiveFloat = 1.0  # Dirichlet weights of the chains, Beta weight of the image
    # torchvision's default; false: the paper's set, without brightness, color, contrast and
    # sharpness (they overlap ImageNet-C's corruptions, which AugMix is tested on)
    all_ops: bool = True

    @field_validator("depth")
    @classmethod
    def _depth(cls, depth: int) -> int:
        if depth == 0 or depth < -1:
            raise _refused("give -1 (1 to 3 at random) or the ops per chain, e.g. 3", depth)
        return depth


class AugmentConfig(Section):
    """Keras ImageDataGenerator's parameters, same names and meanings, plus modern ones.

    Random operations apply to training batches only; evaluation and prediction see only the
    deterministic part (rescale and normalisation).
    """

    preset: str | None = None  # a registered preset (s0, s1, s2); keys below override it
    rotation_range: NonNegativeFloat = 0.0  # degrees
    # A fraction of the size, or pixels when >= 1 (an integer draws whole pixels, as Keras).
    width_shift_range: NonNegativeInt | NonNegativeFloat = 0.0
    height_shift_range: NonNegativeInt | NonNegativeFloat = 0.0
    shear_range: NonNegativeFloat = 0.0  # degrees, as Keras
    zoom_range: NonNegativeFloat | tuple[PositiveFloat, PositiveFloat] = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: Literal["constant", "nearest", "reflect", "wrap"] = "nearest"  # Keras's default
    cval: float = 0.0
    brightness_range: tuple[NonNegativeFloat, NonNegativeFloat] | None = None
    channel_shift_range: NonNegativeFloat = 0.0
    rescale: float | None = None  # Keras scripts use 1/255; None: the model's own scaling
    featurewise_center: bool = False  # statistics from the training split only
    featurewise_std_normalization: bool = False
    samplewise_center: bool = False
    samplewise_std_normalization: bool = False
    # Modern operations, after rescale, on values in 0..1.
    random_resized_crop: tuple[PositiveFloat, PositiveFloat] | None = None  # scale, e.g. [0.08, 1]
    randaugment: tuple[PositiveInt, NonNegativeInt] | None = None  # [ops, magnitude 0..30]
    trivialaugment: bool = False
    color_jitter: (
        tuple[NonNegativeFloat, NonNegativeFloat, NonNegativeFloat, NonNegativeFloat] | None
    ) = None  # brightness, contrast, saturation, hue
    random_erasing: float = Field(default=0.0, ge=0.0, le=1.0)  # probability per image
    mixup_alpha: NonNegativeFloat = 0.0  # Beta(alpha, alpha) mixing weight; 0 = off
    cutmix_alpha: NonNegativeFloat = 0.0  # with mixup too, each batch picks one of them
    # AutoAugment's learned policy (torchvision's tables): one of its 25 op pairs per image
    autoaugment: Literal["imagenet", "cifar10", "svhn"] | None = None
    augmix: AugMixConfig | None = None  # true: torchvision's defaults (those of the paper)
    # airbench's flip: a coin per image at the start (the seed's), then its mirror image every
    # other epoch, so any two epochs in a row show every image both ways; instead of
    # horizontal_flip's fresh coin per image and epoch
    alternating_flip: bool = False

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """A preset's keys first, then the file's own keys over them."""
        if not isinstance(data, dict) or not isinstance(data.get("preset"), str):
            return data  # absent, or not a name: the field's own check says so
        try:
            name = AUGMENT_PRESETS.resolve(data["preset"])
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return {**AUGMENT_PRESETS.get(name), **data, "preset": name}

    @field_validator("rescale", mode="before")
    @classmethod
    def _rescale_fraction(cls, value: Any) -> Any:
        return _fraction(value)

    @field_validator("random_resized_crop")
    @classmethod
    def _crop_scale(cls, scale: tuple[float, float] | None) -> tuple[float, float] | None:
        if scale is not None:
            low, high = scale
            if low > high:
                raise _refused("low must not exceed high, e.g. [0.08, 1.0]", scale)
            if high > 1:
                raise _refused("high must be at most 1 (the whole image), e.g. [0.08, 1.0]", scale)
        return scale

    @field_validator("randaugment")
    @classmethod
    def _magnitude(cls, policy: tuple[int, int] | None) -> tuple[int, int] | None:
        if policy is not None and policy[1] > MAX_MAGNITUDE:
            raise _refused(
                f"the magnitude (second value) runs from 0 to {MAX_MAGNITUDE}, e.g. [2, 9]", policy
            )
        return policy

    @field_validator("trivialaugment")
    @classmethod
    def _one_policy(cls, on: bool, info: ValidationInfo) -> bool:
        if on and info.data.get("randaugment") is not None:
            raise _refused("randaugment is set too; they are alternatives, remove one of them")
        return on

    @field_validator("augmix", mode="before")
    @classmethod
    def _augmix_switch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {} if value else None  # augmix: true, with the defaults
        return value

    @field_validator("alternating_flip")
    @classmethod
    def _one_flip(cls, on: bool, info: ValidationInfo) -> bool:
        if on and info.data.get("horizontal_flip"):
            raise _refused(
                "horizontal_flip is set too (maybe by the preset); alternating_flip replaces its "
                "random flip: set horizontal_flip: false"
            )
        return on

    @field_validator("autoaugment", "augmix")
    @classmethod
    def _alone(cls, policy: Any, info: ValidationInfo) -> Any:
        # each is a whole per-image policy: chaining two applies twice the distortion
        if policy is not None:
            for other in ("randaugment", "trivialaugment", "autoaugment"):
                if other != info.field_name and info.data.get(other) not in (None, False):
                    raise _refused(f"{other} is set too; they are alternatives, remove one of them")
        return policy

    @field_validator("color_jitter")
    @classmethod
    def _hue(
        cls, jitter: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if jitter is not None and jitter[3] > 0.5:
            raise _refused(
                "hue (the fourth value) must be at most 0.5, e.g. [0.4, 0.4, 0.4, 0.1]", jitter
            )
        return jitter


class StageConfig(Section):
    """One fine-tuning stage: what trains, how fast, for how long."""

    epochs: PositiveInt
    # Backbone blocks that train, counted from the output end: 0 trains the head alone
    # (stage 1), 1 also the last block (S2's block5), "all" everything.
    unfreeze: NonNegativeInt | Literal["all"] = 0
    lr: PositiveFloat | None = None  # the head's; None: train.optimizer.lr
    backbone_lr: PositiveFloat | None = None  # the top unfrozen block's; None: lr
    layer_decay: float = Field(default=1.0, gt=0.0, le=1.0)  # each lower block: lr times this again
    # BatchNorm statistics of unfrozen blocks: frozen (Keras's fine-tuning advice for small
    # data) or train; frozen blocks' statistics never change.
    batchnorm: Literal["frozen", "train"] = "frozen"


class WhitenConfig(Section):
    """The first Conv2D's kernels from the eigenvectors of the covariance of its patches (C x kh
    x kw values) of training images, each scaled by 1/sqrt(eigenvalue + eps): outputs with
    unit, uncorrelated variances. Its filters are those vectors (C x kh x kw of them) or, as
    airbench's 2x2 conv with 24 filters, the vectors and their negatives (twice as many)."""

    images: PositiveInt = 5000  # airbench's; drawn by the seed from the training split
    eps: PositiveFloat = 5e-4  # airbench's; keeps near-constant directions from exploding
    trainable: bool = False  # airbench freezes the kernels (the bias trains)


class ModelConfig(Section):
    name: str | None = None  # a registered architecture, e.g. carlosnet
    layers: list[dict[str, Any] | str] | None = None  # or a Keras-style layer list
    # or a pretrained convolutional base (vgg16, resnet50, efficientnet_lite0, timm/NAME) ...
    backbone: str | None = None
    # ... with weights from a file (.safetensors/.pth), a local source (efficientnet-lite0),
    # weights the libraries download into their caches (imagenet, timm:TAG, torchvision:NAME,
    # hf-hub:ORG/NAME; models/hub.py) or none (random); unset: the backbone's local source,
    # if it has one (never a download).
    weights: str | None = None
    # ... and a Keras-style head on its feature map; None: GlobalAveragePooling2D + Dense softmax
    head: list[dict[str, Any] | str] | None = None
    stages: list[StageConfig] | None = None  # None: one stage, everything trains
    mean: tuple[float, float, float] | None = None  # None: the weights' own (0..1 images)
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = None
    # or a finished run's folder: its network up to the last layer, as a features run's
    # extractor (with a classifier: section), with the run's input size and normalisation
    from_run: str | None = None
    # airbench's first layer: the first Conv2D's kernels set, at the start of a run, to whiten
    # its patches of training images (models/whiten.py). true: airbench's settings below.
    whiten_first_conv: WhitenConfig | None = None

    @field_validator("whiten_first_conv", mode="before")
    @classmethod
    def _whiten_switch(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {} if value else None
        return value

    @field_validator("whiten_first_conv")
    @classmethod
    def _whitens_own_conv(cls, whiten: WhitenConfig | None, info: ValidationInfo) -> Any:
        if whiten is not None and (info.data.get("backbone") or info.data.get("from_run")):
            raise _refused(
                "sets the first Conv2D of model.name or model.layers; a backbone's has its "
                "pretrained weights: remove it"
            )
        return whiten

    @model_validator(mode="after")
    def _one_of(self) -> ModelConfig:
        keys = ("name", "layers", "backbone", "from_run")
        chosen = [key for key in keys if getattr(self, key) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of model.name, model.layers, model.backbone or model.from_run"
            )
        if self.backbone is None:
            extra = [k for k in ("weights", "head", "stages", "mean", "std") if getattr(self, k)]
            if extra:
                raise ValueError(f"model.{extra[0]} needs model.backbone")
        if self.stages is not None and not self.stages:
            raise ValueError("model.stages: give at least one stage, or leave it out")
        return self


class ClassifierConfig(Section):
    """S2's hybrid CNN: a scikit-learn classifier on standardised features of the network
    (model.backbone or model.from_run), each image pooled to one vector."""

    # svm: RBF kernel (S2's); linear_svm: LinearSVC, for many images; logistic: multinomial;
    # knn: k nearest. The SVMs' probabilities come from Platt scaling (cross-validated).
    name: Literal["logistic", "linear_svm", "svm", "knn"] = "svm"
    C: PositiveFloat = 1.0  # scikit-learn's default; smaller regularises more
    gamma: Literal["scale", "auto"] | PositiveFloat = "scale"  # svm; scikit-learn's default
    k: PositiveInt = 5  # knn's voting neighbours; scikit-learn's default
    # logistic, linear_svm: solver steps; scikit-learn's 100 (logistic) stops short on
    # thousands of standardised features
    max_iter: PositiveInt = 1000
    # avg: GlobalAveragePooling2D (C values); flatten: Keras's Flatten (S2's 4x4x512 VGG16 map)
    pool: Literal["avg", "flatten"] = "avg"

    @model_validator(mode="after")
    def _knobs_it_uses(self) -> ClassifierConfig:
        uses = {"logistic": "C max_iter", "linear_svm": "C max_iter", "svm": "C gamma", "knn": "k"}
        for knob in sorted(self.model_fields_set - {"name", "pool"}):
            # a saved config.yaml spells out every default: only a changed knob is a mistake
            unchanged = getattr(self, knob) == type(self).model_fields[knob].default
            if knob not in uses[self.name].split() and not unchanged:
                its = uses[self.name].replace(" ", ", ")
                raise ValueError(f"{self.name} uses {its}, not {knob}; remove classifier.{knob}")
        return self


def _positive_or_auto(value: Any, whole: bool, auto_means: str) -> Any:
    """`auto`, or a finite number above 0 (a whole one when `whole`); the refusal says what the
    plain number field said, and what auto would do instead."""
    if value is None or value == "auto":
        return value
    expected, or_auto = ("a whole number" if whole else "a number"), f" (or auto: {auto_means})"
    try:  # float(): YAML reads 1e-3 as text; true is no number
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or (whole and math.isfinite(number) and not number.is_integer()):
        raise _refused(f"expected {expected}, got {_shown(value)}{or_auto}")
    if not (0 < number < math.inf):
        finite = " and finite" if number == math.inf else ""
        raise _refused(f"must be greater than 0{finite}, got {_shown(value)}{or_auto}")
    return int(number) if whole else number


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
        raise _refused(
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
            raise _refused("give at least one selector, e.g. [batchnorm]")
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
        return _positive_or_auto(value, False, "the learning-rate finder's suggestion")

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
            raise _refused(f"Nesterov momentum needs SGD with momentum > 0; {fix}")
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
            raise _refused(
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
            raise _refused(
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
            raise _refused("give balanced, or weights by class name, e.g. {cats: 2.0}", value)
        weights = {}
        for name, weight in value.items():
            number = isinstance(weight, int | float) and not isinstance(weight, bool)
            if not number or not 0 <= weight < float("inf"):
                raise _refused(f"the weight of class {name} must be a number >= 0", weight)
            weights[str(name)] = float(weight)  # YAML reads class folders 0, 1, ... as numbers
        return weights

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_switch(cls, value: Any) -> Any:
        return {True: "default", False: "off"}[value] if isinstance(value, bool) else value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        return _positive_or_auto(value, True, "the largest batch that fits the device")

    @field_validator("swa")
    @classmethod
    def _swa_fits(cls, swa: SwaConfig | None, info: ValidationInfo) -> SwaConfig | None:
        """SWA's weights are the mean of the last epochs: it needs them all, and only one kind
        of average can be the weights kept."""
        if swa is None:
            return swa
        if info.data.get("ema") is not None:
            raise _refused(
                "train.ema is set too; they are alternative averages of the weights, remove one"
            )
        if info.data.get("early_stopping") is not None:
            raise _refused(
                "averages every epoch from start_epoch to the last, which early stopping would "
                "cut short; remove train.early_stopping"
            )
        epochs = info.data.get("epochs")
        if epochs is not None and swa.start_epoch > epochs:
            raise _refused(
                f"start_epoch {swa.start_epoch} is after the last epoch ({epochs}); set "
                f"train.swa.start_epoch to at most {epochs}, e.g. {max(1, epochs * 3 // 4)}"
            )
        return swa


class EvaluateConfig(Section):
    top_k: PositiveInt = 5  # reported when there are more than k classes
    # Test-time augmentation. true (or flip): the mean of the predictions of each image and its
    # mirror image; flip_translate: airbench's, with both also shifted 1 pixel up-left and
    # down-right (reflected edges), task/inference.py's weights
    tta: bool | Literal["flip_translate"] = False
    # None: 256 on a GPU (faster, same results); on the CPU the training batch size, as Keras
    # validates: a larger batch is no faster there and holds its activations in host memory.
    batch_size: PositiveInt | None = None
    # false: the test split is held out (split off as usual, never evaluated or predicted): a
    # study's ladder chooses on validation and evaluates test once, for the final choice only
    test: bool = True

    @field_validator("tta", mode="before")
    @classmethod
    def _tta_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("flip", "flip_translate"):
            import difflib

            close = difflib.get_close_matches(value, ["flip", "flip_translate"], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _refused(f"{hint}(expected true, false, flip or flip_translate)", value)
        return True if value == "flip" else value


class EnsembleConfig(Section):
    """Finished runs combined into one (`cnnlab ensemble`): no network of its own, the members'
    probabilities of the same images combined (cnnlab.runs.ensemble)."""

    members: list[Path] = Field(min_length=2)  # the runs' folders, absolute (cnnlab ensemble's)
    # mean: average probability; vote: the majority of predicted classes; stack: logistic
    # regression on the members' validation probabilities
    method: Literal["mean", "vote", "stack"] = "mean"

    @field_validator("members")
    @classmethod
    def _distinct(cls, members: list[Path]) -> list[Path]:
        repeated = sorted({str(m) for m in members if members.count(m) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]} is given twice; name each run once")
        return members


class ReportConfig(Section):
    # The report's interpretation: the misclassified gallery sorted by loss, the most confused
    # class pairs, Grad-CAM panels and an embedding of the penultimate features (a few seconds
    # at the end of a run, runs/interpretation.py); false: the gallery in file order, no more
    interpret: bool = True


class MlflowConfig(Section):
    """tracking.mlflow: the run also logged to MLflow (cnnlab.track; the `track` extra)."""

    # None: a SQLite file beside the run folders, sqlite:///<output.dir>/mlflow.db, which needs
    # no server (`mlflow ui --backend-store-uri` shows it); http(s)://HOST:PORT for a shared
    # tracking server, or any store URL MLflow takes (postgresql://...)
    uri: str | None = None
    # the MLflow experiment the run joins (made when missing); None: "cnnlab" for a run, the
    # study's name for a study, whose cells' runs are nested under one parent run
    experiment: str | None = Field(default=None, min_length=1, max_length=500)

    @field_validator("uri")
    @classmethod
    def _a_uri(cls, uri: str | None) -> str | None:
        # a bare path would be read by MLflow as a folder store in the working directory
        if uri is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri.strip()):
            raise _refused(
                "is not a tracking URI; give sqlite:///PATH/mlflow.db for a file, "
                "http://HOST:5000 for an MLflow server, or leave uri out for "
                "sqlite:///<output.dir>/mlflow.db",
                uri,
            )
        return uri


class TrackingConfig(Section):
    """Where a run is logged besides its folder: one tracker, MLflow."""

    mlflow: MlflowConfig

    @field_validator("mlflow", mode="before")
    @classmethod
    def _given_empty(cls, value: Any) -> Any:
        # `mlflow:` with nothing under it is YAML's null: the user named the tracker, so it is
        # the one with every default (its dump, {uri: null, ...}, reads back the same)
        return {} if value is None else value


class OutputConfig(Section):
    dir: Path = Path("runs")
    name: str | None = None  # None: the experiment file's name

    @field_validator("dir")
    @classmethod
    def _a_path(cls, folder: Path) -> Path:
        _file_name_text(str(folder))
        return folder

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, name: str | None) -> str | None:
        # the run folder is output.dir/name: a path would put it elsewhere (../x, /abs) or
        # fail on missing folders between (a/b/c). 240 bytes leave room for a -N suffix.
        if name is None:
            return name
        size = _file_name_text(name)
        if name.strip() in ("", ".", "..") or "/" in name or "\\" in name:
            raise _refused(
                "must be one folder name (no / or \\, not . or ..), e.g. name: cats-resnet; "
                "output.dir says where it goes",
                name,
            )
        if size > 240:
            raise _refused(f"is {size} bytes long; a folder name takes at most 240")
        return name


def _file_name_text(text: str) -> int:
    """The length in bytes of `text` as a file name; refused when no file system takes it."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" in a quoted YAML string
        raise _refused("holds a character no file name can hold (not UTF-8)", text) from None
    if "\0" in text:
        raise _refused("holds a NUL character, which no file name can hold", text)
    return size


class ResizeStep(Section):
    size: tuple[PositiveInt, PositiveInt]  # (height, width) of the degraded image
    # skimage: skimage.transform.resize's defaults (a Gaussian of sigma (factor - 1) / 2 before
    # shrinking, then bilinear), S4's 7x7 copies; the others are torch's interpolate modes
    interpolation: Literal["skimage", "bilinear", "nearest", "area", "bicubic"] = "skimage"


class InvertStep(Section):
    p: float = Field(ge=0.0, le=1.0)  # each pixel becomes |x - 1| with this probability (S4: 0.1)


class NoiseStep(Section):
    std: PositiveFloat  # of additive Gaussian noise on 0..1 pixels, clipped back to 0..1


class BlurStep(Section):
    sigma: PositiveFloat  # Gaussian blur, in pixels


class MaskStep(Section):
    patches: PositiveInt = 1  # square patches per image, placed at random
    size: PositiveInt = 8  # their side in pixels
    value: float = Field(0.0, ge=0.0, le=1.0)  # what the masked pixels become


class DegradeStep(Section):
    """One step of reconstruction.degrade, written as a one-key map: `- invert: {p: 0.1}`."""

    resize: ResizeStep | None = None
    invert: InvertStep | None = None
    gaussian_noise: NoiseStep | None = None
    blur: BlurStep | None = None
    mask: MaskStep | None = None

    @model_validator(mode="after")
    def _one_operation(self) -> DegradeStep:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(type(self).model_fields)
            raise ValueError(f"each step is one of {names}, e.g. `- invert: {{p: 0.1}}`")
        return self

    @property
    def operation(self) -> tuple[str, Section]:
        name = next(n for n in type(self).model_fields if getattr(self, n) is not None)
        return name, getattr(self, name)


class ReconstructionConfig(Section):
    """task: reconstruction: the target is the image itself (or data.targets' image of the same
    path) and the input is the target after `degrade`, in order; augment/degrade.py."""

    degrade: list[DegradeStep] = []
    # binary_crossentropy (S4's) needs a final sigmoid; mse and l1 compare the outputs as given
    loss: Literal["binary_crossentropy", "mse", "l1"] = "binary_crossentropy"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # threshold_accuracy binarises both at it
    # a finished classification run whose accuracy on the reconstructions is reported
    reference_run: str | None = None
    shown: PositiveInt = 8  # fixed test images in the report's input / output / target grid


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
