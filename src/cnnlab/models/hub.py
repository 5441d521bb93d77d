"""Pretrained weights the libraries download into their own caches, named in `model.weights`:

- `imagenet`: the architecture's ImageNet weights, as Keras's `weights="imagenet"`: for vgg16
  torchvision's `VGG16_Weights.IMAGENET1K_V1`; for resnet50, efficientnet_lite0 and
  `timm/NAME` timm's default pretrained tag (resnet50.a1_in1k, tf_efficientnet_lite0.in1k), when
  that tag is an ImageNet one (in1k, in12k, in21k, in22k).
- `torchvision:NAME`: another of torchvision's weights of vgg16 (`IMAGENET1K_FEATURES`).
- `timm:TAG`: one of timm's pretrained tags of the architecture (`timm:tv_in1k` for resnet50).
- `hf-hub:ORG/NAME[@REVISION]`: a Hugging Face Hub repository in timm's format (config.json
  and model.safetensors) for the backbone's architecture.

Each is a file in its library's cache: torch hub's (`torch.hub.get_dir()/checkpoints`, from
$TORCH_HOME) for torchvision's and timm's URL weights, the Hugging Face cache ($HF_HUB_CACHE,
else $HF_HOME/hub: `models--ORG--NAME/snapshots/<commit>/model.safetensors`, the commit in
`refs/main`) for timm's Hub weights. A cached file is used without the network; a missing one
is downloaded by the library's own code (`torch.hub.download_url_to_file` with torchvision's
hash check, `huggingface_hub.hf_hub_download`) and then read like any weights file
(weights.read_state_dict: safetensors, or `torch.load(weights_only=True)`). Offline
(HF_HUB_OFFLINE=1, which cnnlab applies to torch hub too, or no connection: one request, no
retries) the one error names the file, the folder to put it in and the `weights: PATH`
alternative.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlparse

from cnnlab.errors import ConfigError
from cnnlab.preprocessing import Preprocessing

PREFIXES = ("timm:", "torchvision:", "hf-hub:")
IMAGENET_TAGS = re.compile(r"(^|_)(in1k|in12k|in21k|in22k)($|_)")  # timm's ImageNet tags
TORCHVISION_WEIGHTS = {"vgg16": "VGG16_Weights"}  # cnnlab backbone -> torchvision's enum
CONNECT_TIMEOUT_S = 30  # torch hub's urlopen has none: a dropped connection fails after this
COMMIT = re.compile(r"[0-9a-f]{40}")


def is_hub_weights(weights: str) -> bool:
    return weights == "imagenet" or weights.startswith(PREFIXES)


class CachedFile(Protocol):
    def fetch(self, what: str) -> Path: ...


@dataclass(frozen=True)
class HubWeights:
    """Resolved `model.weights`: which file, how it arrives, what its images look like."""

    spec: str  # model.weights as written
    label: str  # what it is, e.g. "timm's resnet50.a1_in1k"
    preprocessing: Preprocessing
    file: CachedFile
    prefixes: tuple[str, ...] = ()  # key prefixes to strip (torchvision's VGG "features.")

    def fetch(self, backbone: str) -> Path:
        """The cached file, downloaded when missing; ConfigError when it cannot be."""
        return self.file.fetch(f"{self.spec} for {backbone} is {self.label}")

    def describe(self, path: Path) -> str:
        return f"{self.spec}: {self.label} ({path})"


def resolve(weights: str, backbone: str, architecture: str | None) -> HubWeights:
    """`weights` (is_hub_weights) for `backbone`: a timm model `architecture`, or None for a
    torchvision one (vgg16). Nothing is downloaded, except a `hf-hub:` repository's
    config.json."""
    if architecture is None:
        if weights.startswith(("timm:", "hf-hub:")):
            raise ConfigError(
                f"model.weights: {weights} names timm weights, and {backbone} is torchvision's "
                f"layers; use imagenet or torchvision:NAME, or model.backbone: timm/{backbone}"
            )
        return _torchvision(weights, backbone)
    if weights.startswith("torchvision:"):
        raise ConfigError(
            f"model.weights: {weights} names torchvision weights, and {backbone} is timm's "
            f"{architecture}; use imagenet, timm:TAG or hf-hub:ORG/NAME"
        )
    if weights.startswith("hf-hub:"):
        return _hf_repository(weights, backbone, architecture)
    return _timm_tag(weights, backbone, architecture)


# --- torchvision ---------------------------------------------------------------------------


def _torchvision(weights: str, backbone: str) -> HubWeights:
    import torchvision.models

    enum = getattr(torchvision.models, TORCHVISION_WEIGHTS[backbone])
    name = "IMAGENET1K_V1" if weights == "imagenet" else weights.removeprefix("torchvision:")
    if name not in enum.__members__:
        raise ConfigError(
            f"model.weights: torchvision has no {enum.__name__}.{name}; "
            f"choose one of {', '.join('torchvision:' + known for known in enum.__members__)}"
        )
    chosen = enum[name]
    transforms = chosen.transforms()  # torchvision's evaluation preset: crop size, mean, std
    size = transforms.crop_size[0]
    return HubWeights(
        weights,
        f"torchvision's {enum.__name__}.{chosen.name}",
        Preprocessing((size, size), _three(transforms.mean), _three(transforms.std)),
        TorchHubFile(chosen.url),
        prefixes=("features.",),
    )


# --- timm ----------------------------------------------------------------------------------


def _timm_tag(weights: str, backbone: str, architecture: str) -> HubWeights:
    import timm
    from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg, split_model_name_tag

    arch, own_tag = split_model_name_tag(architecture)
    with_files = set(timm.list_pretrained(f"{arch}.*"))  # the tags that have weights
    tags = [name.partition(".")[2] for name in get_arch_pretrained_cfgs(arch) if name in with_files]
    if weights == "imagenet":
        default = get_pretrained_cfg(arch)  # timm's default tag comes first in its registry
        tag = own_tag or (default.tag if default is not None and default.tag else "")
        if tag not in tags:
            raise ConfigError(
                f"model.weights: timm has no pretrained weights for {architecture}; set "
                "model.weights to a .safetensors/.pth file, or to none to train it from scratch"
            )
        if not IMAGENET_TAGS.search(tag):
            raise ConfigError(
                f"model.weights: timm's default weights of {arch} are {arch}.{tag}, not trained "
                f"on ImageNet; name them as model.weights: timm:{tag}"
            )
    else:
        tag = weights.removeprefix("timm:")
        if tag not in tags:
            listing = ", ".join(f"timm:{known}" for known in tags) or "none"
            raise ConfigError(f"model.weights: timm has no {arch}.{tag}; its tags: {listing}")
    config = get_pretrained_cfg(f"{arch}.{tag}")
    assert config is not None  # the tag is one of list_pretrained's
    return HubWeights(
        weights,
        f"timm's {arch}.{tag}",
        _timm_preprocessing(config.input_size, config.mean, config.std),
        _timm_file(config.to_dict(), f"{arch}.{tag}"),
    )


def _timm_file(config: dict[str, Any], model: str) -> CachedFile:
    """Where timm's loader would take the file from (its _resolve_pretrained_source)."""
    if config.get("custom_load"):
        raise ConfigError(
            f"model.weights: timm loads {model} with its own code (not a state dict), which "
            "cnnlab does not run; choose another tag or a .safetensors file"
        )
    hub_id, url = config.get("hf_hub_id"), config.get("url")
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        name = config.get("hf_hub_filename")
        names = _safe_first(name) if name else ("model.safetensors", "pytorch_model.bin")
        return HubFile(repo, revision or None, names)
    if url:
        return TorchHubFile(url)
    raise ConfigError(f"model.weights: timm's config of {model} names no file to download")


