"""Backbones: the seeds' convolutional bases, their blocks, and weights read safely from files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.config import ModelConfig
from cnnlab.errors import ConfigError
from cnnlab.models import format_summary, model_from_config
from cnnlab.models.backbones import BACKBONES, build_backbone, create_backbone
from cnnlab.models.weights import read_state_dict

S0_HEAD = [
    {"Flatten": {}},
    {"Dense": {"units": 1024, "activation": "relu"}},
    {"Dropout": {"rate": 0.7}},
    {"Dense": {"units": 2, "activation": "softmax"}},
]


def test_vgg16_base_summary_has_the_keras_parameter_count():
    result = CliRunner().invoke(
        app, ["summary", "vgg16", "--input-shape", "150,150,3", "--num-classes", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "Total params: 14,714,688" in result.stdout  # S2's conv_base.summary()
    assert "block5 (Block)" in result.stdout and "(None, 4, 4, 512)" in result.stdout


def test_s0_model_vgg16_with_its_head_counts_as_keras():
    model = model_from_config(
        ModelConfig(backbone="vgg16", weights="none", head=S0_HEAD), (128, 128, 3), 2
    )
    text = format_summary(model, (128, 128, 3))
    # 14,714,688 + Dense(8192 -> 1024) 8,389,632 + Dense(1024 -> 2) 2,050
    assert "Total params: 23,106,370" in text
    assert model(torch.zeros(2, 3, 128, 128)).shape == (2, 2)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_blocks_hold_every_parameter_exactly_once(name):
    backbone = create_backbone(name)
    in_blocks = [id(p) for _, modules in backbone.blocks() for m in modules for p in m.parameters()]
    assert sorted(in_blocks) == sorted(id(p) for p in backbone.parameters())
    assert len(set(in_blocks)) == len(in_blocks)


def test_unknown_backbone_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'resnet50'"):
        build_backbone("resnet5O", "none")


def test_backbone_without_local_weights_asks_for_a_file_or_none():
    with pytest.raises(ConfigError, match=r"model\.weights: .*vgg16.*or to none"):
        build_backbone("vgg16", None)


def test_safetensors_weights_load_exactly(tmp_path):
    source, _ = build_backbone("vgg16", "none")
    path = tmp_path / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in source.body.state_dict().items()}, str(path))
    loaded, info = build_backbone("vgg16", str(path))
    for key, value in source.body.state_dict().items():
        assert torch.equal(loaded.body.state_dict()[key], value), key
    assert info.ignored_keys == ()


def test_torchvision_vgg16_state_dict_is_remapped_and_its_classifier_reported(tmp_path):
    source, _ = build_backbone("vgg16", "none")
    state = {f"features.{k}": v for k, v in source.body.state_dict().items()}
    state |= {"classifier.0.weight": torch.zeros(3, 3), "classifier.0.bias": torch.zeros(3)}
    path = tmp_path / "vgg16-torchvision.pth"
    torch.save(state, path)
    loaded, info = build_backbone("vgg16", str(path))
    first = source.body.state_dict()["0.weight"]
    assert torch.equal(loaded.body.state_dict()["0.weight"], first)
    assert info.ignored_keys == ("classifier.0.weight", "classifier.0.bias")


def test_weights_for_another_architecture_name_the_missing_tensors(tmp_path):
    path = tmp_path / "resnet.safetensors"
    resnet = create_backbone("resnet50")
    save_file({k: v.contiguous() for k, v in resnet.body.state_dict().items()}, str(path))
    with pytest.raises(ConfigError, match=r"lacks 26 of the backbone's 26 tensors \(0\.weight"):
        build_backbone("vgg16", str(path))


class _Payload:
    """Unpickling this calls Path.touch(marker): code execution, if the loader allowed it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_in_a_weights_file_does_not_run_and_is_named(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:  # torch.save's legacy format is a plain pickle stream
        pickle.dump({"0.weight": _Payload(marker)}, handle, protocol=2)
    torch.save({"0.weight": _Payload(marker)}, tmp_path / "evil-zip.pth")
    for candidate in (path, tmp_path / "evil-zip.pth"):
        with pytest.raises(ConfigError, match=rf"{candidate.name} holds more than tensors"):
            read_state_dict(candidate)
        assert not marker.exists()
    with pytest.raises(ConfigError, match="weights only"):  # the way a run's config loads it
        model_from_config(ModelConfig(backbone="vgg16", weights=str(path)), (32, 32, 3), 2)
    assert not marker.exists()


def test_missing_and_damaged_weights_files_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_state_dict(tmp_path / "nothing.pth")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        read_state_dict(damaged)


def test_too_small_images_for_a_backbone_name_the_target_size():
    with pytest.raises(ConfigError, match=r"data\.target_size: 8x8 is too small for vgg16"):
        model_from_config(ModelConfig(backbone="vgg16", weights="none"), (8, 8, 3), 2)


def test_a_mistyped_weights_source_suggests_the_known_one():
    with pytest.raises(ConfigError, match="did you mean 'efficientnet-lite0'"):
        build_backbone("efficientnet_lite0", "efficientnet-lite")


def test_a_backbone_sets_the_input_size_where_the_data_section_does_not():
    from cnnlab.config import Experiment
    from cnnlab.runs.skeleton import data_config

    raw = {"data": {"source": "images"}, "model": {"backbone": "efficientnet_lite0"}}
    assert data_config(Experiment.model_validate(raw)).target_size == (224, 224)
    raw["data"]["target_size"] = [128, 128]
    assert data_config(Experiment.model_validate(raw)).target_size == (128, 128)
