"""infer: loss, accuracy and probabilities over a split, in the split's order."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data.batches import DeviceBatches
from cnnlab.runtime import autocast, select_device
from cnnlab.task.classification import Classification as Objective
from cnnlab.task.inference import infer

DEVICE = select_device("auto")  # the GPU when there is one


def test_infer_matches_a_direct_computation_and_keeps_the_split_order():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).to(DEVICE)
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    batches = DeviceBatches(images, labels, batch_size=4, device=DEVICE, shuffle=False)
    objective = Objective("softmax", 3)
    model.train()

    result = infer(model, batches, objective, lambda x: x.float() / 255, keep_predictions=True)

    with torch.no_grad(), autocast(DEVICE):  # as infer runs it: bf16 on the GPU
        logits = model(images.to(DEVICE).float() / 255).float().cpu()
    tolerance = 2e-2 if DEVICE.type == "cuda" else 1e-5  # bf16 GEMMs differ by batch shape
    assert result.loss == pytest.approx(objective.loss(logits, labels).item(), abs=tolerance)
    assert result.predictions.shape == (10, 3) and result.predictions.device.type == "cpu"
    assert torch.allclose(result.predictions, torch.softmax(logits, 1), atol=tolerance)
    assert result.stats["accuracy"] == pytest.approx(
        (result.predictions.argmax(1) == labels).float().mean().item()
    )
    assert model.training  # put back as it was


def test_infer_without_probabilities_keeps_none():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 2)).to(DEVICE)
    images = torch.zeros((3, 3, 2, 2), dtype=torch.uint8)
    batches = DeviceBatches(images, torch.tensor([0, 1, 0]), batch_size=2, device=DEVICE)
    result = infer(model, batches, Objective(None, 2), lambda x: x.float())
    assert result.predictions is None
    assert 0.0 <= result.stats["accuracy"] <= 1.0
