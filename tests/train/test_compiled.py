"""`train.compile`: the warm-up builds graphs without changing what training then computes, and
a compiled run reports its compile time and trains to the same numbers as an eager one."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.data.batches import DeviceBatches
from cnnlab.models import build_layers
from cnnlab.runtime import IMAGE_LAYOUT, select_device
from cnnlab.task.classification import Classification as Objective
from cnnlab.train.compiled import batch_sizes, warm_up
from cnnlab.train.loop import Trainee

DEVICE = select_device("auto")
# compiled and eager training agree to float32 rounding on the CPU; on CUDA both train in bf16
# autocast, where the compiled graph's fused kernels round differently from eager's
AGREEMENT = {"rel": 1e-4, "abs": 1e-5} if DEVICE.type == "cpu" else {"rel": 0.05, "abs": 0.02}
LAYERS = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"BatchNormalization": {}},
    {"MaxPooling2D": {}},
    "Flatten",
    {"Dropout": 0.5},
    {"Dense": {"units": 2, "activation": "softmax"}},
]


def batches(count: int, batch_size: int, drop_last: bool = False) -> DeviceBatches:
    images = torch.randint(0, 256, (count, 3, 12, 12), dtype=torch.uint8)
    labels = torch.arange(count) % 2
    return DeviceBatches(images, labels, batch_size=batch_size, device=DEVICE, drop_last=drop_last)


def test_batch_sizes_are_the_full_batch_and_the_last_partial_one():
    assert batch_sizes(batches(10, 4)) == [4, 2]
    assert batch_sizes(batches(8, 4)) == [4]
    assert batch_sizes(batches(3, 4)) == [3]
    assert batch_sizes(batches(10, 4, drop_last=True)) == [4]
    assert batch_sizes(None) == []


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_warm_up_leaves_statistics_random_state_and_gradients_as_they_were(head):
    # Run eagerly: what the warm-up must undo is the same with or without compilation.
    torch.manual_seed(0)
    units = 2 if head == "softmax" else 1
    layers = [*LAYERS[:-1], {"Dense": {"units": units, "activation": head}}]
    model = build_layers(layers, (12, 12, 3)).to(DEVICE, memory_format=IMAGE_LAYOUT)
    objective = Objective(model.head_activation, units)
    trainee = Trainee(model, None, None, objective, lambda x: x.float() / 255)
    with torch.no_grad():  # statistics a zero batch would visibly move
        model.batch_normalization.running_mean.fill_(0.5)
        model.batch_normalization.running_var.fill_(2.0)
    train, val = batches(10, 4), batches(5, 4)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    random_state = torch.get_rng_state()

    seconds = warm_up(trainee, train, val)

    assert seconds > 0
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    assert torch.equal(torch.get_rng_state(), random_state)
    assert all(p.grad is None for p in model.parameters())


def image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, level in (("dark", 60), ("light", 190)):
        (root / label).mkdir(parents=True)
        for k in range(12):
            pixels = np.clip(rng.normal(level, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{k}.png")
    return root


def run(tmp_path: Path, source: Path, name: str, compile_mode: str):
    # No Dropout: compiled code draws its masks from its own generator (other masks, same odds)
    layers = [layer for layer in LAYERS if "Dropout" not in layer]
    config = {
        "seed": 0,
        "data": {"source": str(source), "validation_split": 0.25},
        "model": {"layers": layers},
        "train": {"batch_size": 4, "epochs": 2, "device": "auto", "compile": compile_mode},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(path), "--output", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "runs" / name / "history.csv").open(newline="") as handle:
        return result.stdout, list(csv.DictReader(handle))


def test_compiled_run_reports_its_compile_time_and_trains_like_an_eager_one(tmp_path):
    source = image_folder(tmp_path / "data")
    eager_out, eager = run(tmp_path, source, "eager", "off")
    compiled_out, compiled = run(tmp_path, source, "compiled", "default")

    assert "Compiled in" in compiled_out and "Compiled in" not in eager_out
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [float(row[key]) for row in compiled] == pytest.approx(
            [float(row[key]) for row in eager], **AGREEMENT
        ), key
