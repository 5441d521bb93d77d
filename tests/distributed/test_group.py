"""Two real processes in a gloo group, spawned with the variables torchrun sets: the decode
cache is written once (rank 0 decodes, the other rank reads its cache), and the fit loop,
re-wrapped in DistributedDataParallel for each stage as requires_grad changes, trains the
weights one process trains."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this PyTorch build",
)


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from cnnlab import distributed

    distributed.start("cpu")


def _spawn(worker: Callable[..., None], *args: object) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(worker, args=(2, port, *args), nprocs=2)


def _decode_worker(rank: int, world: int, port: int, source: str, cache: str, out: str) -> None:
    """load_data in one process of the group, recording whether it decoded anything and
    which pixels it got."""
    os.environ["CNNLAB_CACHE"] = cache
    from cnnlab import distributed
    from cnnlab.config import DataConfig
    from cnnlab.data import pipeline

    decoded = Path(out) / f"decoded-{rank}"
    original = pipeline._decode

    def counting(*args, **kwargs):
        decoded.touch()
        return original(*args, **kwargs)

    pipeline._decode = counting
    _join(rank, world, port)
    try:
        data = pipeline.load_data(DataConfig(source=source, validation_split=0.25), seed=0)
        digest = hashlib.sha256()
        for name, split in data.splits.items():
            digest.update(name.encode() + split.images.tobytes() + split.labels.tobytes())
        (Path(out) / f"pixels-{rank}").write_text(digest.hexdigest())
    finally:
        distributed.stop()


def test_rank_zero_decodes_and_the_other_rank_reads_its_cache(
    tmp_path: Path, make_classes: Callable[..., Path]
) -> None:
    source = make_classes(tmp_path / "images", {"cats": 6, "dogs": 6}, size=(12, 10))
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    _spawn(_decode_worker, str(source), str(cache), str(out))
    assert sorted(p.name for p in out.glob("decoded-*")) == ["decoded-0"]
    assert (out / "pixels-0").read_text() == (out / "pixels-1").read_text()
    assert any(cache.iterdir())  # written, once, by rank 0


# 37 images in batches of 10: steps of 10, 10, 10 and 7, sliced 5/5 and 3/4 over 2 processes
IMAGES, BATCH = 37, 10


def _staged_fit() -> tuple[dict[str, torch.Tensor], list[float]]:
    """Two stages as train.stages runs them: the head alone for an epoch, then everything for
    two, each with a new optimiser; the final weights and each epoch's logged loss."""
    from cnnlab.data.batches import DeviceBatches
    from cnnlab.task.classification import Classification
    from cnnlab.train.callbacks import TrainState
    from cnnlab.train.loop import Trainee, fit

    torch.manual_seed(0)
    images = torch.randint(0, 256, (IMAGES, 1, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 3, (IMAGES,))
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    train = DeviceBatches(images, labels, batch_size=BATCH, seed=1)
    state = TrainState()
    for end, body in ((1, False), (3, True)):
        model[1].requires_grad_(body)
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trained, lr=0.1, momentum=0.9)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        trainee = Trainee(
            model, optimizer, schedule, Classification(None, 3), lambda x: x.float() / 255
        )
        fit(trainee, train, None, end, None, [], state)
    return model.state_dict(), [logs["loss"] for logs in state.history]


def _stages_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    _join(rank, world, port)
    from cnnlab import distributed

    try:
        weights, losses = _staged_fit()
    finally:
        distributed.stop()
    save_file({k: v.contiguous() for k, v in weights.items()}, f"{out}/weights-{rank}")
    Path(f"{out}/losses-{rank}").write_text(json.dumps(losses))


def test_staged_fit_across_processes_trains_the_one_process_weights(tmp_path: Path) -> None:
    _spawn(_stages_worker, str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        weights, losses = _staged_fit()  # here: no group, one process
    finally:
        torch.set_num_threads(threads)
    ranks = [load_file(tmp_path / f"weights-{rank}") for rank in range(2)]
    for name, tensor in weights.items():
        assert torch.equal(ranks[0][name], ranks[1][name])  # one network on both processes
        torch.testing.assert_close(ranks[0][name], tensor, rtol=1e-5, atol=1e-6)
    for rank in range(2):  # each process logs every process's epoch, not its own slices
        logged = json.loads((tmp_path / f"losses-{rank}").read_text())
        assert logged == pytest.approx(losses, rel=1e-6)
    assert not torch.equal(weights["1.weight"], _initial()["1.weight"])  # stage 2 trained it


def _initial() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    torch.randint(0, 256, (IMAGES, 1, 4, 4), dtype=torch.uint8)
    torch.randint(0, 3, (IMAGES,))
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    return model.state_dict()
