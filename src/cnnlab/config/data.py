"""`data`: where the images are, how they are read, split and sized."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

from cnnlab.config.base import Section, SplitFraction, refused


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
            raise refused(
                "is empty; give a folder of class folders, a .zip, an IDX folder or 'digits'",
                source,
            )
        return source

    @field_validator("label_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:

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
                raise refused(
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
