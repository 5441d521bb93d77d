import warnings

import numpy as np
import pytest
import torch

from cnnlab.data.batches import DeviceBatches, gather_rows, permutation_seed, staging_buffers

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def labelled_split(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Sample i has label i and every pixel equal to i, so a batch shows its own pairing."""
    labels = np.arange(n, dtype=np.int64)
    images = np.broadcast_to(labels.astype(np.uint8)[:, None, None, None], (n, 3, 4, 5)).copy()
    return images, labels


def epoch_labels(batches: DeviceBatches, epoch: int, steps: int | None = None) -> list[list[int]]:
    return [labels.tolist() for _images, labels in batches.epoch(epoch, steps)]


def flat(batches: list[list[int]]) -> list[int]:
    return [label for batch in batches for label in batch]


def test_every_sample_appears_once_per_epoch_and_last_batch_is_partial():
    batches = DeviceBatches(*labelled_split(50), batch_size=16, device=DEVICE)
    order = epoch_labels(batches, 0)
    assert len(batches) == 4
    assert [len(b) for b in order] == [16, 16, 16, 2]
    assert sorted(flat(order)) == list(range(50))


def test_drop_last_omits_the_partial_batch():
    batches = DeviceBatches(*labelled_split(50), batch_size=16, device=DEVICE, drop_last=True)
    order = epoch_labels(batches, 0)
    assert len(batches) == 3
    assert [len(b) for b in order] == [16, 16, 16]
    assert len(set(flat(order))) == 48


def test_same_seed_and_epoch_replay_the_same_order_and_other_epochs_differ():
    first = DeviceBatches(*labelled_split(), batch_size=8, device=DEVICE, seed=3)
    replay = DeviceBatches(*labelled_split(), batch_size=8, device=DEVICE, seed=3)
    other_seed = DeviceBatches(*labelled_split(), batch_size=8, device=DEVICE, seed=4)
    assert epoch_labels(first, 5) == epoch_labels(replay, 5)
    assert epoch_labels(first, 5) != epoch_labels(first, 6)
    assert epoch_labels(first, 5) != epoch_labels(other_seed, 5)


def test_shuffle_false_yields_samples_in_order():
    batches = DeviceBatches(*labelled_split(20), batch_size=8, device=DEVICE, shuffle=False)
    assert epoch_labels(batches, 7) == [list(range(8)), list(range(8, 16)), list(range(16, 20))]


@pytest.mark.parametrize("max_device_fraction", [0.5, 0.0])
def test_images_stay_paired_with_their_labels(max_device_fraction):
    batches = DeviceBatches(
        *labelled_split(), batch_size=16, device=DEVICE, max_device_fraction=max_device_fraction
    )
    for images, labels in batches.epoch(0):
        assert torch.equal(images.long(), labels.view(-1, 1, 1, 1).expand_as(images))


def test_steps_beyond_one_pass_continue_into_a_new_permutation():
    batches = DeviceBatches(*labelled_split(20), batch_size=8, device=DEVICE)
    order = epoch_labels(batches, 2, steps=7)
    assert len(order) == 7
    assert order[:3] == epoch_labels(batches, 2)  # the first pass is the epoch's own order
    assert sorted(flat(order[3:6])) == list(range(20))  # the second pass is a full permutation
    assert order[3:6] != order[:3]
    assert order == epoch_labels(batches, 2, steps=7)


def test_steps_shorter_than_one_pass_yield_its_first_batches():
    batches = DeviceBatches(*labelled_split(20), batch_size=8, device=DEVICE)
    assert epoch_labels(batches, 1, steps=2) == epoch_labels(batches, 1)[:2]
    assert epoch_labels(batches, 1, steps=0) == []


def test_steps_without_any_batch_raise_instead_of_looping_forever():
    batches = DeviceBatches(*labelled_split(3), batch_size=4, device=DEVICE, drop_last=True)
    with pytest.raises(ValueError, match="no batch"):
        batches.epoch(0, steps=2)


def test_read_only_memmap_input_works_without_warning(tmp_path):
    images, labels = labelled_split(30)
    stored = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="w+", shape=images.shape)
    stored[:] = images
    stored.flush()
    read_only = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="r", shape=images.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = DeviceBatches(read_only, labels, batch_size=8, device=DEVICE, shuffle=False)
        got = torch.cat([images for images, _labels in batches.epoch(0)])
    assert torch.equal(got.cpu(), torch.from_numpy(images))


def test_batches_are_uint8_and_int64_on_the_requested_device():
    batches = DeviceBatches(*labelled_split(), batch_size=16, device=DEVICE)
    images, labels = next(batches.epoch(0))
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 4, 5)
    assert labels.dtype == torch.int64 and labels.shape == (16,)
    assert images.device.type == labels.device.type == DEVICE.type
    assert batches.resident


def test_split_too_big_for_the_device_streams_the_same_batches():
    resident = DeviceBatches(*labelled_split(), batch_size=16, device=DEVICE)
    streamed = DeviceBatches(
        *labelled_split(), batch_size=16, device=DEVICE, max_device_fraction=0.0
    )
    assert streamed.resident == (DEVICE.type != "cuda")  # the host is the CPU's own device
    for (a_images, a_labels), (b_images, b_labels) in zip(
        resident.epoch(4, steps=9), streamed.epoch(4, steps=9), strict=True
    ):
        assert b_images.device.type == DEVICE.type
        assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)


def test_gather_rows_reuses_the_staging_buffer():
    source = torch.from_numpy(labelled_split(10)[0])
    buffer = staging_buffers(2, 4, source.shape[1:])[0]
    assert buffer.is_pinned() == torch.cuda.is_available()
    full = gather_rows(source, torch.tensor([7, 1, 3, 0]), buffer)
    assert full.data_ptr() == buffer.data_ptr() and full[:, 0, 0, 0].tolist() == [7, 1, 3, 0]
    partial = gather_rows(source, torch.tensor([9, 2]), buffer)
    assert partial.data_ptr() == buffer.data_ptr() and partial[:, 0, 0, 0].tolist() == [9, 2]


def test_extra_permutations_never_reuse_another_epochs_seed():
    seeds = {permutation_seed(s, e, k) for s in range(3) for e in range(20) for k in range(5)}
    assert len(seeds) == 3 * 20 * 5


def test_mismatched_or_wrongly_typed_inputs_are_refused():
    images, labels = labelled_split(10)
    with pytest.raises(ValueError, match="9 labels"):
        DeviceBatches(images, labels[:9], batch_size=4)
    with pytest.raises(ValueError, match="uint8"):
        DeviceBatches(images.astype(np.float64), labels, batch_size=4)
    with pytest.raises(ValueError, match="integer"):
        DeviceBatches(images, labels.astype(np.float32), batch_size=4)


def test_target_images_travel_with_their_inputs_and_are_not_copied_when_the_same():
    """task: reconstruction: degraded float inputs with uint8 targets, or the images as their
    own targets (one tensor on the device, not two)."""
    images, _ = labelled_split(10)
    own = DeviceBatches(images, images, batch_size=4, seed=1)
    assert own.labels is own.images
    for batch, targets in own.epoch(0):
        assert torch.equal(batch, targets)
    inputs = images[:, :, ::2, ::2].astype(np.float32) / 255
    paired = DeviceBatches(inputs, images, batch_size=4, shuffle=False)
    got_inputs, got_targets = zip(*paired.epoch(0), strict=True)
    assert torch.equal(torch.cat(got_targets), torch.from_numpy(images))
    assert torch.equal(torch.cat(got_inputs), torch.from_numpy(inputs))
    with pytest.raises(ValueError, match="class labels"):
        DeviceBatches(images, images, batch_size=4, sampler="balanced")
