"""Which layer an explanation looks at: the spatial (4-D output) layers of a network, by the
names `cnnlab summary` prints, and the one chosen when none is named.

Names, in forward order:
- a layer-list model (KerasModel): its layers' Keras names (`conv2d`, `max_pooling2d_1`, ...);
- a backbone inside it: its blocks as the summary of the backbone alone lists them (timm's
  `stem`, `layer1` ... `layer4`, `blocks.3`; VGG16's Keras names `block1_conv1` ...
  `block5_pool`), then the backbone's own name (`timm/resnet18`: its final feature map), and
  any timm module path inside it (`layer4.1.conv2`) on request.

Keras applies a Conv2D's ReLU inside the layer; `models.layers.relu_after_max_pooling` moves it
after the MaxPooling2D that follows (the same numbers, faster). `keras_activations` moves it
back while an explanation runs, so a conv layer's output is the activated map Keras shows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import layers as L
from cnnlab.models.backbones import Backbone
from cnnlab.models.build import KerasModel

POOLING = (L.Pooling2D, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class SpatialLayer:
    name: str
    module: nn.Module
    shape: tuple[int, int, int]  # its output (height, width, channels) for the traced input

    @property
    def convolutional(self) -> bool:
        """Not a pooling (it only shrinks the map before it) nor a whole backbone (its output
        is its last block's, which is listed)."""
        return not isinstance(self.module, (*POOLING, Backbone))


def spatial_layers(model: nn.Module, input_shape: Sequence[int]) -> list[SpatialLayer]:
    """Every named layer with an image-shaped output for one (H, W, C) input, forward order."""
    shapes = _traced_shapes(model, input_shape, [module for _, module in _named(model)])
    return [
        SpatialLayer(name, module, shapes[module])
        for name, module in _named(model)
        if module in shapes
    ]


def find_layer(
    model: nn.Module, input_shape: Sequence[int], layer: str | None = None
) -> SpatialLayer:
    """The layer called `layer`, or for None the last convolution block's output: the last
    convolutional spatial layer (see SpatialLayer.convolutional) with more than one pixel (a
    1x1 map cannot point anywhere)."""
    layers = spatial_layers(model, input_shape)
    if not layers:
        raise ConfigError(
            f"{_model_name(model)} has no layer with an image-shaped output to explain"
        )
    if layer is None:
        wide = [found for found in layers if found.shape[0] * found.shape[1] > 1] or layers
        return next((found for found in reversed(wide) if found.convolutional), wide[-1])
    named = {found.name: found for found in layers}
    if layer in named:
        return named[layer]
    inner = _inner_module(model, layer)
    if inner is not None:
        shape = _traced_shapes(model, input_shape, [inner]).get(inner)
        if shape is not None:
            return SpatialLayer(layer, inner, shape)
    raise ConfigError(_unknown_message(model, layer, layers))


def target_layer(model: nn.Module, input_shape: Sequence[int], layer: str | None = None) -> str:
    """The name of the layer `find_layer` chooses, e.g. for a caption."""
    return find_layer(model, input_shape, layer).name


@contextmanager
def keras_activations(model: nn.Module) -> Iterator[None]:
    """Each Conv2D's ReLU back inside the Conv2D (from the MaxPooling2D it was moved to) until
    the block ends; the network computes the same numbers either way."""
    moved = []
    for keras in (m for m in model.modules() if isinstance(m, KerasModel)):
        for conv, pool in itertools.pairwise(keras.children()):
            # a MaxPooling2D only ever holds the ReLU of the Conv2D before it
            if (
                isinstance(conv, L.Conv2D)
                and isinstance(conv.activation, nn.Identity)
                and isinstance(pool, L.MaxPooling2D)
                and not isinstance(pool.activation, nn.Identity)
            ):
                moved.append((conv, pool))
    for conv, pool in moved:
        conv.activation, pool.activation = pool.activation, conv.activation
    try:
        yield
    finally:
        for conv, pool in moved:
            conv.activation, pool.activation = pool.activation, conv.activation


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block; each module's own mode afterwards (a frozen
    backbone may keep some BatchNorm layers in eval on purpose)."""
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for module, training in modes.items():
            module.training = training


# --- names -----------------------------------------------------------------------------------


def _named(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if isinstance(model, Backbone):
        return [*_backbone_layers(model), (model.backbone_name, model)]
    found: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, Backbone):
            found += _backbone_layers(child)
        found.append((name, child))
    return found


def _backbone_layers(backbone: Backbone) -> list[tuple[str, nn.Module]]:
    if isinstance(backbone.body, nn.Sequential) and backbone.backbone_name == "vgg16":
        return _keras_vgg_names(backbone)
    found: list[tuple[str, nn.Module]] = []
    for name, modules in backbone.blocks():
        try:  # a block that is one module of timm's (layer4, blocks.3): its real output
            found.append((name, backbone.body.get_submodule(name)))
        except AttributeError:  # several (the stem's conv and norm): the last one's
            found.append((name, modules[-1]))
    return found


def _keras_vgg_names(backbone: Backbone) -> list[tuple[str, nn.Module]]:
    """Keras's VGG16 names: block{b}_conv{k} is the ReLU after the k-th conv (Keras's Conv2D
    output is activated), block{b}_pool the block's pool."""
    found: list[tuple[str, nn.Module]] = []
    for number, (_, modules) in enumerate(backbone.blocks(), start=1):
        convs = 0
        for module in modules:
            if isinstance(module, nn.Conv2d):
                convs += 1
            elif isinstance(module, nn.ReLU):
                found.append((f"block{number}_conv{convs}", module))
            elif isinstance(module, nn.MaxPool2d):
                found.append((f"block{number}_pool", module))
    return found


def _inner_module(model: nn.Module, path: str) -> nn.Module | None:
    """A module path inside a backbone's network (timm's `layer4.1.conv2`)."""
    backbones = [model] if isinstance(model, Backbone) else list(model.children())
    for backbone in backbones:
        if isinstance(backbone, Backbone):
            try:
                return backbone.body.get_submodule(path)
            except AttributeError:
                continue
    return None


def _unknown_message(model: nn.Module, layer: str, layers: list[SpatialLayer]) -> str:
    import difflib

    names = [found.name for found in layers]
    close = difflib.get_close_matches(layer, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    inner = any(isinstance(m, Backbone) for m in [model, *model.children()])
    paths = " or a module path inside the backbone (e.g. layer4.1)" if inner else ""
    return (
        f"layer {layer!r}: {_model_name(model)} has no spatial layer of that name{hint} "
        f"(give one of {', '.join(names)}{paths}; `cnnlab summary` lists the layers)"
    )


def _model_name(model: nn.Module) -> str:
    return str(getattr(model, "model_name", type(model).__name__))


# --- shapes ----------------------------------------------------------------------------------


def _traced_shapes(
    model: nn.Module, input_shape: Sequence[int], modules: list[nn.Module]
) -> dict[nn.Module, tuple[int, int, int]]:
    """(H, W, C) of each of `modules` whose output is 4-D, for one zero image."""
    height, width, channels = (int(n) for n in input_shape)
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    shapes: dict[nn.Module, tuple[int, int, int]] = {}

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and module not in shapes:
            shapes[module] = (output.shape[2], output.shape[3], output.shape[1])

    hooks = [module.register_forward_hook(record) for module in set(modules)]
    try:
        with evaluating(model), torch.no_grad():
            model(torch.zeros(1, channels, height, width, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes
