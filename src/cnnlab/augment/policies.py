"""RandAugment, TrivialAugment (wide), AutoAugment and AugMix, per image on device batches.

`kornia.augmentation.auto` picks one op sequence per batch and rejects magnitudes 0 and 30, and
torchvision's transforms draw once per call (AugMix: its mixing weights per image, its ops per
call), so these are written on torch with torchvision's op lists, magnitude ranges and (for
AutoAugment) its policy tables: each image draws its own ops, signs and magnitudes; each op runs
on the whole batch and is kept where chosen, so nothing is read back to the host.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.config import MAX_MAGNITUDE  # RandAugment's scale, 0..30 (torchvision's 31 bins)

# --- RandAugment / TrivialAugment -------------------------------------------------------------
# torchvision's op list; one index per image per step. Identity is an op, as in the papers.
IDENTITY, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE = range(6)
BRIGHTNESS, COLOR, CONTRAST, SHARPNESS, POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE = range(6, 14)
_NUM_OPS = 14  # RandAugment's and TrivialAugment's draws
INVERT = 14  # AutoAugment's only op beyond those
_BINS = 10  # AutoAugment's and AugMix's magnitude scale: bins 0..9 (torchvision's)


@dataclass(frozen=True)
class _OpSpace:
    """The magnitude each op reaches at the top of the scale (torchvision's values)."""

    shear: float  # shear factor
    translate_fraction: float  # of the image side (RandAugment) ...
    translate_pixels: float  # ... or absolute (TrivialAugmentWide)
    rotate: float  # degrees
    enhance: float  # brightness/colour/contrast/sharpness factor = 1 ± this
    posterize_bits: float  # bits removed ...
    posterize_from: float = 8.0  # ... from these


_RANDAUGMENT = _OpSpace(0.3, 150 / 331, 0.0, 30.0, 0.9, 4.0)  # AutoAugment's too
_TRIVIALAUGMENT_WIDE = _OpSpace(0.99, 0.0, 32.0, 135.0, 0.99, 6.0)
_AUGMIX = _OpSpace(0.3, 1 / 3, 0.0, 30.0, 0.9, 4.0, posterize_from=4.0)


@dataclass(frozen=True)
class AugMix:
    """AugMix's settings (AugMixConfig checks them); torchvision's defaults."""

    severity: int = 3  # magnitude bins 0..severity-1 of 10
    width: int = 3  # chains
    depth: int = -1  # ops per chain; -1: 1 to 3 per image and chain
    alpha: float = 1.0  # Dirichlet / Beta concentration
    all_ops: bool = True  # with brightness, colour, contrast and sharpness


# torchvision's AugMix ops; all_ops adds the four that overlap ImageNet-C's corruptions
_AUGMIX_OPS: tuple[int, ...] = (SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE)
_AUGMIX_OPS += (POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE)
_AUGMIX_ALL_OPS = (*_AUGMIX_OPS, BRIGHTNESS, COLOR, CONTRAST, SHARPNESS)
_TORCHVISION_NAMES = {
    "ShearX": SHEAR_X,
    "ShearY": SHEAR_Y,
    "TranslateX": TRANSLATE_X,
    "TranslateY": TRANSLATE_Y,
    "Rotate": ROTATE,
    "Brightness": BRIGHTNESS,
    "Color": COLOR,
    "Contrast": CONTRAST,
    "Sharpness": SHARPNESS,
    "Posterize": POSTERIZE,
    "Solarize": SOLARIZE,
    "AutoContrast": AUTOCONTRAST,
    "Equalize": EQUALIZE,
    "Invert": INVERT,
}


def rand_augment(images: torch.Tensor, num_ops: int, magnitude: int) -> torch.Tensor:
    """RandAugment: `num_ops` ops per image, each drawn independently, at `magnitude` / 30."""
    n, device = images.shape[0], images.device
    for _ in range(num_ops):
        op = torch.randint(_NUM_OPS, (n,), device=device)
        level = torch.full((n,), magnitude / MAX_MAGNITUDE, device=device)
        images = _apply_ops(images, op, _random_sign(level), _RANDAUGMENT)
    return images


def trivial_augment(images: torch.Tensor) -> torch.Tensor:
    """TrivialAugment (wide): one op per image at a magnitude drawn per image from 31 bins."""
    n, device = images.shape[0], images.device
    op = torch.randint(_NUM_OPS, (n,), device=device)
    level = torch.randint(MAX_MAGNITUDE + 1, (n,), device=device) / MAX_MAGNITUDE
    return _apply_ops(images, op, _random_sign(level), _TRIVIALAUGMENT_WIDE)


def auto_augment(images: torch.Tensor, policy: str) -> torch.Tensor:
    """AutoAugment: each image draws one of the policy's 25 sub-policies; each of its two ops
    applies with its own probability, at its magnitude bin, with a random sign."""
    n, device = images.shape[0], images.device
    table = _policy_table(policy, device)
    chosen = table[torch.randint(len(table), (n,), device=device)]  # (n, 2, 3)
    for step in range(2):
        op, probability, magnitude = chosen[:, step].unbind(1)
        applies = torch.rand(n, device=device) < probability
        op = torch.where(applies, op.long(), IDENTITY)
        images = _apply_ops(images, op, _random_sign(magnitude / (_BINS - 1)), _RANDAUGMENT)
    return images


def aug_mix(images: torch.Tensor, params: AugMix) -> torch.Tensor:
    """AugMix: `width` chains of ops, mixed by Dirichlet weights, then mixed with the image by
    a Beta weight (torchvision's AugMix, whose Dirichlet and Beta draws are already per image;
    here the ops, depths, magnitudes and signs are too)."""
    n, device = images.shape[0], images.device
    ops = _op_codes(_AUGMIX_ALL_OPS if params.all_ops else _AUGMIX_OPS, device)
    original = torch._sample_dirichlet(torch.full((n, 2), params.alpha, device=device))
    chains = torch._sample_dirichlet(torch.full((n, params.width), params.alpha, device=device))
    chains = chains * original[:, 1:]  # the chains share the augmented part of the mix
    mixed = original[:, 0].view(-1, 1, 1, 1) * images
    steps = params.depth if params.depth > 0 else 3
    for chain in range(params.width):
        if params.depth > 0:
            depth = torch.full((n,), params.depth, device=device)
        else:
            depth = torch.randint(1, 4, (n,), device=device)
        augmented = images
        for step in range(steps):  # steps past an image's depth are identity for it
            op = torch.where(depth > step, ops[torch.randint(len(ops), (n,), device=device)], 0)
            level = torch.randint(params.severity, (n,), device=device) / (_BINS - 1)
            augmented = _apply_ops(augmented, op, _random_sign(level), _AUGMIX)
        mixed = mixed + chains[:, chain].view(-1, 1, 1, 1) * augmented
    return mixed.clamp(0, 1)  # convex weights: only rounding can leave 0..1


@functools.cache
def _policy_table(policy: str, device: torch.device) -> torch.Tensor:
    """(25, 2, 3) float: op, probability, magnitude bin (0 where it has none) of each step of
    each sub-policy, from torchvision's own tables; copied to each device once."""
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    rows = AutoAugment(AutoAugmentPolicy(policy)).policies
    table = [[(_TORCHVISION_NAMES[op], p, bin or 0) for op, p, bin in pair] for pair in rows]
    return torch.tensor(table, dtype=torch.float32).to(device)


@functools.cache
def _op_codes(ops: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(ops).to(device)  # once per device: a copy per batch waits for the host


def _random_sign(level: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.rand_like(level) < 0.5, -level, level)


def _apply_ops(
    images: torch.Tensor, op: torch.Tensor, level: torch.Tensor, space: _OpSpace
) -> torch.Tensor:
    """Image i gets op[i] at signed level[i] in -1..1. Every op runs on the whole batch and is
    kept where chosen: skipping unchosen ones would need their count on the host."""
    base = _geometric(images, op, level, space)
    chosen = op.view(-1, 1, 1, 1)
    strength = level.abs().view(-1, 1, 1, 1)
    # brightness, colour, contrast and sharpness blend the image with a degenerate version of it
    # (black, grey, mean grey, smoothed) by 1 ± level: one blend with each image's own degenerate
    grey = _grey(base)
    degenerate = torch.where(chosen == COLOR, grey, torch.zeros_like(base))
    degenerate = torch.where(chosen == CONTRAST, grey.mean((1, 2, 3), keepdim=True), degenerate)
    degenerate = torch.where(chosen == SHARPNESS, _smooth(base), degenerate)
    factor = (1 + level * space.enhance).view(-1, 1, 1, 1)
    enhances = (chosen >= BRIGHTNESS) & (chosen <= SHARPNESS)
    out = torch.where(enhances, _blend(base, degenerate, factor), base)
    bits = space.posterize_from - (strength * space.posterize_bits).round()
    out = torch.where(chosen == POSTERIZE, _posterize(base, bits), out)
    out = torch.where(chosen == SOLARIZE, torch.where(base >= 1 - strength, 1 - base, base), out)
    out = torch.where(chosen == AUTOCONTRAST, _autocontrast(base), out)
    out = torch.where(chosen == INVERT, 1 - base, out)
    return torch.where(chosen == EQUALIZE, _equalize(base), out)


def _geometric(
    images: torch.Tensor, op: torch.Tensor, level: torch.Tensor, space: _OpSpace
) -> torch.Tensor:
    """Shear, translate or rotate about the centre in one warp; zeros fill what comes in."""
    _, _, h, w = images.shape
    zero, one = torch.zeros_like(level), torch.ones_like(level)
    angle = torch.where(op == ROTATE, torch.deg2rad(level * space.rotate), zero)
    shear_x = torch.where(op == SHEAR_X, level * space.shear, zero)
    shear_y = torch.where(op == SHEAR_Y, level * space.shear, zero)
    reach_x = space.translate_fraction * w + space.translate_pixels  # pixels
    reach_y = space.translate_fraction * h + space.translate_pixels
    shift_x = torch.where(op == TRANSLATE_X, level * reach_x, zero)
    shift_y = torch.where(op == TRANSLATE_Y, level * reach_y, zero)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([cos, -sin, sin, cos], -1).view(-1, 2, 2)
    shear = torch.stack([one, shear_x, shear_y, one], -1).view(-1, 2, 2)
    m = rotation @ shear  # maps output to input pixels, centred; only one factor is not identity
    # affine_grid works in -1..1 on each axis, so rescale the pixel-space matrix to it
    theta = torch.stack(
        [
            torch.stack([m[:, 0, 0], m[:, 0, 1] * (h / w), 2 * shift_x / w], -1),
            torch.stack([m[:, 1, 0] * (w / h), m[:, 1, 1], 2 * shift_y / h], -1),
        ],
        1,
    )
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    is_geometric = ((op >= SHEAR_X) & (op <= ROTATE)).view(-1, 1, 1, 1)
    return torch.where(is_geometric, warped, images)  # exact pixels where no warp was chosen


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601, as torchvision); a one-channel image is its own grey."""
    if x.shape[1] != 3:
        return x
    # Python scalars, not a weight tensor: building one from a list is a blocking host copy
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (degenerate + factor * (x - degenerate)).clamp(0, 1)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter on the interior; border pixels stay (torchvision's sharpness)."""
    n, c, h, w = x.shape
    kernel = torch.ones(1, 1, 3, 3, dtype=x.dtype, device=x.device)  # made on the device
    kernel[..., 1, 1] = 5.0
    smoothed = F.conv2d(x.reshape(n * c, 1, h, w), kernel / 13, padding=1)
    interior = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    interior[1:-1, 1:-1] = True
    return torch.where(interior, smoothed.view(n, c, h, w), x)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` bits of each 8-bit level (bits per image, shape (N, 1, 1, 1))."""
    step = torch.pow(2.0, 8 - bits)
    return torch.floor((x * 255).round() / step) * step / 255


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    low = x.amin((2, 3), keepdim=True)
    high = x.amax((2, 3), keepdim=True)
    flat = high <= low  # a constant channel stays as it is
    scale = torch.where(flat, torch.ones_like(high), 1 / (high - low).clamp_min(1e-12))
    return ((x - torch.where(flat, torch.zeros_like(low), low)) * scale).clamp(0, 1)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel on 8-bit levels (torchvision's algorithm)."""
    n, c, h, w = x.shape
    levels = (x * 255).round().clamp(0, 255).long().view(n, c, h * w)
    hist = torch.zeros(n, c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(2, levels, torch.ones_like(levels))
    brightest = hist.gather(2, levels.amax(2, keepdim=True))  # count of the top level present
    step = torch.div(h * w - brightest, 255, rounding_mode="floor")
    lut = torch.div(hist.cumsum(2) + step // 2, step.clamp_min(1), rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[..., :-1].clamp(0, 255)
    equalized = (lut.gather(2, levels).to(x.dtype) / 255).view_as(x)
    return torch.where((step > 0).view(n, c, 1, 1), equalized, x)
