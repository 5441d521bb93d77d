"""Pretrained weights from the libraries' own caches (`weights: imagenet`, `timm:TAG`,
`hf-hub:ORG/NAME`), without the network: each test writes the file where torchvision (torch
hub: $TORCH_HOME/hub/checkpoints) or timm (Hugging Face: $HF_HOME/hub/models--ORG--NAME) keeps
it, with tensors made here from the architecture itself, and the backbone must load exactly
those. A missing file is one ConfigError naming the file, the folder and `weights: PATH`.

Every test runs with HF_HUB_OFFLINE=1 (cnnlab applies it to torch hub too), so nothing here
can download, also on a machine that could.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.errors import ConfigError
from cnnlab.models.backbones import build_backbone, create_backbone, preprocessing_for
from cnnlab.preprocessing import IMAGENET, Preprocessing

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1
TINY = "test_resnet"  # timm's test model (~0.5 M parameters), default tag r160_in1k
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Caches:
    torch_home: Path
    hf_home: Path

    @property
    def checkpoints(self) -> Path:
        return self.torch_home / "hub" / "checkpoints"

    @property
    def hub(self) -> Path:
        return self.hf_home / "hub"


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Caches:
    """Empty torch hub and Hugging Face caches of this test's own, and no network."""
    found = Caches(tmp_path / "torch-home", tmp_path / "hf-home")
    monkeypatch.setenv("TORCH_HOME", str(found.torch_home))
    monkeypatch.setenv("HF_HOME", str(found.hf_home))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return found


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Not offline by setting, so cnnlab tries the library's download (which the test fakes)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield


def hub_snapshot(hub: Path, repo: str, files: dict[str, Any]) -> Path:
    """huggingface_hub's cache layout: blobs/<sha256>, snapshots/<commit>/<file> linking to
    it, refs/main holding the commit. A dict of tensors is saved as safetensors."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / COMMIT
    (folder / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    for filename, content in files.items():
        staged = folder / "blobs" / "incoming"
        if isinstance(content, dict):
            save_file({k: v.contiguous() for k, v in content.items()}, str(staged))
        else:
            staged.write_text(content, encoding="utf-8")
        blob = staged.rename(folder / "blobs" / hashlib.sha256(staged.read_bytes()).hexdigest())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / filename)
    return snapshot


def tiny_imagenet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A whole test_resnet as its pretrained file holds it: the body and its 1000-class fc."""
    torch.manual_seed(seed)
    return dict(timm.create_model(TINY, num_classes=1000).state_dict())


# --- torchvision: VGG16 from torch hub's cache ---------------------------------------------


def test_vgg16_imagenet_loads_torchvisions_file_from_the_torch_hub_cache(caches):
    torch.manual_seed(0)
    made = create_backbone("vgg16").body.state_dict()
    state = {f"features.{key}": value for key, value in made.items()}  # torchvision's layout
    state["classifier.6.bias"] = torch.randn(1000)  # its classifier, which the head replaces
    caches.checkpoints.mkdir(parents=True)
    path = caches.checkpoints / VGG16_FILE
    torch.save(state, path, _use_new_zipfile_serialization=False)  # the 2017 file's format

    backbone, info = build_backbone("vgg16", "imagenet")

    loaded = backbone.body.state_dict()
    assert torch.equal(loaded["0.weight"], made["0.weight"])
    assert all(torch.equal(loaded[key], value) for key, value in made.items())
    assert info.ignored_keys == ("classifier.6.bias",)
    assert info.weights == f"imagenet: torchvision's VGG16_Weights.IMAGENET1K_V1 ({path})"
    assert info.preprocessing == IMAGENET  # torchvision's transforms: 224, ImageNet mean/std


def test_vgg16_torchvision_features_weights_bring_their_own_mean_and_std():
    caffe = preprocessing_for("vgg16", "torchvision:IMAGENET1K_FEATURES")
    assert caffe.input_size == (224, 224)
    assert caffe.mean == (0.48235, 0.45882, 0.40784) and caffe.std == pytest.approx((1 / 255,) * 3)
    with pytest.raises(ConfigError, match="torchvision:IMAGENET1K_V1, torchvision:IMAGENET1K_F"):
        preprocessing_for("vgg16", "torchvision:IMAGENET1K_V2")


