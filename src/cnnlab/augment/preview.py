"""A grid of originals and augmented versions, as the reports showed them (S0's figures)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from cnnlab.augment.pipeline import TrainTransform

PREVIEW_IMAGES = 4  # rows of the grid in a run's report and by default
MIN_TILE = 96  # pixels: small images are enlarged (nearest) so their changes are visible
GAP = 4


def split_preview(
    images: np.ndarray,
    transform: TrainTransform,
    seed: int,
    count: int = PREVIEW_IMAGES,
    versions: int = 8,
) -> bytes:
    """The grid for `count` training images drawn by `seed` (splits are ordered by class, so
    the first few would all be one class)."""
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return preview_grid(images[chosen[:count].sort().values.numpy()], transform, versions)


def preview_grid(images: np.ndarray, transform: TrainTransform, versions: int = 8) -> bytes:
    """PNG bytes: one row per image, the original first, then `versions` augmented copies."""
    originals = torch.from_numpy(np.ascontiguousarray(images))
    count, channels, height, width = originals.shape
    repeated = originals.repeat_interleave(versions, dim=0).to(transform.generator.device)
    augmented = augmented_pixels(transform, repeated).reshape(
        count, versions, channels, height, width
    )
    scale = max(1, -(-MIN_TILE // max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    grid = Image.new(
        "RGB", ((versions + 1) * (tile_w + GAP) - GAP, count * (tile_h + GAP) - GAP), "white"
    )
    for row in range(count):
        tiles = [originals[row].numpy(), *augmented[row]]
        for col, tile in enumerate(tiles):
            picture = _image(tile).resize((tile_w, tile_h), Image.Resampling.NEAREST)
            grid.paste(picture, (col * (tile_w + GAP), row * (tile_h + GAP)))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return buffer.getvalue()


@torch.no_grad()
def augmented_pixels(transform: TrainTransform, images: torch.Tensor) -> np.ndarray:
    """The random part of the training transform, back in uint8 0..255: for display, and as
    the fixed augmented images `cnnlab evaluate --augment` evaluates."""
    x = images.float()
    if transform.keras_augment is not None:
        x = transform.keras_augment(x, transform.generator)
    x = transform.normalization.scale(x)
    if transform.modern_augment is not None:
        x = transform.modern_augment(x)
    x = x / transform.normalization.rescale
    return x.clamp(0, 255).round().to(torch.uint8).cpu().numpy()


def _image(tile: np.ndarray) -> Image.Image:
    return (
        Image.fromarray(tile[0]) if tile.shape[0] == 1 else Image.fromarray(tile.transpose(1, 2, 0))
    )
