"""Keras ImageDataGenerator's random transforms, batched and per-sample on the images' device.

Same parameter names, meanings and sampling distributions as keras_preprocessing's
`ImageDataGenerator.get_random_transform` + `apply_transform`, including its quirks, kept so
that a Keras script's settings give the same augmented images here:
- the affine matrix maps OUTPUT (row, col) to INPUT (row, col), as `ndi.affine_transform`, so a
  zoom factor above 1 zooms OUT and a positive shift moves the content up / left;
- its centre is `size / 2 + 0.5` (`transform_matrix_offset_center`), one pixel past the true
  centre `(size - 1) / 2`, so a 90-degree rotation also moves the picture by two pixels;
- an integer shift range w draws `choice(range(w)) * choice([-1, 1])`: integers in
  [-(w - 1), w - 1], 0 twice as often as each other value; a float w >= 1 draws U(-w, w) pixels;
- fill modes follow scipy.ndimage (order 1): 'constant' gives cval wherever the source point
  lies outside [0, size - 1] (no blending with cval), 'wrap' has period size - 1 (the first and
  last samples overlap), 'reflect' is half-sample symmetric, 'nearest' repeats the edge.
Order as Keras: affine, channel shift, flips, brightness. Values stay in raw pixel units (Keras
transforms before `standardize`). Not reproduced: Keras's brightness goes through a PIL uint8
image that it first min-max stretches to 0..255; here it is `clip(x * factor, 0, 255)` in float.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class KerasParams:
    """ImageDataGenerator's random-transform arguments, as plain values; AugmentConfig checks
    them (fill_mode is one of constant, nearest, reflect, wrap)."""

    rotation_range: float = 0.0  # degrees; theta ~ U(-r, r)
    width_shift_range: float = 0.0  # < 1: fraction of the width; >= 1: pixels (int: integers)
    height_shift_range: float = 0.0  # same, of the height
    shear_range: float = 0.0  # degrees (Keras 2); shear ~ U(-s, s)
    zoom_range: tuple[float, float] = (1.0, 1.0)  # zx, zy ~ U(lo, hi) independently
    horizontal_flip: bool = False  # each with probability 0.5
    vertical_flip: bool = False
    fill_mode: str = "nearest"  # Keras's default
    cval: float = 0.0  # fill value for 'constant', raw pixel units
    brightness_range: tuple[float, float] | None = None  # factor ~ U(lo, hi)
    channel_shift_range: float = 0.0  # one intensity ~ U(-r, r) per image, all channels

    @classmethod
    def from_config(cls, cfg: Any) -> KerasParams:
        """From an AugmentConfig (or anything with its attributes); zoom z -> (1 - z, 1 + z)."""
        zoom = cfg.zoom_range
        if isinstance(zoom, int | float):
            zoom = (1.0 - zoom, 1.0 + zoom)
        brightness = cfg.brightness_range
        return cls(
            rotation_range=cfg.rotation_range,
            width_shift_range=cfg.width_shift_range,
            height_shift_range=cfg.height_shift_range,
            shear_range=cfg.shear_range,
            zoom_range=_floats(zoom),
            horizontal_flip=cfg.horizontal_flip,
            vertical_flip=cfg.vertical_flip,
            fill_mode=cfg.fill_mode,
            cval=cfg.cval,
            brightness_range=None if brightness is None else _floats(brightness),
            channel_shift_range=cfg.channel_shift_range,
        )

    @property
    def has_affine(self) -> bool:
        shifts = self.width_shift_range or self.height_shift_range
        zoom = self.zoom_range != (1.0, 1.0)
        return bool(self.rotation_range or shifts or self.shear_range or zoom)

    @property
    def has_brightness(self) -> bool:
        return self.brightness_range not in (None, (1.0, 1.0))

    @property
    def is_identity(self) -> bool:
        flips = self.horizontal_flip or self.vertical_flip
        colour = self.has_brightness or self.channel_shift_range
        return not (self.has_affine or flips or colour)


def _floats(pair: Any) -> tuple[float, float]:
    low, high = pair
    return float(low), float(high)


@dataclass
class Sampled:
    """Per-image parameters, each a tensor of shape (N,) on the images' device."""

    theta: torch.Tensor  # degrees
    tx: torch.Tensor  # row shift, pixels (from height_shift_range)
    ty: torch.Tensor  # column shift, pixels (from width_shift_range)
    shear: torch.Tensor  # degrees
    zx: torch.Tensor  # row zoom
    zy: torch.Tensor  # column zoom
    flip_h: torch.Tensor  # bool
    flip_v: torch.Tensor  # bool
    brightness: torch.Tensor  # factor (1 when brightness_range is None)
    channel_shift: torch.Tensor  # intensity, raw pixel units

    def to(self, device: torch.device | str) -> Sampled:
        return Sampled(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    """U(lo, hi), as np.random.uniform."""
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def _symmetric(n: int, r: float, g: torch.Generator) -> torch.Tensor:
    return _uniform(n, -r, r, g) if r else torch.zeros(n, device=g.device)


def _shift(n: int, r: float, size: int, g: torch.Generator) -> torch.Tensor:
    """Keras's tx / ty, pixels: int r -> choice(range(r)) * ±1; float -> U(-r, r), * size if < 1."""
    if not r:
        return torch.zeros(n, device=g.device)
    if isinstance(r, Integral) and not isinstance(r, bool):
        magnitude = torch.randint(0, int(r), (n,), generator=g, device=g.device)
        sign = 2 * torch.randint(0, 2, (n,), generator=g, device=g.device) - 1
        return (magnitude * sign).float()
    shift = _uniform(n, -r, r, g)
    return shift * size if r < 1 else shift


def _coin(n: int, enabled: bool, g: torch.Generator) -> torch.Tensor:
    if not enabled:
        return torch.zeros(n, dtype=torch.bool, device=g.device)
    return torch.rand(n, generator=g, device=g.device) < 0.5


def sample(
    params: KerasParams, n: int, height: int, width: int, generator: torch.Generator
) -> Sampled:
    """Draw every image's parameters (in Keras's order) from `generator`, on its device."""
    g, p = generator, params
    theta = _symmetric(n, p.rotation_range, g)
    tx = _shift(n, p.height_shift_range, height, g)
    ty = _shift(n, p.width_shift_range, width, g)
    shear = _symmetric(n, p.shear_range, g)
    if p.zoom_range == (1.0, 1.0):
        zx = zy = torch.ones(n, device=g.device)
    else:
        zx, zy = _uniform(2 * n, *p.zoom_range, g).view(2, n)
    flip_h = _coin(n, p.horizontal_flip, g)
    flip_v = _coin(n, p.vertical_flip, g)
    channel_shift = _symmetric(n, p.channel_shift_range, g)
    if p.brightness_range is None:
        brightness = torch.ones(n, device=g.device)
    else:
        brightness = _uniform(n, *p.brightness_range, g)
    return Sampled(theta, tx, ty, shear, zx, zy, flip_h, flip_v, brightness, channel_shift)


def matrices(sampled: Sampled, height: int, width: int) -> torch.Tensor:
    """(N, 3, 3) maps output (row, col, 1) to input, as Keras's apply_affine_transform:
    offset @ rotation @ shift @ shear @ zoom @ reset, multiplied out by hand. The product's
    linear part is rotation @ shear @ zoom; its translation is rotation @ (tx, ty) plus the
    centre moved by that linear part. One stack instead of six 3x3 products built entry by
    entry: a small model's step spent a tenth of its time on them."""
    s = sampled
    theta, shear = torch.deg2rad(s.theta), torch.deg2rad(s.shear)
    cos, sin = theta.cos(), theta.sin()
    shear_sin, shear_cos = shear.sin(), shear.cos()
    # rotation @ [[zx, -sin(shear) zy], [0, cos(shear) zy]]
    a, b = cos * s.zx, -(cos * shear_sin + sin * shear_cos) * s.zy
    c, d = sin * s.zx, (cos * shear_cos - sin * shear_sin) * s.zy
    o_r, o_c = height / 2 + 0.5, width / 2 + 0.5  # Keras's transform_matrix_offset_center
    row = cos * s.tx - sin * s.ty + o_r - a * o_r - b * o_c
    col = sin * s.tx + cos * s.ty + o_c - c * o_r - d * o_c
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, row, c, d, col, zero, zero, one], -1).view(-1, 3, 3)


