"""Shuffled uint8 batches of one split, already on the device, indexed by tensors: no per-sample
Python in the steady state. The order is a seeded permutation per epoch, or with the balanced
sampler (data.sampler) draws with replacement that give every class the same chance."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from cnnlab.runtime import stream_seed

if TYPE_CHECKING:
    from cnnlab.distributed import Part

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# images uint8 (B, C, H, W) (float32 when degraded once), labels int64 (B,) or target images
Batch = tuple[torch.Tensor, torch.Tensor]
IndexBatches = Iterator[tuple[torch.Tensor, torch.Tensor]]  # (host index, device index)


def permutation_seed(seed: int, epoch: int, k: int = 0) -> int:
    """Seed of pass `k` of `epoch` (k > 0 only with `steps`)."""
    return stream_seed(f"cnnlab.batches:{seed}:{epoch}:{k}")


def gather_rows(source: torch.Tensor, index: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """`source[index]` written into the leading rows of `buffer`: reused, not reallocated."""
    rows = buffer[: index.numel()]
    torch.index_select(source, 0, index, out=rows)
    return rows


def staging_buffers(
    count: int, batch_size: int, sample_shape: torch.Size, dtype: torch.dtype = torch.uint8
) -> list[torch.Tensor]:
    """Reusable host batch buffers; pinned where CUDA exists, as only pinned memory copies
    asynchronously (and pinning needs a CUDA driver)."""
    pin = torch.cuda.is_available()
    shape = (batch_size, *sample_shape)
    return [torch.empty(shape, dtype=dtype, pin_memory=pin) for _ in range(count)]


def _host_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A CPU tensor sharing `array`'s memory, so a memmap is only read where it is indexed."""
    if isinstance(array, torch.Tensor):
        return array.cpu()
    with warnings.catch_warnings():
        # torch warns that writing to a read-only array is undefined; this module only reads.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(array))


