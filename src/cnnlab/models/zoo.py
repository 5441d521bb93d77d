"""The architectures of the seed reports, by name, as the layer lists a user could write.

Each entry is `(input_shape, num_classes) -> layer list`; the head follows the data's class
count. With the reports' inputs the trainable parameter counts are the reports' own:

| name         | report | input (H, W, C) | classes | params    |
|--------------|--------|-----------------|---------|-----------|
| basenet      | S3     | 32x32x3         | 25      | 24,197    |
| carlosnet    | S1     | 128x128x1       | 6       | 8,006     |
| ivannet      | S1     | 128x128x1       | 6       | 6,167,166 |
| s2_cnn       | S2     | 150x150x3       | 4       | 606,596   |
| catsdogs_cnn | S4     | 150x150x3       | 2       | 4,828,481 |
| s4_upsample_1 | S4    | 7x7x1           | -       | 240,993   |
| s4_upsample_2 | S4    | 7x7x1           | -       | 480,961   |
| s4_upsample_3 | S4    | 7x7x1           | -       | 185,793   |

The `s4_upsample_*` networks are S4's reconstruction models (task: reconstruction): a 7x7
degraded digit in, the 28x28 digit out, through two UpSampling2D (nearest, as Keras's) and
"same" 3x3 convolutions, a sigmoid at the end; their input's channels set the output's.

Convolutions are Keras's default "valid" and pools 2x2 unless the report says otherwise; hidden
layers use ReLU, as all five reports do.

`airbench` is not a report's: it is the network of Keller Jordan's CIFAR-10 speed record
(airbench94), 1,971,640 trainable parameters at 32x32x3 with 10 classes, written with the same
layers (examples/cifar10_speed.yaml trains it with the rest of its recipe).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from cnnlab.config import ModelConfig
from cnnlab.errors import ConfigError
from cnnlab.models.build import KerasModel, build_layers
from cnnlab.registry import Registry

LayerList = list[dict[str, Any]]
Architecture = Callable[[tuple[int, ...], int], LayerList]

MODELS: Registry[Architecture] = Registry("model")

# The reports' inputs (H, W, C) and classes, which `cnnlab summary NAME` uses when it is given
# none; the counts in the table above are for these.
REPORT_INPUTS: dict[str, tuple[tuple[int, int, int], int]] = {
    "basenet": ((32, 32, 3), 25),
    "carlosnet": ((128, 128, 1), 6),
    "ivannet": ((128, 128, 1), 6),
    "s2_cnn": ((150, 150, 3), 4),
    "catsdogs_cnn": ((150, 150, 3), 2),
    "airbench": ((32, 32, 3), 10),
    "s4_upsample_1": ((7, 7, 1), 10),  # reconstruction: the classes play no part
    "s4_upsample_2": ((7, 7, 1), 10),
    "s4_upsample_3": ((7, 7, 1), 10),
}


def build_model(
    spec: str | Sequence[Any], input_shape: Sequence[int], num_classes: int | None
) -> KerasModel:
    """The model for a registered name (`"carlosnet"`) or a Keras-style layer list.

    `input_shape` is (height, width, channels) from the data; the model takes N, C, H, W
    tensors and outputs logits (see `KerasModel.head_activation`).
    """
    if isinstance(spec, str):
        name = MODELS.resolve(spec)
        if num_classes is None or num_classes < 2:
            raise ConfigError(f"model {name}: needs at least 2 classes, the data has {num_classes}")
        layers = MODELS.get(name)(tuple(input_shape), num_classes)
        return build_layers(
            layers, input_shape, num_classes=num_classes, where=f"model {name}: layers", name=name
        )
    return build_layers(spec, input_shape, num_classes=num_classes)


def model_from_config(
    cfg: ModelConfig, input_shape: Sequence[int], num_classes: int
) -> torch.nn.Module:
    """The experiment's model: a registered name, a layer list, or a backbone with a head."""
    if cfg.backbone is None:
        # ModelConfig sets exactly one of name, layers, backbone, from_run (runs load from_run)
        spec = cast("str | Sequence[Any]", cfg.name or cfg.layers)
        return build_model(spec, input_shape, num_classes)
    from cnnlab.models.transfer import build_transfer  # imports timm: only when needed

    shape = cast("tuple[int, int, int]", tuple(input_shape))  # (H, W, C)
    return build_transfer(
        cfg.backbone, cfg.weights, cfg.head, shape, num_classes, cfg.mean, cfg.std
    )


# --- the words of the reports, as layer-list entries ------------------------------------------


def conv(filters: int, kernel_size: int, activation: str | None = "relu") -> dict[str, Any]:
    return {"Conv2D": {"filters": filters, "kernel_size": kernel_size, "activation": activation}}


def pool(pool_size: int = 2) -> dict[str, Any]:
    return {"MaxPooling2D": {"pool_size": pool_size}}


def dense(units: int, activation: str | None = "relu") -> dict[str, Any]:
    return {"Dense": {"units": units, "activation": activation}}


def dropout(rate: float) -> dict[str, Any]:
    return {"Dropout": {"rate": rate}}


FLATTEN: dict[str, Any] = {"Flatten": {}}


def softmax_head(num_classes: int) -> dict[str, Any]:
    return dense(num_classes, "softmax")


def binary_or_softmax_head(num_classes: int) -> dict[str, Any]:
    """One sigmoid unit for two classes (as S4), else softmax over the classes."""
    return dense(1, "sigmoid") if num_classes == 2 else softmax_head(num_classes)


# --- the architectures ----------------------------------------------------------------------


