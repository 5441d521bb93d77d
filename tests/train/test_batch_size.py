"""train.batch_size: auto. The search for the largest batch that fits (here with an injected
out-of-memory error: on the CPU nothing runs out), the state it puts back bitwise, Keras's 32 on
the CPU, and an out-of-memory error during a run halving the batch and finishing the run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

import cnnlab
from cnnlab import runfiles
from cnnlab.config_io import load_experiment
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.runs import trained
from cnnlab.train.batch_size import (
    CPU_BATCH,
    MAX_BATCH,
    auto_batch_size,
    find_batch_size,
    is_out_of_memory,
    rescaled,
    search_limit,
)
from cnnlab.train.callbacks import Callback, TrainState
from cnnlab.train.probe import train_step

from .test_lr_find import NORM_NET, assert_same, state_of, trainee_on_digits

AUGMENT = {"rotation_range": 10}
BUILD = trained.model_from_config  # the runs' own, before any test wraps it
TRAIN = 1079  # digits_config's training split: 1,797 less 20 % validation and 20 % test


class OutOfMemoryAbove:
    """A forward pre-hook that runs out of memory on training batches above `limit` (once
    `armed`), as a GPU would; it records the batch sizes it saw."""

    def __init__(self, limit: int, armed: bool = True, after: int = 0):
        self.limit, self.armed, self.after = limit, armed, after
        self.sizes: list[int] = []
        self.calls = 0

    def __call__(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if not module.training:  # validation and evaluation are left alone
            return
        size = inputs[0].shape[0]
        self.sizes.append(size)
        self.calls += 1
        if self.armed and size > self.limit and self.calls > self.after:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected above {self.limit})")


def test_the_search_with_oom_above_64_finds_64_and_restores_state_bitwise(tmp_path, digits_config):
    trainee, train = trainee_on_digits(
        tmp_path, digits_config, model={"layers": NORM_NET}, augment=AUGMENT
    )
    for images, labels in train.epoch(0, 2):  # an optimiser with state
        train_step(trainee, images, labels)
    hook = OutOfMemoryAbove(64)
    trainee.model.register_forward_pre_hook(hook)
    before = state_of(trainee)
    assert find_batch_size(trainee, train, torch.device("cpu")) == 64
    assert sorted(set(hook.sizes)) == [2, 4, 8, 16, 32, 64, 128]  # doubling, stopped at 128
    assert_same(state_of(trainee), before)


def test_the_search_is_bounded_by_the_training_split(tmp_path, digits_config):
    trainee, train = trainee_on_digits(tmp_path, digits_config)
    assert train.num_samples == TRAIN  # 60 % of the 1,797 digits
    assert find_batch_size(trainee, train, torch.device("cpu")) == 1024
    assert search_limit(100) == 64 and search_limit(1) == 1
    assert search_limit(10**6) == MAX_BATCH == 4096


def test_an_error_that_is_not_out_of_memory_is_raised_and_state_restored(tmp_path, digits_config):
    trainee, train = trainee_on_digits(tmp_path, digits_config)

    def broken(module, inputs):
        if inputs[0].shape[0] > 8:
            raise ValueError("a bug, not a full device")

    trainee.model.register_forward_pre_hook(broken)
    before = state_of(trainee)
    with pytest.raises(ValueError, match="a bug"):
        find_batch_size(trainee, train, torch.device("cpu"))
    assert_same(state_of(trainee), before)


def test_out_of_memory_even_at_the_smallest_batch_names_the_key(tmp_path, digits_config):
    trainee, train = trainee_on_digits(tmp_path, digits_config)
    trainee.model.register_forward_pre_hook(OutOfMemoryAbove(1))
    with pytest.raises(
        CnnlabError, match=r"train\.batch_size: auto: a batch of 2 already runs out"
    ):
        find_batch_size(trainee, train, torch.device("cpu"))


def test_auto_is_keras_32_on_the_cpu_without_a_search(tmp_path, digits_config):
    trainee, train = trainee_on_digits(tmp_path, digits_config)
    hook = OutOfMemoryAbove(8)
    trainee.model.register_forward_pre_hook(hook)
    size, rule = auto_batch_size(trainee, train, torch.device("cpu"))
    assert (size, CPU_BATCH) == (32, 32) and "Keras's default" in rule
    assert hook.sizes == []  # nothing was tried


def test_out_of_memory_is_recognised_in_its_forms():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_a_checkpoint_schedule_moves_to_the_same_point_in_twice_the_steps():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for _ in range(3 * 10):  # 3 epochs of 10 steps
        optimizer.step()
        schedule.step()
    saved = {"schedule": schedule.state_dict(), "state": {"epoch": 3}}
    moved = rescaled(saved, old_steps=10, new_steps=20)
    assert moved["schedule"]["last_epoch"] == 60 and moved["schedule"]["_step_count"] == 61
    assert saved["schedule"]["last_epoch"] == 30  # the checkpoint read is left as it was


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "train.batch_size: expected a whole number, got 'abc' (or auto: "),
        ("0", "train.batch_size: must be greater than 0, got 0"),
        ("12.5", "train.batch_size: expected a whole number, got 12.5"),
        ("true", "train.batch_size: expected a whole number, got true"),
    ],
)
def test_batch_size_is_a_positive_whole_number_or_auto(tmp_path, digits_config, value, message):
    config = digits_config(tmp_path / "digits.yaml")
    with pytest.raises(ConfigError) as caught:
        load_experiment(config, [f"train.batch_size={value}"])
    assert message in str(caught.value)
    assert load_experiment(config, ["train.batch_size=auto"]).train.batch_size == "auto"
    assert load_experiment(config, ["train.batch_size=48"]).train.batch_size == 48


class Arm(Callback):
    """Arms the hook once `epoch` epochs are complete: memory runs out in the next one."""

    def __init__(self, hook: OutOfMemoryAbove, epoch: int):
        self.hook, self.epoch = hook, epoch

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        self.hook.armed = self.hook.armed or state.epoch >= self.epoch


def hooked_run(
    root: Path, digits_config, monkeypatch, hook: OutOfMemoryAbove, *, resume=False, **train
):
    """A digits run whose model runs out of memory as `hook` says."""

    def with_hook(*args, **kwargs):
        model = BUILD(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(trained, "model_from_config", with_hook)
    root.mkdir(parents=True, exist_ok=True)
    config = digits_config(root / "digits.yaml", train={"deterministic": True, **train})
    printed = io.StringIO()
    result = cnnlab.run(
        config,
        root / "run",
        resume=resume,
        callbacks=[Arm(hook, 1)] if not hook.armed else [],
        console=Console(file=printed, width=200),
    )
    return result, printed.getvalue()


def history_epochs(folder: Path) -> list[str]:
    return [row.split(",")[0] for row in (folder / runfiles.HISTORY).read_text().splitlines()[1:]]


def test_out_of_memory_in_epoch_2_halves_the_batch_and_the_run_finishes(
    tmp_path, digits_config, monkeypatch
):
    hook = OutOfMemoryAbove(16, armed=False)  # armed by the end of epoch 1
    result, printed = hooked_run(
        tmp_path, digits_config, monkeypatch, hook, epochs=2, batch_size="auto"
    )
    record = result.manifest["auto_batch_size"]
    assert (record["found"], record["used"]) == (32, 16)
    assert record["halved"] == [{"epoch": 2, "from": 32, "to": 16}]
    line = "Out of device memory in epoch 2 at batch size 32: halved to 16, training again from "
    assert line + "the end of epoch 1" in printed
    assert history_epochs(result.folder) == ["1", "2"]
    steps = -(-TRAIN // 16)  # epoch 2 again, in batches of 16: ceil(1079 / 16) steps
    assert hook.sizes[-steps:] == [16] * (steps - 1) + [TRAIN - 16 * (steps - 1)]
    saved = torch.load(result.folder / runfiles.CHECKPOINT, weights_only=True)
    assert saved["auto"]["batch_size"] == 16  # a resumed run goes on with 16
    assert saved["schedule"]["last_epoch"] == 2 * steps  # epoch 1 counted in the new steps


def test_out_of_memory_in_the_first_epoch_restarts_as_a_run_in_halved_batches_would(
    tmp_path, digits_config, monkeypatch
):
    hook = OutOfMemoryAbove(16, after=5)  # 5 steps of 32 train, then memory runs out
    halved, printed = hooked_run(
        tmp_path / "auto", digits_config, monkeypatch, hook, epochs=1, batch_size="auto"
    )
    assert halved.manifest["auto_batch_size"]["halved"] == [{"epoch": 1, "from": 32, "to": 16}]
    assert "halved to 16, training again from the start" in printed
    plain, _ = hooked_run(
        tmp_path / "16", digits_config, monkeypatch, OutOfMemoryAbove(16), epochs=1, batch_size=16
    )
    # the 5 steps taken at 32 were undone: the weights are those of batches of 16 throughout
    first, second = (
        load_file(halved.folder / runfiles.WEIGHTS),
        load_file(plain.folder / runfiles.WEIGHTS),
    )
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_out_of_memory_with_a_batch_size_in_the_file_is_not_hidden(
    tmp_path, digits_config, monkeypatch
):
    with pytest.raises(torch.OutOfMemoryError):
        hooked_run(tmp_path, digits_config, monkeypatch, OutOfMemoryAbove(16), batch_size=32)


def test_a_resumed_run_keeps_the_halved_batch(tmp_path, digits_config, monkeypatch):
    hook = OutOfMemoryAbove(16, armed=False)
    hooked_run(tmp_path, digits_config, monkeypatch, hook, epochs=2, batch_size="auto")
    again = OutOfMemoryAbove(16)  # would refuse 32 at once: the resumed run never asks
    resumed, printed = hooked_run(
        tmp_path, digits_config, monkeypatch, again, resume=True, epochs=3, batch_size="auto"
    )
    assert "Recorded auto values: batch size 16" in printed
    assert set(again.sizes) <= {16, TRAIN % 16}
    assert resumed.manifest["auto_batch_size"]["halved"] == [{"epoch": 2, "from": 32, "to": 16}]
    assert history_epochs(resumed.folder) == ["1", "2", "3"]
    assert json.loads((resumed.folder / runfiles.MANIFEST).read_text())["epochs_run"] == 3
    # config.yaml keeps auto; the finished run still predicts (in Keras's 32 on the CPU)
    assert "batch_size: auto" in (resumed.folder / runfiles.CONFIG).read_text()
    finished = cnnlab.load_run(resumed.folder)
    assert finished.predict_split("test", device="cpu").shape == (359, 10)
