"""Optimisers carry Keras's defaults; schedules give the expected lr at known steps."""

from __future__ import annotations

import pytest
import torch

from cnnlab.config import OptimizerConfig, ScheduleConfig
from cnnlab.train.optim import build_optimizer, build_schedule


def params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def lr_after(steps: int, schedule: ScheduleConfig, decay: float = 0.0, base: float = 1.0) -> float:
    """The lr used by the optimiser step that follows `steps` completed steps."""
    optimizer = torch.optim.SGD(params(), lr=base)
    scheduler = build_schedule(optimizer, schedule, decay, steps_per_epoch=10, epochs=10)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def test_sgd_defaults_to_keras_lr_without_momentum():
    optimizer = build_optimizer(params(), OptimizerConfig(name="sgd"))
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["momentum"] == 0.0 and group["nesterov"] is False


def test_rmsprop_uses_keras_rho_and_epsilon():
    optimizer = build_optimizer(params(), OptimizerConfig(name="rmsprop"))
    assert isinstance(optimizer, torch.optim.RMSprop)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.001 and group["alpha"] == 0.9 and group["eps"] == 1e-7


def test_adam_uses_keras_epsilon():
    optimizer = build_optimizer(params(), OptimizerConfig(name="adam"))
    assert type(optimizer) is torch.optim.Adam
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.001 and group["eps"] == 1e-7 and group["betas"] == (0.9, 0.999)
    assert group["weight_decay"] == 0.0


def test_adamw_decays_weights_by_keras_default_unless_told():
    default = build_optimizer(params(), OptimizerConfig(name="adamw"))
    told = build_optimizer(params(), OptimizerConfig(name="adamw", weight_decay=0.05))
    assert isinstance(default, torch.optim.AdamW)
    assert default.param_groups[0]["weight_decay"] == 0.004
    assert default.param_groups[0]["eps"] == 1e-7
    assert told.param_groups[0]["weight_decay"] == 0.05


def test_adamw_weight_decay_can_be_turned_off():
    off = build_optimizer(params(), OptimizerConfig(name="adamw", weight_decay=0))
    assert off.param_groups[0]["weight_decay"] == 0


def test_configured_lr_and_momentum_replace_the_defaults():
    cfg = OptimizerConfig(name="sgd", lr=0.2, momentum=0.9, nesterov=True)
    group = build_optimizer(params(), cfg).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.2, 0.9, True)


@pytest.mark.parametrize("step", [0, 1, 7, 25])
def test_keras_decay_gives_lr_over_one_plus_decay_times_step(step):
    lr = lr_after(step, ScheduleConfig(), decay=0.1, base=0.5)
    assert lr == pytest.approx(0.5 / (1 + 0.1 * step))


def test_constant_schedule_keeps_the_lr():
    assert lr_after(0, ScheduleConfig()) == 1.0
    assert lr_after(99, ScheduleConfig()) == 1.0


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.1),  # warm-up over the first epoch (10 steps): (step + 1) / 10
        (4, 0.5),
        (9, 1.0),
        (10, 1.0),  # cosine starts at the top
        (55, 0.5),  # half-way through the remaining 90 steps
        (100, 0.0),  # the end
    ],
)
def test_cosine_schedule_with_warmup_gives_expected_lr(step, expected):
    schedule = ScheduleConfig(name="cosine", warmup_epochs=1)
    assert lr_after(step, schedule) == pytest.approx(expected, abs=1e-12)


def test_cosine_schedule_ends_at_min_lr_fraction():
    schedule = ScheduleConfig(name="cosine", min_lr_fraction=0.1)
    assert lr_after(50, schedule) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_after(100, schedule) == pytest.approx(0.1)


def test_fractional_warmup_epochs_ramp_over_part_of_an_epoch():
    schedule = ScheduleConfig(name="cosine", warmup_epochs=0.5)  # 5 steps
    assert lr_after(2, schedule) == pytest.approx(3 / 5)
    assert lr_after(5, schedule) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.1), (9, 1.0), (19, 1.0), (20, 0.5), (39, 0.5), (40, 0.25), (99, 0.5**4)],
)
def test_step_schedule_with_warmup_multiplies_by_gamma_every_step_epochs(step, expected):
    schedule = ScheduleConfig(name="step", step_epochs=2, gamma=0.5, warmup_epochs=1)
    assert lr_after(step, schedule) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1 / 30), (14, 15 / 30), (29, 1.0), (30, 1.0), (65, 0.5), (100, 0.0)],
)
def test_onecycle_rises_for_30_percent_then_falls_linearly(step, expected):
    assert lr_after(step, ScheduleConfig(name="onecycle")) == pytest.approx(expected)


def test_onecycle_with_warmup_rises_over_the_warmup_instead():
    schedule = ScheduleConfig(name="onecycle", warmup_epochs=2)  # 20 of 100 steps
    assert lr_after(9, schedule) == pytest.approx(10 / 20)
    assert lr_after(60, schedule) == pytest.approx(0.5)


def test_warmup_combines_with_keras_decay():
    schedule = ScheduleConfig(name="cosine", warmup_epochs=1)
    assert lr_after(4, schedule, decay=0.5) == pytest.approx(0.5 / (1 + 0.5 * 4))
