"""`evaluate`, `ensemble`, `report`, `tracking` and `output`: what a run measures, combines,
shows, logs and where it writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveInt,
    field_validator,
)

from cnnlab.config.base import Section, file_name_text, refused


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
            raise refused(f"{hint}(expected true, false, flip or flip_translate)", value)
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
            raise refused(
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
        file_name_text(str(folder))
        return folder

    @field_validator("name")
    @classmethod
    def _one_folder_name(cls, name: str | None) -> str | None:
        # the run folder is output.dir/name: a path would put it elsewhere (../x, /abs) or
        # fail on missing folders between (a/b/c). 240 bytes leave room for a -N suffix.
        if name is None:
            return name
        size = file_name_text(name)
        if name.strip() in ("", ".", "..") or "/" in name or "\\" in name:
            raise refused(
                "must be one folder name (no / or \\, not . or ..), e.g. name: cats-resnet; "
                "output.dir says where it goes",
                name,
            )
        if size > 240:
            raise refused(f"is {size} bytes long; a folder name takes at most 240")
        return name
