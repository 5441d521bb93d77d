"""The learning-rate finder: the sweep, its rule, the state it puts back bitwise, `cnnlab
lr-find`, and `train.optimizer.lr: auto` in a run (recorded, reused on resume, and training
exactly as a run with the suggestion written in the file)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import cnnlab
from cnnlab import runfiles
from cnnlab.cli import app
from cnnlab.config_io import load_experiment
from cnnlab.data.pipeline import load_data
from cnnlab.errors import ConfigError
from cnnlab.models import model_from_config
from cnnlab.runs import tuner
from cnnlab.runs.trained import make_trainee, train_batches
from cnnlab.runtime import select_device
from cnnlab.train import lr_find
from cnnlab.train.batch_size import with_batch_size
from cnnlab.train.lr_find import RULE, figure, find_lr, plot, suggest
from cnnlab.train.probe import train_step
from cnnlab.train.stages import stage_trainee, stages_of

DEVICE = select_device("auto")  # the GPU when there is one
# BatchNormalization (running statistics) and Dropout (random masks): both must come back
NORM_NET = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"BatchNormalization": {}},
    {"Dropout": 0.25},
    {"Flatten": {}},
    {"Dense": {"units": 10, "activation": "softmax"}},
]
AUGMENT = {"rotation_range": 10, "width_shift_range": 0.1}  # draws from its own generator
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def short_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs' sweeps in 40 steps instead of 200: the same rule, a test's time."""
    monkeypatch.setattr(lr_find, "STEPS", 40)


def trainee_on_digits(tmp_path: Path, digits_config, **sections):
    """(the first stage's trainee with Adam, the training batches) of a digits experiment."""
    cfg = load_experiment(digits_config(tmp_path / "digits.yaml", **sections))
    assert cfg.model is not None
    data = load_data(cfg.data, cfg.seed)
    torch.manual_seed(0)
    model = model_from_config(cfg.model, data.input_shape, data.num_classes).to(DEVICE)
    base = make_trainee(model, cfg, data, DEVICE)
    train = with_batch_size(train_batches(cfg, data, DEVICE), 32)
    trainee = stage_trainee(base, stages_of(cfg.model, cfg.train)[0], tuner.numbers(cfg), 1)
    return trainee, train


def state_of(trainee) -> dict:
    """Everything the finder must put back, copied."""
    generator = getattr(trainee.augment, "generator", torch.Generator())
    return {
        "model": {k: v.detach().clone() for k, v in trainee.model.state_dict().items()},
        "optimizer": tuner_copy(trainee.optimizer.state_dict()),
        "rng": torch.get_rng_state().clone(),
        "numpy": np.random.get_state()[1].copy(),
        "augment": generator.get_state().clone(),
        "training": trainee.model.training,
    }


def tuner_copy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: tuner_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tuner_copy(v) for v in value]
    return value


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a.cpu(), b.cpu())
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    else:
        assert a == b


def test_the_sweep_restores_model_optimizer_and_random_state_bitwise(tmp_path, digits_config):
    trainee, train = trainee_on_digits(
        tmp_path, digits_config, model={"layers": NORM_NET}, augment=AUGMENT
    )
    for images, labels in train.epoch(0, 2):  # an optimiser with state, as a later stage has
        train_step(trainee, images, labels)
    trainee.model.eval()
    before = state_of(trainee)
    result = find_lr(trainee, train.epoch(0, 30), steps=30)
    assert len(result.lrs) > 10  # it trained: the weights did change meanwhile
    assert_same(state_of(trainee), before)


def test_lr_grows_exponentially_from_start_to_end_and_the_suggestion_is_a_tenth_of_the_minimum(
    tmp_path, digits_config
):
    trainee, train = trainee_on_digits(tmp_path, digits_config)
    result = find_lr(trainee, train.epoch(0, 50), start=1e-5, end=1.0, steps=50)
    assert result.lrs[0] == pytest.approx(1e-5)
    ratios = np.diff(np.log(result.lrs))
    assert np.allclose(ratios, ratios[0])  # one factor a step
    if not result.diverged:
        assert result.lrs[-1] == pytest.approx(1.0)
    window = result.smoothed[5 : len(result.smoothed) - 5]  # fastai's: 50 // 10 and the last 5
    assert result.lrs[result.minimum] == result.lrs[5 + int(np.argmin(window))]
    assert result.suggested == pytest.approx(result.lrs[result.minimum] / 10)
    assert result.record()["rule"] == RULE


