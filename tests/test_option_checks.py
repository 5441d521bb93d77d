"""A wrong option stops `cnnlab run` while the file is read: exit 2, the dotted key named, no
traceback, no data read and no run folder left behind.

One case (at least) per check that also lived in a runtime dataclass (ModernParams, KerasParams,
DecodeOptions) or in the normalisation, which refused values only after the data had loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

import cnnlab.data.pipeline
from cnnlab.cli import app

DATA = "data: {source: SOURCE}\n"  # SOURCE: a small real image folder
MODEL = "model: {layers: [Flatten, {Dense: {units: 2, activation: softmax}}]}\n"
BACKBONE = "model: {backbone: vgg16, weights: none}\n"

CASES = {
    "crop_low_above_high": (
        DATA + "augment: {random_resized_crop: [0.9, 0.1]}\n" + MODEL,
        "augment.random_resized_crop: [0.9, 0.1]: low must not exceed high, e.g. [0.08, 1.0]",
    ),
    "randaugment_magnitude": (  # was ModernParams's
        DATA + "augment: {randaugment: [2, 31]}\n" + MODEL,
        "augment.randaugment: [2, 31]: the magnitude (second value) runs from 0 to 30",
    ),
    "two_policies": (  # was ModernParams's
        DATA + "augment: {randaugment: [2, 9], trivialaugment: true}\n" + MODEL,
        "augment.trivialaugment: randaugment is set too",
    ),
    "fill_mode": (  # was KerasParams's
        DATA + "augment: {fill_mode: mirror}\n" + MODEL,
        "augment.fill_mode: 'mirror' is not allowed (constant, nearest, reflect, wrap)",
    ),
    "target_size": (  # was DecodeOptions's
        "data: {source: SOURCE, target_size: [0, 8]}\n" + MODEL,
        "data.target_size.0: must be greater than 0",
    ),
    "backbone_rescale": (  # was augment/normalize.py's, after the data and the backbone loaded
        DATA + "augment: {rescale: 0.5}\n" + BACKBONE,
        "augment.rescale: 0.5, but a backbone takes images scaled to 0..1",
    ),
    "backbone_featurewise": (
        DATA + "augment: {featurewise_center: true}\n" + BACKBONE,
        "augment.featurewise_center: a backbone normalises by its weights' mean/std",
    ),
    "features_run_rescale": (  # a features run normalises through the same code
        DATA + "augment: {rescale: 0.5}\n" + BACKBONE + "classifier: {name: logistic}\n",
        "augment.rescale: a features run sees each image once",
    ),
}


@pytest.fixture
def no_data_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading the data (load_data scans and decodes through examine) fails the test loudly."""

    def examine(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data were read before the options were checked")

    monkeypatch.setattr(cnnlab.data.pipeline, "examine", examine)


def run(text: str, tmp_path: Path, make_classes) -> tuple[Result, Path]:
    source = make_classes(tmp_path / "data", {"a": 4, "b": 4}, size=(8, 8))  # real, readable
    config = tmp_path / "bad.yaml"
    config.write_text(text.replace("SOURCE", str(source)), encoding="utf-8")
    runs = tmp_path / "runs"
    return CliRunner().invoke(app, ["run", str(config), "--output", str(runs)]), runs


def test_the_guard_catches_a_run_that_reads_its_data(tmp_path, make_classes, no_data_read):
    result, _ = run(DATA + MODEL, tmp_path, make_classes)  # a valid file goes on to the data
    assert isinstance(result.exception, AssertionError)


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_option_stops_the_run_before_any_data_is_read(
    case: str, tmp_path: Path, make_classes, no_data_read
) -> None:
    text, expected = CASES[case]

    result, runs = run(text, tmp_path, make_classes)

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a user error, not a crash
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())  # no run folder left behind
