"""The experiment files users copy from: examples/ and the README's block must stay valid."""

import re
from pathlib import Path

import pytest

from cnnlab.config_io import load_experiment, read_yaml
from cnnlab.models import model_from_config
from cnnlab.runs.skeleton import data_config

ROOT = Path(__file__).resolve().parents[1]
# sweep files search a space (`space:`; tests/sweep/test_spec.py checks them); study files name
# their base experiment (`experiment:`); the rest are experiments
SWEEPS = sorted(p for p in (ROOT / "examples").glob("*.yaml") if "space" in read_yaml(p))
STUDIES = sorted(
    p
    for p in (ROOT / "examples").glob("*.yaml")
    if "experiment" in read_yaml(p) and p not in SWEEPS
)
EXAMPLES = sorted(set((ROOT / "examples").glob("*.yaml")) - set(STUDIES) - set(SWEEPS))


def test_there_is_an_example_per_from_scratch_report_model():
    names = {load_experiment(path).model.name for path in EXAMPLES}
    assert {"carlosnet", "ivannet", "s2_cnn", "basenet", "catsdogs_cnn"} <= names


def test_there_is_a_features_example_with_an_svm():
    classifiers = {path.name: load_experiment(path).classifier for path in EXAMPLES}
    assert classifiers["s2_features_svm.yaml"].name == "svm"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_its_model_builds_for_its_input(path):
    experiment = load_experiment(path)
    model = experiment.model
    if model.from_run is not None:  # that run's files build it, when the example runs
        assert experiment.classifier is not None
        return
    if model.backbone is not None:  # the architecture only: no weights file is read
        model = model.model_copy(update={"weights": "none"})
        experiment = experiment.model_copy(update={"model": model})
    height, width = data_config(experiment).target_size  # a backbone's own size when unset
    channels = 1 if experiment.data.color_mode == "grayscale" else 3
    if experiment.task == "reconstruction":  # the network takes the degraded images
        from cnnlab.runs.reconstruction import network_input

        height, width, channels = network_input(experiment, (height, width, channels))
    # A layer list or head of the file's own fixes its outputs; registered models follow the data.
    classes = None if (model.layers or model.head) else 4
    model_from_config(model, (height, width, channels), classes)


def test_readme_experiment_block_is_a_valid_experiment(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## The experiment file\s+```yaml\n(.*?)```", readme, re.S).group(1)
    config = tmp_path / "readme.yaml"
    config.write_text(block, encoding="utf-8")
    assert load_experiment(config).model.name == "carlosnet"


def test_there_is_a_study_example_per_seed_comparison():
    assert {p.name for p in STUDIES} >= {"s1_study.yaml", "s2_optimizers.yaml", "s3_ladder.yaml"}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_example_expands_into_valid_runs(path):
    from cnnlab.study.ladder import check_steps
    from cnnlab.study.spec import load_study

    study = load_study(path)
    if study.is_ladder:
        check_steps(study)
        return
    runs = [planned for cell in study.cells() for planned in study.plan(cell)]  # validated
    assert len(runs) == len(study.cells()) * len(study.spec.seeds) > 1
