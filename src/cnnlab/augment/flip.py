"""airbench's alternating flip: each image mirrored on every other epoch, never at random twice.

A random horizontal flip shows an image the same way round in two consecutive epochs half the
time. airbench flips each image at random once, then flips all of them every odd epoch, so any
two epochs in a row show every image both ways.

The transform sees batches, not dataset indices, so each image's first coin is a hash of its
own pixels: integer weights drawn from the seed, summed exactly in int64 over the pixels (the
same on every device, in any batch and any order), one bit of the sum. An image is mirrored in
epoch e iff that bit differs from e's parity: the same split every even epoch, its complement
every odd one, and a resumed run repeats it. Identical images share their coin.
"""

from __future__ import annotations

import torch

from cnnlab.runtime import stream_seed

HASH_BIT = 24  # of sums of pixel (< 2**8) x weight (< 2**31) terms: well inside int64, mixed


class AlternatingFlip:
    def __init__(self, seed: int) -> None:
        self.seed = stream_seed(f"cnnlab.alternating_flip:{seed}")
        self.odd = False
        self._weights: dict[tuple[torch.Size, torch.device], torch.Tensor] = {}

    def begin_epoch(self, epoch: int) -> None:
        self.odd = epoch % 2 == 1

    def first_coin(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) bool: whether each uint8 image is mirrored in even epochs."""
        shape, device = images.shape[1:], images.device
        weights = self._weights.get((shape, device))
        if weights is None:  # drawn on the host, so every device gets the same weights
            generator = torch.Generator().manual_seed(self.seed)
            drawn = torch.randint(0, 2**31, (shape.numel(),), generator=generator)
            weights = self._weights[(shape, device)] = drawn.to(device)
        sums = (images.reshape(len(images), -1).long() * weights).sum(1)
        return (sums >> HASH_BIT) & 1 == 1

    def __call__(self, images: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`x` (the float pixels of uint8 `images`) with this epoch's images mirrored."""
        mirrored = self.first_coin(images) ^ self.odd
        return torch.where(mirrored[:, None, None, None], x.flip(-1), x)
