"""Averaged weights (train.ema, train.swa): the averages equal torch's AveragedModel run by hand
on the same steps, they are what is validated, kept and evaluated, and a resumed run continues
them bitwise; the config refuses what cannot work."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.config import EmaConfig, StageConfig, SwaConfig, TrainConfig
from cnnlab.config_io import load_experiment
from cnnlab.data.batches import DeviceBatches
from cnnlab.errors import ConfigError
from cnnlab.runtime import select_device
from cnnlab.task.classification import Classification
from cnnlab.task.inference import infer
from cnnlab.train.averaging import Ema, Swa
from cnnlab.train.callbacks import BestWeights, Callback, TrainState
from cnnlab.train.loop import Trainee, fit
from cnnlab.train.stages import stage_trainee

DEVICE = select_device("auto")  # the GPU when there is one


def bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 2 * 2, 2),
    ).to(DEVICE)


def trainee_with(model: torch.nn.Module, average=None, lr: float = 0.05) -> Trainee:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    task = Classification(None, 2)
    return Trainee(model, optimizer, schedule, task, lambda x: x.float() / 255, None, average)


def batches(n: int = 24, batch_size: int = 6, seed: int = 1) -> DeviceBatches:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = (images.float().mean((1, 2, 3)) > 127).long()
    return DeviceBatches(images, labels, batch_size=batch_size, device=DEVICE)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


class EpochWeights(Callback):
    """The raw weights at the end of every epoch."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.weights = model, []

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        self.weights.append(snapshot(self.model))


# --- EMA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("warmup", [0, 5], ids=["fixed-decay", "warm-up"])
def test_ema_after_n_steps_equals_torchs_averaged_model_on_the_same_steps(warmup):
    model = bn_model()
    initial = copy.deepcopy(model)
    ema = Ema(model, EmaConfig(decay=0.9, warmup=warmup))
    trainee = trainee_with(model, ema)
    steps: list[dict[str, torch.Tensor]] = []  # the weights after every optimiser step
    assert trainee.optimizer is not None
    trainee.optimizer.register_step_post_hook(lambda *_: steps.append(snapshot(model)))
    fit(trainee, batches(), None, 3, None, [], TrainState())
    assert len(steps) == 12

    # the reference: torch's EMA fed the same weights, its decay warmed up as documented
    reference = AveragedModel(initial, use_buffers=True)
    for k, weights in enumerate(steps):
        decay = 0.9 * (1 - math.exp(-k / warmup)) if warmup else 0.9
        reference.multi_avg_fn = get_ema_multi_avg_fn(decay)
        initial.load_state_dict(weights)
        reference.update_parameters(initial)
    assert same(ema.averaged.module.state_dict(), reference.module.state_dict())
    assert not same(ema.averaged.module.state_dict(), model.state_dict())  # it does average
    # BatchNorm statistics are averaged with the weights, not copied from the raw network
    assert not torch.equal(ema.averaged.module[1].running_mean, model[1].running_mean)


def test_validation_and_the_kept_weights_are_the_emas(tmp_path: Path):
    model = bn_model()
    ema = Ema(model, EmaConfig(decay=0.8, warmup=0))
    trainee = trainee_with(model, ema)
    weights = tmp_path / "model.safetensors"
    val = batches(12, 6, seed=2)
    # monitor "": no validation to choose by, so the last epoch's weights are kept
    kept = BestWeights(trainee.validated, weights, "")
    state = fit(trainee, batches(), val, 3, None, [kept], TrainState())

    checked_ema = infer(ema.averaged.module, val, trainee.task, trainee.preprocess)
    checked_raw = infer(model, val, trainee.task, trainee.preprocess)
    assert state.history[-1]["val_loss"] == checked_ema.loss != checked_raw.loss
    assert same(load_file(str(weights)), ema.averaged.module.state_dict())


def test_ema_continues_across_fine_tuning_stages():
    model = bn_model()
    ema = Ema(model, EmaConfig())
    base = trainee_with(model, ema)
    stage = StageConfig(epochs=1, unfreeze="all", batchnorm="train")
    assert stage_trainee(base, stage, TrainConfig(), steps=4).average is ema


# --- SWA -----------------------------------------------------------------------------------------