def test_vgg16_imagenet_missing_offline_names_the_file_the_folder_and_the_path_option(caches):
    with pytest.raises(ConfigError) as caught:
        build_backbone("vgg16", "imagenet")
    message = str(caught.value)
    assert message.startswith(
        "model.weights: imagenet for vgg16 is torchvision's VGG16_Weights.IMAGENET1K_V1, "
        f"the file {VGG16_FILE}, which is not in torch hub's cache"
    )
    assert f"Put {VGG16_FILE} in {caches.checkpoints} " in message
    assert "HF_HUB_OFFLINE is set" in message
    assert message.endswith(f"or set model.weights: /path/to/{VGG16_FILE}")


def test_a_failed_torch_hub_download_is_the_same_error_and_leaves_no_file(
    caches, online, monkeypatch
):
    calls = []

    def no_connection(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_connection)
    with pytest.raises(ConfigError, match=r"\(\[Errno -2\] Name or service not known\)\. Put "):
        build_backbone("vgg16", "imagenet")
    url, dst, hash_prefix = calls[0]  # torchvision's URL, into its cache, with its hash check
    assert url == f"https://download.pytorch.org/models/{VGG16_FILE}"
    assert (Path(dst), hash_prefix) == (caches.checkpoints / VGG16_FILE, "397923af")
    assert not list(caches.checkpoints.iterdir())


# --- timm: the Hugging Face cache ----------------------------------------------------------


def test_timm_imagenet_loads_the_default_tag_from_the_hugging_face_cache(caches):
    state = tiny_imagenet_state()
    snapshot = hub_snapshot(caches.hub, f"timm/{TINY}.r160_in1k", {"model.safetensors": state})

    backbone, info = build_backbone(f"timm/{TINY}", "imagenet")

    loaded = backbone.body.state_dict()
    assert torch.equal(loaded["conv1.0.weight"], state["conv1.0.weight"])
    assert all(torch.equal(value, state[key]) for key, value in loaded.items())
    assert set(info.ignored_keys) == {"fc.weight", "fc.bias"}  # safetensors sorts its keys
    path = snapshot / "model.safetensors"
    assert info.weights == f"imagenet: timm's {TINY}.r160_in1k ({path})"
    # timm's pretrained config: 160 px, mean/std 0.5, as the data section will use
    assert info.preprocessing == Preprocessing((160, 160), (0.5,) * 3, (0.5,) * 3)
    assert preprocessing_for(f"timm/{TINY}", "imagenet") == info.preprocessing


def test_a_named_timm_tag_is_that_tags_file_and_a_wrong_tag_lists_the_tags(caches):
    state = tiny_imagenet_state(seed=1)
    hub_snapshot(caches.hub, f"timm/{TINY}.r160_in1k", {"model.safetensors": state})
    backbone, _ = build_backbone(f"timm/{TINY}", "timm:r160_in1k")
    assert torch.equal(backbone.body.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    with pytest.raises(ConfigError, match=r"timm has no resnet50\.a9_in1k; its tags: timm:a1_in1k"):
        build_backbone("resnet50", "timm:a9_in1k")


def test_resnet50_imagenet_missing_offline_names_the_hub_file_and_folder(caches):
    with pytest.raises(ConfigError) as caught:
        build_backbone("resnet50", "imagenet")
    message = str(caught.value)
    folder = caches.hub / "models--timm--resnet50.a1_in1k"
    assert message.startswith(
        "model.weights: imagenet for resnet50 is timm's resnet50.a1_in1k, the file "
        "model.safetensors of the Hugging Face Hub repository timm/resnet50.a1_in1k"
    )
    assert f"Put model.safetensors in {folder}/snapshots/<commit>/" in message
    assert f"with the <commit> in {folder}/refs/main" in message
    assert message.endswith("or set model.weights: /path/to/model.safetensors")


def test_a_failed_hub_request_fails_at_once_without_the_librarys_retries(online, monkeypatch):
    import huggingface_hub

    def no_connection(url, *args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    def must_not_download(*args, **kwargs):
        raise AssertionError("hf_hub_download retries for ~25 s offline; cnnlab asks first")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_connection)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_download)
    with pytest.raises(ConfigError, match=r"could not be downloaded \(\[Errno -2\] Name or se"):
        build_backbone(f"timm/{TINY}", "imagenet")


