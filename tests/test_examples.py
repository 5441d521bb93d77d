"""The experiment files users copy from: examples/ and the README's block must stay valid."""

import re
from pathlib import Path

import pytest

from cnnlab.config_io import load_experiment
from cnnlab.models import build_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_there_is_an_example_per_from_scratch_report_model():
    names = {load_experiment(path).model.name for path in EXAMPLES}
    assert {"carlosnet", "ivannet", "s2_cnn", "basenet", "catsdogs_cnn"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_its_model_builds_for_its_input(path):
    experiment = load_experiment(path)
    height, width = experiment.data.target_size
    channels = 1 if experiment.data.color_mode == "grayscale" else 3
    build_model(experiment.model.name, (height, width, channels), 4)


def test_readme_experiment_block_is_a_valid_experiment(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## The experiment file\s+```yaml\n(.*?)```", readme, re.S).group(1)
    config = tmp_path / "readme.yaml"
    config.write_text(block, encoding="utf-8")
    assert load_experiment(config).model.name == "carlosnet"
