"""evaluate.tta: flip_translate is airbench's six views, weighted as its infer_mirror_translate."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data.batches import DeviceBatches
from cnnlab.task.classification import Classification as Objective
from cnnlab.task.inference import infer

H = W = 5


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Content moved by (dy, dx) pixels, the edge reflected (pixel -1 is pixel 1), by hand."""

    def reflect(i: int, size: int) -> int:
        return -i if i < 0 else 2 * (size - 1) - i if i >= size else i

    rows = [reflect(i - dy, H) for i in range(H)]
    cols = [reflect(j - dx, W) for j in range(W)]
    return x[:, :, rows][:, :, :, cols]


def net() -> torch.nn.Module:
    torch.manual_seed(0)  # a position-sensitive network: every view predicts differently
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * H * W, 4))


def split() -> tuple[torch.Tensor, torch.Tensor, DeviceBatches]:
    images = torch.randint(0, 256, (6, 3, H, W), generator=torch.Generator().manual_seed(3))
    images = images.to(torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    return images, labels, DeviceBatches(images, labels, batch_size=4, shuffle=False)


def test_flip_translate_is_the_weighted_mean_of_the_six_views():
    model, (images, labels, batches) = net(), split()
    objective = Objective("softmax", 4)
    result = infer(model, batches, objective, lambda x: x.float() / 255, True, "flip_translate")

    x = images.float() / 255
    p = lambda view: torch.softmax(model(view), 1)  # noqa: E731
    with torch.no_grad():
        mirror = (p(x) + p(x.flip(-1))) / 2
        moved = [shifted(x, 1, 1), shifted(x, -1, -1)]  # down-right, up-left
        translated = sum((p(m) + p(m.flip(-1))) / 2 for m in moved) / 2
        expected = 0.5 * mirror + 0.5 * translated
    assert torch.allclose(result.predictions, expected, atol=1e-6)
    assert not torch.allclose(expected, mirror, atol=1e-3)  # the shifts change the answer
    nll = -torch.log(expected[torch.arange(6), labels]).mean()
    assert result.loss == pytest.approx(nll.item(), abs=1e-5)
    accuracy = (expected.argmax(1) == labels).float().mean().item()
    assert result.stats["accuracy"] == pytest.approx(accuracy)


def test_true_is_still_image_and_mirror():
    model, (images, _, batches) = net(), split()
    result = infer(model, batches, Objective("softmax", 4), lambda x: x.float() / 255, True, True)
    x = images.float() / 255
    with torch.no_grad():
        expected = (torch.softmax(model(x), 1) + torch.softmax(model(x.flip(-1)), 1)) / 2
    assert torch.allclose(result.predictions, expected, atol=1e-6)
