"""Optimisers with Keras's defaults, Keras's legacy `decay`, and lr schedules with warm-up.

Also the parts of airbench's recipe that are optimiser settings: parameter groups with their
own lr and weight decay (`train.optimizer.groups`, `no_decay`: BatchNorm and biases apart, as
timm's `param_groups_weight_decay`), and Lookahead around any optimiser (train/lookahead.py).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cnnlab.config import PARAM_KINDS, OptimizerConfig, ScheduleConfig
from cnnlab.errors import ConfigError

# Keras's default learning rates and epsilon (1e-7, where PyTorch uses 1e-8).
KERAS_LR = {"sgd": 0.01, "rmsprop": 0.001, "adam": 0.001, "adamw": 0.001}
KERAS_EPSILON = 1e-7
KERAS_WEIGHT_DECAY = {"sgd": 0.0, "rmsprop": 0.0, "adam": 0.0, "adamw": 0.004}


def base_lr(cfg: OptimizerConfig) -> float:
    """train.optimizer.lr, else Keras's default; `auto` is resolved first (runs/tuner.py)."""
    if cfg.lr == "auto":
        raise ValueError("train.optimizer.lr: auto is resolved to a number before training")
    return cfg.lr if cfg.lr is not None else KERAS_LR[cfg.name]


def build_optimizer(
    params: Iterable[Any], cfg: OptimizerConfig, model: nn.Module | None = None
) -> torch.optim.Optimizer:
    """`params`: parameters or param-group dicts; with `model` (which names them), split
    further by train.optimizer.groups and no_decay. Wrapped in Lookahead when set."""
    lr = base_lr(cfg)
    # Keras's AdamW decays weights by 0.004 unless told otherwise; the others not at all
    decay = cfg.weight_decay if cfg.weight_decay is not None else KERAS_WEIGHT_DECAY[cfg.name]
    if model is not None:
        params = param_groups(params, model, cfg, lr, decay)
    elif cfg.groups or cfg.no_decay:
        raise ValueError("train.optimizer.groups / no_decay select by name: pass the model")
    optimizer = _optimizer(params, cfg, lr, decay)
    if cfg.lookahead is None:
        return optimizer
    from cnnlab.train.lookahead import Lookahead  # imports timm (seconds): only when asked

    return Lookahead(optimizer, alpha=cfg.lookahead.alpha, k=cfg.lookahead.k)


def _optimizer(
    params: Iterable[Any], cfg: OptimizerConfig, lr: float, decay: float
) -> torch.optim.Optimizer:
    # One fused kernel per step (CPU and CUDA) where PyTorch has one, else one multi-tensor
    # (foreach) pass: Adam's step over S1's 6.2M parameters takes 5 ms fused, 39 ms per tensor
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=decay,
            fused=True,
        )
    if cfg.name == "rmsprop":  # Keras: rho 0.9 (PyTorch's alpha defaults to 0.99)
        return torch.optim.RMSprop(
            params,
            lr=lr,
            alpha=0.9,
            eps=KERAS_EPSILON,
            momentum=cfg.momentum,
            weight_decay=decay,
            foreach=True,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=KERAS_EPSILON, weight_decay=decay, fused=True)
    return torch.optim.AdamW(params, lr=lr, eps=KERAS_EPSILON, weight_decay=decay, fused=True)


# --- parameter groups -------------------------------------------------------------------------

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_kinds(model: nn.Module) -> dict[int, tuple[str, set[str]]]:
    """By id: each parameter's dotted name and kinds (bias, batchnorm, norm: PARAM_KINDS)."""
    kinds: dict[int, tuple[str, set[str]]] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in kinds:
                continue  # shared: the first name
            found = {"bias"} if name == "bias" else set()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                found.add("batchnorm")
            if isinstance(module, NORM_LAYERS):
                found.add("norm")
            kinds[id(param)] = (f"{module_name}.{name}" if module_name else name, found)
    return kinds


def _selects(selectors: Iterable[str], name: str, kinds: set[str]) -> bool:
    return any(s in kinds or fnmatch.fnmatchcase(name, s) for s in selectors)


