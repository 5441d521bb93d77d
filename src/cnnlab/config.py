"""The experiment file: typed, validated, frozen sections, each default with its reason.

Keras words outside (target_size, validation_split, rotation_range, ...), so a Keras script's
settings carry over one to one. Loading, `--set` overrides and error messages live in
`config_io.py`.
"""

from __future__ import annotations

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
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0)  # more unreadable files fail the run
    cache_dir: str | None = None  # None: $CNNLAB_CACHE, else ~/.cache/cnnlab
    ram_budget_mb: PositiveInt = 4096  # larger decoded splits are memory-mapped, not loaded

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

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """A preset's keys first, then the file's own keys over them."""
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
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


class OptimizerConfig(Section):
    name: Literal["sgd", "rmsprop", "adam", "adamw"] = "rmsprop"  # S2's best
    lr: PositiveFloat | None = None  # None: Keras's default for the optimiser
    momentum: NonNegativeFloat = 0.0  # SGD; Keras's default
    nesterov: bool = False
    weight_decay: NonNegativeFloat | None = None  # None: Keras's (0.004 for AdamW, else 0)
    decay: NonNegativeFloat = 0.0  # Keras's legacy lr / (1 + decay * step)


class ScheduleConfig(Section):
    """Learning rate over training, on top of the optimiser's lr (and Keras's `decay`)."""

    name: Literal["constant", "cosine", "step", "onecycle"] = "constant"  # Keras's behaviour
    warmup_epochs: NonNegativeFloat = 0.0  # linear ramp from 0; fractions of an epoch allowed
    step_epochs: PositiveInt = 10  # step: multiply by gamma every step_epochs
    gamma: PositiveFloat = 0.1
    min_lr_fraction: NonNegativeFloat = 0.0  # cosine/onecycle end at lr * this


class EarlyStoppingConfig(Section):
    patience: PositiveInt = 5  # epochs without improvement before stopping
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"  # Keras's default
    min_delta: NonNegativeFloat = 0.0


class TrainConfig(Section):
    epochs: PositiveInt = 30  # S0/S3 used 30; early stopping may end sooner
    batch_size: PositiveInt = 32  # Keras's default
    steps_per_epoch: PositiveInt | None = None  # None: one pass over the training split
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)  # softmax heads only
    early_stopping: EarlyStoppingConfig | None = None  # None: train every epoch
    # The best weights (by early_stopping.monitor, else val_loss) are kept as model.safetensors.
    deterministic: bool = False  # bitwise-equal reruns on the same machine, a little slower
    device: str = "auto"  # auto: cuda when present, else cpu
    # torch.compile's mode, or off; reduce-overhead adds CUDA graphs (small models on a GPU).
    # On 2 CPU cores S4's model trained slower compiled (BENCHMARKS.md): off by default.
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_switch(cls, value: Any) -> Any:
        return {True: "default", False: "off"}[value] if isinstance(value, bool) else value


class EvaluateConfig(Section):
    top_k: PositiveInt = 5  # reported when there are more than k classes
    tta: bool = False  # test-time augmentation: average the predictions of image and mirror
    # None: 256 on a GPU (faster, same results); on the CPU the training batch size, as Keras
    # validates: a larger batch is no faster there and holds its activations in host memory.
    batch_size: PositiveInt | None = None
    # false: the test split is held out (split off as usual, never evaluated or predicted): a
    # study's ladder chooses on validation and evaluates test once, for the final choice only
    test: bool = True


class OutputConfig(Section):
    dir: Path = Path("runs")
    name: str | None = None  # None: the experiment file's name


class Experiment(Section):
    """One experiment. With a `classifier` section it is a features run: the network only
    extracts features and no training loop runs, so `train.*` is ignored (except
    train.device, where the features are computed)."""

    seed: NonNegativeInt = 0  # split, shuffling, initialisation and augmentation all follow it
    data: DataConfig
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig | None = None
    classifier: ClassifierConfig | None = None  # None: train the network end to end
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    output: OutputConfig = OutputConfig()

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
