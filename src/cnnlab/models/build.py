"""Build a Keras-style layer list into a `KerasModel`, inferring every shape from the input.

Shapes are worked out before anything is allocated, layer by layer as Keras's
compute_output_shape does, so a list that shrinks the image to nothing fails at once with the
layer and the shape, instead of deep inside the first forward pass.

The model outputs logits. A final softmax/sigmoid in the list is not applied in forward(): it is
kept as `model.head_activation`, which picks the loss (softmax: cross-entropy; sigmoid:
binary cross-entropy) and the transform of `model.probabilities(logits)`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import layers as L
from cnnlab.models.spec import LayerSpec, parse_layers

Shape = tuple[int, ...]  # Keras order without the batch axis: (H, W, C) or (features,)
HEAD_ACTIVATIONS = ("softmax", "sigmoid")


class KerasModel(nn.Sequential):
    """Keras layers in order, each a child named as Keras names it (conv2d, conv2d_1, ...)."""

    def __init__(
        self,
        layers: OrderedDict[str, nn.Module],
        *,
        name: str,
        input_shape: Shape,
        layer_shapes: list[Shape],
        head_activation: str | None,
    ) -> None:
        super().__init__(layers)
        self.model_name = name
        self.input_shape = input_shape  # (H, W, C); forward() takes N, C, H, W
        self.layer_shapes = layer_shapes  # each layer's output, Keras order
        self.output_shape = layer_shapes[-1]
        self.head_activation = head_activation  # "softmax", "sigmoid" or None (raw outputs)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """What Keras's model.predict would return: the head activation applied to logits."""
        if self.head_activation == "softmax":
            return logits.softmax(dim=1)
        if self.head_activation == "sigmoid":
            return logits.sigmoid()
        return logits


RESERVED_NAMES = frozenset(dir(KerasModel)) | {
    "model_name",
    "input_shape",
    "layer_shapes",
    "output_shape",
    "head_activation",
}


def build_layers(
    entries: Sequence[Any],
    input_shape: Sequence[int],
    *,
    num_classes: int | None = None,
    where: str = "model.layers",
    name: str = "sequential",
) -> KerasModel:
    """The model for `entries` taking images of `input_shape` (H, W, C).

    `num_classes`, when given, is checked against a flat output so that a wrong final Dense is
    reported here, not as an index error in the loss. `where` prefixes every message.
    """
    shape = first_shape = _checked_input_shape(input_shape)
    specs, head = _split_head(parse_layers(entries, where))
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    shapes: list[Shape] = []
    for spec, layer_name in zip(specs, _layer_names(specs), strict=True):
        _check_declared_input(spec, shape)
        _check_weight_count(spec, shape)
        module, out = BUILDERS[spec.kind](spec.args, shape, spec.where)
        if math.prod(out) > LARGEST_OUTPUT:
            raise ConfigError(
                f"{spec.where}: output shape {out} holds {math.prod(out):,} values per image, "
                f"more than the {LARGEST_OUTPUT:,} a layer may give; use a smaller size, fewer "
                "filters or smaller images (data.target_size)"
            )
        if any(size < 1 for size in out):
            raise ConfigError(
                f"{spec.where}: output shape {out} has no pixels left (input {shape}); use "
                "larger images (data.target_size), or fewer or smaller kernels, pools and strides"
            )
        modules[layer_name] = module
        shapes.append(out)
        shape = out
    _check_classes(specs[-1], shape, head, num_classes)
    for conv, pool in itertools.pairwise(modules.values()):
        L.relu_after_max_pooling(conv, pool)
    return KerasModel(
        modules, name=name, input_shape=first_shape, layer_shapes=shapes, head_activation=head
    )


def _checked_input_shape(input_shape: Sequence[int]) -> Shape:
    shape = tuple(input_shape)
    valid = len(shape) in (1, 3) and all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    )
    if not valid:
        raise ConfigError(f"input shape {input_shape!r}: expected (height, width, channels)")
    return shape


def _split_head(specs: list[LayerSpec]) -> tuple[list[LayerSpec], str | None]:
    """Take a final softmax/sigmoid out of the forward pass; the loss applies it, stably."""
    last = specs[-1]
    head = last.args.get("activation")
    if head not in HEAD_ACTIVATIONS:
        return specs, None
    return [*specs[:-1], replace(last, args={**last.args, "activation": None})], head


def keras_snake_case(kind: str) -> str:
    """Keras's default layer name for a class: MaxPooling2D -> max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", kind)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_names(specs: list[LayerSpec]) -> list[str]:
    """User names as given; others numbered per type as Keras does, never reusing a user's."""
    for spec in specs:
        if spec.args["name"] in RESERVED_NAMES:
            raise ConfigError(
                f"{spec.where}.name: {spec.args['name']!r} is reserved; choose another name"
            )
    taken = {spec.args["name"] for spec in specs if spec.args["name"]}
    counts: Counter[str] = Counter()
    names = []
    for spec in specs:
        if spec.args["name"]:
            names.append(spec.args["name"])
            continue
        base, candidate = keras_snake_case(spec.kind), None
        while candidate is None or candidate in taken:
            number = counts[base]
            counts[base] += 1
            candidate = base if number == 0 else f"{base}_{number}"
        taken.add(candidate)
        names.append(candidate)
    return names


