"""One run across the processes torchrun starts: the process group, this process's share, and
the few collectives the loop, inference and the run folder need.

torchrun (`torchrun --nproc_per_node=N -m cnnlab run CONFIG`) gives each process RANK,
WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/MASTER_PORT) in its environment. Without them
`start` returns None, every function here does nothing, and torch.distributed is never
imported: a plain run is unchanged. With them, the processes join one group: NCCL when the run
trains on CUDA (each process on cuda:LOCAL_RANK), gloo on the CPU.

How a run is shared (see README "Scale"): every process holds the whole data set and draws the
same seeded permutation; each takes its contiguous slice of every global batch
(`Part.bounds`), DistributedDataParallel averages the gradients, and evaluation splits each
split into one contiguous block per process and gathers the predictions in file order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from cnnlab.errors import CnnlabError, ConfigError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun sets in every process it starts


@dataclass(frozen=True)
class Part:
    """Process `rank` of `world`: which rows of a batch or a split it takes."""

    rank: int
    world: int

    def bounds(self, count: int) -> tuple[int, int]:
        """Rows [start, stop) of `count`: contiguous, in rank order, sizes differing by at most
        one (a batch the world size does not divide gives the later ranks one row more)."""
        return count * self.rank // self.world, count * (self.rank + 1) // self.world


@dataclass(frozen=True)
class Context(Part):
    local_rank: int  # the GPU of this process on its node
    backend: str  # "nccl" or "gloo"
    owned: bool  # the group was made here (start), so stop() ends it


_context: Context | None = None


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return all(name in os.environ for name in ENV)


def current() -> Context | None:
    """The group this process trains in, or None (a plain run)."""
    return _context


def is_main() -> bool:
    """Whether this process writes the run folder and prints: rank 0, or a plain run."""
    return _context is None or _context.rank == 0


def start(device: str) -> Context | None:
    """Join torchrun's group for a run on `device` (train.device); None without torchrun. A
    group made by the caller (torch.distributed.init_process_group) is used as it is."""
    global _context
    if _context is not None or not launched():
        return _context
    import torch
    import torch.distributed as dist

    backend = backend_for(device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if not dist.is_available() or (backend == "gloo" and not dist.is_gloo_available()):
        raise ConfigError(
            f"torchrun: this PyTorch build has no {backend} backend for torch.distributed; "
            "run without torchrun, or install a PyTorch build with it"
        )
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun: process {local_rank} of this node needs cuda:{local_rank}, but "
                f"{torch.cuda.device_count()} GPUs are visible; set --nproc_per_node to at "
                "most the number of GPUs (or train.device: cpu)"
            )
        torch.cuda.set_device(local_rank)  # train.device auto/cuda then means this GPU
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend)
    else:
        backend = str(dist.get_backend())
    _context = Context(rank, world, local_rank, backend, owned)
    return _context


def backend_for(device: str) -> str:
    """The process group's backend for `train.device`: nccl on CUDA GPUs, gloo on the CPU."""
    import torch

    if device == "cpu":
        return "gloo"
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return "nccl"
    if device == "auto":
        return "gloo"
    raise ConfigError(
        f"train.device: {device!r} under torchrun; each process trains on cuda:LOCAL_RANK "
        "(train.device: auto or cuda) or on the CPU (cpu)"
    )


def stop() -> None:
    """End the group `start` made (a caller's own group stays)."""
    global _context
    if _context is None:
        return
    _release()
    if _context.owned:
        import torch.distributed as dist

        dist.destroy_process_group()
    _context = None


def described() -> dict[str, Any]:
    """manifest.json's record of the processes that trained a run; empty for one process."""
    if _context is None:
        return {}
    return {"torchrun": {"world_size": _context.world, "backend": _context.backend}}


