"""augment.alternating_flip: complementary mirror sets on consecutive epochs, reproducible."""

from __future__ import annotations

import torch

from cnnlab.augment.normalize import Normalization
from cnnlab.augment.pipeline import TrainTransform
from cnnlab.config import AugmentConfig
from cnnlab.runtime import select_device

DEVICE = select_device("auto")  # the GPU when there is one


def transform(seed: int = 0) -> TrainTransform:
    cfg = AugmentConfig(alternating_flip=True)
    return TrainTransform(cfg, Normalization(1.0), torch.contiguous_format, seed, DEVICE)


def images(count: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (count, 3, 8, 8), generator=generator, dtype=torch.uint8)


def mirrored(train: TrainTransform, batch: torch.Tensor, epoch: int) -> torch.Tensor:
    """(N,) bool: which images epoch `epoch` shows mirrored (each is one or the other)."""
    train.begin_epoch(epoch)
    out = train(batch.to(DEVICE)).cpu()
    as_is = (out == batch.float()).flatten(1).all(1)
    flipped = (out == batch.flip(-1).float()).flatten(1).all(1)
    assert torch.all(as_is ^ flipped)  # nothing else is done to them
    return flipped


def test_consecutive_epochs_mirror_complementary_sets_and_even_epochs_the_same_one():
    train, batch = transform(), images()
    first = mirrored(train, batch, 0)
    assert 16 < int(first.sum()) < 48  # a coin per image, about half
    assert torch.equal(mirrored(train, batch, 1), ~first)
    assert torch.equal(mirrored(train, batch, 2), first)
    assert torch.equal(mirrored(train, batch, 7), ~first)


def test_the_choice_follows_the_seed_and_the_image_not_its_batch():
    batch = images()
    first = mirrored(transform(seed=0), batch, 0)
    assert torch.equal(mirrored(transform(seed=0), batch, 0), first)  # a resumed run: the same
    assert not torch.equal(mirrored(transform(seed=1), batch, 0), first)
    order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(2))
    parts = [batch[order][:20], batch[order][20:]]  # other batches, another order
    shuffled = torch.cat([mirrored(transform(), part, 4) for part in parts])
    assert torch.equal(shuffled, first[order])


def test_alternating_flip_alone_is_an_augmentation():
    assert not transform().is_identity
