"""On CUDA, a run makes no host synchronisation per batch: the same run at two batch sizes (9 or
68 training steps, and its evaluation batches alike) makes the same number of them.

torch.cuda.set_sync_debug_mode("warn") warns at every synchronising CUDA call (an .item(), a
host copy, a plain torch.tensor(..., device="cuda")); each warning's innermost cnnlab frame is
counted, and the assertion names the places whose counts grow with the batches. Skipped
without CUDA (CI); `make gpu-check` runs it on the lent GPU.
"""

from __future__ import annotations

import traceback
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from tests.conftest import write_digits_config

import cnnlab

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check runs it)"
)


def where(stack: list[traceback.FrameSummary]) -> str:
    """The innermost frame in cnnlab's own code: the place that asked for the sync."""
    ours = [frame for frame in stack if "/cnnlab/" in frame.filename]
    frame = ours[-1] if ours else stack[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.line}"


def syncs(tmp_path: Path, batch_size: int) -> Counter[str]:
    # one epoch: the weights kept and checkpointed once in both runs, whatever validation says
    train = {"epochs": 1, "batch_size": batch_size, "optimizer": {"name": "adam"}}
    config = write_digits_config(
        tmp_path / f"batch{batch_size}.yaml",
        train=train | {"device": "cuda", "ema": {"decay": 0.99}},
        augment={"preset": "s0", "featurewise_center": True},
        evaluate={"batch_size": batch_size},  # evaluation batches scale with it too
        report={"interpret": False},
    )
    found: Counter[str] = Counter()
    shown = warnings.showwarning

    def count(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            found[where(traceback.extract_stack()[:-1])] += 1
        else:
            shown(message, category, filename, lineno, file, line)

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = count
            cnnlab.run(config, output_dir=tmp_path / f"runs{batch_size}", quiet=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return found


def test_a_run_on_cuda_makes_no_host_sync_per_batch(tmp_path: Path) -> None:
    few, many = syncs(tmp_path, 128), syncs(tmp_path, 16)
    growing = {site: (few[site], many[site]) for site in many if many[site] > few[site]}
    assert not growing, "syncs that grow with the batches (128 vs 16 a batch): " + "; ".join(
        f"{site}: {a} -> {b}" for site, (a, b) in sorted(growing.items(), key=lambda i: -i[1][1])
    )