def test_a_diverging_loss_stops_the_sweep_early(tmp_path, digits_config):
    trainee, train = trainee_on_digits(
        tmp_path, digits_config, train={"optimizer": {"name": "sgd"}}
    )
    result = find_lr(trainee, train.epoch(0, 60), start=1e-3, end=1e6, steps=60)
    assert result.diverged and len(result.lrs) < 60
    last, best = result.smoothed[-1], min(result.smoothed[:-1])
    assert not np.isfinite(last) or last > 4 * best  # the stated rule stopped it
    assert "diverged" in result.stopped
    assert result.suggested < result.lrs[-1] / 10


def test_the_suggestion_ignores_the_first_tenth_and_the_last_five_points():
    lrs = list(np.geomspace(1e-6, 1.0, 40))
    smoothed = [1.0] * 40
    smoothed[1] = 0.1  # a dip inside the first tenth (40 // 10 = 4 points): not the minimum
    smoothed[37] = 0.2  # within the last five: not either
    smoothed[20] = 0.5
    lr, index = suggest(lrs, smoothed, planned=40)
    assert index == 20 and lr == pytest.approx(lrs[20] / 10)


def test_the_plot_shows_loss_against_lr_on_a_log_axis_with_the_suggestion_and_the_rule(
    tmp_path, digits_config
):
    trainee, train = trainee_on_digits(tmp_path, digits_config)
    result = find_lr(trainee, train.epoch(0, 20), steps=20)
    ax = figure(result).axes[0]
    assert ax.get_xscale() == "log" and RULE in ax.get_title()
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) == 20]
    assert [list(line.get_ydata()) for line in curves] == [result.losses, result.smoothed]
    marked = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert marked == [result.suggested]
    assert f"suggested: {result.suggested:.2e}" in [t.get_text() for t in ax.get_legend().texts]
    assert plot(result).startswith(PNG)


def test_lr_find_command_writes_the_plot_and_prints_the_suggestion(tmp_path, digits_config):
    config = digits_config(tmp_path / "digits.yaml")
    out = tmp_path / "sweep.png"
    result = CliRunner().invoke(
        app, ["lr-find", str(config), "--out", str(out), "--steps", "30", "--set", "seed=1"]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG)
    assert "Batch size: 64" in result.output
    assert "Suggested lr: " in result.output and RULE in result.output


def test_lr_find_command_with_start_above_end_exits_2(tmp_path, digits_config):
    config = digits_config(tmp_path / "digits.yaml")
    result = CliRunner().invoke(app, ["lr-find", str(config), "--start", "1", "--end", "0.1"])
    assert result.exit_code == 2
    assert "--start 1 must be above 0 and below --end 0.1" in result.output


def test_lr_find_command_defaults_are_the_finders(tmp_path):
    import inspect

    from cnnlab import cli

    defaults = {
        name: p.default.default for name, p in inspect.signature(cli.lr_find).parameters.items()
    }
    assert (defaults["steps"], defaults["start"], defaults["end"]) == (
        lr_find.STEPS,
        lr_find.START,
        lr_find.END,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", "train.optimizer.lr: expected a number, got 'fast' (or auto: "),
        ("-0.1", "train.optimizer.lr: must be greater than 0, got -0.1"),
        ("Auto", "train.optimizer.lr: expected a number, got 'Auto'"),
    ],
)
def test_lr_is_a_positive_number_or_auto(tmp_path, digits_config, value, message):
    config = digits_config(tmp_path / "digits.yaml")
    with pytest.raises(ConfigError) as caught:
        load_experiment(config, [f"train.optimizer.lr={value}"])
    assert message in str(caught.value)
    assert load_experiment(config, ["train.optimizer.lr=auto"]).train.optimizer.lr == "auto"
    assert load_experiment(config, ["train.optimizer.lr=1e-3"]).train.optimizer.lr == 0.001