# Sizes no network of this field comes near (VGG16's largest layer: 103 M weights; its largest
# output: 3.2 M values), refused before any tensor is allocated: past them a typo such as
# `units: 1000000000000` asks PyTorch for terabytes, or overflows its integer sizes.
LARGEST_LAYER_WEIGHTS = 2**31  # 8 GiB of float32 in one layer
LARGEST_OUTPUT = 2**28  # values in one image's output of a layer: 1 GiB of float32


def _check_weight_count(spec: LayerSpec, shape: Shape) -> None:
    a = spec.args
    if spec.kind == "Dense":
        weights = shape[-1] * a["units"]
    elif spec.kind == "Conv2D":
        weights = math.prod(a["kernel_size"]) * shape[-1] * a["filters"]
    else:
        return
    if weights > LARGEST_LAYER_WEIGHTS:
        raise ConfigError(
            f"{spec.where}: {weights:,} weights (input {shape}) is more than the "
            f"{LARGEST_LAYER_WEIGHTS:,} one layer may hold; use fewer units or filters, or a "
            "smaller input (a pooling layer before it, or a smaller data.target_size)"
        )


def _check_declared_input(spec: LayerSpec, shape: Shape) -> None:
    declared = spec.args["input_shape"]
    if declared is None:
        return
    fits = len(declared) == len(shape) and all(
        d in (None, s) for d, s in zip(declared, shape, strict=True)
    )
    if not fits:
        raise ConfigError(
            f"{spec.where}.input_shape: {list(declared)} but this layer receives {list(shape)} "
            "(data.target_size and data.color_mode decide it); correct it or remove it"
        )


def _check_classes(
    last: LayerSpec, shape: Shape, head: str | None, num_classes: int | None
) -> None:
    if num_classes is None or len(shape) != 1:
        return  # image outputs (e.g. reconstruction) are not class scores
    units = shape[0]
    binary_unit = units == 1 and num_classes == 2 and head != "softmax"
    if units == num_classes or binary_unit:
        return
    want = 1 if head == "sigmoid" and num_classes == 2 else num_classes
    where = f"{last.where}.units" if last.kind == "Dense" else last.where
    raise ConfigError(
        f"{where}: the model gives {units} outputs but the data has "
        f"{num_classes} classes; make the last Dense have units: {want}"
    )


# --- one builder per layer: (checked args, input shape, path) -> (module, output shape) ------


def _image(shape: Shape, where: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ConfigError(
            f"{where}: needs an image input (height, width, channels) but "
            f"receives {shape}; move it before Flatten/GlobalAveragePooling2D"
        )
    return shape[0], shape[1], shape[2]


def _conv2d(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    h, w, c = _image(shape, where)
    k, s, d, p = a["kernel_size"], a["strides"], a["dilation_rate"], a["padding"]
    out = (
        L.output_size(h, k[0], s[0], p, d[0]),
        L.output_size(w, k[1], s[1], p, d[1]),
        a["filters"],
    )
    conv = L.Conv2D(
        c, a["filters"], k, s, p, d, a["use_bias"], a["activation"], a["kernel_initializer"]
    )
    return conv, out


def _pooling(cls: type[L.Pooling2D]) -> Callable[..., tuple[nn.Module, Shape]]:
    def build(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
        h, w, c = _image(shape, where)
        k, p = a["pool_size"], a["padding"]
        s = a["strides"] or k  # Keras: strides default to pool_size
        return cls(k, s, p), (L.output_size(h, k[0], s[0], p), L.output_size(w, k[1], s[1], p), c)

    return build


def _global_pool(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    return L.GlobalAveragePooling2D(), (_image(shape, where)[2],)


def _flatten(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    return L.Flatten(), (math.prod(shape),)


def _dense(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    module = L.Dense(shape[-1], a["units"], a["use_bias"], a["activation"])
    return module, (*shape[:-1], a["units"])


def _dropout(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    return L.Dropout(a["rate"]), shape


def _batch_norm(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    norm = L.BatchNormalization(shape[-1], a["momentum"], a["epsilon"], a["center"], a["scale"])
    return norm, shape


def _activation(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    return L.Activation(a["activation"]), shape


def _rescaling(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    return L.Rescaling(a["scale"], a["offset"]), shape


def _upsampling(a: dict[str, Any], shape: Shape, where: str) -> tuple[nn.Module, Shape]:
    h, w, c = _image(shape, where)
    size = a["size"]
    return L.UpSampling2D(size, a["interpolation"]), (h * size[0], w * size[1], c)


BUILDERS: dict[str, Callable[[dict[str, Any], Shape, str], tuple[nn.Module, Shape]]] = {
    "Conv2D": _conv2d,
    "MaxPooling2D": _pooling(L.MaxPooling2D),
    "AveragePooling2D": _pooling(L.AveragePooling2D),
    "GlobalAveragePooling2D": _global_pool,
    "Flatten": _flatten,
    "Dense": _dense,
    "Dropout": _dropout,
    "BatchNormalization": _batch_norm,
    "Activation": _activation,
    "UpSampling2D": _upsampling,
    "Rescaling": _rescaling,
}
