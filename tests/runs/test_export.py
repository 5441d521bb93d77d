"""`cnnlab export`: a trained run as ONNX, TorchScript or an ExportedProgram that takes uint8
images and gives the run's probabilities, checked against PyTorch, with a model card; a
features run and a missing run are refused."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.data.pipeline import load_data
from cnnlab.errors import DataError
from cnnlab.runs import export as export_module
from cnnlab.runs.export import ParityError, export_run, exportable

TINY_NET = [
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"Flatten": {}},
    {"Dense": {"units": 10, "activation": "softmax"}},
]
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 40), "blue": (40, 40, 220)}


def write_config(path: Path, data: dict[str, Any], **sections: Any) -> Path:
    raw = {
        "seed": 0,
        "data": {"validation_split": 0.2, "test_split": 0.2, **data},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam"}},
        **sections,
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(folder / "cache"))
        yield folder


@pytest.fixture(scope="module")
def tiny_run(root: Path) -> Path:
    """scikit-learn's 8x8 digits, a layer-list CNN, one epoch; every normalisation step on,
    so the graph has to carry rescale, sample-wise and feature-wise statistics."""
    config = write_config(
        root / "tiny.yaml",
        {"source": "digits", "color_mode": "grayscale"},
        model={"layers": TINY_NET},
        augment={
            "featurewise_center": True,
            "featurewise_std_normalization": True,
            "samplewise_center": True,
            "samplewise_std_normalization": True,
        },
    )
    return cnnlab.run(config, output_dir=root / "runs", quiet=True).folder


@pytest.fixture(scope="module")
def backbone_run(root: Path) -> Path:
    """A timm ResNet-18 (random weights) on 24 small RGB PNGs of three colours, 32x32."""
    source = root / "colours"
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (source / name).mkdir(parents=True)
        for i in range(8):
            noise = rng.integers(-30, 30, (24 + i, 28, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(source / name / f"{i}.png")
    config = write_config(
        root / "resnet.yaml",
        {"source": str(source), "target_size": [32, 32], "test_split": 0.25},
        model={"backbone": "timm/resnet18", "weights": "none"},
    )
    return cnnlab.run(config, output_dir=root / "runs", quiet=True).folder


@pytest.fixture(scope="module")
def tiny_onnx(tiny_run: Path) -> export_module.Exported:
    return export_run(tiny_run, "onnx")


def split_images(folder: Path) -> np.ndarray:
    run = cnnlab.load_run(folder)
    return load_data(run.data_config(), run.config.seed).splits["test"].images


def written_test_probabilities(folder: Path, classes: list[str]) -> np.ndarray:
    """The run's own test probabilities, as its predictions.csv holds them (6 decimals)."""
    with (folder / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    return np.array([[float(row[f"p_{c}"]) for c in classes] for row in rows])


def onnx_session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_of_a_layer_list_cnn_gives_the_runs_own_probabilities(tiny_run, tiny_onnx):
    parity = tiny_onnx.parity
    assert (parity.format, parity.split, parity.images) == ("onnx", "test", 359)
    assert parity.max_abs_diff < 1e-4 and parity.argmax_differs == 0
    assert tiny_onnx.lines()[1] == parity.line()
    assert re.fullmatch(
        r"ONNX parity on 359 test images: max \|Δp\| \d\.\de[-+]\d\d, argmax identical",
        parity.line(),
    )
    folder = tiny_run / "export"
    assert tiny_onnx.path == folder / "model.onnx" and tiny_onnx.card == folder / "MODEL_CARD.md"
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md",
        "export.json",
        "model.onnx",
    ]

    session = onnx_session(tiny_onnx.path)
    (given,) = session.get_inputs()
    assert (given.name, given.type, given.shape) == ("images", "tensor(uint8)", [1, 1, 8, 8])
    meta = session.get_modelmeta().custom_metadata_map
    run = cnnlab.load_run(tiny_run)
    assert json.loads(meta["classes"]) == run.classes == [str(k) for k in range(10)]
    assert json.loads(meta["input_size"]) == [8, 8] and meta["color_mode"] == "grayscale"
    saved = json.loads((tiny_run / "normalization.json").read_text())
    assert json.loads(meta["normalization"]) == saved
    assert saved["mean"] and saved["std"] and saved["samplewise_std"]  # all in the graph
    assert meta["cnnlab_version"] == cnnlab.__version__

    # independently of the wrapper: the file alone reproduces what the run wrote
    images = split_images(tiny_run)
    got = np.concatenate([session.run(None, {"images": images[i : i + 1]})[0] for i in range(30)])
    written = written_test_probabilities(tiny_run, run.classes)[:30]
    assert np.abs(got - written).max() < 2e-6