def test_imagenet_is_refused_where_timms_default_tag_is_not_imagenet():
    with pytest.raises(ConfigError, match=r"not trained on ImageNet; .* timm:lvd142m"):
        build_backbone("timm/vit_small_patch14_dinov2", "imagenet")


def test_weights_of_the_other_library_are_refused_by_name():
    with pytest.raises(ConfigError, match="vgg16 is torchvision's layers; use imagenet"):
        build_backbone("vgg16", "timm:tv_in1k")
    with pytest.raises(ConfigError, match="resnet50 is timm's resnet50; use imagenet, timm:TAG"):
        build_backbone("resnet50", "torchvision:IMAGENET1K_V1")


def test_a_hub_repository_in_timms_format_brings_its_config(caches):
    state = tiny_imagenet_state(seed=2)
    config = {
        "architecture": TINY,
        "num_classes": 1000,
        "pretrained_cfg": {"input_size": [3, 96, 96], "mean": [0.4, 0.4, 0.4], "std": [0.2] * 3},
    }
    hub_snapshot(
        caches.hub,
        "someone/tiny-resnet",
        {"config.json": json.dumps(config), "model.safetensors": state},
    )
    backbone, info = build_backbone(f"timm/{TINY}", "hf-hub:someone/tiny-resnet")
    assert torch.equal(backbone.body.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    assert info.preprocessing == Preprocessing((96, 96), (0.4,) * 3, (0.2,) * 3)
    with pytest.raises(ConfigError, match=rf"holds timm's {TINY}, and the backbone resnet50"):
        build_backbone("resnet50", "hf-hub:someone/tiny-resnet")


def test_a_mistyped_download_name_suggests_imagenet():
    with pytest.raises(ConfigError, match="did you mean 'imagenet'"):
        build_backbone("vgg16", "imagnet")


# --- through a run and the command line ----------------------------------------------------


def digits_backbone_config(path: Path, backbone: str, weights: str) -> Path:
    raw = {
        "seed": 0,
        "data": {
            "source": "digits",
            "color_mode": "rgb",
            "target_size": [32, 32],
            "validation_split": 0.2,
            "test_split": 0.2,
        },
        "model": {"backbone": backbone, "weights": weights},
        "train": {"epochs": 1, "batch_size": 128},
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_a_run_records_the_cached_weights_it_loaded(tmp_path, caches):
    hub_snapshot(caches.hub, f"timm/{TINY}.r160_in1k", {"model.safetensors": tiny_imagenet_state()})
    config = digits_backbone_config(tmp_path / "tiny.yaml", f"timm/{TINY}", "imagenet")
    result = cnnlab.run(config, output_dir=tmp_path / "runs", quiet=True)
    model = json.loads((result.folder / "manifest.json").read_text())["model"]
    assert model["weights"].startswith(f"imagenet: timm's {TINY}.r160_in1k (")
    assert sorted(model["weights_keys_not_used"]) == ["fc.bias", "fc.weight"]
    assert model["input_mean"] == [0.5, 0.5, 0.5]


def test_cnnlab_run_offline_without_the_file_exits_2_with_the_message_and_no_folder(
    tmp_path, caches, monkeypatch
):
    def examine(*args, **kwargs):  # the weights are fetched before any data is read
        raise AssertionError("the data was read before the weights were fetched")

    monkeypatch.setattr("cnnlab.data.pipeline.examine", examine)
    config = digits_backbone_config(tmp_path / "vgg.yaml", "vgg16", "imagenet")
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(runs)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error: model.weights: imagenet for vgg16 is torchvision's" in result.stderr
    assert f"Put {VGG16_FILE} in {caches.checkpoints}" in result.stderr
    assert f"model.weights: /path/to/{VGG16_FILE}" in result.stderr
    assert not runs.exists() or not any(runs.iterdir())