def run_digits(root: Path, digits_config, *overrides: str, resume: bool = False, **sections):
    root.mkdir(parents=True, exist_ok=True)
    config = digits_config(root / "digits.yaml", **sections)
    printed = io.StringIO()
    result = cnnlab.run(
        config,
        root / "run",
        overrides=overrides,
        resume=resume,
        console=Console(file=printed, width=200),
    )
    return result, printed.getvalue()


def test_lr_auto_runs_the_finder_first_records_it_and_trains_as_the_suggestion_would(
    tmp_path, digits_config, short_sweep
):
    train = {"epochs": 1, "batch_size": 64, "deterministic": True}
    auto, printed = run_digits(
        tmp_path / "a", digits_config, train={**train, "optimizer": {"name": "adam", "lr": "auto"}}
    )
    found = auto.manifest["lr_find"]
    assert found["rule"] == RULE and found["steps"] <= 40 and found["plot"] == runfiles.LR_FIND
    assert (auto.folder / runfiles.LR_FIND).read_bytes().startswith(PNG)
    assert f"Learning-rate finder: lr {found['suggested']:.2e}" in printed
    assert printed.index("Learning-rate finder") < printed.index("Epoch 1/1")
    history = (auto.folder / runfiles.HISTORY).read_text().splitlines()
    lr_column = history[0].split(",").index("lr")
    assert float(history[1].split(",")[lr_column]) == pytest.approx(found["suggested"], rel=1e-5)
    assert "lr: auto" in (auto.folder / runfiles.CONFIG).read_text()

    fixed, _ = run_digits(
        tmp_path / "b",
        digits_config,
        train={**train, "optimizer": {"name": "adam", "lr": found["suggested"]}},
    )
    assert "lr_find" not in fixed.manifest
    # the finder left no trace: the same weights, bit for bit, as the number in the file
    assert (auto.folder / runfiles.WEIGHTS).read_bytes() == (
        fixed.folder / runfiles.WEIGHTS
    ).read_bytes()


def test_a_resumed_lr_auto_run_keeps_the_recorded_lr_without_sweeping_again(
    tmp_path, digits_config, short_sweep, monkeypatch
):
    sections = {"train": {"epochs": 1, "optimizer": {"name": "adam", "lr": "auto"}}}
    first, _ = run_digits(tmp_path, digits_config, **sections)
    suggested = first.manifest["lr_find"]["suggested"]

    def no_sweep(*args, **kwargs):
        raise AssertionError("the finder ran again on resume")

    monkeypatch.setattr(tuner, "find_lr", no_sweep)
    resumed, printed = run_digits(
        tmp_path, digits_config, "train.epochs=2", resume=True, **sections
    )
    assert resumed.manifest["lr_find"] == first.manifest["lr_find"]
    assert f"Recorded auto values: batch size 32, lr {suggested:.2e}" in printed
    rows = (resumed.folder / runfiles.HISTORY).read_text().splitlines()
    lr_column = rows[0].split(",").index("lr")
    assert [float(row.split(",")[lr_column]) for row in rows[1:]] == pytest.approx(
        [suggested, suggested], rel=1e-5
    )
    assert json.loads((resumed.folder / runfiles.MANIFEST).read_text())["epochs_run"] == 2


def test_every_param_group_keeps_its_ratio_to_the_swept_lr(tmp_path, digits_config):
    trainee, train = trainee_on_digits(tmp_path, digits_config)
    first, *rest = list(trainee.model.parameters())
    trainee.optimizer = torch.optim.SGD([{"params": [first], "lr": 0.5}, {"params": rest}], lr=0.05)
    seen: list[tuple[float, float]] = []
    groups = trainee.optimizer.param_groups
    trainee.model.register_forward_pre_hook(
        lambda module, inputs: seen.append((groups[0]["lr"], groups[1]["lr"]))
    )
    result = find_lr(trainee, train.epoch(0, 12), start=1e-4, end=1e-2, steps=12, base=0.05)
    assert [a for a, _ in seen] == pytest.approx([10 * lr for lr in result.lrs])
    assert [b for _, b in seen] == pytest.approx(result.lrs)
    # and back as they were (load_state_dict gives the optimiser new group dicts)
    assert [g["lr"] for g in trainee.optimizer.param_groups] == [0.5, 0.05]
