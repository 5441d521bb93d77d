"""`cnnlab explain RUN [IMAGES...]`: overlays named after the images, feature-map grids named
after their layers, nothing overwritten, wrong names refused with the valid ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.runs.explain import DEFAULT_IMAGES

from .corner import TIMM_BACKBONE, corner_config

runner = CliRunner()


def two_images(root: Path, folder: Path) -> list[Path]:
    """A red and a blue image of the corner task, copied out of the source."""
    root.mkdir(parents=True, exist_ok=True)
    picked = [
        folder / "images" / "red" / "red_000.png",
        folder / "images" / "blue" / "blue_001.png",
    ]
    return [Path(shutil.copy(path, root / path.name)) for path in picked]


def test_cli_writes_an_overlay_per_image_and_a_grid_per_layer(cnn_run, corner_root, tmp_path):
    images = two_images(tmp_path / "new", corner_root)
    out = tmp_path / "explained"
    args = ["explain", str(cnn_run), *map(str, images), "--out", str(out)]
    result = runner.invoke(app, [*args, "--feature-maps", "conv2d,conv2d_1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "blue_001.conv2d.png",
        "blue_001.conv2d_1.png",
        "blue_001.png",
        "red_000.conv2d.png",
        "red_000.conv2d_1.png",
        "red_000.png",
    ]
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{images[0]}: red (") and "gradcam for red at conv2d_1" in lines[0]
    assert lines[1] == f"  conv2d -> {out / 'red_000.conv2d.png'}"
    # the image beside its overlay: hot (red) at the corner patch, cold (blue) far from it
    overlay = np.asarray(Image.open(out / "red_000.png").convert("RGB"))
    assert overlay.shape[1] > overlay.shape[0] and overlay.shape[2] == 3


def test_the_heat_follows_the_target_class_and_a_run_api_result(cnn_run, corner_root, tmp_path):
    images = two_images(tmp_path / "new", corner_root)
    result = cnnlab.explain_run(cnn_run, images, target="blue", out=tmp_path / "out")
    assert [item.target for item in result.items] == ["blue", "blue"]
    assert [item.predicted for item in result.items] == ["red", "blue"]
    assert all(0.5 < item.probability <= 1.0 for item in result.items)
    assert result.layer == "conv2d_1" and result.method == "gradcam"
    assert result.files == [item.overlay for item in result.items]

    wrong = runner.invoke(app, ["explain", str(cnn_run), str(images[0]), "--target", "green"])
    assert wrong.exit_code == 2
    assert "--target 'green': the run's classes are blue, red" in wrong.output


def test_files_are_never_overwritten(cnn_run, corner_root, tmp_path):
    images = two_images(tmp_path / "new", corner_root)[:1]
    out = tmp_path / "out"
    out.mkdir()
    (out / "red_000.png").write_bytes(b"the user's own file")
    first = cnnlab.explain_run(cnn_run, images, out=out)
    second = cnnlab.explain_run(cnn_run, images, out=out)
    assert (out / "red_000.png").read_bytes() == b"the user's own file"
    assert [first.items[0].overlay.name, second.items[0].overlay.name] == [
        "red_000-2.png",
        "red_000-3.png",
    ]


def test_without_images_a_few_test_images_go_into_the_run_folder(cnn_run):
    result = cnnlab.explain_run(cnn_run, method="layercam")
    assert result.folder == cnn_run / "explain"
    assert len(result.items) == DEFAULT_IMAGES
    assert {item.image.split("/")[-2] for item in result.items} == {"blue", "red"}  # both
    assert all(item.overlay.parent == cnn_run / "explain" for item in result.items)
    shutil.rmtree(cnn_run / "explain")


def test_a_timm_run_by_module_path_with_its_backbone_grid(timm_run, corner_root, tmp_path):
    images = two_images(tmp_path / "new", corner_root)[:1]
    out = tmp_path / "out"
    result = cnnlab.explain_run(
        timm_run, images, layer="layer2.0", out=out, feature_maps=["stem", TIMM_BACKBONE]
    )
    assert result.layer == "layer2.0"
    assert sorted(p.name for p in out.iterdir()) == [
        "red_000.png",
        "red_000.stem.png",
        "red_000.timm_test_resnet.png",
    ]


def test_unknown_layers_and_methods_exit_2_with_the_valid_names(cnn_run):
    layer = runner.invoke(app, ["explain", str(cnn_run), "--layer", "conv2d_9"])
    assert layer.exit_code == 2
    assert "did you mean 'conv2d_1'?" in layer.output
    assert "give one of conv2d, max_pooling2d, conv2d_1" in layer.output
    maps = runner.invoke(app, ["explain", str(cnn_run), "--feature-maps", "conv2d,dense"])
    assert maps.exit_code == 2 and "layer 'dense': sequential has no spatial layer" in maps.output
    method = runner.invoke(app, ["explain", str(cnn_run), "--method", "gradcamm"])
    assert method.exit_code == 2 and "did you mean 'gradcam'?" in method.output
    assert not (cnn_run / "explain").exists()  # nothing written before the names are checked


def test_a_features_run_is_refused(corner_root, tmp_path):
    config = corner_config(
        tmp_path / "features.yaml",
        corner_root / "images",
        {"backbone": TIMM_BACKBONE, "weights": "none"},
        classifier={"name": "logistic"},
    )
    folder = cnnlab.run(config, output_dir=tmp_path / "runs", quiet=True).folder
    result = runner.invoke(app, ["explain", str(folder)])
    assert result.exit_code == 2
    assert "features run" in result.output and "no gradient reaches the image" in result.output


def test_an_unreadable_image_is_listed_and_the_others_explained(cnn_run, corner_root, tmp_path):
    images = two_images(tmp_path / "new", corner_root)[:1]
    broken = tmp_path / "new" / "notes.png"
    broken.write_text("not a picture", encoding="utf-8")
    result = cnnlab.explain_run(cnn_run, [*images, broken], out=tmp_path / "out")
    assert [Path(item.image).name for item in result.items] == ["red_000.png"]
    assert [Path(path).name for path, _ in result.skipped] == ["notes.png"]
    assert result.lines()[0].startswith(f"skipped {broken}: ")
