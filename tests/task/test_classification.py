"""The head picks the loss and the probabilities: softmax -> cross-entropy, one sigmoid unit ->
binary cross-entropy with probabilities [1 - p, p]."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.task.classification import Classification as Objective

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [-0.5, 1.5, 0.0]])
LABELS = torch.tensor([0, 2, 0])


@pytest.mark.parametrize("head", ["softmax", None])
def test_softmax_or_raw_head_trains_with_cross_entropy(head):
    objective = Objective(head, 3)
    assert not objective.binary
    expected = -torch.log_softmax(LOGITS, 1)[torch.arange(3), LABELS].mean()
    assert objective.loss(LOGITS, LABELS).item() == pytest.approx(expected.item())
    assert torch.equal(objective.predicted(LOGITS), torch.tensor([0, 2, 1]))
    assert torch.allclose(objective.probabilities(LOGITS), torch.softmax(LOGITS, 1))


def test_sum_reduction_is_the_mean_times_the_count():
    objective = Objective("softmax", 3)
    total = objective.loss(LOGITS, LABELS, reduction="sum")
    assert total.item() == pytest.approx(3 * objective.loss(LOGITS, LABELS).item())


def test_one_sigmoid_unit_trains_with_binary_cross_entropy():
    objective = Objective("sigmoid", 1)
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    labels = torch.tensor([1, 0, 0])
    p = torch.sigmoid(logits.squeeze(1))
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert objective.binary
    assert objective.loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(objective.predicted(logits), torch.tensor([1, 0, 1]))


def test_one_sigmoid_unit_gives_probabilities_of_both_classes():
    objective = Objective("sigmoid", 1)
    logits = torch.tensor([[0.0], [math.log(3.0)]])  # p = 0.5, 0.75
    probabilities = objective.probabilities(logits)
    assert probabilities.shape == (2, 2)
    assert torch.allclose(probabilities, torch.tensor([[0.5, 0.5], [0.25, 0.75]]))


def test_several_sigmoid_units_are_not_a_binary_head():
    assert not Objective("sigmoid", 2).binary


def test_label_smoothing_changes_the_loss_as_keras_defines_it():
    plain = Objective("softmax", 3).loss(LOGITS, LABELS)
    smoothed = Objective("softmax", 3, label_smoothing=0.1).loss(LOGITS, LABELS)
    targets = F.one_hot(LABELS, 3).float() * 0.9 + 0.1 / 3  # Keras's smoothed targets
    expected = -(targets * torch.log_softmax(LOGITS, 1)).sum(1).mean()
    assert smoothed.item() != pytest.approx(plain.item())
    assert smoothed.item() == pytest.approx(expected.item())


def test_loss_is_computed_in_float32_from_bfloat16_logits():
    loss = Objective("softmax", 3).loss(LOGITS.bfloat16(), LABELS)
    assert loss.dtype == torch.float32
