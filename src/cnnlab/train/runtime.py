"""Where and how tensors run: device choice, seeding, determinism, mixed precision."""

from __future__ import annotations

import contextlib
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


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last lets cuDNN use tensor-core convolutions; the CPU gains nothing from it."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
