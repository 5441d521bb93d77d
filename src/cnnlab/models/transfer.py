"""A backbone and a Keras-style head as one model, and what a fine-tuning stage changes.

Keras's `Sequential([conv_base, Flatten(), Dense(...)])`: the backbone is the first layer (one
summary row, as Keras shows a nested model), the head's layers follow under their Keras names.

A stage sets which backbone blocks train (the last N, counted from the output end, or all),
the learning rate of each (the head at `lr`, the top trainable block at `backbone_lr`, each
block below multiplied once more by `layer_decay`), and the BatchNorm policy. BatchNorm
statistics of frozen blocks never change (their layers stay in inference mode, as Keras does
for a layer with trainable=False); `batchnorm: frozen` keeps the unfrozen blocks' statistics
fixed too (the Keras fine-tuning guide's advice for small data), `train` lets them update.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.backbones import Backbone, BackboneInfo, build_backbone
from cnnlab.models.build import KerasModel, build_layers

BatchNormPolicy = Literal["frozen", "train"]
BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class StagePlan:
    unfreeze: int | Literal["all"]  # backbone blocks that train, from the output end
    lr: float  # head
    backbone_lr: float  # the top trainable block
    layer_decay: float = 1.0
    batchnorm: BatchNormPolicy = "frozen"


class TransferModel(KerasModel):
    def __init__(
        self, backbone: Backbone, head: KerasModel, info: BackboneInfo, input_shape: tuple
    ) -> None:
        layers = OrderedDict([(backbone.backbone_name, backbone), *head.named_children()])
        super().__init__(
            layers,
            name=f"{backbone.backbone_name}_transfer",
            input_shape=input_shape,
            layer_shapes=[head.input_shape, *head.layer_shapes],
            head_activation=head.head_activation,
        )
        self.info = info
        self.preprocessing = info.preprocessing  # normalisation the inputs need
        self._frozen_norms: list[nn.Module] = []

    @property
    def backbone(self) -> Backbone:
        return cast(Backbone, next(iter(self.children())))  # the first layer (see __init__)

    def head_parameters(self) -> list[nn.Parameter]:
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]

    def apply_stage(self, plan: StagePlan) -> list[dict[str, Any]]:
        """Freeze and unfreeze as `plan` says; the optimiser's parameter groups for it."""
        blocks = self.backbone.blocks()
        count = len(blocks) if plan.unfreeze == "all" else min(plan.unfreeze, len(blocks))
        first_trainable = len(blocks) - count
        groups = [{"params": self.head_parameters(), "lr": plan.lr, "name": "head"}]
        self._frozen_norms = []
        for index, (name, modules) in enumerate(blocks):
            trainable = index >= first_trainable
            params = [p for module in modules for p in module.parameters()]
            for p in params:
                p.requires_grad_(trainable)
            if not trainable or plan.batchnorm == "frozen":
                self._frozen_norms += [m for m in modules if isinstance(m, BATCH_NORMS)]
            if trainable and params:
                depth = len(blocks) - 1 - index  # 0 for the top block
                lr = plan.backbone_lr * plan.layer_decay**depth
                groups.append({"params": params, "lr": lr, "name": name})
        self.train(self.training)  # put the frozen statistics in inference mode now
        return groups

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        for norm in self._frozen_norms:
            norm.eval()
        return self

    def trainable_blocks(self) -> list[str]:
        return [
            name
            for name, modules in self.backbone.blocks()
            if any(p.requires_grad for m in modules for p in m.parameters())
        ]


def build_transfer(
    backbone_name: str,
    weights: str | None,
    head: list | None,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> TransferModel:
    """The backbone with its weights, and the head for its feature map at `input_shape`."""
    backbone, info = build_backbone(backbone_name, weights)
    info = replace(info, preprocessing=info.preprocessing.overridden(mean, std))
    spec = head or [
        {"GlobalAveragePooling2D": {}},
        {"Dense": {"units": num_classes, "activation": "softmax"}},
    ]
    features = feature_shape(backbone, input_shape)
    built = build_layers(spec, features, num_classes=num_classes, where="model.head", name="head")
    return TransferModel(backbone, built, info, tuple(input_shape))


def feature_shape(backbone: Backbone, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The (h, w, channels) map the backbone gives for one image of `input_shape` (H, W, C)."""
    height, width, channels = input_shape
    if channels != 3:
        raise ConfigError(f"data.color_mode: the backbone {backbone.backbone_name} takes RGB")
    training = backbone.training
    try:
        with torch.no_grad():
            out = backbone.eval()(torch.zeros(1, 3, height, width))
    except RuntimeError as err:
        raise ConfigError(
            f"data.target_size: {height}x{width} is too small for {backbone.backbone_name} "
            f"({str(err).splitlines()[0]}); use larger images"
        ) from None
    finally:
        backbone.train(training)
    return out.shape[2], out.shape[3], out.shape[1]
