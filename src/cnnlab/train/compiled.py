"""`train.compile`: torch.compile the model in place, and build its graphs before the clock.

The mode is torch.compile's: "default", "reduce-overhead" (also CUDA graphs: for small models
on a GPU, where launching kernels costs more than running them) or "max-autotune". Graphs are
specialised to each batch size (dynamic=False, which CUDA graphs need), so the warm-up runs one
forward and backward pass per training batch size and one forward pass per evaluation batch size
on zero images, then puts back all those passes touched (BatchNorm statistics, random state,
gradients): a compiled run trains on the same numbers as an uncompiled one (but for Dropout,
whose compiled masks come from another generator: other masks, the same odds), and the compile
time is reported on its own line instead of inflating the first epoch. PyTorch keeps compiled
kernels in its on-disk cache (TORCHINDUCTOR_CACHE_DIR), so later runs of a model compile faster.
`model.compile()` keeps the module and its state_dict keys, so checkpoints and weights files are
the same as without it.
"""

from __future__ import annotations

import time

import torch

from cnnlab.data.batches import DeviceBatches
from cnnlab.runtime import IMAGE_LAYOUT, autocast
from cnnlab.train.checkpoint import restore_rng, rng_state
from cnnlab.train.loop import Trainee


def compile_model(model: torch.nn.Module, mode: str) -> None:
    model.compile(mode=mode, dynamic=False)


def batch_sizes(batches: DeviceBatches | None) -> list[int]:
    """Every batch size one pass over `batches` yields: the full one and the last, partial one."""
    if batches is None or len(batches) == 0:
        return []
    full, rest = divmod(batches.num_samples, batches.batch_size)
    sizes = [batches.batch_size] if full else []
    return sizes + ([rest] if rest and not batches.drop_last else [])


def warm_up(trainee: Trainee, train: DeviceBatches, val: DeviceBatches | None) -> float:
    """Seconds spent building the graphs of every batch size this training will see."""
    model, task = trainee.model, trainee.task
    device = next(model.parameters()).device
    shape = train.images.shape[1:]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    random_state = rng_state()
    started = time.perf_counter()
    model.train()
    for size in batch_sizes(train):
        with autocast(device):
            logits = model(_zeros(size, shape, device))
        targets = torch.zeros(
            size, *train.labels.shape[1:], dtype=train.labels.dtype, device=device
        )
        task.loss(logits, targets).backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        for size in batch_sizes(val):
            with autocast(device):
                model(_zeros(size, shape, device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    restore_rng(random_state)
    return seconds


def _zeros(size: int, shape: torch.Size, device: torch.device) -> torch.Tensor:
    images = torch.zeros(size, *shape, device=device)
    return images.contiguous(memory_format=IMAGE_LAYOUT)
