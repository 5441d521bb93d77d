"""`torchrun -m cnnlab run` on a GPU: NCCL, each process on cuda:LOCAL_RANK, SyncBatchNorm.

One process (the lent GPU machine has one GPU; NCCL refuses two processes on one device): the
run must form an NCCL group, train on cuda:0 with its BatchNorm layers converted to
SyncBatchNorm (train.sync_batchnorm), say so in its manifest, and learn as the plain run on the
same GPU does. Skipped without CUDA and NCCL (CI); `make gpu-check` runs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tests.conftest import write_digits_config
from tests.distributed.test_torchrun import command, launch

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available()),
    reason="needs a CUDA GPU and NCCL (make gpu-check runs it on the lent GPU)",
)

LAYERS = [
    {"Conv2D": {"filters": 16, "kernel_size": 3}},
    {"BatchNormalization": {}},
    {"Activation": "relu"},
    {"MaxPooling2D": {"pool_size": 2}},
    {"Flatten": {}},
    {"Dense": {"units": 10, "activation": "softmax"}},
]


def test_one_gpu_process_trains_with_nccl_and_sync_batchnorm(tmp_path: Path) -> None:
    train = {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}}
    config = write_digits_config(
        tmp_path / "digits.yaml", model={"layers": LAYERS}, train=train, report={"interpret": False}
    )
    env = {**os.environ, "CNNLAB_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    synced = launch(command(config, tmp_path / "ddp", 1, "--set", "train.sync_batchnorm=true"), env)
    assert synced.returncode == 0, synced.stderr[-3000:]
    plain = launch(command(config, tmp_path / "plain", None), env)
    assert plain.returncode == 0, plain.stderr[-3000:]

    def read(name: str, file: str) -> dict:
        return json.loads((tmp_path / name / "digits" / file).read_text(encoding="utf-8"))

    manifest = read("ddp", "manifest.json")
    assert manifest["torchrun"] == {"world_size": 1, "backend": "nccl"}
    assert manifest["device"].startswith("cuda")
    accuracy = read("ddp", "metrics.json")["test"]["accuracy"]
    alone = read("plain", "metrics.json")["test"]["accuracy"]
    assert accuracy > 0.7 and abs(accuracy - alone) < 0.05  # SyncBatchNorm's own kernels