def barrier() -> None:
    if _context is None:
        return
    import torch.distributed as dist

    if _context.backend == "nccl":
        dist.barrier(device_ids=[_context.local_rank])
    else:
        dist.barrier()


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block, then the others do (e.g. the decode: rank 0 writes the cache,
    the others read it). A failure on rank 0 ends its process before the barrier; torchrun
    then stops the others."""
    if _context is not None and _context.rank != 0:
        barrier()
    yield
    if _context is not None and _context.rank == 0:
        barrier()


def all_sum(tensor: torch.Tensor) -> None:
    """`tensor` := its sum over every process, in place."""
    if _context is not None:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_min(tensor: torch.Tensor) -> None:
    """`tensor` := its minimum over every process, in place."""
    if _context is not None:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)


def gather_blocks(local: torch.Tensor, count: int) -> torch.Tensor:
    """Every process's block of `count` rows (Part.bounds), `local` being this one's: the whole
    (count, ...) tensor in row order. all_gather needs equal sizes: blocks are padded to the
    largest and cut back."""
    if _context is None:
        return local
    import torch
    import torch.distributed as dist

    ctx = _context
    sizes = [Part(rank, ctx.world).bounds(count) for rank in range(ctx.world)]
    largest = max(stop - start for start, stop in sizes)
    padded = local.new_zeros((largest, *local.shape[1:]))
    padded[: len(local)] = local
    blocks = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(blocks, padded)
    return torch.cat([b[: stop - start] for b, (start, stop) in zip(blocks, sizes, strict=True)])


def from_rank_zero(make: Callable[[], T]) -> T:
    """`make()` on rank 0, its (picklable) value given to every process. An error there is
    raised on every process (a CnnlabError as itself, with its message), so all stop alike
    instead of waiting for rank 0. Plain run: `make()`."""
    if _context is None:
        return make()
    import torch.distributed as dist

    box: list[Any] = [None]
    failure: Exception | None = None
    if _context.rank == 0:
        try:
            box[0] = ("value", make())
        except Exception as error:
            failure, box[0] = error, ("error", type(error), str(error))
    dist.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    if box[0][0] == "value":
        return box[0][1]
    _, kind, message = box[0]
    if isinstance(kind, type) and issubclass(kind, CnnlabError):
        try:
            same = kind(message)
        except TypeError:  # a subclass taking other arguments
            same = CnnlabError(message)
        raise same
    raise RuntimeError(f"rank 0 stopped: {kind.__name__}: {message}")


def broadcast_state(module: torch.nn.Module) -> None:
    """`module`'s parameters and buffers := rank 0's, in place."""
    if _context is None:
        return
    import torch.distributed as dist

    for tensor in module.state_dict().values():
        if tensor.is_contiguous():
            dist.broadcast(tensor, src=0)
        else:  # channels_last weights: sent in a contiguous copy
            sent = tensor.contiguous()
            dist.broadcast(sent, src=0)
            tensor.copy_(sent)


def sync_buffers(module: torch.nn.Module) -> None:
    """`module`'s buffers (BatchNorm's running statistics) := rank 0's: each process updated
    its own from its slice of the batch, so validation measures one network everywhere."""
    if _context is None:
        return
    import torch.distributed as dist

    for buffer in module.buffers():
        sent = buffer if buffer.is_contiguous() else buffer.contiguous()
        dist.broadcast(sent, src=0)
        if sent is not buffer:
            buffer.copy_(sent)


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """`model` for training steps under DistributedDataParallel, which averages the gradients
    of the parameters that require them now: wrap again when a stage changes which do (a
    parameter unfrozen later would otherwise train apart on each process). The wrapper before
    is released first: its hooks on the same parameters and its gradient buckets."""
    _release()
    if _context is None or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    on_gpu = _context.backend == "nccl"
    ids = [_context.local_rank] if on_gpu else None
    network = DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)
    _wrapped.append(network)
    return network


_wrapped: list[Any] = []  # the live DistributedDataParallel wrapper, at most one


def _release() -> None:
    while _wrapped:
        _wrapped.pop()._remove_autograd_hooks()


def sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every BatchNorm layer (cnnlab's Keras BatchNormalization included: a
    BatchNorm2d) replaced by torch's SyncBatchNorm, which normalises with the statistics of the
    whole global batch. The parameters and buffers are the same tensors, moved over."""
    from torch.nn import SyncBatchNorm

    return SyncBatchNorm.convert_sync_batchnorm(model)
