"""The report's Grad-CAM panels: a few right answers (the most confident, one class after
another) and a few mistakes (the highest loss first) of the evaluated split, each with the heat
of the class the network predicted overlaid (cnnlab.explain.cam), as small PNG tiles for
interpretation.json. A network with no image-shaped layer (a Flatten first) has none, and says
so; a compiled one (train.compile) runs eagerly here, since hooks added to a compiled module
never fire (the CAM's are)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

from cnnlab.data.pipeline import Split
from cnnlab.errors import ConfigError
from cnnlab.runs.gallery import top_losses
from cnnlab.train.loop import Trainee

CAM_RIGHT = CAM_WRONG = 4  # tiles of each; a row of the page's grid
CAM_METHOD = "gradcam"


def cam_record(
    trainee: Trainee, split: Split, probabilities: np.ndarray, device: torch.device
) -> dict[str, Any]:
    """interpretation.json's "cam": the method, and a tile per chosen image."""
    from cnnlab.explain import class_activation_maps, overlay, target_layer
    from cnnlab.report.figures import image_tile  # matplotlib: only once the run is over

    wrong, _ = top_losses(split.labels, probabilities)
    chosen = np.concatenate([confident_right(split.labels, probabilities), wrong[:CAM_WRONG]])
    if len(chosen) == 0:
        return {"skipped": f"the {split.name} split has no images"}
    images = np.asarray(split.images[chosen])
    predicted = probabilities[chosen].argmax(1)
    inputs = trainee.preprocess(torch.from_numpy(images).to(device))
    height, width, channels = inputs.shape[2], inputs.shape[3], inputs.shape[1]
    try:
        with torch.compiler.set_stance("force_eager"):
            layer = target_layer(trainee.model, (height, width, channels))
            heat = class_activation_maps(
                trainee.model, inputs, targets=predicted.tolist(), method=CAM_METHOD
            )
    except ConfigError as error:  # e.g. no layer with an image-shaped output to explain
        return {"skipped": str(error)}
    overlaid = overlay(images, heat)
    tiles = [
        {
            "png": base64.b64encode(image_tile(tile)).decode("ascii"),
            "path": split.paths[i],
            "true": split.classes[split.labels[i]],
            "predicted": split.classes[guess],
            "probability": round(float(probabilities[i, guess]), 4),
            "correct": bool(guess == split.labels[i]),
        }
        for tile, i, guess in zip(overlaid, chosen, predicted, strict=True)
    ]
    return {"method": "Grad-CAM", "layer": layer, "tiles": tiles}


def confident_right(
    labels: np.ndarray, probabilities: np.ndarray, limit: int = CAM_RIGHT
) -> np.ndarray:
    """Up to `limit` rightly classified images, the most confident first, taking one of each
    class in turn so that the panels show several classes."""
    right = np.flatnonzero(probabilities.argmax(1) == labels)
    right = right[np.argsort(-probabilities[right, labels[right]], kind="stable")]
    # rank within its class (0 = the class's most confident), then confidence
    rank = np.zeros(len(right), dtype=np.int64)
    seen: dict[int, int] = {}
    for position, i in enumerate(right):
        rank[position] = seen.get(int(labels[i]), 0)
        seen[int(labels[i])] = rank[position] + 1
    return right[np.argsort(rank, kind="stable")][:limit]