def _safe_first(filename: str) -> tuple[str, ...]:
    """timm's order: a .safetensors twin of a .bin file first (its _get_safe_alternatives)."""
    if filename == "pytorch_model.bin":
        return ("model.safetensors", filename)
    if filename.endswith(".bin"):
        return (filename.removesuffix(".bin") + ".safetensors", filename)
    return (filename,)


def _hf_repository(weights: str, backbone: str, architecture: str) -> HubWeights:
    from timm.models import split_model_name_tag

    repo, _, revision = weights.removeprefix("hf-hub:").partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"model.weights: {weights}: expected hf-hub:ORG/NAME[@REVISION]")
    config_file = HubFile(repo, revision or None, ("config.json",), "model.safetensors")
    path = config_file.fetch(f"{weights} for {backbone} (its config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        pretrained = config.get("pretrained_cfg", config)  # older configs: one flat object
        holds = str(config["architecture"])
        preprocessing = _timm_preprocessing(
            pretrained.get("input_size", (3, 224, 224)),
            pretrained.get("mean", (0.485, 0.456, 0.406)),
            pretrained.get("std", (0.229, 0.224, 0.225)),
        )
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as err:
        raise ConfigError(
            f"model.weights: {weights}: {path} is not a timm model config ({err!r})"
        ) from None
    want, _ = split_model_name_tag(architecture)
    if split_model_name_tag(holds)[0] != want:
        raise ConfigError(
            f"model.weights: {weights} holds timm's {holds}, and the backbone {backbone} is "
            f"{want}; set model.backbone: timm/{holds}"
        )
    model_args = {
        key: value
        for key, value in (config.get("model_args") or {}).items()
        if key not in ("num_classes", "global_pool", "in_chans")  # cnnlab sets these itself
    }
    if model_args:  # a backbone is built from its name alone, so a finished run opens again
        raise ConfigError(
            f"model.weights: {weights} builds {holds} with {model_args}, and cnnlab builds "
            f"the backbone {backbone} from its name alone; give its tensors as a file only if "
            "they fit that architecture"
        )
    names = pretrained.get("hf_hub_filename")
    return HubWeights(
        weights,
        f"the Hugging Face Hub repository {repo}",
        preprocessing,
        HubFile(
            repo,
            revision or None,
            _safe_first(names) if names else ("model.safetensors", "pytorch_model.bin"),
        ),
    )


def _timm_preprocessing(input_size, mean, std) -> Preprocessing:
    _, height, width = input_size
    return Preprocessing((int(height), int(width)), _three(mean), _three(std))


def _three(values) -> tuple[float, float, float]:
    floats = tuple(float(value) for value in values)
    if len(floats) != 3:
        raise ConfigError(f"model.weights: the weights' mean/std {floats} is not one per RGB")
    return cast("tuple[float, float, float]", floats)


# --- the two caches ------------------------------------------------------------------------


def offline() -> bool:
    """huggingface_hub's offline switch (HF_HUB_OFFLINE=1), read now as well as at import."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return now or bool(constants.HF_HUB_OFFLINE)


def hf_hub_cache() -> Path:
    """huggingface_hub's cache folder from the environment now, as its constants resolve it at
    import (HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub)."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    hub = (
        os.environ.get("HF_HUB_CACHE")
        or os.environ.get("HUGGINGFACE_HUB_CACHE")
        or os.path.join(home, "hub")
    )
    return Path(os.path.expandvars(hub)).expanduser()


