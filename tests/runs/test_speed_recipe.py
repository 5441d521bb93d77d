"""airbench's recipe as ordinary config, end to end on scikit-learn's digits: whitened first
conv, alternating flip, parameter groups, Nesterov SGD with Lookahead, label smoothing and
flip_translate TTA in one run, which resumes bitwise (Lookahead's slow weights, the flips)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner, Result

from cnnlab.cli import app
from cnnlab.config_io import load_experiment

ROOT = Path(__file__).resolve().parents[2]

# airbench's shapes, shrunk to 8x8 grayscale digits: 2x2 whitening conv (2 x 1 x 4 filters),
# a dirac-started block with offset-only BatchNorm, a bias-free Dense whose logits are scaled
NET = [
    {"Conv2D": {"filters": 8, "kernel_size": 2, "activation": "gelu"}},
    {
        "Conv2D": {
            "filters": 16,
            "kernel_size": 3,
            "padding": "same",
            "use_bias": False,
            "kernel_initializer": "dirac",
        }
    },
    "MaxPooling2D",
    {"BatchNormalization": {"momentum": 0.6, "epsilon": 1e-12, "scale": False}},
    {"Activation": "gelu"},
    "GlobalAveragePooling2D",
    {"Dense": {"units": 10, "use_bias": False}},
    {"Rescaling": 0.5},
    {"Activation": "softmax"},
]
RECIPE = {
    "model": {"layers": NET, "whiten_first_conv": {"images": 500}},
    "augment": {"alternating_flip": True, "width_shift_range": 2, "fill_mode": "reflect"},
    "train": {
        "epochs": 1,
        "batch_size": 128,
        "deterministic": True,
        "device": "cpu",
        "label_smoothing": 0.2,
        "optimizer": {
            "name": "sgd",
            "lr": 0.2,
            "momentum": 0.85,
            "nesterov": True,
            "weight_decay": 5e-4,
            "no_decay": ["bias", "batchnorm"],
            "groups": [{"params": ["batchnorm"], "lr_scale": 8, "weight_decay": 0}],
            "lookahead": {"k": 5, "alpha": 0.5},
        },
        # constant: a resumed run trains for more epochs than the first, which a one-cycle
        # schedule (over train.epochs) would stretch
        "schedule": {"name": "constant"},
    },
    "evaluate": {"tta": "flip_translate"},
}


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_the_recipe_trains_resumes_bitwise_and_evaluates_with_flip_translate(
    tmp_path, digits_config
):
    config = digits_config(tmp_path / "speed.yaml", **RECIPE)
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    first = run_cli("run", str(config), "--output", str(stopped), "--set", "train.epochs=2")
    assert first.exit_code == 0, first.output
    resumed = run_cli(
        "run", str(config), "--output", str(stopped), "--resume", "--set", "train.epochs=3"
    )
    assert resumed.exit_code == 0, resumed.output
    uninterrupted = run_cli("run", str(config), "--output", str(whole), "--set", "train.epochs=3")
    assert uninterrupted.exit_code == 0, uninterrupted.output

    a, b = stopped / "speed", whole / "speed"
    state_a = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    state_b = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(state_a["model"][k], v) for k, v in state_b["model"].items())
    groups = state_a["optimizer"]["param_groups"]
    assert {g["name"] for g in groups} == {"all", "all no_decay", "all groups.0"}
    assert all(g["lookahead_step"] == groups[0]["lookahead_step"] > 0 for g in groups)
    slow = [s["lookahead_slow_buff"] for s in state_a["optimizer"]["state"].values()]
    other = [s["lookahead_slow_buff"] for s in state_b["optimizer"]["state"].values()]
    assert len(slow) == len(other) > 0 and all(map(torch.equal, slow, other))

    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics == json.loads((b / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.2  # 10 classes (chance 0.1), mirrored digits: it learnt
    manifest = json.loads((a / "manifest.json").read_text())
    whitened = 2 * 2 * 1 * 8  # the first conv's kernels are frozen
    assert manifest["model"]["non_trainable_params"] == whitened + 2 * 16


def test_whitening_a_model_that_does_not_start_with_a_conv_exits_2(tmp_path, digits_config):
    layers = [{"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]
    config = digits_config(
        tmp_path / "bad.yaml", model={"layers": layers, "whiten_first_conv": True}
    )
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert result.exit_code == 2, result.output
    assert "model.whiten_first_conv: whitens the first layer, which must be a Conv2D" in (
        result.stderr
    )
    assert "Traceback" not in result.output


def test_the_cifar10_speed_example_uses_every_part_of_the_recipe():
    cfg = load_experiment(ROOT / "examples" / "cifar10_speed.yaml")
    assert cfg.model.name == "airbench" and cfg.model.whiten_first_conv is not None
    assert cfg.augment.alternating_flip and cfg.evaluate.tta == "flip_translate"
    optimizer = cfg.train.optimizer
    assert optimizer.nesterov and optimizer.lookahead is not None and optimizer.groups
    assert cfg.train.batch_size == 1024 and cfg.train.label_smoothing == 0.2
