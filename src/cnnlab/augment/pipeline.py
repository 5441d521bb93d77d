"""From a uint8 batch to the model's input: random augmentation for training, none otherwise.

Training: airbench's alternating flip (augment.alternating_flip, on the stored image), Keras's
random transforms (on raw 0..255 values, as Keras applies them before
`standardize`), rescale, the modern operations (on 0..1 values), the rest of the
normalisation, and MixUp/CutMix in the loop, where the labels are.
Evaluation and prediction: normalisation only.
"""

from __future__ import annotations

import numpy as np
import torch

from cnnlab import distributed
from cnnlab.augment.flip import AlternatingFlip
from cnnlab.augment.keras import KerasAugmenter, KerasParams
from cnnlab.augment.modern import ModernAugmenter, ModernParams, mix
from cnnlab.augment.normalize import Normalization, fit_normalization
from cnnlab.augment.policies import AugMix
from cnnlab.config import AugmentConfig
from cnnlab.preprocessing import Preprocessing
from cnnlab.runtime import IMAGE_LAYOUT, stream_seed


def modern_params(cfg: AugmentConfig) -> ModernParams:
    return ModernParams(
        random_resized_crop=cfg.random_resized_crop,
        randaugment=cfg.randaugment,
        trivialaugment=cfg.trivialaugment,
        autoaugment=cfg.autoaugment,
        augmix=None if cfg.augmix is None else AugMix(**cfg.augmix.model_dump()),
        color_jitter=cfg.color_jitter,
        random_erasing=cfg.random_erasing,
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
    )


class EvalTransform:
    """Deterministic: normalisation and memory layout only."""

    def __init__(self, normalization: Normalization, layout: torch.memory_format):
        self.normalization, self.layout = normalization, layout

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalization(images).contiguous(memory_format=self.layout)


class TrainTransform(EvalTransform):
    """Random per-sample augmentation of whole batches on their device, seeded per epoch."""

    def __init__(
        self,
        cfg: AugmentConfig,
        normalization: Normalization,
        layout: torch.memory_format,
        seed: int,
        device: torch.device,
    ):
        super().__init__(normalization, layout)
        self.keras = KerasParams.from_config(cfg)
        self.modern = modern_params(cfg)
        self.keras_augment = None if self.keras.is_identity else KerasAugmenter(self.keras)
        self.modern_augment = None if self.modern.is_identity else ModernAugmenter(self.modern)
        self.flip = AlternatingFlip(seed) if cfg.alternating_flip else None
        self.seed, self.generator = seed, torch.Generator(device=device)
        self.begin_epoch(0)

    @property
    def is_identity(self) -> bool:
        return self.keras_augment is None and self.modern_augment is None and self.flip is None

    def begin_epoch(self, epoch: int) -> None:
        """Each epoch's draws depend only on (seed, epoch), so a resumed run repeats them; under
        torchrun on the process's rank too, or every process's slice of a batch would get the
        same draws at the same positions."""
        part = distributed.current()
        rank = f":{part.rank}" if part is not None and part.world > 1 else ""
        self.generator.manual_seed(stream_seed(f"cnnlab.augment:{self.seed}:{epoch}{rank}"))
        if self.flip is not None:
            self.flip.begin_epoch(epoch)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.flip is not None:  # its coin is the stored image's, before anything moves it
            x = self.flip(images, x)
        if self.keras_augment is not None:
            x = self.keras_augment(x, self.generator)
        x = self.normalization.scale(x)
        if self.modern_augment is not None:  # they expect values in 0..1 (rescale 1/255)
            x = self.modern_augment(x)
        return self.normalization.standardize(x).contiguous(memory_format=self.layout)

    def mixes(self) -> bool:
        return self.modern.mixup_alpha > 0 or self.modern.cutmix_alpha > 0

    def mix(
        self, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return mix(inputs, labels, num_classes, self.modern, self.generator)


def build_transforms(
    cfg: AugmentConfig,
    train_images: np.ndarray,
    seed: int,
    device: torch.device,
    pretrained: Preprocessing | None = None,
) -> tuple[TrainTransform, EvalTransform]:
    """A run's training and evaluation transforms, normalised by its training images (or by
    the pretrained backbone's mean/std)."""
    normalization = fit_normalization(cfg, train_images, pretrained)
    return (
        TrainTransform(cfg, normalization, IMAGE_LAYOUT, seed, device),
        EvalTransform(normalization, IMAGE_LAYOUT),
    )
