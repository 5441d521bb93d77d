"""EpochTotals: the epoch's means summed a block of steps at a time equal the per-step sums."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.task.classification import Classification
from cnnlab.train import totals as totals_module
from cnnlab.train.totals import EpochTotals

TASK = Classification("softmax", 5)


def steps(sizes: list[int], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    made = []
    for size in sizes:
        outputs = torch.randn(size, 5, generator=g)
        labels = torch.randint(0, 5, (size,), generator=g)
        # an empty torchrun slice: the loop's zero loss, which still joins the all-reduce
        loss = TASK.loss(outputs, labels) if size else outputs.sum() * 0.0
        made.append((loss, outputs, labels))
    return made


def by_hand(made) -> dict[str, float]:
    count = sum(len(labels) for _, _, labels in made)
    loss = sum(loss.item() * len(labels) for loss, _, labels in made)
    correct = sum((outputs.argmax(1) == labels).sum().item() for _, outputs, labels in made)
    return {"loss": loss / count, "accuracy": correct / count}


@pytest.mark.parametrize("sizes", [[8] * 40, [8] * 16, [8] * 17 + [3], [6, 5, 6, 0, 6, 2], [4]])
def test_block_sums_equal_the_per_step_sums_for_any_sizes(sizes):
    made = steps(sizes)
    totals = EpochTotals(TASK, torch.device("cpu"))
    for loss, outputs, labels in made:
        totals.add(loss, outputs, labels)
    means, bad = totals.finish(sharded=False)
    assert bad == -1
    assert means == pytest.approx(by_hand(made), rel=1e-12)


def test_running_mid_block_counts_every_step_so_far():
    made = steps([8] * 21)
    totals = EpochTotals(TASK, torch.device("cpu"))
    for loss, outputs, labels in made[:5]:  # inside the first block
        totals.add(loss, outputs, labels)
    assert totals.running() == pytest.approx(by_hand(made[:5]), rel=1e-12)
    for loss, outputs, labels in made[5:]:
        totals.add(loss, outputs, labels)
    assert totals.finish(sharded=False)[0] == pytest.approx(by_hand(made), rel=1e-12)


@pytest.mark.parametrize("first", [0, 3, 15, 16, 30])
def test_the_first_non_finite_step_is_found_across_blocks(first):
    made = steps([4] * 34)
    for at, value in ((first, math.nan), (first + 2, math.inf)):  # the first one counts
        loss, outputs, labels = made[at]
        made[at] = (torch.tensor(value), outputs, labels)
    totals = EpochTotals(TASK, torch.device("cpu"))
    for loss, outputs, labels in made:
        totals.add(loss, outputs, labels)
    assert totals.finish(sharded=False)[1] == first


def test_large_outputs_close_a_block_early(monkeypatch):
    monkeypatch.setattr(totals_module, "BLOCK_VALUES", 100)  # 3 steps of 8 x 5 outputs
    totals = EpochTotals(TASK, torch.device("cpu"))
    for loss, outputs, labels in steps([8] * 3):
        totals.add(loss, outputs, labels)
    assert [len(block) for block in totals.losses] == [3]  # summed without waiting for 16


def test_an_epoch_without_steps_gives_nan_means():
    means, bad = EpochTotals(TASK, torch.device("cpu")).finish(sharded=False)
    assert bad == -1 and all(math.isnan(v) for v in means.values())
