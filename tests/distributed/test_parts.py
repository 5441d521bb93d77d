"""How a torchrun run shares its work, in one process: every batch's slices cover it exactly
once, the weighted slice losses give the global batch's gradient, evaluation blocks cover a
split in order, and BatchNorm converts to SyncBatchNorm with its tensors kept."""

from __future__ import annotations

import pytest
import torch

from cnnlab import distributed
from cnnlab.data.batches import DeviceBatches
from cnnlab.distributed import Part
from cnnlab.models.layers import BatchNormalization
from cnnlab.train.loop import Shard


def test_without_torchrun_nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in distributed.ENV:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched()
    assert distributed.start("auto") is None
    assert distributed.current() is None and distributed.is_main()
    assert distributed.described() == {}
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model  # no DistributedDataParallel in a plain run


@pytest.mark.parametrize("count", [0, 1, 2, 7, 48, 49])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_parts_cover_every_row_once_in_order(count: int, world: int) -> None:
    bounds = [Part(rank, world).bounds(count) for rank in range(world)]
    rows = [row for start, stop in bounds for row in range(start, stop)]
    assert rows == list(range(count))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_each_step_is_sliced_from_the_same_permutation() -> None:
    """Two processes' slices of each step are the one-process batch, split at its middle (49
    images: 24 and 25; the last batch of 1: none and 1)."""
    n, batch = 1079, 49  # digits' training split at 20 % validation, 20 % test
    labels = torch.arange(n)
    images = torch.zeros(n, 1, 1, 1, dtype=torch.uint8)
    whole = DeviceBatches(images, labels, batch_size=batch, seed=3)
    parts = [list(whole.epoch(2, part=Part(rank, 2))) for rank in range(2)]
    steps = list(whole.epoch(2))
    assert len(parts[0]) == len(parts[1]) == len(steps) == 23
    for step, (_, ys) in enumerate(steps):
        joined = torch.cat([parts[0][step][1], parts[1][step][1]])
        assert torch.equal(joined, ys)
    assert [len(parts[r][-1][1]) for r in range(2)] == [0, 1]
    assert whole.step_sizes() == [49] * 22 + [1]
    assert whole.step_sizes(25) == [49] * 22 + [1, 49, 49]


def test_evaluation_blocks_are_the_split_in_order() -> None:
    labels = torch.arange(359)
    images = torch.zeros(359, 1, 1, 1, dtype=torch.uint8)
    split = DeviceBatches(images, labels, batch_size=32, shuffle=False)
    seen = [y for rank in range(3) for _, ys in split.block(Part(rank, 3)) for y in ys.tolist()]
    assert seen == list(range(359))


def test_weighted_slices_give_the_global_batch_gradient() -> None:
    """What DDP computes (the mean over processes of each one's gradient of its weighted slice
    loss) is the one-process gradient of the batch's mean loss, for uneven and empty slices."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    inputs, labels = torch.randn(7, 5), torch.randint(0, 3, (7,))

    def gradients(x: torch.Tensor, y: torch.Tensor, factor: float) -> list[torch.Tensor]:
        model.zero_grad()
        outputs = model(x)
        loss = torch.nn.functional.cross_entropy(outputs, y) if len(y) else outputs.sum() * 0
        (loss * factor).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole = gradients(inputs, labels, 1.0)
    for world in (2, 3, 8):  # 8 > 7 images: one process has an empty slice
        shard = Shard(model, world, [len(labels)])
        total = [torch.zeros_like(g) for g in whole]
        for rank in range(world):
            start, stop = Part(rank, world).bounds(len(labels))
            weight = shard.weight(0, stop - start)
            grads = gradients(inputs[start:stop], labels[start:stop], weight)
            for kept, grad in zip(total, grads, strict=True):
                kept += grad / world  # DDP averages over the processes
        for got, want in zip(total, whole, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_keras_batchnorm_converts_to_sync_batchnorm_with_its_tensors() -> None:
    """cnnlab's BatchNormalization is a BatchNorm2d (images and Dense features): torch's
    conversion takes it, scale-less ones included, keeping the same parameters and buffers."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        BatchNormalization(4, momentum=0.99, epsilon=1e-3, scale=False),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 3),
        BatchNormalization(3, momentum=0.6, epsilon=1e-12),
    )
    model[1].running_mean += 0.5
    before = {name: tensor for name, tensor in model.state_dict().items()}
    params = {id(p) for p in model.parameters()}
    inputs = torch.randn(5, 1, 8, 8)
    model.eval()
    expected = model(inputs)
    converted = distributed.sync_batchnorm(model)
    assert isinstance(converted[1], torch.nn.SyncBatchNorm)
    assert isinstance(converted[4], torch.nn.SyncBatchNorm)
    assert converted[1].weight is None and converted[1].momentum == pytest.approx(0.01)
    assert {id(p) for p in converted.parameters()} == params  # the optimiser's tensors
    after = converted.state_dict()
    assert after.keys() == before.keys()  # model.safetensors loads into the plain network
    assert all(after[k].data_ptr() == before[k].data_ptr() for k in after)
    torch.testing.assert_close(converted(inputs), expected, rtol=0, atol=0)


def test_each_process_draws_its_own_augmentation_of_its_slice(monkeypatch) -> None:
    import numpy as np

    from cnnlab.augment.pipeline import build_transforms
    from cnnlab.config import AugmentConfig

    images = np.random.default_rng(0).integers(0, 256, (8, 3, 16, 16), dtype=np.uint8)
    config = AugmentConfig(rotation_range=40, zoom_range=0.3)

    def drawn(rank: int | None) -> torch.Tensor:
        context = None if rank is None else distributed.Context(rank, 2, rank, "gloo", False)
        monkeypatch.setattr(distributed, "_context", context)
        train, _ = build_transforms(config, images, seed=0, device=torch.device("cpu"))
        train.begin_epoch(3)
        return train(torch.from_numpy(images))

    plain, first, second = drawn(None), drawn(0), drawn(1)
    assert not torch.equal(first, second)  # the same slice position, another draw
    assert torch.equal(drawn(1), second)  # still a function of (seed, epoch, rank): resumable
    assert not torch.equal(plain, first)


def test_sync_batchnorm_on_the_cpu_is_refused_before_anything_runs(monkeypatch, tmp_path) -> None:
    from tests.conftest import write_digits_config

    from cnnlab.config_io import load_experiment
    from cnnlab.errors import ConfigError
    from cnnlab.runs import check_torchrun

    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    path = write_digits_config(tmp_path / "bn.yaml")
    cfg = load_experiment(path, ["train.device=cpu", "train.sync_batchnorm=true"])
    with pytest.raises(ConfigError, match=r"train\.sync_batchnorm: .* CUDA GPUs only"):
        check_torchrun(cfg)