@dataclass(frozen=True)
class TorchHubFile:
    """A URL's file in torch hub's cache, where torch.hub.load_state_dict_from_url keeps it."""

    url: str

    def fetch(self, what: str) -> Path:
        import torch.hub

        filename = Path(urlparse(self.url).path).name
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        path = folder / filename
        if path.is_file():
            return path
        if offline():
            raise self._missing(what, filename, folder, "HF_HUB_OFFLINE is set")
        match = torch.hub.HASH_REGEX.search(filename)  # torchvision checks the hash it names
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with _connect_timeout(CONNECT_TIMEOUT_S):
                torch.hub.download_url_to_file(
                    self.url, str(path), match.group(1) if match else None, sys.stderr.isatty()
                )
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash RuntimeError
            raise self._missing(what, filename, folder, _reason(err)) from None
        return path

    def _missing(self, what: str, filename: str, folder: Path, reason: str) -> ConfigError:
        return ConfigError(
            f"model.weights: {what}, the file {filename}, which is not in torch hub's cache and "
            f"could not be downloaded from {self.url} ({reason}). Put {filename} in {folder} "
            f"(torch hub's cache, $TORCH_HOME/hub/checkpoints), or set "
            f"model.weights: /path/to/{filename}"
        )


@dataclass(frozen=True)
class HubFile:
    """A file of a Hugging Face Hub repository, in huggingface_hub's cache."""

    repo: str
    revision: str | None
    filenames: tuple[str, ...]  # the first one there is taken (safetensors first)
    weights_file: str | None = None  # what `weights: PATH` would name; None: filenames[0]

    def fetch(self, what: str) -> Path:
        from huggingface_hub import try_to_load_from_cache

        cache = hf_hub_cache()
        for filename in self.filenames:
            found = try_to_load_from_cache(
                self.repo, filename, cache_dir=cache, revision=self.revision
            )
            if isinstance(found, str):  # else None or the "known not to exist" marker
                return Path(found)
        if offline():
            raise self._missing(what, cache, "HF_HUB_OFFLINE is set")
        return self._download(what, cache)

    def _download(self, what: str, cache: Path) -> Path:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
        from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError

        for filename in self.filenames:
            url = hf_hub_url(self.repo, filename, revision=self.revision)
            try:  # one request without retries: offline, this fails at once
                get_hf_file_metadata(url)
            except EntryNotFoundError:
                continue
            except RepositoryNotFoundError:  # also a gated or private one, or a bad revision
                raise ConfigError(
                    f"model.weights: {what}, and the Hugging Face Hub has no repository "
                    f"{self.repo}{'@' + self.revision if self.revision else ''} that cnnlab "
                    "may read (a gated or private one needs `hf auth login`)"
                ) from None
            except Exception as err:  # the connection's errors differ by huggingface_hub version
                raise self._missing(what, cache, _reason(err)) from None
            try:
                return Path(
                    hf_hub_download(
                        self.repo, filename, revision=self.revision, cache_dir=str(cache)
                    )
                )
            except Exception as err:  # as above: broken off, disk full, ...
                raise self._missing(what, cache, _reason(err)) from None
        raise ConfigError(
            f"model.weights: {what}, and the repository {self.repo} has none of "
            f"{', '.join(self.filenames)}"
        )

    def _missing(self, what: str, cache: Path, reason: str) -> ConfigError:
        filename = self.filenames[0]
        folder = cache / f"models--{self.repo.replace('/', '--')}"
        revision = self.revision or "main"
        if COMMIT.fullmatch(revision):
            place = f"{folder}/snapshots/{revision}/"
        else:
            place = f"{folder}/snapshots/<commit>/, with the <commit> in {folder}/refs/{revision}"
        return ConfigError(
            f"model.weights: {what}, the file {filename} of the Hugging Face Hub repository "
            f"{self.repo}, which is not in the Hugging Face cache and could not be downloaded "
            f"({reason}). Put {filename} in {place} (the Hugging Face cache, $HF_HOME/hub, as "
            f"`hf download {self.repo} {filename}` fills it), or set "
            f"model.weights: /path/to/{self.weights_file or filename}"
        )


def _reason(err: BaseException) -> str:
    text = str(getattr(err, "reason", None) or err).strip().splitlines()
    return text[0] if text else type(err).__name__


@contextmanager
def _connect_timeout(seconds: float) -> Iterator[None]:
    """urlopen waits for ever without a default socket timeout; give it one while we download."""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
