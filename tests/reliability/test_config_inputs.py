"""M9: files and values the config loader once crashed on exit 2 with a message naming the file
or key, through the CLI (`cnnlab run`), before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.runs.test_trained import assert_user_error, run_cli

VALID = """seed: 0
data: {source: digits, color_mode: grayscale, validation_split: 0.2}
model:
  layers:
    - Flatten: {}
    - Dense: {units: 10, activation: softmax}
train: {epochs: 1}
"""

# name -> (the file's bytes, words the message must hold)
BAD_FILES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe" * 8, "not a text file in UTF-8"),
    "utf16": (VALID.encode("utf-16"), "UTF-16 text"),
    "utf16_without_mark": (VALID.encode("utf-16-le"), "NUL bytes"),
    "deep_list": (b"model: " + b"[" * 5000 + b"]" * 5000, "nested more than 64 levels"),
    "deep_map": (b"model: " + b"{a: " * 2000 + b"1" + b"}" * 2000, "nested more than 64 levels"),
    "alias_cycle": (b"model: &loop [*loop]\n", "nested more than 64 levels"),
    "preset_list": (VALID + "augment: {preset: [s1, s2]}\n", "augment.preset: expected a string"),
    "preset_map": (VALID + "augment: {preset: {s1: 1}}\n", "augment.preset: expected a string"),
    "huge_seed": (VALID.replace("seed: 0", f"seed: {2**70}"), "seed: must be less than"),
    "key_with_brackets": (
        VALID + "augment: {'rotation_range[0]': 3}\n",
        "augment.rotation_range[0]: unknown key; did you mean 'rotation_range'?",
    ),
    "top_key_with_brackets": (VALID + "'train[x]': 3\n", "train[x]: unknown key"),
    "binary_layer": (
        VALID.replace("- Flatten: {}", "- !!binary aGVsbG8="),
        "model.layers[0]: unknown layer",
    ),
    "binary_units": (
        VALID.replace("units: 10", "units: !!binary aGVsbG8="),
        "model.layers[1].Dense.units",
    ),
    "huge_target_size": (
        VALID.replace("grayscale,", "grayscale, target_size: [100000, 100000],"),
        "target_size: 100000x100000 is 10,000,000,000 pixels",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_experiment_file_exits_2_naming_the_problem(tmp_path: Path, name: str):
    content, words = BAD_FILES[name]
    config = tmp_path / f"{name}.yaml"
    config.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert_user_error(result, words)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_utf8_byte_order_mark_is_read(tmp_path: Path):
    from cnnlab.config_io import load_experiment

    config = tmp_path / "bom.yaml"
    config.write_bytes(b"\xef\xbb\xbf" + VALID.encode("utf-8"))
    assert load_experiment(config).train.epochs == 1


def test_a_deeply_nested_set_value_exits_2(tmp_path: Path):
    config = tmp_path / "ok.yaml"
    config.write_text(VALID, encoding="utf-8")
    result = run_cli("run", str(config), "--set", "model.layers=" + "[" * 3000 + "]" * 3000)
    assert_user_error(result, "--set model.layers: the value is nested too deeply")


def test_a_relative_path_that_exists_next_to_the_config_says_so(
    tmp_path: Path, monkeypatch, make_classes
):
    project = tmp_path / "project"
    make_classes(project / "pets", {"cats": 2, "dogs": 2})
    config = project / "pets.yaml"
    config.write_text(VALID.replace("source: digits", "source: pets"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # one folder above the config and its data
    result = run_cli("run", str(config.relative_to(tmp_path)), "--output", str(tmp_path / "runs"))
    assert_user_error(
        result,
        f"data.source: 'pets' is not in the current folder {tmp_path}",
        "not from the config file's folder",
        f"write '{project / 'pets'}'",
    )
    assert not (tmp_path / "runs").exists()


def test_a_relative_path_found_nowhere_names_the_folder_searched(tmp_path: Path, monkeypatch):
    config = tmp_path / "lost.yaml"
    config.write_text(VALID.replace("source: digits", "source: no/such/pets"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = run_cli("run", str(config), "--output", str(tmp_path / "runs"))
    assert_user_error(result, f"no/such/pets: no such folder or file in {tmp_path} (the current")