def test_onnx_of_a_timm_backbone_with_a_dynamic_batch(backbone_run, tmp_path):
    result = export_run(backbone_run, "onnx", out=tmp_path / "out", dynamic_batch=True)

    assert result.parity.max_abs_diff < 1e-4 and result.parity.argmax_differs == 0
    assert result.parity.images == 6 and result.parity.split == "test"
    assert "dynamic batch: uint8 (batch, 3, 32, 32) -> probabilities (batch, 3)" in result.details
    session = onnx_session(result.path)
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a named, free dimension
    images = split_images(backbone_run)
    got = session.run(None, {"images": images})[0]
    assert got.shape == (6, 3) and np.allclose(got.sum(1), 1, atol=1e-5)
    classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
    assert classes == ["blue", "green", "red"]
    assert np.abs(got - written_test_probabilities(backbone_run, classes)).max() < 2e-6
    assert session.run(None, {"images": images[:1]})[0].shape == (1, 3)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_pytorch_and_carries_its_metadata(tiny_run, tmp_path):
    result = export_run(tiny_run, "torchscript", out=tmp_path)

    assert result.parity.max_abs_diff < 1e-4 and result.parity.argmax_differs == 0
    assert result.path == tmp_path / "model.torchscript.pt"
    extra = {"cnnlab.json": ""}
    loaded = torch.jit.load(str(result.path), _extra_files=extra)
    meta = json.loads(extra["cnnlab.json"])
    assert meta["classes"] == [str(k) for k in range(10)] and meta["input_shape"] == [1, 1, 8, 8]
    image = torch.from_numpy(np.ascontiguousarray(split_images(tiny_run)[:1]))
    with torch.no_grad():
        want = exportable(cnnlab.load_run(tiny_run))(image)
        assert torch.allclose(loaded(image), want, atol=1e-6)
        assert torch.allclose(loaded(image.float()), want, atol=1e-6)  # float 0..255 as well


def test_an_exported_program_loads_and_agrees(tiny_run, tmp_path):
    result = export_run(tiny_run, "exported-program", out=tmp_path, dynamic_batch=True)

    assert result.parity.max_abs_diff < 1e-4 and result.parity.argmax_differs == 0
    assert result.sidecar == tmp_path / "model.pt2.json"
    meta = json.loads(result.sidecar.read_text())
    assert meta["input_shape"] == ["batch", 1, 8, 8] and meta["format"] == "exported-program"
    program = torch.export.load(result.path).module()
    images = torch.from_numpy(np.ascontiguousarray(split_images(tiny_run)[:5]))
    with torch.no_grad():
        want = exportable(cnnlab.load_run(tiny_run))(images)
        assert torch.allclose(program(images), want, atol=1e-6)


