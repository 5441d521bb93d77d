"""Class-activation heat maps (Grad-CAM and its relatives) by pytorch-grad-cam, and their
overlay on the images.

pytorch-grad-cam (PyPI `grad-cam`) rather than Captum: it has the CAM family people ask for
under one interface (Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM, Eigen-CAM, Score-CAM),
where Captum has Grad-CAM alone among them. Its hooks are released in a `finally` here, not by
its context manager, which swallows an IndexError raised inside it.

Targets are class indices; a one-unit sigmoid head (binary) scores class 1 by its logit and
class 0 by the negated logit, so either class can be explained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.explain.layers import evaluating, find_layer, keras_activations
from cnnlab.registry import Registry

# method name -> pytorch-grad-cam's class of it
CAM_METHODS: Registry[str] = Registry("CAM method")
for _name, _class in {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",  # the activations' first principal component: no class, no gradient
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",  # one forward pass per channel of the layer: slow
}.items():
    CAM_METHODS.register(_name)(_class)

CHUNK = 32  # images per pass: bounded memory (Score-CAM runs channels x images forwards)
ALPHA = 0.5  # the heat's share of an overlay pixel


class ClassScore:
    """The score a CAM explains for one image: the class's logit (a binary head's negated
    logit for class 0)."""

    def __init__(self, index: int, binary: bool) -> None:
        self.index, self.binary = index, binary

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return output[0] if self.index == 1 else -output[0]
        return output[self.index]


def class_activation_maps(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: list[int] | None = None,
    layer: str | None = None,
    method: str = "gradcam",
) -> np.ndarray:
    """(N, H, W) float32 heat in [0, 1] (each map scaled to its own maximum) at the size of
    `inputs` (N, C, H, W, model-ready: normalised as the model was trained). `targets`: one
    class index per image, default the predicted class; `layer`: a spatial layer's summary
    name, default the last convolution block (see layers.find_layer)."""
    cam_class = _cam_class(CAM_METHODS.get(method))
    chosen = find_layer(model, _input_shape(inputs), layer).module
    outputs = _output_width(model, inputs)
    binary = outputs == 1
    if targets is None:
        targets = predicted_classes(model, inputs)
    _check_targets(targets, len(inputs), 2 if binary else outputs)
    maps = []
    with _explaining(model):
        cam = cam_class(model=model, target_layers=[chosen])
        try:
            for start in range(0, len(inputs), CHUNK):
                chunk = inputs[start : start + CHUNK].detach().clone().requires_grad_(True)
                scores = [ClassScore(k, binary) for k in targets[start : start + CHUNK]]
                maps.append(cam(input_tensor=chunk, targets=scores))
        finally:
            cam.activations_and_grads.release()
    return np.clip(np.concatenate(maps), 0.0, 1.0).astype(np.float32)


def predicted_classes(model: nn.Module, inputs: torch.Tensor) -> list[int]:
    """The class each image is predicted as (a binary head: logit above 0 is class 1)."""
    logits = _logits(model, inputs)
    if logits.shape[1] == 1:
        return [int(k) for k in (logits[:, 0] > 0).long()]
    return [int(k) for k in logits.argmax(1)]


def overlay(images: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) uint8: the jet colour map of `heat` (N, H, W, in [0, 1]) blended over
    `images` (N, C, H, W uint8, C 1 or 3)."""
    from matplotlib import colormaps

    expected = (images.shape[0], *images.shape[2:])
    if images.ndim != 4 or images.shape[1] not in (1, 3) or heat.shape != expected:
        raise ValueError(
            f"overlay: images {images.shape} (N, C, H, W) and heat {heat.shape} (N, H, W) "
            "must match"
        )
    rgb = np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images
    colours = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3].transpose(0, 3, 1, 2)
    blended = (1 - ALPHA) * rgb.astype(np.float32) / 255 + ALPHA * colours
    return np.round(blended * 255).clip(0, 255).astype(np.uint8)


# --- the pieces ------------------------------------------------------------------------------


def _cam_class(name: str) -> Callable[..., Any]:
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, name)  # type: ignore[no-any-return]


def _input_shape(inputs: torch.Tensor) -> tuple[int, int, int]:
    if inputs.dim() != 4 or len(inputs) == 0:
        raise ValueError(f"inputs: expected a non-empty (N, C, H, W) batch, got {inputs.shape}")
    return inputs.shape[2], inputs.shape[3], inputs.shape[1]


def _logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    with evaluating(model), torch.no_grad():
        logits = torch.cat(
            [model(inputs[s : s + CHUNK].to(device)) for s in range(0, len(inputs), CHUNK)]
        )
    if logits.dim() != 2:
        raise ConfigError(
            f"explain: the model gives outputs of shape {tuple(logits.shape[1:])}, not class "
            "scores; class-activation maps need a classifier"
        )
    return logits


def _output_width(model: nn.Module, inputs: torch.Tensor) -> int:
    return int(_logits(model, inputs[:1]).shape[1])


def _check_targets(targets: list[int], count: int, classes: int) -> None:
    if len(targets) != count:
        raise ConfigError(f"explain: {len(targets)} targets for {count} images; give one each")
    wrong = [k for k in targets if not 0 <= k < classes]
    if wrong:
        raise ConfigError(f"explain: target class {wrong[0]} is not one of 0..{classes - 1}")


@contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    """Keras's activated conv outputs, eval mode, and gradients that reach the chosen layer
    through the inputs alone: the parameters keep no .grad, and frozen ones need none."""
    flags = {parameter: parameter.requires_grad for parameter in model.parameters()}
    with keras_activations(model), evaluating(model), torch.enable_grad():
        for parameter in flags:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter, flag in flags.items():
                parameter.requires_grad_(flag)
