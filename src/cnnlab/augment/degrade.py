"""reconstruction.degrade: from a target image to the network's input, on the device in batches.

Every step works on 0..1 float batches (N, C, H, W) and draws from the generator it is given:
training reseeds it per (seed, epoch), so a resumed run repeats its epochs; validation, test and
prediction degrade each split once, in a fixed order from a generator seeded by (seed, split),
so every epoch and every later evaluation sees the same inputs whatever the batch size.

`resize` with `interpolation: skimage` is scikit-image's `transform.resize` with its defaults
(S4's 7x7 copies): when shrinking, a Gaussian of sigma (factor - 1) / 2 per axis, truncated at
4 sigma, with mirrored edges (ndimage's "mirror", numpy's and torch's "reflect"), then bilinear
sampling at the pixel centres. tests/augment/test_degrade.py measures the difference to
scikit-image itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.augment.normalize import Normalization
from cnnlab.config import DegradeStep, InvertStep, MaskStep, NoiseStep, ResizeStep, Section
from cnnlab.runtime import stream_seed

CHUNK = 1024  # images per pass when a split is degraded once: bounded device memory
TRUNCATE = 4.0  # scipy.ndimage's (and so scikit-image's) Gaussian truncation, in sigmas


def seeded(key: str, device: torch.device) -> torch.Generator:
    """A generator on `device` seeded by a hash of `key`, unrelated to any other key's."""
    return torch.Generator(device=device).manual_seed(stream_seed(f"cnnlab.degrade:{key}"))


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter1d's weights: radius int(4 sigma + 0.5), normalised."""
    radius = int(TRUNCATE * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return (weights / weights.sum()).float()


def gaussian_blur(images: torch.Tensor, sigma: tuple[float, float]) -> torch.Tensor:
    """Separable Gaussian per axis (sigma 0: that axis untouched), edges mirrored."""
    out = images
    channels = images.shape[1]
    for axis, s in zip((2, 3), sigma, strict=True):
        if s <= 0:
            continue
        kernel = gaussian_kernel(s).to(images.device)
        radius = len(kernel) // 2
        size = out.shape[axis]
        shape = (1, 1, len(kernel), 1) if axis == 2 else (1, 1, 1, len(kernel))
        pad = (0, 0, radius, radius) if axis == 2 else (radius, radius, 0, 0)
        # reflect needs a pad smaller than the side; beyond that the edge pixel is repeated
        mode = "reflect" if radius < size else "replicate"
        padded = F.pad(out, pad, mode=mode)
        weights = kernel.reshape(shape).to(out.dtype).expand(channels, -1, -1, -1)
        out = F.conv2d(padded, weights, groups=channels)  # each channel on its own
    return out


def resize(images: torch.Tensor, step: ResizeStep) -> torch.Tensor:
    height, width = step.size
    if step.interpolation != "skimage":
        mode = step.interpolation
        corners = False if mode in ("bilinear", "bicubic") else None
        return F.interpolate(images, size=(height, width), mode=mode, align_corners=corners)
    factors = (images.shape[2] / height, images.shape[3] / width)
    sigma = (max(0.0, (factors[0] - 1) / 2), max(0.0, (factors[1] - 1) / 2))
    return bilinear_mirrored(gaussian_blur(images, sigma), (height, width))


def bilinear_mirrored(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples at the output pixels' centres, (o + 0.5) * in / out - 0.5, with samples
    beyond the edge mirrored (scikit-image's mode="reflect") rather than clamped as
    F.interpolate does: one mirrored pixel of padding, then exact coordinates."""
    _, _, h, w = images.shape
    mode = "reflect" if min(h, w) > 1 else "replicate"
    padded = F.pad(images, (1, 1, 1, 1), mode=mode)

    def axis(inside: int, outside: int) -> torch.Tensor:
        centres = (torch.arange(outside, dtype=torch.float64) + 0.5) * inside / outside - 0.5
        return ((centres + 1) / (inside + 1) * 2 - 1).float()  # padded: inside + 2 pixels

    rows, cols = torch.meshgrid(axis(h, size[0]), axis(w, size[1]), indexing="ij")
    grid = torch.stack([cols, rows], dim=-1).to(images.device)
    grid = grid.expand(images.shape[0], *grid.shape).to(images.dtype)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=True)


def invert(images: torch.Tensor, step: InvertStep, generator: torch.Generator) -> torch.Tensor:
    """S4's `if np.random.rand() > 0.9: p = |p - 1|`, per pixel (all channels of it)."""
    n, _, h, w = images.shape
    draws = torch.rand((n, 1, h, w), generator=generator, device=images.device)
    return torch.where(draws > 1 - step.p, (images - 1).abs(), images)


def gaussian_noise(
    images: torch.Tensor, step: NoiseStep, generator: torch.Generator
) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    return (images + step.std * noise).clamp(0, 1)


def mask(images: torch.Tensor, step: MaskStep, generator: torch.Generator) -> torch.Tensor:
    """`patches` squares of side `size` per image, anywhere inside it, set to `value`."""
    n, _, h, w = images.shape
    side_y, side_x = min(step.size, h), min(step.size, w)
    device = images.device
    top = torch.randint(
        0, h - side_y + 1, (n, step.patches, 1, 1), generator=generator, device=device
    )
    left = torch.randint(
        0, w - side_x + 1, (n, step.patches, 1, 1), generator=generator, device=device
    )
    rows = torch.arange(h, device=device).view(1, 1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + side_y) & (cols >= left) & (cols < left + side_x)
    covered = inside.any(dim=1, keepdim=True)  # (N, 1, H, W)
    return torch.where(covered, torch.full_like(images, step.value), images)


# a DegradeStep's operation name -> (images, its settings, the generator) -> degraded images
OPERATIONS: dict[str, Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]] = {
    "resize": lambda images, step, _generator: resize(images, step),
    "blur": lambda images, step, _generator: gaussian_blur(images, (step.sigma, step.sigma)),
    "invert": invert,
    "gaussian_noise": gaussian_noise,
    "mask": mask,
}


class Degradation:
    """The steps of reconstruction.degrade, in order, on 0..1 batches."""

    def __init__(self, steps: Sequence[DegradeStep]):
        self.steps: list[tuple[str, Section]] = [step.operation for step in steps]

    @property
    def is_identity(self) -> bool:
        return not self.steps

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(H, W, C) of the degraded image of an (H, W, C) target: the network's input."""
        height, width, channels = shape
        for name, step in self.steps:
            if name == "resize":
                assert isinstance(step, ResizeStep)
                height, width = step.size
        return height, width, channels

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = images
        for name, step in self.steps:
            out = OPERATIONS[name](out, step, generator)
        return out


class DegradeTransform:
    """Training's transform (train/loop.py's Augment): uint8 targets -> degraded inputs, drawn
    per (seed, epoch)."""

    def __init__(
        self,
        degradation: Degradation,
        normalization: Normalization,
        layout: torch.memory_format,
        seed: int,
        device: torch.device,
    ):
        self.degradation, self.normalization, self.layout = degradation, normalization, layout
        self.seed, self.device = seed, device
        self.begin_epoch(0)

    def begin_epoch(self, epoch: int) -> None:
        self.generator = seeded(f"{self.seed}:train:{epoch}", self.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        degraded = self.degradation(self.normalization(images), self.generator)
        return degraded.contiguous(memory_format=self.layout)

    def mixes(self) -> bool:
        return False

    def mix(self, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int):
        raise NotImplementedError("reconstruction mixes no images")


class InputTransform:
    """Validation's and prediction's transform: split inputs degraded once (float) pass as they
    are; uint8 images (no degradation, or paired sources) are normalised."""

    def __init__(self, normalization: Normalization, layout: torch.memory_format):
        self.normalization, self.layout = normalization, layout

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.normalization(images) if images.dtype == torch.uint8 else images
        return inputs.contiguous(memory_format=self.layout)


def degrade_once(
    images: np.ndarray,
    degradation: Degradation,
    normalization: Normalization,
    key: str,
    device: torch.device,
) -> np.ndarray:
    """A split's fixed inputs: uint8 (N, C, H, W) -> float32 degraded, or the uint8 images
    themselves when there is nothing to degrade. Chunks in order from one generator seeded by
    `key`, so the result does not depend on any batch size."""
    if degradation.is_identity:
        return images
    generator = seeded(key, device)
    chunks = []
    for start in range(0, len(images), CHUNK):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + CHUNK])).to(device)
        chunks.append(degradation(normalization(batch), generator).cpu())
    if not chunks:
        height, width, channels = degradation.output_shape(
            (images.shape[2], images.shape[3], images.shape[1])
        )
        return np.zeros((0, channels, height, width), dtype=np.float32)
    return torch.cat(chunks).numpy()
