"""Training in stages, as one run: each stage sets what trains and how fast, then fits.

A model without `model.stages` has one stage: everything trains for `train.epochs`. A
transfer model's stage freezes and unfreezes backbone blocks, builds a fresh optimiser over the
parameters that train (Keras recompiles between stages, so its optimiser starts anew too) and
its own schedule over the stage's epochs. Epochs are numbered across the whole run; history,
best weights, the checkpoint and the EMA of the weights (train.ema) are shared, so a run killed
in stage 2 resumes in stage 2 with that stage's optimiser state, and one killed at a boundary
starts the next stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from rich.console import Console

from cnnlab.config import ModelConfig, StageConfig, TrainConfig
from cnnlab.models.summary import count_params
from cnnlab.train.callbacks import Callback, TrainState
from cnnlab.train.compiled import warm_up
from cnnlab.train.loop import Trainee, fit
from cnnlab.train.optim import base_lr, build_optimizer, build_schedule

# (trainee) -> the callbacks of one stage; they checkpoint that stage's optimiser
CallbackFactory = Callable[[Trainee, int], Sequence[Callback]]


def stages_of(model: ModelConfig | None, train: TrainConfig) -> list[StageConfig]:
    if model is not None and model.stages:
        return list(model.stages)
    # one stage: everything trains, BatchNorm statistics too (Keras's fit on an unfrozen model)
    return [StageConfig(epochs=train.epochs, unfreeze="all", batchnorm="train")]


def run_stages(
    base: Trainee,
    cfg: TrainConfig,
    stages: Sequence[StageConfig],
    train,
    val,
    state: TrainState,
    saved: dict[str, Any] | None,
    callbacks: CallbackFactory,
    console: Console,
) -> list[dict[str, Any]]:
    """Fit every stage from `state` on; `saved` is the checkpoint a resumed run continues.
    Returns what each stage trained, for the manifest."""
    steps = cfg.steps_per_epoch or len(train)
    summary = []
    for index, stage in enumerate(stages):
        trainee = stage_trainee(base, stage, cfg, steps)
        if index > state.stage:  # a new stage starts where the last one ended (or stopped)
            state.stage, state.stop = index, False
            state.stage_starts.append(state.epoch)
        summary.append(_describe(index, stage, trainee, state.stage_starts[index]))
        if index < state.stage:  # finished before this run was resumed
            continue
        end = state.stage_starts[index] + stage.epochs
        if saved is not None and saved["state"]["stage"] == index:
            # stage_trainee builds both
            assert trainee.optimizer is not None and trainee.schedule is not None
            trainee.optimizer.load_state_dict(saved["optimizer"])
            trainee.schedule.load_state_dict(saved["schedule"])
        if state.epoch < end and len(stages) > 1:
            console.print(_stage_line(summary[-1], len(stages)), highlight=False)
        if state.epoch < end and cfg.compile != "off":  # a stage's freezing: new graphs
            summary[-1]["compile_s"] = round(warm_up(trainee, train, val), 2)
            console.print(
                f"Compiled in {summary[-1]['compile_s']:.1f} s (torch.compile, mode "
                f"{cfg.compile}; the epochs' seconds leave it out)",
                highlight=False,
            )
        fit(trainee, train, val, end, cfg.steps_per_epoch, callbacks(trainee, end), state)
    return summary


def stage_trainee(base: Trainee, stage: StageConfig, cfg: TrainConfig, steps: int) -> Trainee:
    """`base` with this stage's trainable set, optimiser and schedule."""
    model, optimizer_cfg = base.model, cfg.optimizer
    lr = stage.lr or base_lr(optimizer_cfg)
    if hasattr(model, "apply_stage"):
        from cnnlab.models.transfer import StagePlan

        plan = StagePlan(
            stage.unfreeze, lr, stage.backbone_lr or lr, stage.layer_decay, stage.batchnorm
        )
        # a TransferModel's; Module.__getattr__ types the attribute Tensor | Module
        params: Any = cast("Callable[[StagePlan], Any]", model.apply_stage)(plan)
    else:
        params = [{"params": list(model.parameters()), "lr": lr}]
    optimizer = build_optimizer(params, optimizer_cfg, model)  # model: groups by name
    schedule = build_schedule(optimizer, cfg.schedule, optimizer_cfg.decay, steps, stage.epochs)
    return Trainee(
        model, optimizer, schedule, base.task, base.preprocess, base.augment, base.average
    )


def _describe(index: int, stage: StageConfig, trainee: Trainee, start: int) -> dict[str, Any]:
    model = trainee.model
    trainable, _ = count_params(model)
    blocks = (
        cast("Callable[[], list[str]]", model.trainable_blocks)()  # a TransferModel's
        if hasattr(model, "trainable_blocks")
        else None
    )
    assert trainee.optimizer is not None  # stage_trainee builds it
    return {
        "stage": index + 1,
        "first_epoch": start + 1,
        "epochs": stage.epochs,
        "unfreeze": stage.unfreeze,
        "trainable_blocks": blocks,
        "trainable_params": trainable,
        "lr": {g.get("name", "all"): g["lr"] for g in trainee.optimizer.param_groups},
        "batchnorm": stage.batchnorm,
    }


def _stage_line(described: dict[str, Any], count: int) -> str:
    blocks = described["trainable_blocks"]
    what = "head only" if not blocks else f"head + {', '.join(blocks)}"
    return (
        f"Stage {described['stage']}/{count}: {described['epochs']} epochs, {what} - "
        f"Trainable params: {described['trainable_params']:,}"
    )