@MODELS.register("basenet")
def basenet(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """S3's CIFAR-100 baseline (LeNet-like): 24,197 parameters at 32x32x3, 25 classes."""
    return [conv(6, 5), pool(), conv(16, 5), pool(), FLATTEN, dense(50), softmax_head(num_classes)]


@MODELS.register("carlosnet")
def carlosnet(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """S1's small finger counter: 3x3 pools shrink fast, 8,006 parameters at 128x128x1."""
    return [
        conv(4, 3),
        pool(3),
        conv(8, 5),
        pool(3),
        conv(16, 7),
        pool(2),
        FLATTEN,
        softmax_head(num_classes),
    ]


@MODELS.register("ivannet")
def ivannet(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """S1's VGG-like finger counter: 6,167,166 parameters at 128x128x1, 6 classes."""
    return [
        conv(20, 5),
        conv(20, 5),
        pool(),
        conv(40, 3),
        conv(40, 3),
        pool(),
        conv(80, 3),
        conv(80, 3),
        conv(80, 3),
        pool(),
        FLATTEN,
        dense(600),
        dense(300),
        softmax_head(num_classes),
    ]


@MODELS.register("s2_cnn")
def s2_cnn(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """S2's first blood-cell model: five conv/pool stages, Dropout 0.5 before the Dense head."""
    return [
        conv(32, 3),
        pool(),
        conv(64, 3),
        pool(),
        conv(64, 3),
        pool(),
        conv(128, 3),
        pool(),
        conv(128, 3),
        pool(),
        FLATTEN,
        dropout(0.5),
        dense(512),
        dense(128),
        softmax_head(num_classes),
    ]


@MODELS.register("catsdogs_cnn")
def catsdogs_cnn(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """S4's cats-vs-dogs model: 4,828,481 parameters at 150x150x3, one sigmoid unit."""
    return [
        conv(32, 3),
        pool(),
        conv(64, 3),
        pool(),
        conv(128, 3),
        pool(),
        FLATTEN,
        dense(128),
        dropout(0.9),
        binary_or_softmax_head(num_classes),
    ]


# --- airbench94's network -------------------------------------------------------------------

AIRBENCH_WIDTHS = (64, 256, 256)  # its blocks: 1x, 4x, 4x its base width of 64
AIRBENCH_LOGIT_SCALE = 1 / 9  # its final Mul: logits shrunk so the head starts near uniform


def airbench_norm() -> dict[str, Any]:
    """BatchNorm as airbench's: a Keras momentum of 0.6 (fast statistics for a short run), eps
    1e-12, and no learned scale (its weight is frozen at 1), only the offset."""
    return {"BatchNormalization": {"momentum": 0.6, "epsilon": 1e-12, "scale": False}}


def airbench_block(filters: int) -> LayerList:
    """conv - pool - norm - GELU - conv - norm - GELU; 3x3 "same" convolutions without bias
    (the norm's offset is the bias), started near the identity (dirac)."""
    conv_same = {
        "Conv2D": {
            "filters": filters,
            "kernel_size": 3,
            "padding": "same",
            "use_bias": False,
            "kernel_initializer": "dirac",
        }
    }
    gelu = {"Activation": "gelu"}
    return [conv_same, pool(), airbench_norm(), gelu, conv_same, airbench_norm(), gelu]


def same_conv(filters: int, activation: str = "relu") -> dict[str, Any]:
    return {
        "Conv2D": {
            "filters": filters,
            "kernel_size": 3,
            "padding": "same",
            "activation": activation,
        }
    }


UPSAMPLE: dict[str, Any] = {"UpSampling2D": {"size": 2}}


def upsampling_net(input_shape: tuple[int, ...], *widths: int | str) -> LayerList:
    """S4's reconstruction networks: "same" 3x3 convolutions of `widths` ("up": UpSampling2D),
    then one sigmoid convolution back to the input's channels."""
    channels = input_shape[-1]
    body = [UPSAMPLE if w == "up" else same_conv(int(w)) for w in widths]
    return [*body, same_conv(channels, "sigmoid")]


@MODELS.register("s4_upsample_1")
def s4_upsample_1(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """S4's "Modelo 1": 240,993 parameters at 7x7x1 -> 28x28x1."""
    return upsampling_net(input_shape, 64, 64, "up", 128, 32, "up", 128, 32, 32, 32)


@MODELS.register("s4_upsample_2")
def s4_upsample_2(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """S4's "Modelo 2": 480,961 parameters at 7x7x1 -> 28x28x1."""
    return upsampling_net(input_shape, 64, 64, "up", 128, 128, "up", 128, 64)


@MODELS.register("s4_upsample_3")
def s4_upsample_3(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """S4's "Modelo 3": 185,793 parameters at 7x7x1 -> 28x28x1."""
    return upsampling_net(input_shape, 64, 64, "up", 128, "up", 64)


@MODELS.register("airbench")
def airbench(input_shape: tuple[int, ...], num_classes: int) -> LayerList:
    """airbench94's net: a 2x2 conv of 2 x C x 4 filters (24 for RGB; model.whiten_first_conv
    sets it from the data, as airbench does), GELU, three conv blocks of widths 64/256/256
    halving the size (32 -> 31 -> 15 -> 7 -> 3), a 3x3 max-pool to one pixel, a Dense without
    bias, its logits times 1/9."""
    channels = input_shape[-1]
    whiten = {"Conv2D": {"filters": 2 * channels * 4, "kernel_size": 2, "activation": "gelu"}}
    blocks = [layer for width in AIRBENCH_WIDTHS for layer in airbench_block(width)]
    head = [
        pool(3),
        FLATTEN,
        {"Dense": {"units": num_classes, "use_bias": False}},
        {"Rescaling": {"scale": AIRBENCH_LOGIT_SCALE}},
        {"Activation": "softmax"},
    ]
    return [whiten, *blocks, *head]