def test_the_onnx_file_runs_without_torch_or_cnnlab(tiny_run, tiny_onnx, tmp_path):
    """The model card's own ONNX snippet, in a fresh interpreter: onnxruntime, numpy, Pillow."""
    card = tiny_onnx.card.read_text(encoding="utf-8")
    snippet = card.split("### ONNX\n\n```python\n", 1)[1].split("```", 1)[0]
    image = np.ascontiguousarray(split_images(tiny_run)[7])  # (1, 8, 8) uint8
    Image.fromarray(image[0]).save(tmp_path / "image.png")
    (tmp_path / "model.onnx").write_bytes(tiny_onnx.path.read_bytes())
    script = (
        snippet
        + "import sys\n"
        + 'assert "torch" not in sys.modules and "cnnlab" not in sys.modules\n'
        + "print(json.dumps([classes[int(p.argmax())], p.tolist()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    label, probabilities = json.loads(done.stdout.splitlines()[-1])
    with torch.no_grad():
        want = exportable(cnnlab.load_run(tiny_run))(torch.from_numpy(image[None]))[0].numpy()
    assert np.abs(np.array(probabilities) - want).max() < 1e-4
    assert label == str(int(want.argmax()))


def test_the_model_card_tells_data_metrics_input_use_and_loading(tiny_run, tiny_onnx):
    card = tiny_onnx.card.read_text(encoding="utf-8")

    for heading in ("## Data", "## Metrics", "## Input and preprocessing", "## Intended use"):
        assert heading in card
    assert "Split sizes: train 1079, val 359, test 359" in card
    accuracy = json.loads((tiny_run / "metrics.json").read_text())["test"]["accuracy"]
    assert f"| test | {accuracy:.4f} |" in card
    assert "(N, 1, 8, 8)" in card and "colour mode `grayscale`" in card
    assert "each image's standard deviation" in card  # the normalisation, in words
    assert "| `model.onnx` | ONNX |" in card and "max \\|Δp\\|" in card


def test_cli_export_writes_the_file_and_its_card(tiny_run, tmp_path):
    out = tmp_path / "exported"
    out.mkdir()  # holding another model's export: its entry leaves the record and the card
    (out / "model.torchscript.pt").write_bytes(b"other weights")
    other = {"file": "model.torchscript.pt", "weights_sha256": "0" * 64}
    (out / "export.json").write_text(json.dumps({"exports": {"torchscript": other}}))
    result = CliRunner().invoke(
        app, ["export", str(tiny_run), "--out", str(out), "--dynamic-batch"]
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Wrote {out / 'model.onnx'} (opset ")
    assert "dynamic batch: uint8 (batch, 1, 8, 8) -> probabilities (batch, 10)" in lines[0]
    assert re.match(r"ONNX parity on 359 test images: max \|Δp\| .*, argmax identical$", lines[1])
    assert lines[2] == f"Model card: {out / 'MODEL_CARD.md'}"
    assert {"model.onnx", "MODEL_CARD.md", "export.json"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "export.json").read_text())
    assert (
        list(record["exports"]) == ["onnx"] and record["exports"]["onnx"]["parity"]["images"] == 359
    )
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "### ONNX" in card and "TorchScript" not in card.split("## Loading it")[1]


def test_onnx_without_the_export_extra_says_how_to_install_it(tiny_run, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else find_spec(name, *a),
    )
    result = CliRunner().invoke(app, ["export", str(tiny_run), "--out", str(tmp_path / "o")])

    assert result.exit_code == 2 and "needs onnxscript" in result.stderr
    assert "pip install onnx onnxscript onnxruntime" in " ".join(result.stderr.split())


def test_a_features_run_and_a_missing_run_exit_2(tiny_run, root, tmp_path):
    hybrid = write_config(
        tmp_path / "hybrid.yaml",
        {"source": "digits", "color_mode": "grayscale"},
        model={"from_run": str(tiny_run)},
        classifier={"name": "logistic"},
    )
    features = cnnlab.run(hybrid, output_dir=tmp_path, quiet=True).folder
    runner = CliRunner()

    refused = runner.invoke(app, ["export", str(features)])
    assert refused.exit_code == 2
    message = " ".join(refused.stderr.split())
    assert "is a features run" in message and "scikit-learn logistic classifier" in message
    assert "supports trained runs only" in message and "Traceback" not in refused.output
    assert not (features / "export").exists()

    missing = runner.invoke(app, ["export", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such folder" in missing.stderr
    unknown = runner.invoke(app, ["export", str(tiny_run), "--format", "tflite"])
    assert unknown.exit_code == 2 and "onnx, torchscript, exported-program" in unknown.stderr


def test_a_failed_parity_check_writes_no_file(tiny_run, tmp_path, monkeypatch):
    wrapped = export_module._torch_runner

    def off_by_a_little(module):
        infer = wrapped(module)
        return lambda images: infer(images) + 1e-3

    monkeypatch.setattr(export_module, "_torch_runner", off_by_a_little)
    with pytest.raises(ParityError, match=r"does not match PyTorch: max \|Δp\| 1\.0e-03"):
        export_run(tiny_run, "torchscript", out=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no model, no temporary file, no card


def test_unreadable_data_is_checked_on_random_images(tiny_run, tmp_path, monkeypatch):
    def gone(*_: Any) -> None:
        raise DataError("digits: gone")

    monkeypatch.setattr("cnnlab.data.pipeline.load_data", gone)
    result = export_run(tiny_run, "torchscript", out=tmp_path, check_images=8)

    assert (result.parity.split, result.parity.images) == ("random", 8)
    assert result.parity.ok and "data unreadable: digits: gone" in result.parity.line()