def test_swa_is_the_mean_of_the_epochs_from_start_epoch_with_batchnorm_recomputed(tmp_path):
    model = bn_model()
    swa = Swa(model, SwaConfig(start_epoch=2))
    trainee = trainee_with(model, swa)
    epochs = EpochWeights(model)
    state = fit(trainee, batches(), None, 4, None, [epochs], TrainState())
    assert state.epoch == 4 and len(epochs.weights) == 4

    names = [name for name, _ in model.named_parameters()]
    for name in names:  # the mean of epochs 2, 3 and 4, the first not included
        mean = torch.stack([w[name] for w in epochs.weights[1:]]).mean(0)
        assert torch.allclose(swa.averaged.module.state_dict()[name], mean, atol=1e-6), name
    train = batches()
    images = [trainee.preprocess(train.images.to(DEVICE))]  # one batch: exact statistics
    weights = tmp_path / "model.safetensors"
    assert swa.finish(images, weights) == "swa"

    saved = load_file(str(weights))
    mean_net = copy.deepcopy(model)
    mean_net.load_state_dict({k: v.to(DEVICE) for k, v in saved.items()})
    with torch.no_grad():  # BatchNorm's input for the mean weights, over the training images
        activations = mean_net[0](images[0])
    expected_mean = activations.mean((0, 2, 3))
    expected_var = activations.var((0, 2, 3), unbiased=True)
    assert torch.allclose(saved["1.running_mean"].to(DEVICE), expected_mean, atol=1e-5)
    assert torch.allclose(saved["1.running_var"].to(DEVICE), expected_var, atol=1e-5)
    assert not torch.allclose(saved["1.running_mean"], model[1].running_mean.cpu(), atol=1e-3)
    assert all(torch.equal(saved[n], swa.averaged.module.state_dict()[n].cpu()) for n in names)


def test_swa_validates_the_raw_network_until_its_mean_is_final():
    model = bn_model()
    trainee = trainee_with(model, Swa(model, SwaConfig(start_epoch=1)))
    assert trainee.validated is model


def test_swa_lr_anneals_to_its_value_from_start_epoch_and_stays():
    model = bn_model()
    swa = Swa(model, SwaConfig(start_epoch=2, lr=0.01, anneal_epochs=1))
    state = fit(trainee_with(model, swa, lr=0.05), batches(), None, 4, None, [], TrainState())
    lrs = [row["lr"] for row in state.history]
    assert lrs[0] == 0.05  # the run's own schedule before start_epoch
    # epoch 2 anneals over its steps (history.csv: the lr of its last step), then it stays
    assert 0.01 < lrs[1] < 0.05
    assert lrs[2] == pytest.approx(0.01) and lrs[3] == pytest.approx(0.01)


# --- whole runs on digits ------------------------------------------------------------------------

BN_DIGITS_NET: list[dict[str, Any]] = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"BatchNormalization": {}},
    {"Flatten": {}},
    {"Dense": {"units": 10, "activation": "softmax"}},
]


