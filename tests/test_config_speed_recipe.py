"""The speed recipe's keys: each mistake named by its dotted key, with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.config_io import load_experiment
from cnnlab.errors import ConfigError


def problem(tmp_path: Path, text: str) -> str:
    path = tmp_path / "experiment.yaml"
    path.write_text("data: {source: x}\n" + text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_experiment(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "train: {optimizer: {no_decay: [bias, batchnrom]}}",
            "train.optimizer.no_decay: 'batchnrom': not a kind of parameter; did you mean "
            "'batchnorm'? (bias, batchnorm, norm, or a glob over parameter names",
        ),
        (
            "train: {optimizer: {groups: [{params: [], lr_scale: 2}]}}",
            "train.optimizer.groups.0.params: give at least one selector, e.g. [batchnorm]",
        ),
        (
            "train: {optimizer: {groups: [{params: [norm], lr_scale: 0}]}}",
            "train.optimizer.groups.0.lr_scale: must be greater than 0",
        ),
        (
            "train: {optimizer: {groups: [{params: [norm], lr: 2}]}}",
            "train.optimizer.groups.0.lr: unknown key",
        ),
        (
            "train: {optimizer: {name: sgd, nesterov: true}}",
            "train.optimizer.nesterov: Nesterov momentum needs SGD with momentum > 0; set "
            "momentum, e.g. 0.9",
        ),
        (
            "train: {optimizer: {name: adam, nesterov: true}}",
            "train.optimizer.nesterov: Nesterov momentum needs SGD with momentum > 0; set "
            "name: sgd",
        ),
        (
            "train: {optimizer: {lookahead: {k: 0}}}",
            "train.optimizer.lookahead.k: must be greater than 0",
        ),
        (
            "train: {optimizer: {lookahead: {alpha: 1.5}}}",
            "train.optimizer.lookahead.alpha: must be less than or equal to 1",
        ),
        (
            "augment: {horizontal_flip: true, alternating_flip: true}",
            "augment.alternating_flip: horizontal_flip is set too (maybe by the preset)",
        ),
        (
            "augment: {preset: s0, alternating_flip: true}",
            "augment.alternating_flip: horizontal_flip is set too",
        ),
        (
            "evaluate: {tta: flip_trans}",
            "evaluate.tta: 'flip_trans': did you mean 'flip_translate'? (expected true, false, "
            "flip or flip_translate)",
        ),
        (
            "model: {backbone: vgg16, whiten_first_conv: true}",
            "model.whiten_first_conv: sets the first Conv2D of model.name or model.layers",
        ),
        (
            "model: {name: airbench, whiten_first_conv: {eps: 0}}",
            "model.whiten_first_conv.eps: must be greater than 0",
        ),
    ],
)
def test_speed_recipe_mistakes_name_the_key(tmp_path, text, expected):
    assert expected in problem(tmp_path, text + "\n")


def test_switches_take_true_for_the_papers_defaults(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(
        "data: {source: x}\nmodel: {name: airbench, whiten_first_conv: true}\n"
        "train: {optimizer: {lookahead: true}}\nevaluate: {tta: flip}\n",
        encoding="utf-8",
    )
    cfg = load_experiment(path)
    assert (cfg.train.optimizer.lookahead.k, cfg.train.optimizer.lookahead.alpha) == (5, 0.5)
    assert cfg.model.whiten_first_conv.images == 5000 and not cfg.model.whiten_first_conv.trainable
    assert cfg.evaluate.tta is True  # flip is the existing image + mirror


def test_a_features_run_refuses_the_alternating_flip(tmp_path):
    text = (
        "model: {backbone: vgg16}\nclassifier: {name: logistic}\n"
        "augment: {alternating_flip: true}\n"
    )
    assert "augment.alternating_flip: a features run sees each image once" in problem(
        tmp_path, text
    )
