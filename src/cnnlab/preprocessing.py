"""What inputs a model expects: its input size and the mean/std of its training images.

Shared by the data (target size), augmentation (normalisation) and models (pretrained weights
carry their own), so it lives below all three.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were trained on: input (height, width) and per-channel mean/std of
    images scaled to 0..1."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def overridden(self, mean=None, std=None) -> Preprocessing:
        """With the experiment's model.mean / model.std where it sets them."""
        return replace(self, mean=tuple(mean or self.mean), std=tuple(std or self.std))


IMAGENET = Preprocessing((224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
