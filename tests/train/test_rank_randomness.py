"""RankRandomness: under torchrun each process's Dropout draws its own masks, repeatably."""

from __future__ import annotations

import torch

from cnnlab.train.callbacks import RankRandomness, TrainState


def masks(rank: int, epoch: int, seed: int = 0) -> torch.Tensor:
    RankRandomness(seed, rank).on_epoch_begin(TrainState(), epoch)
    dropout = torch.nn.Dropout(0.5).train()
    return dropout(torch.ones(4, 64)) == 0


def test_each_process_draws_its_own_masks_and_an_epoch_repeats_them():
    assert not torch.equal(masks(rank=0, epoch=3), masks(rank=1, epoch=3))
    assert torch.equal(masks(rank=1, epoch=3), masks(rank=1, epoch=3))  # a resumed epoch
    assert not torch.equal(masks(rank=1, epoch=3), masks(rank=1, epoch=4))
    assert not torch.equal(masks(rank=0, epoch=3), masks(rank=0, epoch=3, seed=1))
