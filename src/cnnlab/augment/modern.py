"""Modern per-sample augmentations on device batches, and MixUp/CutMix with soft targets.

Every op draws its own parameters for each image of a batch, runs on the batch's device, and
reads nothing back to the host. Where the work is done:

- kornia (0.9) does RandomResizedCrop, ColorJitter and RandomErasing. It draws their parameters
  with torch's CPU generator (so `torch.manual_seed` repeats them, on any device) and copies them
  to the batch's device without blocking; the crop uses its batched "resample" mode, not "slice",
  which crops image by image.
- RandAugment, TrivialAugment, AutoAugment and AugMix are written on torch (policies.py):
  `kornia.augmentation.auto` picks one sequence of ops per batch (every image gets the same ops)
  and rejects magnitudes 0 and 30, and torchvision's draw their ops once per call. Here each
  image draws its own ops, signs and magnitudes, with torchvision's op lists, magnitude ranges
  and AutoAugment tables; each op runs on the whole batch and is kept where chosen.
- MixUp/CutMix are written here: kornia's draw a lambda per image and take no generator; these
  follow the papers and timm (one lambda per batch) and weight targets by the true box area.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.augment.policies import AugMix, aug_mix, auto_augment, rand_augment, trivial_augment


@dataclass(frozen=True)
class ModernParams:
    """The modern operations' settings, as plain values; AugmentConfig checks them."""

    random_resized_crop: tuple[float, float] | None = None  # area range, e.g. (0.08, 1.0)
    randaugment: tuple[int, int] | None = None  # (ops per image, magnitude 0..30)
    trivialaugment: bool = False  # one op per image at a random magnitude
    autoaugment: str | None = None  # a policy: imagenet, cifar10 or svhn
    augmix: AugMix | None = None
    color_jitter: tuple[float, float, float, float] | None = None  # bright, contrast, sat, hue
    random_erasing: float = 0.0  # probability per image
    mixup_alpha: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.0  # 0 = off; with both on, each batch picks one with p=0.5

    @property
    def is_identity(self) -> bool:
        """True when neither the augmenter nor `mix` changes anything."""
        return (
            self.random_resized_crop is None
            and (self.randaugment is None or self.randaugment[0] == 0)
            and not self.trivialaugment
            and self.autoaugment is None
            and self.augmix is None
            and (self.color_jitter is None or not any(self.color_jitter))
            and self.random_erasing == 0
            and self.mixup_alpha == 0
            and self.cutmix_alpha == 0
        )


class ModernAugmenter:
    """Crop → RandAugment | TrivialAugment | AutoAugment | AugMix → colour jitter → erasing,
    per image, on the batch."""

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
        if p.autoaugment is not None:
            out = auto_augment(out, p.autoaugment)
        if p.augmix is not None:
            out = aug_mix(out, p.augmix)
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
        import kornia.augmentation as K  # only for runs that use these operations (0.3 s, 20 MB)

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
