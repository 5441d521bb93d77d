"""Feature maps (S2's figure): every channel a layer outputs for one image, as a grid.

The maps are the layers' outputs as Keras shows them (a conv layer's activated output; see
layers.keras_activations). The grid is one picture of tiles, each channel scaled to its own
range in viridis, separated by white lines (viridis has no white, so a tile never looks like
a gap); pictures.py draws it once with the layer's name as title: one image for 512
channels takes a fraction of a second, where 512 matplotlib axes take ten.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cnnlab.explain.layers import evaluating, find_layer, keras_activations

COLUMNS = 16  # tiles per row, as Chollet's "images_per_row" in the Keras book's figure
MIN_TILE = 32  # pixels: small maps (3x3) are enlarged (nearest) to stay visible
GAP = 1  # white pixels between tiles


def feature_maps(
    model: nn.Module, inputs: torch.Tensor, layers: Sequence[str]
) -> dict[str, np.ndarray]:
    """{layer name: (C, H, W) float32 output} for one model-ready image (1, C, H, W)."""
    if inputs.dim() != 4 or len(inputs) != 1:
        raise ValueError(f"feature_maps: expected one image (1, C, H, W), got {inputs.shape}")
    shape = (inputs.shape[2], inputs.shape[3], inputs.shape[1])
    chosen = {name: find_layer(model, shape, name).module for name in dict.fromkeys(layers)}
    found: dict[str, np.ndarray] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            # a copy: an in-place activation after the layer would change the kept tensor
            found.setdefault(name, output[0].detach().float().cpu().numpy().copy())

        return hook

    hooks = [module.register_forward_hook(keep(name)) for name, module in chosen.items()]
    device = next(model.parameters()).device
    try:
        with keras_activations(model), evaluating(model), torch.no_grad():
            model(inputs.to(device))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: found[name] for name in chosen}


def feature_grid(maps: np.ndarray, columns: int = COLUMNS) -> np.ndarray:
    """(rows, cols, 3) uint8: one tile per channel of `maps` (C, H, W), row by row; tiles
    past the last channel stay white."""
    from matplotlib import colormaps

    channels, height, width = maps.shape
    columns = min(columns, channels)
    rows = math.ceil(channels / columns)
    scale = max(1, math.ceil(MIN_TILE / max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    grid = np.full(
        (rows * (tile_h + GAP) - GAP, columns * (tile_w + GAP) - GAP, 3), 255, dtype=np.uint8
    )
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    scaled = np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)
    tiles = colormaps["viridis"](scaled)[..., :3]  # C, H, W, 3; a flat channel is dark
    tiles = np.round(tiles * 255).astype(np.uint8).repeat(scale, axis=1).repeat(scale, axis=2)
    for k, tile in enumerate(tiles):
        top, left = (k // columns) * (tile_h + GAP), (k % columns) * (tile_w + GAP)
        grid[top : top + tile_h, left : left + tile_w] = tile
    return grid
