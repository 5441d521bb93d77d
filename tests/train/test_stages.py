"""Fine-tuning stages: what each one trains, at which rates, BatchNorm's policy, and a staged
run that resumes across the stage boundary to the same result as an uninterrupted one."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.config import ModelConfig
from cnnlab.config_io import load_experiment
from cnnlab.models import model_from_config
from cnnlab.models.transfer import StagePlan
from cnnlab.train.callbacks import EpochLine

HEAD = [{"GlobalAveragePooling2D": {}}, {"Dense": {"units": 3, "activation": "softmax"}}]
VGG_BLOCK5 = {f"vgg16.body.{i}.{kind}" for i in (24, 26, 28) for kind in ("weight", "bias")}


def trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def vgg() -> torch.nn.Module:
    return model_from_config(
        ModelConfig(backbone="vgg16", weights="none", head=HEAD), (32, 32, 3), 3
    )


def test_each_stage_trains_exactly_the_configured_parameters(vgg):
    head = {"dense.weight", "dense.bias"}
    vgg.apply_stage(StagePlan(unfreeze=0, lr=1e-3, backbone_lr=1e-3))
    assert trainable(vgg) == head  # stage 1: the backbone is frozen
    vgg.apply_stage(StagePlan(unfreeze=1, lr=1e-3, backbone_lr=1e-5))
    assert trainable(vgg) == head | VGG_BLOCK5  # S2: block5 joins
    assert sum(p.numel() for n, p in vgg.named_parameters() if n in VGG_BLOCK5) == 7_079_424
    vgg.apply_stage(StagePlan(unfreeze="all", lr=1e-3, backbone_lr=1e-3))
    assert trainable(vgg) == {name for name, _ in vgg.named_parameters()}


def test_stage_learning_rates_per_group_with_layer_decay(vgg):
    groups = vgg.apply_stage(StagePlan(unfreeze=3, lr=1e-3, backbone_lr=1e-4, layer_decay=0.5))
    rates = {group["name"]: group["lr"] for group in groups}
    assert rates == pytest.approx({"head": 1e-3, "block5": 1e-4, "block4": 5e-5, "block3": 2.5e-5})


@pytest.mark.parametrize("policy", ["frozen", "train"])
def test_batchnorm_statistics_of_frozen_blocks_never_change(policy):
    model = model_from_config(
        ModelConfig(backbone="efficientnet_lite0", weights="none", head=HEAD), (32, 32, 3), 3
    )
    model.apply_stage(StagePlan(unfreeze=1, lr=1e-3, backbone_lr=1e-3, batchnorm=policy))
    (*frozen_blocks, (_, top)) = model.backbone.blocks()
    norms = lambda modules: [m for m in modules if isinstance(m, torch.nn.BatchNorm2d)]  # noqa: E731
    frozen = [m for _, modules in frozen_blocks for m in norms(modules)]
    unfrozen = norms(top)
    before = [m.running_mean.clone() for m in frozen + unfrozen]
    model.train()
    model(torch.rand(4, 3, 32, 32))
    after = [m.running_mean for m in frozen + unfrozen]
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert not any(changed[: len(frozen)])  # frozen blocks: inference mode, always
    assert all(changed[len(frozen) :]) == (policy == "train")


# --- a staged run, end to end --------------------------------------------------------------


def colour_folder(root: Path, per_class: int = 12) -> Path:
    """Three classes of real PNGs told apart by colour, with noise."""
    rng = np.random.default_rng(0)
    for name, colour in {
        "red": (200, 30, 30),
        "green": (30, 200, 30),
        "blue": (30, 30, 200),
    }.items():
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            pixels = np.clip(np.array(colour) + rng.integers(-40, 40, (32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{name}_{k}.png")
    return root


def staged_config(tmp_path: Path) -> Path:
    raw = {
        "seed": 0,
        "data": {
            "source": str(colour_folder(tmp_path / "colours")),
            "validation_split": 0.25,
            "cache_dir": str(tmp_path / "cache"),  # module-scoped: set before CNNLAB_CACHE is
        },
        "augment": {"horizontal_flip": True, "rotation_range": 10},
        "model": {
            "backbone": "efficientnet_lite0",  # the real ImageNet weights
            "head": [{"GlobalAveragePooling2D": {}}, {"Dropout": 0.3}, *HEAD[1:]],
            "stages": [
                {"epochs": 2, "unfreeze": 0, "lr": 0.01},
                {"epochs": 2, "unfreeze": 2, "lr": 0.001, "backbone_lr": 0.0005},
            ],
        },
        "train": {
            "batch_size": 8,
            "deterministic": True,
            "device": "auto",  # CUDA where there is one (make gpu-check)
            "optimizer": {"name": "adam"},
        },
    }
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


class Killed(Exception):
    """Stands in for a kill: raised after the checkpoint of the given epoch is written."""


def read_history(folder: Path) -> list[dict[str, str]]:
    with (folder / "history.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.pop("seconds")
    return rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    """The staged experiment run start to end once: (config, run folder)."""
    root = tmp_path_factory.mktemp("staged")
    config = staged_config(root)
    whole = CliRunner().invoke(app, ["run", str(config), "--output", str(root / "whole")])
    assert whole.exit_code == 0, whole.output
    assert "Stage 1/2: 2 epochs, head only - Trainable params: 3,843" in whole.stdout
    assert "Stage 2/2: 2 epochs, head + blocks.5, blocks.6+conv_head+bn2" in whole.stdout
    folder = root / "whole" / "staged"
    assert load_experiment(folder / "config.yaml").train.epochs == 4  # the saved file reloads
    return config, folder


@pytest.mark.parametrize("killed_after", [2, 3], ids=["at-the-boundary", "in-stage-2"])
def test_staged_run_killed_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, uninterrupted, killed_after
):
    config, whole = uninterrupted
    runner = CliRunner()

    original = EpochLine.on_epoch_end

    def kill(self, state, logs):  # EpochLine runs after the checkpoint
        original(self, state, logs)
        if state.epoch == killed_after:
            raise Killed

    monkeypatch.setattr(EpochLine, "on_epoch_end", kill)
    stopped = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "stopped")])
    assert isinstance(stopped.exception, Killed)
    monkeypatch.setattr(EpochLine, "on_epoch_end", original)
    resumed = runner.invoke(
        app, ["run", str(config), "--output", str(tmp_path / "stopped"), "--resume"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert "Epoch 4/4" in resumed.stdout
    assert f"Epoch {killed_after}/4" not in resumed.stdout  # continued, not restarted

    a, b = whole, tmp_path / "stopped" / "staged"
    assert read_history(a) == read_history(b)
    weights_a, weights_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    stages = yaml.safe_load((b / "manifest.json").read_text())["stages"]
    assert stages[0]["trainable_params"] == 1280 * 3 + 3
    assert [s["first_epoch"] for s in stages] == [1, 3]
    report = (b / "report.html").read_text(encoding="utf-8")
    assert re.search(r"a fine-tuning stage begins \(epoch\s+3\)", report)
    normalization = yaml.safe_load((b / "normalization.json").read_text())
    assert normalization["mean"] == normalization["std"] == [0.5, 0.5, 0.5]  # the weights' own
    assert stages[1]["lr"]["head"] == 0.001 and stages[1]["lr"]["blocks.5"] == 0.0005