def digits_train(**averaging: Any) -> dict[str, Any]:
    return {
        "epochs": 2,
        "batch_size": 64,
        "optimizer": {"name": "adam"},
        "deterministic": True,
        "device": "cpu",
        **averaging,
    }


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def averaged_weights(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    averaged = checkpoint["average"]["averaged"]
    return {k.removeprefix("module."): v for k, v in averaged.items() if k != "n_averaged"}


def test_an_ema_run_keeps_evaluates_and_reports_the_ema_weights(tmp_path, digits_config):
    data = {"source": "digits", "color_mode": "grayscale", "test_split": 0.2}  # no validation
    config = digits_config(
        tmp_path / "ema.yaml", data=data, train=digits_train(ema={"decay": 0.9, "warmup": 5})
    )
    result = cnnlab.run(config, output_dir=tmp_path / "runs", quiet=True)
    folder = result.folder
    checkpoint = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    kept = load_file(str(folder / "model.safetensors"))
    assert same(kept, averaged_weights(checkpoint))
    assert not same(kept, checkpoint["model"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["weights_evaluated"] == "ema"
    # the final evaluation is of the kept weights: predicting test from them again gives the
    # probabilities predictions.csv holds
    finished = cnnlab.load_run(folder)
    again = finished.predict_split("test", device="cpu")
    rows = [row for row in finished.predictions if row["split"] == "test"]
    written = np.array([[float(row[f"p_{c}"]) for c in finished.classes] for row in rows])
    np.testing.assert_allclose(again, written, atol=1e-5)
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert "weights evaluated" in report and ">ema<" in report


@pytest.mark.parametrize(
    "averaging",
    [{"ema": {"decay": 0.9, "warmup": 5}}, {"swa": {"start_epoch": 2, "lr": 0.0005}}],
    ids=["ema", "swa"],
)
def test_a_resumed_averaged_run_equals_an_uninterrupted_one_bitwise(
    tmp_path, digits_config, averaging
):
    config = digits_config(
        tmp_path / "avg.yaml", model={"layers": BN_DIGITS_NET}, train=digits_train(**averaging)
    )
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    assert run_cli("run", str(config), "--output", str(stopped)).exit_code == 0
    resumed = run_cli(
        "run", str(config), "--output", str(stopped), "--resume", "--set", "train.epochs=4"
    )
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch 3/4" in resumed.stdout and "Epoch 1/4" not in resumed.stdout
    uninterrupted = run_cli("run", str(config), "--output", str(whole), "--set", "train.epochs=4")
    assert uninterrupted.exit_code == 0, uninterrupted.output

    a, b = stopped / "avg", whole / "avg"
    state_a = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    state_b = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert same(state_a["average"]["averaged"], state_b["average"]["averaged"])
    assert state_a["average"].keys() == state_b["average"].keys()
    for key in set(state_a["average"]) - {"averaged"}:  # EMA's count, SWALR's state
        assert state_a["average"][key] == state_b["average"][key]
    assert same(load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors")))
    assert json.loads((a / "metrics.json").read_text()) == json.loads(
        (b / "metrics.json").read_text()
    )
    kind = next(iter(averaging))
    assert json.loads((a / "manifest.json").read_text())["weights_evaluated"] == kind


def test_an_swa_run_keeps_the_mean_with_its_own_batchnorm_statistics(tmp_path, digits_config):
    config = digits_config(
        tmp_path / "swa.yaml",
        model={"layers": BN_DIGITS_NET},
        train=digits_train(epochs=3, swa={"start_epoch": 2}),
    )
    result = cnnlab.run(config, output_dir=tmp_path / "runs", quiet=True)
    checkpoint = torch.load(result.folder / "checkpoints" / "last.pt", weights_only=True)
    kept, mean = load_file(str(result.folder / "model.safetensors")), averaged_weights(checkpoint)
    weights = [k for k in kept if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(kept[k], mean[k]) for k in weights)  # the mean of epochs 2 and 3
    assert not torch.equal(kept[weights[0]], checkpoint["model"][weights[0]])
    statistics = [k for k in kept if k.endswith("running_mean")]
    assert statistics and not torch.equal(kept[statistics[0]], mean[statistics[0]])  # update_bn
    assert result.manifest["weights_evaluated"] == "swa" and result.manifest["best_epoch"] == 3


# --- config --------------------------------------------------------------------------------------


def problem(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, overrides)
    return str(caught.value)


@pytest.mark.parametrize("decay", ["0", "1", "1.5", "-0.1"])
def test_an_ema_decay_outside_zero_to_one_is_refused_naming_the_key(tmp_path, digits_config, decay):
    config = digits_config(tmp_path / "e.yaml")
    message = problem(config, f"train.ema.decay={decay}")
    assert "train.ema.decay:" in message and "must be between 0 and 1" in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ("train.ema={}", "train.swa={start_epoch: 1}"),
            "train.swa: train.ema is set too; they are alternative averages",
        ),
        (
            ("train.swa={start_epoch: 1}", "train.early_stopping={}"),
            "train.swa: averages every epoch from start_epoch to the last",
        ),
        (("train.swa={start_epoch: 3}",), "train.swa: start_epoch 3 is after the last epoch (1)"),
        (("train.swa={}",), "train.swa.start_epoch: required"),
        (
            ("train.swa={start_epoch: 1, anneal_epochs: 3}",),
            "train.swa: anneal_epochs anneals the lr to train.swa.lr, which is not set",
        ),
    ],
)
def test_averaging_that_cannot_work_is_refused(tmp_path, digits_config, overrides, expected):
    assert expected in problem(digits_config(tmp_path / "e.yaml"), *overrides)


def test_swa_with_fine_tuning_stages_is_refused(tmp_path, digits_config):
    model = {"backbone": "vgg16", "weights": "none", "stages": [{"epochs": 1}, {"epochs": 1}]}
    data = {"source": "digits", "color_mode": "rgb"}
    config = digits_config(tmp_path / "e.yaml", model=model, data=data, train={})
    message = problem(config, "train.swa={start_epoch: 1}")
    assert "train.swa: not with model.stages" in message


def test_a_bad_ema_setting_exits_2_from_the_cli(tmp_path, digits_config):
    config = digits_config(tmp_path / "e.yaml")
    result = run_cli("run", str(config), "--output", str(tmp_path), "--set", "train.ema.decay=2")
    assert result.exit_code == 2 and "train.ema.decay" in result.stderr
    assert "Traceback" not in result.output


def test_an_ema_step_never_waits_for_the_host_and_keeps_torchs_count():
    """On CUDA under sync-debug 'error' (torch's update_parameters would raise: it reads its
    count on the host); everywhere, n_averaged stays what update_parameters would make it."""
    model = bn_model().to(DEVICE)
    ema = Ema(model, EmaConfig(decay=0.9, warmup=10))
    if DEVICE.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            ema.after_step(model)
    finally:
        if DEVICE.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert int(ema.averaged.n_averaged) == ema.updates == 3