def _by_class(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample indices grouped by class, each present class's first position and count."""
    members = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[members], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    return members, starts, counts


def _resolve(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # streams and memory queries need an index
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _sliced(indices: IndexBatches, part: Part) -> IndexBatches:
    """Each batch's slice for `part`: the same permutation on every process (one seed), so
    the slices of one step cover its batch exactly once."""
    for host, on_device in indices:
        start, stop = part.bounds(len(host))
        yield host[start:stop], on_device[start:stop]


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":  # pinned source: the copy is queued, the host does not wait
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class DeviceBatches:
    """Shuffled (seeded, per epoch) uint8 batches of one split, already on `device`."""

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        max_device_fraction: float = 0.5,
        sampler: Literal["shuffle", "balanced"] = "shuffle",
    ):
        host_images, host_labels = _host_tensor(images), _host_tensor(labels)
        if host_images.dim() != 4 or host_images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(
                f"images must be uint8 (or degraded float32) (N, C, H, W), got "
                f"{host_images.dtype} {tuple(host_images.shape)}"
            )
        # class indices (N,), or target images uint8 (N, C, H, W) (task: reconstruction)
        self.image_targets = host_labels.dim() == 4 and host_labels.dtype == torch.uint8
        if not self.image_targets and (
            host_labels.dim() != 1 or host_labels.dtype not in _INTEGER_DTYPES
        ):
            raise ValueError(
                f"labels must be integer (N,) or uint8 target images (N, C, H, W), got "
                f"{host_labels.dtype} {tuple(host_labels.shape)}"
            )
        if self.image_targets and sampler == "balanced":
            raise ValueError("the balanced sampler needs class labels, not target images")
        if len(host_images) != len(host_labels):
            raise ValueError(f"{len(host_images)} images but {len(host_labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if sampler == "balanced" and not shuffle:
            raise ValueError("the balanced sampler draws at random; it needs shuffle=True")
        self.device = _resolve(device)
        self.batch_size, self.shuffle, self.seed, self.drop_last = (
            batch_size,
            shuffle,
            seed,
            drop_last,
        )
        self.num_samples = len(host_images)
        self._classes = _by_class(host_labels) if sampler == "balanced" else None
        self.resident = self.device.type != "cuda" or self._fits(host_images, max_device_fraction)
        self.images = host_images.to(self.device) if self.resident else host_images
        if self.image_targets:  # as large as images: one copy when they are the images
            same = host_labels.data_ptr() == host_images.data_ptr()
            self.labels = self.images if same else host_labels.to(self.device)
        else:  # 8 bytes a sample: always on the device, so only images may need streaming
            self.labels = host_labels.to(torch.int64).to(self.device)

    def _fits(self, images: torch.Tensor, max_device_fraction: float) -> bool:
        free, _total = torch.cuda.mem_get_info(self.device)
        return images.numel() * images.element_size() <= max_device_fraction * free

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + int(rest > 0 and not self.drop_last)

    def epoch(
        self, epoch: int, steps: int | None = None, part: Part | None = None
    ) -> Iterator[Batch]:
        """Batches of epoch `epoch`: images uint8 (B, C, H, W), labels int64 (B,), both on the
        device. The order is a permutation seeded by (seed, epoch), so any epoch can be replayed
        on its own (resume). `steps` (Keras steps_per_epoch) yields exactly that many batches,
        continuing into further permutations (seeded by (seed, epoch, k)) when one pass is not
        enough; like Keras's flow(), each pass ends with its partial batch unless drop_last.
        `part` (torchrun): only this process's contiguous slice of every batch (Part.bounds;
        possibly empty in a last batch smaller than the world), the same number of steps."""
        if steps is not None and steps < 0:
            raise ValueError(f"steps must be at least 0, got {steps}")
        if steps and len(self) == 0:
            raise ValueError(
                f"{self.num_samples} samples make no batch of {self.batch_size} "
                "with drop_last, so steps can never be reached"
            )
        indices = self._index_batches(epoch, len(self) if steps is None else steps)
        if part is not None:
            indices = _sliced(indices, part)
        return self._resident(indices) if self.resident else self._streamed(indices)

    def step_sizes(self, steps: int | None = None) -> list[int]:
        """The size of each batch `epoch(e, steps)` yields, the same for every epoch: full
        batches, and each pass's partial one (what a torchrun process weights its slice by)."""
        per_pass = len(self)
        count = per_pass if steps is None else steps
        if per_pass == 0:
            return [0] * count
        return [
            min(self.batch_size, self.num_samples - (step % per_pass) * self.batch_size)
            for step in range(count)
        ]

    def block(self, part: Part) -> Iterator[Batch]:
        """This process's contiguous block of the split (Part.bounds of its rows), in order, in
        batches of batch_size: the evaluation of one process of a torchrun run."""
        start, stop = part.bounds(self.num_samples)
        order = torch.arange(start, stop)
        on_device = _to_device(order, self.device)
        indices = (
            (order[at : at + self.batch_size], on_device[at : at + self.batch_size])
            for at in range(0, stop - start, self.batch_size)
        )
        return self._resident(indices) if self.resident else self._streamed(indices)

    def _order(self, epoch: int, k: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(permutation_seed(self.seed, epoch, k))
        if self._classes is not None:
            return self._balanced_draw(generator)
        return torch.randperm(self.num_samples, generator=generator)

    def _balanced_draw(self, generator: torch.Generator) -> torch.Tensor:
        """num_samples indices with replacement: a class uniformly, then one of its samples
        uniformly (torch's WeightedRandomSampler with weights 1 / class count, drawn in two
        steps, so no 2**24 limit on the categories of torch.multinomial). On the host, as the
        permutation is, so a seed gives the same batches on every device."""
        assert self._classes is not None
        members, starts, counts = self._classes
        n = self.num_samples
        picked = torch.randint(len(counts), (n,), generator=generator)
        within = torch.rand(n, generator=generator, dtype=torch.float64) * counts[picked]
        return members[starts[picked] + within.long()]

    def _index_batches(self, epoch: int, steps: int) -> IndexBatches:
        """Host and device index of each batch: one queued upload per pass, none per batch."""
        k = 0
        while steps > 0:
            order = self._order(epoch, k)
            on_device = _to_device(order, self.device)
            for start in range(0, min(steps, len(self)) * self.batch_size, self.batch_size):
                yield (
                    order[start : start + self.batch_size],
                    on_device[start : start + self.batch_size],
                )
            steps -= len(self)
            k += 1

    def _resident(self, indices: IndexBatches) -> Iterator[Batch]:
        for _host_index, index in indices:
            yield self.images.index_select(0, index), self.labels.index_select(0, index)

    def _streamed(self, indices: IndexBatches) -> Iterator[Batch]:
        """Gather on the host into two pinned buffers and copy on a side stream, one batch ahead
        of the consumer, so the copy overlaps the consumer's work on the previous batch."""
        copy_stream = torch.cuda.Stream(self.device)
        buffers = staging_buffers(2, self.batch_size, self.images.shape[1:], self.images.dtype)
        copied: list[torch.cuda.Event | None] = [None, None]  # last copy out of each buffer

        def start(slot: int, host_index: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event]:
            previous = copied[slot]
            if previous is not None:
                previous.synchronize()  # waits for a copy queued a batch ago, not the model
            rows = gather_rows(self.images, host_index, buffers[slot])
            with torch.cuda.stream(copy_stream):
                on_device = rows.to(self.device, non_blocking=True)
                done = copied[slot] = copy_stream.record_event()
            return on_device, done

        def finish(
            images: torch.Tensor, done: torch.cuda.Event, index: torch.Tensor, host: torch.Tensor
        ) -> Batch:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(done)  # the GPU waits for the copy; the host does not
            images.record_stream(consumer)  # memory made on copy_stream, used on the consumer's
            if self.labels.device != self.device:  # target images streamed with their inputs
                return images, self.labels.index_select(0, host).to(self.device)
            return images, self.labels.index_select(0, index)

        pending = None
        for slot, (host_index, index) in enumerate(indices):
            upcoming = (*start(slot % 2, host_index), index, host_index)
            if pending is not None:
                yield finish(*pending)
            pending = upcoming
        if pending is not None:
            yield finish(*pending)
