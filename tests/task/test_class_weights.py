"""train.class_weight: the training loss weighted as Keras's class_weight, evaluation unweighted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from typer.testing import CliRunner

from cnnlab.cli import app
from cnnlab.config import TrainConfig
from cnnlab.errors import ConfigError
from cnnlab.task.classification import Classification, class_weights

LOGITS = torch.tensor(
    [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0], [1.0, -2.0, 0.5], [0.0, 0.0, 3.0]]
)
LABELS = torch.tensor([0, 2, 1, 1, 2])
WEIGHTS = [2.0, 0.5, 1.0]  # {a: 2, b: 0.5}, c unnamed


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def keras_weighted_mean(per_sample: np.ndarray, labels: np.ndarray) -> float:
    """Keras 3: class_weight_to_sample_weights (the weight of each label), then the loss's
    sum_over_batch_size: sum(loss * weight) / batch size (keras/src/losses/loss.py)."""
    weights = np.asarray(WEIGHTS)[labels]
    return float((per_sample * weights).sum() / len(labels))


def test_class_weights_scale_each_samples_loss_and_divide_by_the_batch_size():
    logp = log_softmax(LOGITS.numpy().astype(np.float64))
    per_sample = -logp[np.arange(5), LABELS.numpy()]
    expected = keras_weighted_mean(per_sample, LABELS.numpy())
    task = Classification("softmax", 3, class_weights=WEIGHTS)
    assert task.loss(LOGITS, LABELS).item() == pytest.approx(expected, rel=1e-6)
    # not torch's weight= mean, which divides by the weights' sum instead
    torch_mean = float((per_sample * np.asarray(WEIGHTS)[LABELS.numpy()]).sum() / 6.5)
    assert task.loss(LOGITS, LABELS).item() != pytest.approx(torch_mean, rel=1e-3)


def test_label_smoothing_is_weighted_by_the_hard_label_as_keras():
    smoothing = 0.2
    logp = log_softmax(LOGITS.numpy().astype(np.float64))
    smoothed = np.eye(3)[LABELS.numpy()] * (1 - smoothing) + smoothing / 3  # Keras's targets
    per_sample = -(smoothed * logp).sum(1)
    expected = keras_weighted_mean(per_sample, LABELS.numpy())
    task = Classification("softmax", 3, label_smoothing=smoothing, class_weights=WEIGHTS)
    assert task.loss(LOGITS, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_sigmoid_head_weights_each_sample_by_its_label():
    logits = torch.tensor([[1.2], [-0.3], [0.4], [-2.0]])
    labels = torch.tensor([1, 0, 0, 1])
    z, y = logits.numpy()[:, 0].astype(np.float64), labels.numpy()
    p = 1 / (1 + np.exp(-z))
    per_sample = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    expected = float((per_sample * np.asarray([0.25, 3.0])[y]).sum() / 4)
    task = Classification("sigmoid", 1, class_weights=[0.25, 3.0])
    assert task.loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_mixup_targets_weight_each_sample_by_its_mix_of_classes():
    targets = torch.tensor(
        [[0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [0.0, 0.4, 0.6], [0, 1.0, 0], [0.5, 0, 0.5]]
    )
    logp = log_softmax(LOGITS.numpy().astype(np.float64))
    per_sample = -(targets.numpy() * logp).sum(1)
    mixed_weights = targets.numpy() @ np.asarray(WEIGHTS)  # e.g. 0.7 * 2 + 0.3 * 0.5 = 1.55
    expected = float((per_sample * mixed_weights).sum() / 5)
    task = Classification("softmax", 3, class_weights=WEIGHTS)
    assert task.loss(LOGITS, targets).item() == pytest.approx(expected, rel=1e-6)
    one_hot = torch.nn.functional.one_hot(LABELS, 3).float()  # a hard target: its class's weight
    assert task.loss(LOGITS, one_hot).item() == pytest.approx(task.loss(LOGITS, LABELS).item())


def test_evaluation_sums_stay_unweighted():
    weighted = Classification("softmax", 3, class_weights=WEIGHTS)
    plain = Classification("softmax", 3)
    summed = weighted.loss(LOGITS, LABELS, reduction="sum")
    assert summed.item() == pytest.approx(plain.loss(LOGITS, LABELS, reduction="sum").item())
    assert weighted.loss(LOGITS, LABELS).item() != pytest.approx(plain.loss(LOGITS, LABELS).item())


def test_balanced_weights_equal_scikit_learns():
    labels = np.array([0] * 30 + [1] * 6 + [2] * 12)
    ours = class_weights("balanced", ["a", "b", "c"], labels)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(ours, expected)
    assert ours == pytest.approx([48 / 90, 48 / 18, 48 / 36])  # n / (classes * count)


def test_named_weights_follow_class_order_and_unnamed_classes_weigh_one():
    weights = class_weights({"c": 4.0, "a": 0.5}, ["a", "b", "c"], np.array([0, 1, 2]))
    assert weights == [0.5, 1.0, 4.0]


def test_an_unknown_class_name_is_an_error_listing_the_classes():
    with pytest.raises(ConfigError, match=r"train.class_weight: 'dgos' is not a class; did you "):
        class_weights({"dgos": 2.0}, ["cats", "dogs"], np.array([0, 1]))
    with pytest.raises(ConfigError, match=r"classes: cats, dogs"):
        class_weights({"birds": 2.0}, ["cats", "dogs"], np.array([0, 1]))


def test_balanced_needs_every_class_in_the_training_split():
    with pytest.raises(ConfigError, match="no image of class dogs"):
        class_weights("balanced", ["cats", "dogs"], np.array([0, 0]))


def test_config_reads_numeric_class_names_and_refuses_bad_weights():
    assert TrainConfig(class_weight={0: 2, "1": 0.5}).class_weight == {"0": 2.0, "1": 0.5}
    assert TrainConfig(class_weight="balanced").class_weight == "balanced"
    for bad in ({}, "balance", {"a": -1.0}, {"a": "x"}, [1.0, 2.0]):
        with pytest.raises(ValueError, match="class"):
            TrainConfig(class_weight=bad)


def test_a_run_records_its_weights_and_refuses_an_unknown_class(tmp_path, digits_config):
    config = digits_config(
        tmp_path / "w.yaml",
        train={"epochs": 1, "batch_size": 64, "class_weight": {"3": 2.5}},
    )
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "runs" / "w" / "manifest.json").read_text())
    assert manifest["class_weight"] == {str(k): 2.5 if k == 3 else 1.0 for k in range(10)}
    wrong = digits_config(tmp_path / "x.yaml", train={"epochs": 1, "class_weight": {"11": 2}})
    result = CliRunner().invoke(app, ["run", str(wrong), "--output", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "train.class_weight: '11' is not a class" in result.output
    assert "classes: 0, 1, 2" in result.output