def _into_image(u: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Map source coordinates along one axis into [0, size - 1] as scipy.ndimage's mode does.

    Linear interpolation of scipy's extended signal equals interpolation at the mapped point.
    """
    if mode == "wrap":  # scipy's 'wrap' repeats with period size - 1: the ends overlap
        outside = (u < 0) | (u > size - 1)
        u = torch.where(outside, torch.remainder(u, max(size - 1, 1)), u)
    elif mode == "reflect":  # half-sample symmetric: d c b a | a b c d | d c b a, period 2 size
        u = torch.remainder(u, 2 * size)
        u = torch.where(u >= size, 2 * size - 1 - u, u)  # the half pixels past each edge are flat
    return u.clamp(0, size - 1)  # nearest; constant masks the outside afterwards


def _warp(x: torch.Tensor, m: torch.Tensor, mode: str, cval: float) -> torch.Tensor:
    """Bilinear resampling of every image at its matrix's source points (scipy order 1)."""
    h, w = x.shape[-2:]
    m = m.to(device=x.device, dtype=torch.float32)
    rows = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    u, v = (
        m[:, i, :1, None] * rows + m[:, i, 1:2, None] * cols + m[:, i, 2:, None] for i in (0, 1)
    )
    # grid_sample takes (x = column, y = row) in [-1, 1], the corner pixels' centres at ±1
    gx = _into_image(v, w, mode) * (2 / max(w - 1, 1)) - 1
    gy = _into_image(u, h, mode) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    if mode == "constant":  # scipy: cval wherever the source lies outside, no blending
        inside = (u >= 0) & (u <= h - 1) & (v >= 0) & (v <= w - 1)
        out = torch.where(inside.unsqueeze(1), out, cval)
    return out


def _per_image(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


def apply(images: torch.Tensor, sampled: Sampled, params: KerasParams) -> torch.Tensor:
    """Keras's apply_transform on a float (N, C, H, W) batch in raw pixel units."""
    x = images.float()
    if params.is_identity:
        return x
    s = sampled.to(x.device)
    if params.has_affine:
        x = _warp(x, matrices(s, x.shape[-2], x.shape[-1]), params.fill_mode, params.cval)
    if params.channel_shift_range:  # Keras's apply_channel_shift: clip to the image's range
        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        x = torch.minimum(torch.maximum(x + _per_image(s.channel_shift), lo), hi)
    if params.horizontal_flip:
        x = torch.where(_per_image(s.flip_h), x.flip(-1), x)
    if params.vertical_flip:
        x = torch.where(_per_image(s.flip_v), x.flip(-2), x)
    if params.has_brightness:  # PIL ImageEnhance.Brightness: blend with black, clip to 0..255
        x = (x * _per_image(s.brightness)).clamp(0, 255)
    return x


class KerasAugmenter:
    """Callable on whole batches: uint8 or float (N, C, H, W) in, float32 0..255 out."""

    def __init__(self, params: KerasParams):
        self.params = params

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.params.is_identity:
            return images.float()
        n, _, h, w = images.shape
        return apply(images, sample(self.params, n, h, w, generator), self.params)
