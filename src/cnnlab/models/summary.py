"""Keras's model.summary() for any module: layer, output shape (channels-last), parameters,
and the floating-point operations of one image through it.

Counts follow Keras: BatchNormalization's moving mean and variance are non-trainable
parameters (PyTorch keeps them as buffers), and so are frozen weights. Output shapes come from
one forward pass of a single zero image, so the table also works for modules built elsewhere.

FLOPs are counted in that same pass by torch's own `torch.utils.flop_counter.FlopCounterMode`
(no extra dependency, unlike fvcore, and it sees any module, timm's and torchvision's included):
convolutions and matrix products, 2 FLOPs per multiply-accumulate, so MACs = FLOPs / 2. Bias
additions, activations, pooling and normalisation are not counted (a few percent at most in a
CNN), as in the FLOPs papers quote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Buffers Keras counts as (non-trainable) weights; num_batches_tracked has no Keras twin.
KERAS_WEIGHT_BUFFERS = ("running_mean", "running_var")


@dataclass(frozen=True)
class SummaryRow:
    name: str  # conv2d_1
    kind: str  # Conv2D
    output_shape: tuple[int | None, ...] | None  # (None, 126, 126, 4); None if not run
    trainable: int
    non_trainable: int
    flops: int = 0  # forward pass of one image (batch 1); MACs are half

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


def count_params(module: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) as Keras counts them."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    stats = sum(
        b.numel()
        for name, b in module.named_buffers()
        if name.rsplit(".", 1)[-1] in KERAS_WEIGHT_BUFFERS
    )
    return trainable, frozen + stats


def summary_rows(model: nn.Module, input_shape: Sequence[int]) -> list[SummaryRow]:
    """One row per top-level layer (or per block of a backbone, which names its own groups),
    with its output for one image of `input_shape` (H, W, C)."""
    return _rows_and_total(model, input_shape)[0]


def _rows_and_total(model: nn.Module, input_shape: Sequence[int]) -> tuple[list[SummaryRow], int]:
    """The rows, and the FLOPs of the whole forward pass (more than the rows' sum when forward
    computes outside its layers)."""
    groups = _groups(model)
    shapes, flops = _trace(model, tuple(input_shape), groups)
    names = _counter_names(model)
    rows = []
    for name, kind, modules in groups:
        counts = [count_params(module) for module in modules]
        trainable, non_trainable = (sum(c[0] for c in counts), sum(c[1] for c in counts))
        group_flops = sum(_total(flops.get(names.get(module, ""), {})) for module in modules)
        rows.append(SummaryRow(name, kind, shapes.get(name), trainable, non_trainable, group_flops))
    return rows, _total(flops.get("Global", {}))


Group = tuple[str, str, list[nn.Module]]  # row name, kind, the modules it covers


def _groups(model: nn.Module) -> list[Group]:
    if hasattr(model, "summary_groups"):
        # a Backbone names its blocks; nn.Module.__getattr__ types the attribute Tensor | Module
        return cast("Callable[[], list[Group]]", model.summary_groups)()
    return [(name, type(child).__name__, [child]) for name, child in model.named_children()]


def format_summary(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The Keras-style table as plain text with a FLOPs column, then Keras's three totals lines
    and the total FLOPs and MACs of one image."""
    rows, flops = _rows_and_total(model, input_shape)
    cells = [("Layer (type)", "Output Shape", "Param #", "FLOPs")] + [
        (f"{r.name} ({r.kind})", _shape_text(r.output_shape), f"{r.params:,}", f"{r.flops:,}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) + 4 for i in range(4)]
    rule = sum(widths) + 1

    def line(row: tuple[str, ...]) -> str:
        return (" " + "".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))).rstrip()

    trainable, non_trainable = count_params(model)
    name = getattr(model, "model_name", type(model).__name__.lower())
    return "\n".join(
        [
            f'Model: "{name}"',
            "_" * rule,
            line(cells[0]),
            "=" * rule,
            *(line(row) for row in cells[1:]),
            "=" * rule,
            f"Total params: {trainable + non_trainable:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {non_trainable:,}",
            f"FLOPs (one image, forward): {flops:,} ({_si(flops)})",
            f"MACs (multiply-accumulates = FLOPs / 2): {flops // 2:,} ({_si(flops // 2)})",
            "_" * rule,
        ]
    )


def _si(value: int) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}"
    return str(value)


def _shape_text(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "?"  # a layer forward() did not call, or one that returns a non-tensor
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def _trace(
    model: nn.Module, input_shape: tuple[int, ...], groups: list[Group]
) -> tuple[dict[str, tuple], dict[str, dict[object, int]]]:
    """Each group's output (its last module's) for one zero image, Keras order with the batch
    axis as None; and FlopCounterMode's FLOPs of that pass by module name, "Global" the whole."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    # (H, W, C) -> (1, C, H, W); a flat (features,) input stays (1, features).
    size = (1, input_shape[-1], *input_shape[:-1]) if len(input_shape) == 3 else (1, *input_shape)
    shapes: dict[str, tuple] = {}

    def record(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                shapes[name] = _keras_order(output.shape)

        return hook

    hooks = [modules[-1].register_forward_hook(record(name)) for name, _, modules in groups]
    # eval(): one image cannot be batch-normalised; restore each module's own mode afterwards,
    # since a frozen backbone may keep some BatchNorm layers in eval on purpose.
    modes = {module: module.training for module in model.modules()}
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(torch.zeros(size, device=device, dtype=dtype))
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes.items():
            module.training = training
    return shapes, dict(counter.get_flop_counts())


def _counter_names(model: nn.Module) -> dict[nn.Module, str]:
    """FlopCounterMode's name of each module: the root's class name, then the dotted path."""
    root = type(model).__name__
    return {module: f"{root}.{name}" if name else root for name, module in model.named_modules()}


def _total(counts: dict[object, int]) -> int:
    return int(sum(counts.values()))


def _keras_order(shape: torch.Size) -> tuple[int | None, ...]:
    dims = tuple(shape[1:])
    if len(dims) == 3:  # C, H, W -> H, W, C
        dims = (dims[1], dims[2], dims[0])
    return (None, *dims)
