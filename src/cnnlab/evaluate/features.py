"""Features of a split: a network's output for each image, pooled to one vector.

The extractor is a pretrained backbone followed by a pooling layer, or a trained model without
its last layer (its penultimate layer, pooled when that is still a feature map). Extraction
runs in eval mode without gradients, on the split's device (bf16 autocast on CUDA); the
vectors stay on the device until one transfer at the end.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import ConfigError
from cnnlab.models import layers as L
from cnnlab.models.build import KerasModel
from cnnlab.runtime import autocast

Pool = Literal["avg", "flatten"]
# A feature map (N, C, h, w) to a vector, under the Keras layer name the summary shows.
POOLING: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "avg": ("global_average_pooling2d", L.GlobalAveragePooling2D),  # C values
    "flatten": ("flatten", L.Flatten),  # h*w*C values, in Keras's (h, w, C) order
}


def pooled(layers: Sequence[tuple[str, nn.Module]], pool: Pool | None, name: str) -> nn.Sequential:
    """`layers` in order, then the `pool` layer (None: their output is already a vector)."""
    modules = OrderedDict(layers)
    if pool is not None:
        layer_name, layer = POOLING[pool]
        while layer_name in modules:  # a user's layer may already have the name
            layer_name += "_features"
        modules[layer_name] = layer()
    extractor = nn.Sequential(modules).requires_grad_(False)  # frozen: nothing trains it
    # the summary's title; torch's __setattr__ stub allows only Tensor | Module values
    extractor.model_name = name  # type: ignore[assignment]
    return extractor


def penultimate(model: KerasModel, pool: Pool, name: str) -> nn.Sequential:
    """Every layer of `model` but the last; pooled when that leaves a feature map."""
    layers = list(model.named_children())
    if len(layers) < 2:
        raise ConfigError(
            "model.from_run: the run's model has a single layer, so there is no layer before "
            "its output to take features from"
        )
    return pooled(layers[:-1], pool if penultimate_is_map(model) else None, name)


def penultimate_is_map(model: KerasModel) -> bool:
    """Whether the layer before the output gives an (h, w, C) map rather than a vector."""
    return len(model.layer_shapes[-2]) == 3


@torch.no_grad()
def extract_features(
    extractor: nn.Module,
    batches: DeviceBatches,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    advance: Callable[[int], None] | None = None,
) -> np.ndarray:
    """float32 (N, D) features of every image of `batches`, in the split's order."""
    was_training = extractor.training
    extractor.eval()
    kept = []
    try:
        for images, _labels in batches.epoch(0):
            with autocast(batches.device):
                vectors = extractor(preprocess(images))
            kept.append(vectors.flatten(1).float())  # bf16 under autocast: back to float32
            if advance is not None:
                advance(len(images))
    finally:
        extractor.train(was_training)
    if not kept:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(kept).cpu().numpy()  # the one transfer to the host
