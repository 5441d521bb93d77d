"""train.batch_size: auto, and what an out-of-memory error during training does to it.

On a CUDA device, auto is the largest power of two, up to the training split and MAX_BATCH, with
which the run's own model, optimiser and augmentation train TRY_STEPS steps (forward, backward,
optimiser step) without running out of device memory (Lightning's power search: doubling from
2). The model and the optimiser are restored after every try (probe.py), so the run starts from
the weights it would have had without the search. On the CPU there is no device memory to
fill: a batch is bounded by host memory, which the machine would swap into long before refusing,
so there auto is Keras's default, 32.

The search holds the whole training split on the device as the run will, but not the run's
validation batches or a weight average: a run can still run out of memory later. With an auto
batch it then halves the batch and trains again from its last complete epoch (runs/tuner.py):
the simplest restart that is exactly a resumed run, with `rescaled` moving the schedule to the
same point of training in the new, doubled count of steps.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable
from typing import Any

import torch

from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import CnnlabError
from cnnlab.train.loop import Trainee
from cnnlab.train.probe import restore, snapshot, train_step

# Beyond 4096 images a batch, the lr needs a large-batch recipe of its own (Goyal et al.'s
# linear scaling and warm-up stop at 8k); it also bounds the search to 12 tries.
MAX_BATCH = 4096
FIRST_TRY = 2  # BatchNorm trains on 2 samples or more (Lightning's power search starts at 2)
TRY_STEPS = 3  # the first step allocates the optimiser's state; the others run at the peak
CPU_BATCH = 32  # Keras's default, auto's value where no device memory runs out


def is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError (torch.cuda's is the same class), or an allocator's
    RuntimeError that says so (MPS, older builds)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error)


def release_memory(device: torch.device) -> None:
    """What a failed step held, back to the device (call outside the `except` block: its
    traceback keeps the step's tensors alive)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def search_limit(samples: int) -> int:
    """The largest power of two up to the training split and MAX_BATCH."""
    return 1 << (max(1, min(samples, MAX_BATCH)).bit_length() - 1)


def with_batch_size(batches: DeviceBatches, size: int) -> DeviceBatches:
    """The same split in batches of `size`; its images stay where they are (on the device, or
    streamed from the host), nothing is copied again."""
    resized = copy.copy(batches)
    resized.batch_size = size
    return resized


def largest_batch(
    fits: Callable[[int], None], limit: int, device: torch.device, reset: Callable[[], None]
) -> int:
    """Doubling from FIRST_TRY up to `limit` while `fits(size)` runs without running out of
    memory, calling `reset` after each try; the last size that fitted. Other errors are raised
    as they are."""
    found, size = 0, min(FIRST_TRY, limit)
    while size <= limit:
        try:
            fits(size)
            out = False
        except Exception as error:
            if not is_out_of_memory(error):
                reset()
                raise
            out = True
        if out:  # here, not in the except block, the failed step's tensors are free again
            release_memory(device)
        reset()
        if out:
            break
        found, size = size, size * 2
    if not found:
        raise CnnlabError(
            f"train.batch_size: auto: a batch of {min(FIRST_TRY, limit)} already runs out of "
            f"memory on {device}; use smaller images (data.target_size) or a smaller model"
        )
    return found


def find_batch_size(
    trainee: Trainee, train: DeviceBatches, device: torch.device, steps: int = TRY_STEPS
) -> int:
    """The search on `device`: `steps` steps of `trainee` (with its optimiser) per size over
    the first batches of `train`; `trainee` is restored bitwise after every try."""
    saved = snapshot(trainee)

    def fits(size: int) -> None:
        trainee.model.train()
        for images, labels in with_batch_size(train, size).epoch(0, steps):
            train_step(trainee, images, labels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the steps' kernels have run, not just queued

    limit = search_limit(train.num_samples)
    return largest_batch(fits, limit, device, lambda: restore(trainee, saved))


def auto_batch_size(
    trainee: Trainee, train: DeviceBatches, device: torch.device
) -> tuple[int, str]:
    """(auto's batch size on `device`, how it was chosen)."""
    if device.type != "cuda":
        return CPU_BATCH, f"Keras's default: on {device.type} no device memory runs out"
    found = find_batch_size(trainee, train, device)
    limit = search_limit(train.num_samples)
    return found, (
        f"the largest power of two up to {limit} that trained {TRY_STEPS} steps in {device}'s "
        "memory"
    )


def rescaled(saved: dict[str, Any], old_steps: int, new_steps: int) -> dict[str, Any]:
    """A checkpoint's schedule at the same point of training when an epoch takes `new_steps`
    steps instead of `old_steps` (a checkpoint ends an epoch, so the count divides exactly)."""
    schedule = dict(saved["schedule"])
    if "last_epoch" in schedule:  # LRScheduler counts steps in last_epoch
        schedule["last_epoch"] = schedule["last_epoch"] * new_steps // old_steps
        schedule["_step_count"] = schedule["last_epoch"] + 1
    return {**saved, "schedule": schedule}
