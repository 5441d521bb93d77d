"""Where and how tensors run: device choice, seeding, determinism, mixed precision."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random

import numpy as np
import torch

from cnnlab.errors import ConfigError


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device: {name!r} is not a device (auto, cpu, cuda, cuda:1)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but no CUDA GPU is visible; use auto")
    return device


def stream_seed(key: str) -> int:
    """A seed in [0, 2**63) for the random stream named `key` (e.g. "cnnlab.batches:0:3:0"): a
    hash, not arithmetic such as seed * 1_000_003 + epoch, so no two keys share a stream."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_deterministic(enabled: bool) -> None:
    """Bitwise-repeatable kernels when enabled; the fastest ones otherwise."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 on CUDA (no loss scaling needed, unlike fp16); fp32 on the CPU, where bf16 is slow."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Images and convolution weights are kept channels_last on every device: cuDNN's tensor-core
# convolutions want it, and so do oneDNN's direct CPU kernels (training the reports' models on
# 2 CPU cores: 1.3-1.4x faster than the default layout, see BENCHMARKS.md).
IMAGE_LAYOUT = torch.channels_last


@functools.lru_cache(maxsize=256)
def device_constant(values: tuple, device: torch.device) -> torch.Tensor:
    """A small float32 constant on `device`, made once: on CUDA copied from pinned memory
    without the host waiting (a plain torch.tensor(..., device="cuda") synchronises, once per
    call, which in a per-batch transform is a host sync per batch). Callers must not modify it."""
    host = torch.tensor(values, dtype=torch.float32)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
