"""`augment`: Keras's ImageDataGenerator keys, the presets, the modern operations and the
normalisation."""

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

from cnnlab.config.base import Section, fraction, refused
from cnnlab.errors import ConfigError
from cnnlab.presets import AUGMENT_PRESETS

MAX_MAGNITUDE = 30  # RandAugment's magnitude scale, 0..30 (torchvision's 31 bins)


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
            raise refused("give -1 (1 to 3 at random) or the ops per chain, e.g. 3", depth)
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
        return fraction(value)

    @field_validator("random_resized_crop")
    @classmethod
    def _crop_scale(cls, scale: tuple[float, float] | None) -> tuple[float, float] | None:
        if scale is not None:
            low, high = scale
            if low > high:
                raise refused("low must not exceed high, e.g. [0.08, 1.0]", scale)
            if high > 1:
                raise refused("high must be at most 1 (the whole image), e.g. [0.08, 1.0]", scale)
        return scale

    @field_validator("randaugment")
    @classmethod
    def _magnitude(cls, policy: tuple[int, int] | None) -> tuple[int, int] | None:
        if policy is not None and policy[1] > MAX_MAGNITUDE:
            raise refused(
                f"the magnitude (second value) runs from 0 to {MAX_MAGNITUDE}, e.g. [2, 9]", policy
            )
        return policy

    @field_validator("trivialaugment")
    @classmethod
    def _one_policy(cls, on: bool, info: ValidationInfo) -> bool:
        if on and info.data.get("randaugment") is not None:
            raise refused("randaugment is set too; they are alternatives, remove one of them")
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
            raise refused(
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
                    raise refused(f"{other} is set too; they are alternatives, remove one of them")
        return policy

    @field_validator("color_jitter")
    @classmethod
    def _hue(
        cls, jitter: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if jitter is not None and jitter[3] > 0.5:
            raise refused(
                "hue (the fourth value) must be at most 0.5, e.g. [0.4, 0.4, 0.4, 0.1]", jitter
            )
        return jitter
