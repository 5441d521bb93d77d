"""An ensemble's members: checked to be comparable, and their probabilities of one split.

Members must give probabilities of the same things: the same class names in the same order,
the same images to evaluate (the val and test rows of their split.csv: path, label, sha256 of
the file), and the same input (shape and decoding), so that one decoded image is every
member's input. The data fingerprint in manifest.json is not what is compared: it covers the
training split too, which members may differ in (trained on other subsets, or other seeds of
a source with val/ and test/ parts). The fingerprint of the evaluated rows is recorded in the
ensemble's manifest.json instead.

A member's probabilities are read from its predictions.csv (no model loaded) when that holds
exactly the split's images, else recomputed by FinishedRun.predict_split. predictions.csv keeps
6 decimals, so read probabilities are within 5e-7 of recomputed ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import fields
from typing import Literal

import numpy as np
import torch

from cnnlab import runfiles
from cnnlab.data.pipeline import Split, load_data
from cnnlab.errors import ConfigError
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.predict import decoding_for

EVALUATED = ("val", "test")  # the splits an ensemble combines (train: members may differ)
Rows = dict[str, set[tuple[str, str, str]]]  # split -> (path, label, sha256) of each image
Source = Literal["read", "recomputed"]


def evaluation_rows(manifest_csv: str) -> Rows:
    """The val and test rows of a split manifest (split.csv's text)."""
    rows: Rows = {name: set() for name in EVALUATED}
    for row in csv.DictReader(io.StringIO(manifest_csv)):
        if row.get("split") in rows:
            rows[row["split"]].add((row["path"], row["label"], row["sha256"]))
    return rows


def rows_of(run: FinishedRun) -> Rows:
    path = run.folder / runfiles.SPLIT
    try:
        return evaluation_rows(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, KeyError) as err:
        raise ConfigError(
            f"ensemble.members: {path} is not a readable split manifest ({err}); an ensemble "
            "compares its members' val and test images by it"
        ) from None


def fingerprint(rows: Rows) -> str:
    """Of the evaluated images: the same for members evaluated on the same files and labels."""
    text = "\n".join(f"{name},{','.join(row)}" for name in EVALUATED for row in sorted(rows[name]))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def check_members(members: Sequence[FinishedRun]) -> Rows:
    """The members' shared val and test rows; a CnnlabError names the first member that
    differs from the first one, and how."""
    first, rows = members[0], rows_of(members[0])
    for member in members[1:]:
        name, first_name = member.folder, first.folder
        if member.classes != first.classes:
            raise ConfigError(
                f"ensemble: {name} has the classes {', '.join(member.classes)}, but {first_name} "
                f"has {', '.join(first.classes)}; members must share class names, in one order"
            )
        if member.input_shape != first.input_shape:
            raise ConfigError(
                f"ensemble: {name} takes {_shape(member)} images, but {first_name} takes "
                f"{_shape(first)}; members must take one input size and colour mode (one "
                "decoded image is every member's input)"
            )
        ours, theirs = decoding_for(member), decoding_for(first)
        other = [f.name for f in fields(ours) if getattr(ours, f.name) != getattr(theirs, f.name)]
        if other:
            key = other[0]
            raise ConfigError(
                f"ensemble: {name} decodes its images with data.{key} "
                f"{getattr(ours, key)!r}, but {first_name} with {getattr(theirs, key)!r}; "
                "members must decode images alike"
            )
        _same_images(member, rows_of(member), first, rows)
    return rows


def _same_images(member: FinishedRun, theirs: Rows, first: FinishedRun, ours: Rows) -> None:
    for split in EVALUATED:
        differ = sorted(theirs[split] ^ ours[split])
        if differ:
            path, label, _ = differ[0]
            raise ConfigError(
                f"ensemble: {member.folder} was evaluated on other {split} images than "
                f"{first.folder} ({len(differ)} rows of their {runfiles.SPLIT} differ, e.g. "
                f"{path} ({label})); members must share their val and test images: the same "
                "source split alike (its val/ and test/ parts, or the same seed and "
                "data.validation_split / data.test_split)"
            )


def _shape(run: FinishedRun) -> str:
    height, width, channels = run.input_shape
    return f"{height}x{width}x{channels}"


def member_probabilities(
    member: FinishedRun, split: Split, device: torch.device, read: bool = True
) -> tuple[np.ndarray, Source]:
    """(N, classes) probabilities of `split`'s images, in its order: from predictions.csv when
    `read` and it holds exactly these images, else recomputed."""
    if read:
        found = _read_predictions(member, split)
        if found is not None:
            return found, "read"
    order = load_data(member.data_config(), member.config.seed).splits[split.name].paths
    position = {path: k for k, path in enumerate(order)}
    probabilities = member.predict_split(split.name, str(device))
    return probabilities[[position[path] for path in split.paths]], "recomputed"


def _read_predictions(member: FinishedRun, split: Split) -> np.ndarray | None:
    rows = {row["path"]: row for row in member.predictions if row.get("split") == split.name}
    count = sum(row.get("split") == split.name for row in member.predictions)
    if count != len(split) or set(rows) != set(split.paths):
        return None  # another run's split, or none (evaluate.test: false): recompute
    columns = [f"p_{name}" for name in member.classes]
    try:
        return np.array([[float(rows[path][c]) for c in columns] for path in split.paths])
    except (KeyError, TypeError, ValueError):
        return None  # a damaged or older file: recompute
