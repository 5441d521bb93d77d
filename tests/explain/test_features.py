"""Feature maps (S2's figure): every channel of the named layers, one tile each in a grid."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import ConfigError
from cnnlab.explain import feature_grid, feature_grid_png, feature_maps
from cnnlab.models import build_model

WHITE = (255, 255, 255)


def tile_layout(grid: np.ndarray) -> tuple[int, int, int]:
    """(rows, columns, tiles with content) of a grid, read from its white separators."""
    white = np.all(grid == WHITE, axis=-1)

    def runs(line: np.ndarray) -> list[slice]:
        found, start = [], None
        for k, gap in enumerate([*line, True]):
            if not gap and start is None:
                start = k
            elif gap and start is not None:
                found.append(slice(start, k))
                start = None
        return found

    rows, columns = runs(white[:, 0]), runs(white[0])  # the first tile row and column are full
    filled = sum(not white[r, c].all() for r in rows for c in columns)
    return len(rows), len(columns), filled


def test_feature_maps_are_the_named_layers_activated_outputs():
    torch.manual_seed(0)
    model = build_model("basenet", (32, 32, 3), 4)  # conv 6 5x5, pool, conv 16 5x5, pool, ...
    image = torch.rand(1, 3, 32, 32)
    maps = feature_maps(model, image, ["conv2d_1", "conv2d", "conv2d_1"])
    assert list(maps) == ["conv2d_1", "conv2d"]  # in the order asked, each once
    assert maps["conv2d"].shape == (6, 28, 28) and maps["conv2d_1"].shape == (16, 10, 10)
    assert all(m.dtype == np.float32 and m.min() >= 0 for m in maps.values())  # after ReLU
    with pytest.raises(ConfigError, match="did you mean 'conv2d_1'"):
        feature_maps(model, image, ["conv2d_7"])
    with pytest.raises(ValueError, match="one image"):
        feature_maps(model, torch.rand(2, 3, 32, 32), ["conv2d"])


@pytest.mark.parametrize(
    ("channels", "layout"), [(6, (1, 6, 6)), (20, (2, 16, 20)), (32, (2, 16, 32))]
)
def test_a_grid_has_one_tile_per_channel(channels, layout):
    rng = np.random.default_rng(channels)
    maps = rng.random((channels, 5, 7)).astype(np.float32)
    maps[0] = 0.0  # a dead channel is a dark tile, not a gap
    grid = feature_grid(maps)
    assert grid.dtype == np.uint8 and grid.shape[-1] == 3
    assert tile_layout(grid) == layout
    # small maps are enlarged (nearest) until the longer side has 32 pixels: 5x7 -> 25x35
    assert grid.shape[:2] == (layout[0] * 26 - 1, layout[1] * 36 - 1)


def test_the_grid_png_is_titled_above_the_tiles():
    maps = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    picture = Image.open(io.BytesIO(feature_grid_png("conv2d_1", maps)))
    assert picture.format == "PNG" and picture.width >= 400  # room for the title
    pixels = np.asarray(picture.convert("RGB"))
    title_band, tiles = pixels[:40], pixels[40:]
    assert (title_band < 128).any()  # dark title text
    assert not np.all(tiles == WHITE, axis=-1).all()
