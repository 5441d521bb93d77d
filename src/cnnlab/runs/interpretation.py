"""What the report shows of how a run decides (report.interpret, on by default), from its
evaluated split (test, else val) at the end of the run:

- the misclassified gallery, every mistake counted, the highest loss (the most confident
  mistakes) first (runs/gallery.py, for skeleton.write_report);
- an embedding of the penultimate features (the classifier head's input) in 2-D: PCA, t-SNE
  and UMAP when installed, of at most EMBEDDED_MAX images (`interpret_trained`,
  `interpret_features`);
- Grad-CAM panels of a few right and a few wrong images (trained runs: interpretation_cam.py).

What needs the network is written to interpretation.json, so the page can be written again
without it (runs/rerender.py, after `cnnlab evaluate`); the most confused class pairs need only
metrics.json and are the report's own (report/interpretation.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from cnnlab import runfiles
from cnnlab.data.pipeline import Split
from cnnlab.evaluate.embedding import embed, sample
from cnnlab.evaluate.features import extract_features
from cnnlab.runs.gallery import shown_split
from cnnlab.runs.interpretation_cam import cam_record
from cnnlab.runs.skeleton import Predicted, Started, image_batches
from cnnlab.train.loop import Trainee

# t-SNE on one core: 1-2.5 s for 500 points, twice that and more for 1,000 (evaluate/
# embedding.py); beyond, a seeded random sample, the same for every method
EMBEDDED_MAX = 500
COORDINATE_DIGITS = 4  # of coordinates scaled to [-1, 1]: finer than a pixel of the figure


def interpret_trained(run: Started, trainee: Trainee, predicted: Predicted) -> None:
    """interpretation.json of a trained run: its network's penultimate features embedded, and
    Grad-CAM panels."""
    name = shown_split(predicted)
    if not run.cfg.report.interpret or name is None:
        return
    clock = time.perf_counter()
    split, probabilities = predicted[name]
    index = sample(len(split), EMBEDDED_MAX, run.cfg.seed)
    below, layer = below_head(trainee.model)
    record: dict[str, Any] = {"split": name, "classes": split.classes}
    if below is None:
        record["embedding"] = {"skipped": "the network has a single layer: no features below it"}
    else:
        batches = image_batches(np.asarray(split.images[index]), run.cfg, run.device)
        features = extract_features(below, batches, trainee.preprocess)
        described = f"the output of {layer}, the classifier head's input"
        record["embedding"] = embedding_record(
            features, split, probabilities, index, described, run.cfg.seed
        )
    record["cam"] = cam_record(trainee, split, probabilities, run.device)
    _write(run, record, clock)


def interpret_features(
    run: Started, features: dict[str, np.ndarray], predicted: Predicted, described: str
) -> None:
    """interpretation.json of a features run: the classifier's input features embedded; no
    Grad-CAM (no network was trained: the heat would be the extractor's, not the decision's)."""
    name = shown_split(predicted)
    if not run.cfg.report.interpret or name is None or name not in features:
        return
    clock = time.perf_counter()
    split, probabilities = predicted[name]
    index = sample(len(split), EMBEDDED_MAX, run.cfg.seed)
    record: dict[str, Any] = {"split": name, "classes": split.classes}
    record["embedding"] = embedding_record(
        features[name][index], split, probabilities, index, described, run.cfg.seed
    )
    record["cam"] = {"skipped": "a features run trains no network, so there is no Grad-CAM"}
    _write(run, record, clock)


def below_head(model: torch.nn.Module) -> tuple[torch.nn.Module | None, str]:
    """A layer-list model (KerasModel, TransferModel: nn.Sequential, the head's Dense last) up
    to its last layer, and the name of the layer before it. The layers are called in order, not
    through the model, so a compiled model (train.compile) gives the same features."""
    layers = list(model.named_children())
    if len(layers) < 2:
        return None, ""
    below = torch.nn.Sequential(OrderedDict(layers[:-1]))
    # only the flag: extract_features puts it back after eval(), and must not set the run's
    # layers to training mode (a new module starts with training=True)
    below.training = model.training
    return below, layers[-2][0]


def embedding_record(
    features: np.ndarray,
    split: Split,
    probabilities: np.ndarray,
    index: np.ndarray,
    described: str,
    seed: int,
) -> dict[str, Any]:
    """The embedding's part of interpretation.json: which images (`index` into `split`), their
    true and predicted classes, and each method's coordinates."""
    coordinates, skipped = embed(features, seed)
    return {
        "features": described,
        "seed": seed,
        "dimension": int(np.prod(features.shape[1:])) if features.ndim > 1 else 0,
        "images": len(split),
        "index": index.tolist(),
        "label": split.labels[index].tolist(),
        "predicted": probabilities[index].argmax(1).tolist(),
        "coordinates": {method: _scaled(xy) for method, xy in coordinates.items()},
        "skipped": skipped,
    }


def _scaled(xy: np.ndarray) -> list[list[float]]:
    """Coordinates centred and scaled to [-1, 1]: an embedding's units mean nothing (t-SNE,
    UMAP) or little (PCA), and short numbers keep the file small."""
    centred = xy - xy.mean(axis=0)
    scale = float(np.abs(centred).max()) or 1.0
    return np.round(centred / scale, COORDINATE_DIGITS).tolist()


def _write(run: Started, record: dict[str, Any], clock: float) -> None:
    seconds = time.perf_counter() - clock
    record["seconds"] = round(seconds, 2)
    run.folder.write_json(runfiles.INTERPRETATION, record)
    run.timings["interpret_s"] = seconds