def param_groups(
    params: Iterable[Any], model: nn.Module, cfg: OptimizerConfig, lr: float, decay: float
) -> list[dict[str, Any]]:
    """Every incoming group split by train.optimizer.groups (a parameter joins the first that
    selects it) and no_decay; the plain part of the first group comes first (the lr the epoch
    line shows, and what the lr finder scales the others by)."""
    if not cfg.groups and not cfg.no_decay:
        return list(params)
    kinds = param_kinds(model)
    _check_globs(cfg, [name for name, _ in kinds.values()])
    given = list(params)
    incoming: list[dict[str, Any]] = (
        given if given and isinstance(given[0], dict) else [{"params": given}]
    )
    split: list[dict[str, Any]] = []
    for group in incoming:
        # (index of the group chosen or -1, whether no_decay zeroes its decay) -> parameters
        buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
        for param in group["params"]:
            name, found = kinds.get(id(param), ("", set()))
            chosen = next(
                (i for i, g in enumerate(cfg.groups) if _selects(g.params, name, found)), -1
            )
            own = cfg.groups[chosen].weight_decay if chosen >= 0 else None
            undecayed = own is None and _selects(cfg.no_decay, name, found)
            buckets.setdefault((chosen, undecayed), []).append(param)
        base = {k: v for k, v in group.items() if k != "params"}
        label = base.pop("name", "all")
        for (chosen, undecayed), members in sorted(buckets.items(), key=lambda b: b[0]):
            own = cfg.groups[chosen].weight_decay if chosen >= 0 else None
            scale = cfg.groups[chosen].lr_scale if chosen >= 0 else 1.0
            suffix = (f" groups.{chosen}" if chosen >= 0 else "") + (
                " no_decay" if undecayed else ""
            )
            split.append(
                {
                    **base,
                    "params": members,
                    "lr": base.get("lr", lr) * scale,
                    "weight_decay": 0.0 if undecayed else (own if own is not None else decay),
                    "name": label + suffix,
                }
            )
    return split


def _check_globs(cfg: OptimizerConfig, names: list[str]) -> None:
    """A glob that names no parameter is a typo; the kinds (bias, norm, ...) may match none."""
    where = [(f"groups.{i}.params", g.params) for i, g in enumerate(cfg.groups)]
    for key, selectors in [*where, ("no_decay", cfg.no_decay)]:
        for selector in selectors:
            if selector in PARAM_KINDS:
                continue
            if not any(fnmatch.fnmatchcase(name, selector) for name in names):
                layers = sorted({name.rsplit(".", 1)[0] for name in names})
                shown = ", ".join(layers[:8]) + (", ..." if len(layers) > 8 else "")
                raise ConfigError(
                    f"train.optimizer.{key}: {selector!r} names no parameter of the model "
                    f"(its layers: {shown}; parameters are LAYER.weight, LAYER.bias)"
                )


def build_schedule(
    optimizer: torch.optim.Optimizer,
    schedule: ScheduleConfig,
    keras_decay: float,
    steps_per_epoch: int,
    epochs: int,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step multiplier of the base lr: warm-up, then the schedule, times Keras's decay."""
    total = max(1, steps_per_epoch * epochs)
    warmup = schedule.warmup_epochs * steps_per_epoch
    if schedule.name == "onecycle" and not warmup:
        warmup = 0.3 * total  # PyTorch's OneCycleLR rises for the first 30 %

    def factor(step: int) -> float:
        legacy = 1.0 / (1.0 + keras_decay * step)  # Keras: lr / (1 + decay * iterations)
        if step < warmup:
            return legacy * min(1.0, (step + 1) / warmup)  # a fractional warm-up ends at 1
        return legacy * _shape(schedule, step, warmup, total, steps_per_epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _shape(schedule: ScheduleConfig, step: int, warmup: float, total: int, per_epoch: int) -> float:
    floor = schedule.min_lr_fraction
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    if schedule.name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule.name == "step":
        return schedule.gamma ** (step // (schedule.step_epochs * per_epoch))
    if schedule.name == "onecycle":  # warm-up is the rising half; then linear down to the floor
        return floor + (1 - floor) * (1 - progress)
    return 1.0
