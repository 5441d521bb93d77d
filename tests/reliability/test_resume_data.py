"""M1: `--resume` continues only on the data the run began with. Images deleted, added or
rewritten, a class added: exit 2 saying what changed, before any file of the run is rewritten
(not 46 of 48 images silently, not a size-mismatch traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.conftest import TINY_DIGITS_NET
from tests.runs.test_trained import assert_user_error, run_cli

RECORD = ("config.yaml", "health.json", "split.csv", "normalization.json", "summary.txt")
NET = [*TINY_DIGITS_NET[:-1], {"Dense": {"units": 2, "activation": "softmax"}}]


@pytest.fixture
def begun(tmp_path, make_classes) -> tuple[Path, Path, Path]:
    """(images, config, run folder): a 2-epoch run on 2 classes of 24 images, finished, so
    `--resume --set train.epochs=3` continues it from its checkpoint."""
    images = make_classes(tmp_path / "images", {"cats": 24, "dogs": 24})
    config = tmp_path / "pets.yaml"
    raw = {
        "seed": 0,
        "data": {"source": str(images), "validation_split": 0.25},
        "model": {"layers": NET},
        "train": {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adam"}},
        "output": {"dir": str(tmp_path / "runs")},
        "report": {"interpret": False},
    }
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert run_cli("run", str(config)).exit_code == 0
    return images, config, tmp_path / "runs" / "pets"


def resumed(config: Path):
    return run_cli("run", str(config), "--resume", "--set", "train.epochs=3")


def assert_refused_rewriting_nothing(folder: Path, config: Path, *needles: str) -> None:
    before = {name: (folder / name).read_bytes() for name in RECORD}
    checkpoint = (folder / "checkpoints" / "last.pt").read_bytes()
    result = resumed(config)
    assert_user_error(result, "--resume: the data of", "changed since the run began", *needles)
    assert "restore it, or start a new run" in result.stderr
    assert {name: (folder / name).read_bytes() for name in RECORD} == before
    assert (folder / "checkpoints" / "last.pt").read_bytes() == checkpoint


def test_two_deleted_images_are_named(begun):
    images, config, folder = begun
    for name in ("cats_000.png", "cats_001.png"):
        (images / "cats" / name).unlink()
    gone = f"2 images of split.csv are gone: {images}/cats/cats_000.png, {images}/cats/cats_001.png"
    assert_refused_rewriting_nothing(folder, config, gone)


def test_an_added_class_is_named_not_a_size_mismatch(begun, write_image):
    images, config, folder = begun
    for k in range(6):
        write_image(images / "birds" / f"bird_{k}.png", seed=1000 + k)
    assert_refused_rewriting_nothing(folder, config, "class 'birds' was added (6 images)")


def test_a_rewritten_and_an_added_image_are_named(begun, write_image):
    images, config, folder = begun
    write_image(images / "dogs" / "dogs_003.png", seed=5000)  # other pixels, the same name
    write_image(images / "dogs" / "dogs_new.png", seed=5001)
    assert_refused_rewriting_nothing(
        folder,
        config,
        f"1 image is rewritten: {images}/dogs/dogs_003.png",
        f"1 image is new: {images}/dogs/dogs_new.png",
    )


def test_the_same_data_resumes(begun):
    _, config, folder = begun
    result = resumed(config)
    assert result.exit_code == 0, result.output
    assert "Epoch 3/3" in result.output
    assert (folder / "history.csv").read_text(encoding="utf-8").count("\n") == 1 + 3
