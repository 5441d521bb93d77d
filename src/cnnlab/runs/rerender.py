"""A finished run's report.html written again from its folder (after `cnnlab evaluate` adds an
evaluation): the same page the run wrote, its gallery and augmentation preview included, from
the run's data (a decode-cache hit) and its predictions.csv. Nothing is recomputed by the
network: the interpretation's embedding and Grad-CAM panels are the run's interpretation.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.augment.pipeline import TrainTransform
from cnnlab.data.pipeline import Data, load_data
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.skeleton import Predicted, write_report
from cnnlab.runtime import IMAGE_LAYOUT


def rewrite_report(run: FinishedRun) -> Path:
    cfg = run.config
    if run.kind == "reconstruction":  # its images are in reconstructions.npz
        from cnnlab.report import render_report

        return render_report(run.folder)
    data = load_data(run.data_config(), cfg.seed)
    augment = None
    if run.kind == "trained":
        transform = TrainTransform(
            cfg.augment, run.normalization(), IMAGE_LAYOUT, cfg.seed, torch.device("cpu")
        )
        augment = None if transform.is_identity else transform
    predicted = kept_predictions(run, data)
    return write_report(
        RunFolder(run.folder), data, predicted, augment, cfg.seed, cfg.report.interpret
    )


def kept_predictions(run: FinishedRun, data: Data) -> Predicted:
    """predictions.csv's probabilities, split by split, in the order of `data`'s splits (a split
    the file does not cover whole is left out)."""
    rows: dict[str, dict[str, list[float]]] = {}
    columns = [f"p_{c}" for c in run.classes]
    for row in run.predictions:
        rows.setdefault(row["split"], {})[row["path"]] = [float(row[c]) for c in columns]
    predicted: Predicted = {}
    for name, split in data.splits.items():
        kept = rows.get(name, {})
        if name != "train" and kept and all(path in kept for path in split.paths):
            predicted[name] = (split, np.asarray([kept[path] for path in split.paths]))
    return predicted
