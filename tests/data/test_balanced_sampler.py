"""data.sampler: balanced: training batches that draw every class equally often, seeded per
(seed, epoch) as the shuffled order is, with the epoch's length unchanged."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import yaml

import cnnlab
from cnnlab.config import DataConfig, Experiment
from cnnlab.config_io import validate
from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import ConfigError

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
COUNTS = (900, 90, 10)  # 90:1 between the largest and the smallest class


def imbalanced() -> tuple[np.ndarray, np.ndarray]:
    """Image i's two channels hold i // 256 and i % 256, so a batch shows which images it drew."""
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    labels = labels[np.random.default_rng(0).permutation(len(labels))]  # classes interleaved
    index = np.arange(len(labels))
    images = np.zeros((len(index), 2, 2, 2), dtype=np.uint8)
    images[:, 0], images[:, 1] = (index // 256)[:, None, None], (index % 256)[:, None, None]
    return images, labels


def image_index(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) * 256 + images[:, 1, 0, 0]


def drawn(batches: DeviceBatches, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(batches.epoch(epoch))
    images = torch.cat([images for images, _ in pairs]).cpu().numpy()
    labels = torch.cat([labels for _, labels in pairs]).cpu().numpy()
    return images, labels


def sampler(seed: int = 0, **kwargs) -> DeviceBatches:
    return DeviceBatches(
        *imbalanced(), batch_size=64, device=DEVICE, seed=seed, sampler="balanced", **kwargs
    )


def test_balanced_sampler_draws_each_class_about_equally_often():
    batches = sampler()
    _, labels = drawn(batches, 0)
    counts = Counter(labels.tolist())
    assert len(labels) == sum(COUNTS)  # the epoch's length is unchanged
    assert len(batches) == -(-sum(COUNTS) // 64)
    for k in range(len(COUNTS)):  # a third each: 333 +- 4 standard deviations (about 60)
        assert abs(counts[k] - sum(COUNTS) / 3) < 60, counts
    shuffled = DeviceBatches(*imbalanced(), batch_size=64, device=DEVICE)
    assert Counter(drawn(shuffled, 0)[1].tolist()) == dict(enumerate(COUNTS))


def test_small_classes_are_drawn_with_replacement_and_images_keep_their_labels():
    images, labels = drawn(sampler(), 0)
    index = image_index(images)
    _, truth = imbalanced()
    assert np.array_equal(truth[index], labels)
    smallest = index[labels == 2]
    assert len(smallest) > 20 * len(set(smallest.tolist()))  # its 10 images, each many times
    assert set(smallest.tolist()) == set(np.flatnonzero(truth == 2).tolist())


def test_balanced_draws_repeat_for_the_same_seed_and_epoch_only():
    first, replay, other_seed = sampler(3), sampler(3), sampler(4)
    assert np.array_equal(drawn(first, 5)[1], drawn(replay, 5)[1])
    assert np.array_equal(drawn(first, 5)[0], drawn(replay, 5)[0])
    assert not np.array_equal(drawn(first, 5)[1], drawn(first, 6)[1])
    assert not np.array_equal(drawn(first, 5)[1], drawn(other_seed, 5)[1])


def test_streamed_batches_draw_the_same_as_resident_ones():
    resident, streamed = sampler(1), sampler(1, max_device_fraction=0.0)
    for a, b in zip(drawn(resident, 2), drawn(streamed, 2), strict=True):
        assert np.array_equal(a, b)


def test_balanced_sampler_needs_shuffling_and_the_key_has_two_choices():
    with pytest.raises(ValueError, match="shuffle"):
        sampler(shuffle=False)
    assert DataConfig(source="digits").sampler == "shuffle"
    with pytest.raises(
        ConfigError, match=r"data.sampler: 'weighted' is not allowed \(shuffle, bal"
    ):
        validate({"data": {"source": "digits", "sampler": "weighted"}}, Experiment, source="x")


def test_a_run_trains_on_batches_drawn_evenly_from_its_classes(tmp_path, make_classes, monkeypatch):
    source = make_classes(tmp_path / "data", {"a": 30, "b": 6})
    seen: list[np.ndarray] = []
    real_epoch = DeviceBatches.epoch

    def recording(self, epoch, steps=None, part=None):
        for images, labels in real_epoch(self, epoch, steps, part):
            if self.shuffle:  # the training batches (evaluation's come in order)
                seen.append(labels.cpu().numpy())
            yield images, labels

    monkeypatch.setattr(DeviceBatches, "epoch", recording)
    config = tmp_path / "balanced.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": str(source), "sampler": "balanced"},
                "model": {"layers": ["Flatten", {"Dense": {"units": 2, "activation": "softmax"}}]},
                "train": {"epochs": 3, "batch_size": 8},
            }
        )
    )
    cnnlab.run(config, output_dir=tmp_path / "runs", quiet=True)
    labels = np.concatenate(seen)
    assert len(labels) == 3 * 29  # 24 + 5 training images a pass, three epochs
    assert 0.3 < (labels == 1).mean() < 0.7  # shuffled, b would be 5 / 29 = 0.17
