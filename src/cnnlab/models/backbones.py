"""Pretrained-style convolutional bases: images in, a feature map out, in named blocks.

Keras's `include_top=False` bases: VGG16 is torchvision's convolutional part (14,714,688
parameters, as Keras's), the others come from timm (`num_classes=0, global_pool=""`), so any
timm architecture is one name away (`timm/NAME`). Blocks (VGG16's block1..block5, ResNet's
stem and layer1..4, EfficientNet's stem and stages) are what stages freeze and unfreeze, from
the output end ("unfreeze the last N blocks"), and what the summary lists.

`efficientnet_lite0` is timm's `tf_efficientnet_lite0`: TF "SAME" padding, the variant its
local weights were trained with (see weights.py). Weights are a file, a local source, or
weights the libraries download into their caches (`imagenet`, `timm:TAG`, ...; see hub.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import hub
from cnnlab.models.weights import SOURCES, Loaded, load_into
from cnnlab.models.weights import read_state_dict as read_weights
from cnnlab.preprocessing import IMAGENET, Preprocessing
from cnnlab.registry import Registry

TIMM_PREFIX = "timm/"


class Backbone(nn.Module):
    """A feature extractor: (N, 3, H, W) images -> (N, C, h, w) feature map."""

    def __init__(
        self,
        name: str,
        body: nn.Module,
        blocks: list[tuple[str, list[str]]],
        features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = self.model_name = name
        self.body = body
        self.block_names = [block for block, _ in blocks]
        self._block_members = [members for _, members in blocks]  # module names within body
        self._features = features  # body's own feature method, when forward() is its classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x) if self._features is not None else self.body(x)

    def blocks(self) -> list[tuple[str, list[nn.Module]]]:
        """(name, modules) from input to output; together they hold every parameter."""
        return [
            (name, [self.body.get_submodule(member) for member in members])
            for name, members in zip(self.block_names, self._block_members, strict=True)
        ]

    def summary_groups(self) -> list[tuple[str, str, list[nn.Module]]]:
        """Rows of the Keras-style summary: one per block."""
        return [(name, "Block", modules) for name, modules in self.blocks()]


@dataclass(frozen=True)
class BackboneInfo:
    """What a built backbone came from, for the run's manifest."""

    weights: str  # "none", a source name or a path
    preprocessing: Preprocessing
    ignored_keys: tuple[str, ...] = ()


BACKBONES: Registry[Callable[[], Backbone]] = Registry("backbone")


@BACKBONES.register("vgg16")
def vgg16() -> Backbone:
    from torchvision.models.vgg import cfgs, make_layers

    body = make_layers(cfgs["D"])  # torchvision's VGG16 `features`, without the classifier
    blocks: list[tuple[str, list[str]]] = []
    members: list[str] = []
    for index, layer in enumerate(body):
        members.append(str(index))
        if isinstance(layer, nn.MaxPool2d):  # Keras's block1..block5 each end in a pool
            blocks.append((f"block{len(blocks) + 1}", members))
            members = []
    return Backbone("vgg16", body, blocks)


def timm_backbone(architecture: str, name: str | None = None) -> Backbone:
    import timm
    from timm.models import group_modules

    body = timm.create_model(architecture, pretrained=False, num_classes=0, global_pool="")
    # timm's models have these methods; create_model types the model as a plain nn.Module
    group_matcher = cast("Callable[..., Any]", body.group_matcher)
    features = cast("Callable[[torch.Tensor], torch.Tensor]", body.forward_features)
    groups = group_modules(body, group_matcher(coarse=True))
    blocks = [(_group_name(members, index), members) for index, members in groups.items()]
    return Backbone(name or architecture, body, blocks, features=features)


def _group_name(members: list[str], index: int) -> str:
    """The dotted prefix the group's modules share (layer1, blocks.3), else their roots."""
    parts = [member.split(".") for member in members]
    common = []
    for pieces in zip(*parts, strict=False):  # up to the shortest name
        if len(set(pieces)) > 1:
            break
        common.append(pieces[0])
    if common:
        return ".".join(common[:2])  # blocks.3, not blocks.3.0 for a one-block stage
    roots = list(dict.fromkeys(p[0] if p[0] != "blocks" else ".".join(p[:2]) for p in parts))
    return "stem" if index == 0 else "+".join(roots)


BACKBONES.register("resnet50")(lambda: timm_backbone("resnet50"))
BACKBONES.register("efficientnet_lite0")(
    lambda: timm_backbone("tf_efficientnet_lite0", "efficientnet_lite0")
)
# the timm models the registered backbones are (vgg16 is torchvision's layers)
TIMM_ARCHITECTURES = {"resnet50": "resnet50", "efficientnet_lite0": "tf_efficientnet_lite0"}
DEFAULT_SOURCES = {"efficientnet_lite0": "efficientnet-lite0"}  # used when model.weights is unset
WEIGHTS_KINDS = (
    "a .safetensors/.pth file, none, imagenet, timm:TAG, torchvision:NAME, hf-hub:ORG/NAME"
)


def is_backbone(name: str) -> bool:
    return name.startswith(TIMM_PREFIX) or name in BACKBONES


