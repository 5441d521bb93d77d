"""The `cnnlab` command as a user runs it: real processes, exit codes, files written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def cnnlab(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CNNLAB_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    for label, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / label).mkdir(parents=True)
        for k in range(6):
            Image.new("RGB", (20 + k, 16), colour).save(root / label / f"{k}.png")
    (root / "blue" / "broken.jpg").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_inspect_prints_classes_and_names_skipped_files(tmp_path, small_folder):
    report_path = tmp_path / "report.json"
    result = cnnlab(
        "inspect", str(small_folder), "--json", str(report_path), cwd=tmp_path, cache=tmp_path / "c"
    )
    assert result.returncode == 0, result.stderr
    assert "blue" in result.stdout and "red" in result.stdout
    assert "broken.jpg: not an image" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["classes"] == {"blue": 6, "red": 6}
    assert report["skipped"] == [
        {"path": f"{small_folder}/blue/broken.jpg", "reason": "not an image"}
    ]
    assert report["sizes"]["20x16"] == 2
    assert any(".DS_Store" in entry for entry in report["ignored"])


def test_inspect_of_an_empty_class_exits_2_naming_it_without_traceback(tmp_path, small_folder):
    (small_folder / "green").mkdir()
    result = cnnlab("inspect", str(small_folder), cwd=tmp_path, cache=tmp_path / "c")
    assert result.returncode == 2
    assert "green" in result.stderr and "empty class" in result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_with_a_config_error_exits_2_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data: {source: digits}\ntrain: {optimizer: {lr: fast}}\n")
    result = cnnlab("prepare", str(config), cwd=tmp_path, cache=tmp_path / "c")
    assert result.returncode == 2
    assert "train.optimizer.lr: expected a number, got 'fast'" in result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_with_a_missing_source_exits_2_naming_it(tmp_path):
    config = tmp_path / "missing.yaml"
    config.write_text("data: {source: no/such/folder}\n")
    result = cnnlab("prepare", str(config), cwd=tmp_path, cache=tmp_path / "c")
    assert result.returncode == 2
    assert "data.source: no/such/folder: no such folder or file" in result.stderr


def test_prepare_writes_the_data_part_of_a_new_run_folder_each_time(tmp_path, small_folder):
    config = tmp_path / "shapes.yaml"
    config.write_text(
        f"data: {{source: {small_folder}, target_size: [8, 8], max_bad_fraction: 0.1}}\n"
    )
    first = cnnlab(
        "prepare",
        str(config),
        "--set",
        "data.validation_split=0.5",
        cwd=tmp_path,
        cache=tmp_path / "c",
    )
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "shapes"
    assert (run / "config.yaml").is_file() and (run / "health.json").is_file()
    lines = (run / "split.csv").read_text().splitlines()
    assert lines[0] == "path,label,split,sha256"
    assert sum(line.split(",")[2] == "val" for line in lines[1:]) == 6
    second = cnnlab("prepare", str(config), cwd=tmp_path, cache=tmp_path / "c")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "runs" / "shapes-2" / "split.csv").is_file()
    assert (run / "split.csv").read_text().splitlines() == lines  # the first run is untouched


def test_inspect_fingers_by_file_name_gives_six_classes_of_100(tmp_path, datasets):
    source = datasets / "fingers" / "train.zip"
    result = cnnlab(
        "inspect",
        str(source),
        "--label-pattern",
        r"_(\d)[LR]\.png$",
        "--json",
        str(tmp_path / "f.json"),
        cwd=tmp_path,
        cache=tmp_path / "c",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["classes"] == {str(k): 100 for k in range(6)}


def test_inspect_blood_cells_train_zip_gives_four_classes_of_150(tmp_path, datasets):
    source = datasets / "blood_cells" / "train.zip"
    result = cnnlab(
        "inspect",
        str(source),
        "--json",
        str(tmp_path / "b.json"),
        cwd=tmp_path,
        cache=tmp_path / "c",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["classes"] == {
        "EOSINOPHIL": 150,
        "LYMPHOCYTE": 150,
        "MONOCYTE": 150,
        "NEUTROPHIL": 150,
    }


def test_summary_of_ivannet_ends_with_keras_parameter_lines(tmp_path):
    result = cnnlab(
        "summary",
        "ivannet",
        "--input-shape",
        "128,128,1",
        "--num-classes",
        "6",
        cwd=tmp_path,
        cache=tmp_path / "c",
    )
    assert result.returncode == 0, result.stderr
    assert "Total params: 6,167,166" in result.stdout
    assert "Trainable params: 6,167,166" in result.stdout
    assert "Non-trainable params: 0" in result.stdout


def test_summary_of_an_unknown_model_suggests_the_name_and_exits_2(tmp_path):
    result = cnnlab(
        "summary",
        "carlosnett",
        "--input-shape",
        "128,128,1",
        "--num-classes",
        "6",
        cwd=tmp_path,
        cache=tmp_path / "c",
    )
    assert result.returncode == 2
    assert "did you mean 'carlosnet'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_summary_of_an_experiment_file_takes_the_input_from_its_data(tmp_path):
    config = tmp_path / "s3.yaml"
    config.write_text("data: {source: digits, target_size: [32, 32]}\nmodel: {name: basenet}\n")
    result = cnnlab(
        "summary", str(config), "--num-classes", "25", cwd=tmp_path, cache=tmp_path / "c"
    )
    assert result.returncode == 0, result.stderr
    assert "Total params: 24,197" in result.stdout


def test_summary_of_an_experiment_file_needs_no_flags_when_the_file_determines_them(tmp_path):
    # S1's IvanNet: 128x128 grayscale from the file, 6 classes from the folder names alone
    source = tmp_path / "fingers"
    for k in range(6):
        (source / str(k)).mkdir(parents=True)
        Image.new("L", (16, 16), 40 * k).save(source / str(k) / "a.png")
    config = tmp_path / "s1.yaml"
    config.write_text(
        f"data: {{source: {source}, color_mode: grayscale, target_size: [128, 128]}}\n"
        "model: {name: ivannet}\n"
    )
    result = cnnlab("summary", str(config), cwd=tmp_path, cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    assert "Trainable params: 6,167,166" in result.stdout


def test_summary_of_a_backbone_experiment_takes_the_backbone_input_size(tmp_path):
    source = tmp_path / "pets"
    for name in ("cat", "dog"):
        (source / name).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(source / name / "a.png")
    config = tmp_path / "vgg.yaml"
    config.write_text(
        f"data: {{source: {source}}}\n"
        "model: {backbone: vgg16, weights: none, head: [Flatten, {Dense: {units: 2}}]}\n"
    )
    result = cnnlab("summary", str(config), cwd=tmp_path, cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    # VGG16's base at 224x224 (its 7x7x512 map flattened): 14,714,688 + 25,088 * 2 + 2
    assert "Total params: 14,764,866" in result.stdout


def test_an_error_message_keeps_its_square_brackets(tmp_path):
    # rich would take "[red]" or "[export]" for markup and drop it from the message
    config = tmp_path / "x.yaml"
    config.write_text("data: {source: digits}\nmodel: {name: '[red]carlosnet'}\n")
    result = cnnlab("run", str(config), cwd=tmp_path, cache=tmp_path / "c")
    assert result.returncode == 2
    assert "'[red]carlosnet'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "count"),
    [("s4_upsample_1", "240,993"), ("s4_upsample_2", "480,961"), ("s4_upsample_3", "185,793")],
)
def test_summary_of_a_report_model_needs_no_flags(name, count):
    """A registered model alone is summarised at its report's input (S4's 7x7 digits)."""
    from typer.testing import CliRunner

    from cnnlab.cli import app

    result = CliRunner().invoke(app, ["summary", name])
    assert result.exit_code == 0, result.output
    assert f"Trainable params: {count}" in result.output
    assert "(None, 28, 28, 1)" in result.output


def test_sweep_with_an_invalid_bound_exits_2_naming_the_key_and_writes_nothing(tmp_path):
    import yaml
    from tests.sweep.conftest import write_sweep

    path = write_sweep(tmp_path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["space"]["train.optimizer.momentum"] = {"type": "float", "low": -1.0, "high": 0.9}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = cnnlab("sweep", str(path), "--trials", "3", cwd=tmp_path, cache=tmp_path / "c")
    assert result.returncode == 2, result.stderr
    assert "space.train.optimizer.momentum = -1.0: invalid configuration" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
