"""K-fold cross-validation: folds disjoint, stratified, covering the training pool; one run per
fold; mean ± std over folds; a rerun skips finished folds."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.config import DataConfig
from cnnlab.data.pipeline import load_data
from cnnlab.errors import ConfigError

DIGITS = {"source": "digits", "color_mode": "grayscale", "test_split": 0.2}


def test_folds_are_disjoint_stratified_and_cover_the_training_pool():
    folds = [load_data(DataConfig(**DIGITS, folds=4, fold=k), seed=3) for k in range(4)]
    tests = {tuple(d.splits["test"].paths) for d in folds}
    assert len(tests) == 1  # the test split is the same for every fold
    vals = [set(d.splits["val"].paths) for d in folds]
    pool = set(folds[0].splits["train"].paths) | vals[0]
    assert set().union(*vals) == pool  # every training-pool image is validated once ...
    assert sum(len(v) for v in vals) == len(pool)  # ... and only once
    for data, val in zip(folds, vals, strict=True):
        assert not val & set(data.splits["train"].paths)
        assert set(data.splits["train"].paths) | val == pool
    counts = [Counter(d.splits["val"].labels.tolist()) for d in folds]
    for label in range(10):  # stratified: each class spread evenly over the folds
        per_fold = [c[label] for c in counts]
        assert max(per_fold) - min(per_fold) <= 1
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1


def test_the_same_seed_gives_the_same_folds_and_another_seed_others():
    first = load_data(DataConfig(**DIGITS, folds=3, fold=1), seed=0).splits["val"].paths
    again = load_data(DataConfig(**DIGITS, folds=3, fold=1), seed=0).splits["val"].paths
    other = load_data(DataConfig(**DIGITS, folds=3, fold=1), seed=1).splits["val"].paths
    assert first == again and first != other


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"folds": 3, "fold": 3}, "numbered 0 to 2"),
        ({"folds": 3, "validation_split": 0.2}, "remove data.validation_split"),
        ({"fold": 1}, "needs data.folds"),
    ],
)
def test_fold_mistakes_name_the_key(keys, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(source="digits", **keys)


def test_more_folds_than_a_class_has_images_is_refused(make_classes, tmp_path):
    source = make_classes(tmp_path / "few", {"cats": 2, "dogs": 5})
    with pytest.raises(ConfigError, match=r"class 'cats' has 2 distinct images.*3 folds"):
        load_data(DataConfig(source=str(source), folds=3), seed=0)


def test_kfold_runs_one_ordinary_run_per_fold_and_summarises_them(tmp_path, digits_config):
    config = digits_config(tmp_path / "digits.yaml", data=DIGITS)
    runner = CliRunner()
    command = ["kfold", str(config), "--folds", "3", "--output", str(tmp_path / "runs")]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "digits-kfold3"
    record = json.loads((folder / "kfold.json").read_text())
    accuracies = [
        json.loads((folder / f"fold{k}" / "metrics.json").read_text())["val"]["accuracy"]
        for k in range(3)
    ]
    assert record["summary"]["val"]["accuracy"]["values"] == accuracies
    assert record["summary"]["val"]["accuracy"]["mean"] == pytest.approx(sum(accuracies) / 3)
    assert "test" in record["summary"]
    saved = yaml.safe_load((folder / "fold2" / "config.yaml").read_text())
    assert (saved["data"]["folds"], saved["data"]["fold"]) == (3, 2)
    assert "| val | accuracy |" in result.output
    again = runner.invoke(app, command)
    assert again.exit_code == 0 and again.output.count("skipped") == 3