def timm_architecture(name: str) -> str | None:
    """The timm model a backbone is; None for vgg16 (torchvision's layers)."""
    if name.startswith(TIMM_PREFIX):
        return name.removeprefix(TIMM_PREFIX)
    return TIMM_ARCHITECTURES.get(BACKBONES.resolve(name))


def backbone_key(name: str) -> str:
    """`name` checked: `timm/NAME` of a timm architecture, or a registered backbone's spelling."""
    if not name.startswith(TIMM_PREFIX):
        return BACKBONES.resolve(name)
    import timm

    architecture = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(architecture):
        raise ConfigError(f"model.backbone: timm has no architecture {architecture!r}")
    return name


def create_backbone(name: str) -> Backbone:
    """A registered backbone, or any timm architecture as `timm/NAME`; random weights. The name
    alone decides the architecture, also for pretrained weights (the tensors of timm's tags
    have the shapes of their architecture's default), so a finished run rebuilds it."""
    key = backbone_key(name)
    if key.startswith(TIMM_PREFIX):
        return timm_backbone(key.removeprefix(TIMM_PREFIX), key)
    return BACKBONES.get(key)()


def resolved_weights(name: str, weights: str | None) -> str:
    """`weights` as given, or the backbone's default local source; never a silent download."""
    if weights is not None:
        return weights
    key = BACKBONES.resolve(name) if not name.startswith(TIMM_PREFIX) else name
    if key in DEFAULT_SOURCES:
        return DEFAULT_SOURCES[key]
    raise ConfigError(
        f"model.weights: the backbone {name} has no local pretrained weights; set "
        "model.weights to imagenet (downloaded once into the library's cache), to a "
        ".safetensors/.pth file, or to none to train it from scratch"
    )


def hub_weights(name: str, weights: str) -> hub.HubWeights:
    """`weights` (hub.is_hub_weights) resolved for the backbone `name`; nothing downloaded."""
    key = backbone_key(name)
    return hub.resolve(weights, key, timm_architecture(key))


def preprocessing_for(name: str, weights: str) -> Preprocessing:
    """Input size and mean/std the weights expect: a named source's or a downloaded one's
    config (timm's pretrained config, torchvision's transforms); else timm's default config."""
    if weights in SOURCES:
        return SOURCES.get(weights).preprocessing
    if hub.is_hub_weights(weights):
        return hub_weights(name, weights).preprocessing
    if name.startswith(TIMM_PREFIX) or name in ("resnet50",):
        from timm.models import get_pretrained_cfg

        config = get_pretrained_cfg(name.removeprefix(TIMM_PREFIX))
        if config is not None:
            _, height, width = config.input_size
            return Preprocessing(
                (height, width),
                cast("tuple[float, float, float]", tuple(config.mean)),  # one per RGB channel
                cast("tuple[float, float, float]", tuple(config.std)),
            )
    return IMAGENET


def build_backbone(name: str, weights: str | None) -> tuple[Backbone, BackboneInfo]:
    """The backbone with its weights: none, a named local source, a file, or weights the
    libraries download into their caches (imagenet, timm:TAG, torchvision:NAME, hf-hub:...)."""
    weights = resolved_weights(name, weights)
    if hub.is_hub_weights(weights):
        pretrained = hub_weights(name, weights)
        path = pretrained.fetch(name)  # before building: offline, the error comes at once
        backbone = create_backbone(name)
        state = read_weights(path)
        loaded = load_into(backbone.body, state, path, prefixes=pretrained.prefixes)
        return backbone, BackboneInfo(
            pretrained.describe(path), pretrained.preprocessing, loaded.ignored
        )
    backbone = create_backbone(name)
    info = BackboneInfo(weights, preprocessing_for(name, weights))
    if weights == "none":
        return backbone, info
    loaded = _load(backbone, weights)
    return backbone, BackboneInfo(weights, info.preprocessing, loaded.ignored)


def _load(backbone: Backbone, weights: str) -> Loaded:
    from pathlib import Path

    if weights in SOURCES:
        source = SOURCES.get(weights)
        if backbone.backbone_name not in source.backbones:
            raise ConfigError(
                f"model.weights: {weights} holds weights for {', '.join(source.backbones)}, "
                f"not for {backbone.backbone_name}"
            )
        path = source.path()
        state = source.remap(read_weights(path), backbone.body.state_dict())
        return load_into(backbone.body, state, path)
    path = Path(weights).expanduser()
    if not path.suffix and not path.exists():  # not a file name: a mistyped source name?
        _unknown_weights(weights)
    return load_into(backbone.body, read_weights(path), path, prefixes=("features.", "model."))


def _unknown_weights(weights: str) -> NoReturn:
    """Neither a file nor a name cnnlab knows: the closest known name, and what may be given."""
    import difflib

    folded = {known.casefold(): known for known in [*SOURCES.names(), "imagenet", "none"]}
    close = difflib.get_close_matches(weights.casefold(), list(folded), n=1)
    hint = f"; did you mean {folded[close[0]]!r}?" if close else ""
    raise ConfigError(
        f"model.weights: {weights!r} is no file and no known weights{hint} "
        f"({WEIGHTS_KINDS}, or a local source: {', '.join(SOURCES.names())})"
    )
