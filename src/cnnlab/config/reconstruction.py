"""`reconstruction`: the degradation steps of an image-to-image run (S4)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from cnnlab.config.base import Section


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
