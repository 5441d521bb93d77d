"""Modern per-sample augmentations on device batches, MixUp/CutMix with soft targets, flip TTA.

Every op draws its own parameters for each image of a batch, runs on the batch's device, and
reads nothing back to the host. Where the work is done:

- kornia (0.9) does RandomResizedCrop, ColorJitter and RandomErasing. It draws their parameters
  with torch's CPU generator (so `torch.manual_seed` repeats them, on any device) and copies them
  to the batch's device without blocking; the crop uses its batched "resample" mode, not "slice",
  which crops image by image.
- RandAugment and TrivialAugment are written here on torch: `kornia.augmentation.auto` picks one
  sequence of ops per batch (every image gets the same ops) and rejects magnitudes 0 and 30.
  Here each image draws its own ops, signs and (TrivialAugment) magnitudes, with torchvision's
  op lists and magnitude ranges; each op runs on the whole batch and is kept where chosen.
- MixUp/CutMix are written here: kornia's draw a lambda per image and take no generator; these
  follow the papers and timm (one lambda per batch) and weight targets by the true box area.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn.functional as F

_MAX_MAGNITUDE = 30  # RandAugment's magnitude scale, 0..30 (torchvision's 31 bins)


@dataclass(frozen=True)
class ModernParams:
    random_resized_crop: tuple[float, float] | None = None  # area range, e.g. (0.08, 1.0)
    randaugment: tuple[int, int] | None = None  # (ops per image, magnitude 0..30)
    trivialaugment: bool = False  # one op per image at a random magnitude
    color_jitter: tuple[float, float, float, float] | None = None  # bright, contrast, sat, hue
    random_erasing: float = 0.0  # probability per image
    mixup_alpha: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.0  # 0 = off; with both on, each batch picks one with p=0.5

    def __post_init__(self) -> None:
        if self.random_resized_crop is not None:
            low, high = self.random_resized_crop
            if not 0 < low <= high <= 1:
                raise ValueError(f"random_resized_crop: need 0 < low <= high <= 1, got {low, high}")
        if self.randaugment is not None:
            ops, magnitude = self.randaugment
            if ops < 0 or not 0 <= magnitude <= _MAX_MAGNITUDE:
                raise ValueError(
                    f"randaugment: want (ops >= 0, magnitude 0..30), got {self.randaugment}"
                )
            if self.trivialaugment:
                raise ValueError("randaugment and trivialaugment are alternatives; choose one")
        jitter = self.color_jitter
        if jitter is not None and (min(jitter) < 0 or jitter[3] > 0.5):
            raise ValueError(f"color_jitter: need factors >= 0 and hue <= 0.5, got {jitter}")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing is a probability, got {self.random_erasing}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0 (0 turns them off)")

    @property
    def is_identity(self) -> bool:
        """True when neither the augmenter nor `mix` changes anything."""
        return (
            self.random_resized_crop is None
            and (self.randaugment is None or self.randaugment[0] == 0)
            and not self.trivialaugment
            and (self.color_jitter is None or not any(self.color_jitter))
            and self.random_erasing == 0
            and self.mixup_alpha == 0
            and self.cutmix_alpha == 0
        )


class ModernAugmenter:
    """Crop → RandAugment | TrivialAugment → colour jitter → erasing, per image, on the batch."""

    def __init__(self, params: ModernParams):
        self.params = params
        self._kornia: dict[tuple[str, int, int, int], torch.nn.Module] = {}  # per op and shape

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        p = self.params
        out = images
        if images.shape[0] == 0:  # nothing to draw for (and affine_grid refuses empty batches)
            return out
        if p.random_resized_crop is not None:
            out = self._op("crop", images)(out)
        if p.randaugment is not None and p.randaugment[0] > 0:
            out = rand_augment(out, *p.randaugment)
        if p.trivialaugment:
            out = trivial_augment(out)
        if p.color_jitter is not None and any(p.color_jitter):
            out = self._op("jitter", images)(out)
        if p.random_erasing > 0:
            out = self._op("erase", images)(out)
        return out

    def _op(self, name: str, images: torch.Tensor) -> torch.nn.Module:
        _, c, h, w = images.shape
        key = (name, c, h, w)
        if key not in self._kornia:
            self._kornia[key] = self._build(name, c, h, w)
        return self._kornia[key]

    def _build(self, name: str, c: int, h: int, w: int) -> torch.nn.Module:
        p = self.params
        if name == "crop":
            assert p.random_resized_crop is not None
            return K.RandomResizedCrop(
                (h, w), scale=p.random_resized_crop, ratio=(3 / 4, 4 / 3), cropping_mode="resample"
            )
        if name == "jitter":
            assert p.color_jitter is not None
            brightness, contrast, saturation, hue = p.color_jitter
            if c == 1:  # grey images have no saturation or hue; brightness and contrast still apply
                saturation, hue = 0.0, 0.0
            return K.ColorJitter(brightness, contrast, saturation, hue, p=1.0)
        # torchvision's RandomErasing defaults: 2-33 % of the area, aspect 0.3-3.3, value 0
        return K.RandomErasing(scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, p=p.random_erasing)


# --- RandAugment / TrivialAugment -------------------------------------------------------------
# torchvision's op list; one index per image per step. Identity is an op, as in the papers.
IDENTITY, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE = range(6)
BRIGHTNESS, COLOR, CONTRAST, SHARPNESS, POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE = range(6, 14)
_NUM_OPS = 14


@dataclass(frozen=True)
class _OpSpace:
    """The magnitude each op reaches at the top of the scale (torchvision's values)."""

    shear: float  # shear factor
    translate_fraction: float  # of the image side (RandAugment) ...
    translate_pixels: float  # ... or absolute (TrivialAugmentWide)
    rotate: float  # degrees
    enhance: float  # brightness/colour/contrast/sharpness factor = 1 ± this
    posterize_bits: float  # bits removed, from 8


_RANDAUGMENT = _OpSpace(0.3, 150 / 331, 0.0, 30.0, 0.9, 4.0)
_TRIVIALAUGMENT_WIDE = _OpSpace(0.99, 0.0, 32.0, 135.0, 0.99, 6.0)


def rand_augment(images: torch.Tensor, num_ops: int, magnitude: int) -> torch.Tensor:
    """RandAugment: `num_ops` ops per image, each drawn independently, at `magnitude` / 30."""
    n, device = images.shape[0], images.device
    for _ in range(num_ops):
        op = torch.randint(_NUM_OPS, (n,), device=device)
        level = torch.full((n,), magnitude / _MAX_MAGNITUDE, device=device)
        images = _apply_ops(images, op, _random_sign(level), _RANDAUGMENT)
    return images


def trivial_augment(images: torch.Tensor) -> torch.Tensor:
    """TrivialAugment (wide): one op per image at a magnitude drawn per image from 31 bins."""
    n, device = images.shape[0], images.device
    op = torch.randint(_NUM_OPS, (n,), device=device)
    level = torch.randint(_MAX_MAGNITUDE + 1, (n,), device=device) / _MAX_MAGNITUDE
    return _apply_ops(images, op, _random_sign(level), _TRIVIALAUGMENT_WIDE)


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
    bits = 8 - (strength * space.posterize_bits).round()
    out = torch.where(chosen == POSTERIZE, _posterize(base, bits), out)
    out = torch.where(chosen == SOLARIZE, torch.where(base >= 1 - strength, 1 - base, base), out)
    out = torch.where(chosen == AUTOCONTRAST, _autocontrast(base), out)
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


# --- MixUp / CutMix ---------------------------------------------------------------------------


def mix(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    params: ModernParams,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix a batch with a shuffled copy of itself; soft targets (N, num_classes).

    Each image i takes a weight w of image perm[i] (MixUp: all pixels at w ~ Beta(a, a); CutMix:
    a box of area w) and its target row is (1 - w) * onehot[i] + w * onehot[perm[i]].
    `generator`, if given, must live on the images' device."""
    targets = F.one_hot(labels, num_classes).to(torch.float32)
    use_mixup, use_cutmix = params.mixup_alpha > 0, params.cutmix_alpha > 0
    if not (use_mixup or use_cutmix):
        return images, targets
    n, _, h, w = images.shape
    device = images.device
    perm = torch.randperm(n, generator=generator, device=device)
    choices = []  # (pixel weight of the other image, its target weight)
    if use_mixup:  # Beta is symmetric: the weight w ~ Beta(a, a) is distributed as 1 - lam
        weight = _beta(params.mixup_alpha, generator, device)
        choices.append((weight, weight))
    if use_cutmix:
        choices.append(_cutmix_box(h, w, _beta(params.cutmix_alpha, generator, device), generator))
    take, weight = choices[0]
    if len(choices) == 2:  # each batch picks one, branch-free: the choice stays on the device
        pick_cutmix = torch.rand((), generator=generator, device=device) < 0.5
        take = torch.where(pick_cutmix, choices[1][0], take)
        weight = torch.where(pick_cutmix, choices[1][1], weight)
    take = take.to(images.dtype)  # 0/1 per pixel (CutMix) or one weight (MixUp)
    mixed = (1 - take) * images + take * images[perm]  # exact pixels where take is 0 or 1
    targets = (1 - weight) * targets + weight * targets[perm]
    return mixed, targets


def _beta(alpha: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """One draw of Beta(alpha, alpha) on the device. torch.distributions.Beta samples through
    this same Dirichlet kernel but takes no generator."""
    concentration = torch.full((2,), float(alpha), device=device)
    return torch._sample_dirichlet(concentration, generator=generator)[0]


def _cutmix_box(
    h: int, w: int, lam: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A box of area about (1 - lam) of the image at a uniform centre, clipped to the image
    (timm's rand_bbox); returns its (1, 1, H, W) 0/1 mask and its true area fraction."""
    device = lam.device
    side = torch.sqrt(1 - lam)
    half_h, half_w = (side * h / 2).floor().long(), (side * w / 2).floor().long()
    cy = torch.randint(h, (), generator=generator, device=device)
    cx = torch.randint(w, (), generator=generator, device=device)
    y0, y1 = (cy - half_h).clamp(0, h), (cy + half_h).clamp(0, h)
    x0, x1 = (cx - half_w).clamp(0, w), (cx + half_w).clamp(0, w)
    rows = torch.arange(h, device=device).view(h, 1)
    cols = torch.arange(w, device=device).view(1, w)
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    area = ((y1 - y0) * (x1 - x0)).to(torch.float32) / (h * w)
    return box.view(1, 1, h, w).to(torch.float32), area


# --- losses and test-time augmentation --------------------------------------------------------


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum(targets * log_softmax(logits)); targets are probabilities."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def flip_tta(
    model_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor
) -> torch.Tensor:
    """Mean of the probabilities `model_fn` gives each image and its left-right mirror."""
    return (model_fn(images) + model_fn(images.flip(-1))) / 2
