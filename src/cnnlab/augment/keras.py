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
from functools import lru_cache, partial
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.runtime import device_constant


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


# Sampled's uniform fields, drawn together as lo + span * U(0, 1): one generator call and one
# multiply-add per batch, where a small model's step felt a call per parameter.
_UNIFORM_FIELDS = ("theta", "tx", "ty", "shear", "zx", "zy", "brightness", "channel_shift")


def _is_integer(r: float) -> bool:
    return isinstance(r, Integral) and not isinstance(r, bool)


def _pixels(r: float, size: int) -> float:
    """A float shift range in pixels: below 1 it is a fraction of the size."""
    return r * size if r < 1 else r


@lru_cache(maxsize=64)
def _ranges(
    params: KerasParams, height: int, width: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each uniform field's (lo, span), shaped (8, 1), and each flip's chance of heads, on the
    device: a disabled parameter has span 0 and its neutral value as lo, a disabled flip 0."""
    p = params
    rows, cols = _pixels(p.height_shift_range, height), _pixels(p.width_shift_range, width)
    bounds = {  # Keras's U(lo, hi) of each field
        "theta": (-p.rotation_range, p.rotation_range),  # degrees
        "tx": (-rows, rows),  # rows, from height_shift_range
        "ty": (-cols, cols),
        "shear": (-p.shear_range, p.shear_range),
        "zx": p.zoom_range,
        "zy": p.zoom_range,
        "brightness": p.brightness_range or (1.0, 1.0),
        "channel_shift": (-p.channel_shift_range, p.channel_shift_range),
    }
    lo = [float(bounds[f][0]) for f in _UNIFORM_FIELDS]
    span = [float(bounds[f][1] - bounds[f][0]) for f in _UNIFORM_FIELDS]
    heads = [0.5 * p.horizontal_flip, 0.5 * p.vertical_flip]  # U(0, 1) < 0 never holds
    lo_t, span_t, heads_t = (device_constant(tuple(v), device) for v in (lo, span, heads))
    return lo_t.view(-1, 1), span_t.view(-1, 1), heads_t.view(-1, 1)


def _integer_shift(n: int, r: int, g: torch.Generator) -> torch.Tensor:
    """Keras's choice(range(r)) * choice([-1, 1]), in pixels."""
    magnitude = torch.randint(0, r, (n,), generator=g, device=g.device)
    sign = 2 * torch.randint(0, 2, (n,), generator=g, device=g.device) - 1
    return (magnitude * sign).float()


def sample(
    params: KerasParams, n: int, height: int, width: int, generator: torch.Generator
) -> Sampled:
    """Draw every image's parameters from `generator`, on its device (no host sync)."""
    g = generator
    lo, span, heads = _ranges(params, height, width, g.device)
    u = torch.rand(len(_UNIFORM_FIELDS) + 2, n, generator=g, device=g.device)
    values = dict(zip(_UNIFORM_FIELDS, torch.addcmul(lo, span, u[:-2]).unbind(), strict=True))
    flip_h, flip_v = (u[-2:] < heads).unbind()
    for field, r in (("tx", params.height_shift_range), ("ty", params.width_shift_range)):
        if r and _is_integer(r):  # a float, even a whole one, is U(-r, r) pixels
            values[field] = _integer_shift(n, int(r), g)
    return Sampled(**values, flip_h=flip_h, flip_v=flip_v)


def matrices(
    sampled: Sampled, height: int, width: int, flips: tuple[bool, bool] = (False, False)
) -> torch.Tensor:
    """(N, 3, 3) maps output (row, col, 1) to input, as Keras's apply_affine_transform:
    offset @ rotation @ shift @ shear @ zoom @ reset, multiplied out by hand. The product's
    linear part is rotation @ shear @ zoom; its translation is rotation @ (tx, ty) plus the
    centre moved by that linear part. One stack instead of six 3x3 products built entry by
    entry: a small model's step spent a tenth of its time on them.

    `flips` (horizontal, vertical) also folds the sampled flips into the map, which Keras
    applies to the warped image: the flipped output at (r, c) is the warp's at (r, w - 1 - c),
    so the map is multiplied on the right by that mirror, and no pass over the pixels is left
    for the flip."""
    s = sampled
    # rotation @ [[zx, -sin(shear) zy], [0, cos(shear) zy]]
    #   = [[cos(theta) zx, -sin(theta + shear) zy], [sin(theta) zx, cos(theta + shear) zy]]
    angles = torch.deg2rad(torch.stack((s.theta, s.theta + s.shear)))
    cosines, sines = angles.cos(), angles.sin()
    zoom = torch.stack((s.zx, s.zy))
    (a, d), (c, minus_b) = cosines * zoom, sines * zoom
    b = -minus_b
    cos, sin = cosines[0], sines[0]
    o_r, o_c = height / 2 + 0.5, width / 2 + 0.5  # Keras's transform_matrix_offset_center
    row = cos * s.tx - sin * s.ty + o_r - a * o_r - b * o_c
    col = sin * s.tx + cos * s.ty + o_c - c * o_r - d * o_c
    horizontal, vertical = flips
    if vertical:  # @ [[-1, 0, h - 1], [0, 1, 0], [0, 0, 1]] where flipped
        moved = s.flip_v.float() * (height - 1)
        row, col = row + a * moved, col + c * moved
        sign = 1 - moved * (2 / max(height - 1, 1))
        a, c = a * sign, c * sign
    if horizontal:  # @ [[1, 0, 0], [0, -1, w - 1], [0, 0, 1]] where flipped
        moved = s.flip_h.float() * (width - 1)
        row, col = row + b * moved, col + d * moved
        sign = 1 - moved * (2 / max(width - 1, 1))
        b, d = b * sign, d * sign
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


@lru_cache(maxsize=16)
def _pixel_axes(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Output rows (1, 1, H, 1) and columns (1, 1, 1, W), as floats."""
    rows = torch.arange(height, device=device, dtype=torch.float32).view(1, 1, -1, 1)
    cols = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, 1, -1)
    return rows, cols


def _to_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(2, 3): pixel (row, col, 1) to grid_sample's (x = column, y = row) in [-1, 1], the
    corner pixels' centres at ±1 (align_corners=True)."""
    x_scale, y_scale = 2 / max(width - 1, 1), 2 / max(height - 1, 1)
    return device_constant((0.0, x_scale, -1.0, y_scale, 0.0, -1.0), device).view(2, 3)


def _mapped(affine: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 2, H, W): each (N, 2, 3) map applied to every output pixel's (row, col, 1). Two
    multiply-adds with the axes broadcast, the full-size one last: a batched matmul over the
    pixels, or an (N, H, W, 2) result, is several times slower on the CPU (its inner loop
    runs over 3 or 2 values)."""
    rows, cols = _pixel_axes(height, width, affine.device)
    coef = affine[..., None, None]
    return torch.addcmul(torch.addcmul(coef[:, :, 2], coef[:, :, 0], rows), coef[:, :, 1], cols)


def _warp(x: torch.Tensor, m: torch.Tensor, mode: str, cval: float) -> torch.Tensor:
    """Bilinear resampling of every image at its matrix's source points (scipy order 1)."""
    h, w = x.shape[-2:]
    m = m.to(device=x.device, dtype=torch.float32)
    resample = partial(F.grid_sample, x, mode="bilinear", padding_mode="border", align_corners=True)
    if mode == "nearest":  # border padding clamps to the edge pixels, as scipy's 'nearest'
        grid = _mapped(_to_grid(h, w, x.device) @ m, h, w)  # (x, y) in [-1, 1], in one go
        return resample(grid.permute(0, 2, 3, 1))  # grid_sample reads the permuted view as is
    u, v = _mapped(m[:, :2], h, w).unbind(1)  # source row and column, pixels
    gx = _into_image(v, w, mode) * (2 / max(w - 1, 1)) - 1
    gy = _into_image(u, h, mode) * (2 / max(h - 1, 1)) - 1
    out = resample(torch.stack((gx, gy), dim=-1))
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
    s = sampled if sampled.theta.device == x.device else sampled.to(x.device)
    flips = (params.horizontal_flip, params.vertical_flip)
    if params.has_affine:  # the flips ride in the warp (the channel shift commutes with them)
        m = matrices(s, x.shape[-2], x.shape[-1], flips)
        x = _warp(x, m, params.fill_mode, params.cval)
        flips = (False, False)
    if params.channel_shift_range:  # Keras's apply_channel_shift: clip to the image's range
        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        x = torch.minimum(torch.maximum(x + _per_image(s.channel_shift), lo), hi)
    if flips[0]:
        x = torch.where(_per_image(s.flip_h), x.flip(-1), x)
    if flips[1]:
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
