"""split_metrics on a hand-made example whose every number is worked out below."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.task.metrics import classification_metrics as split_metrics

CLASSES = ["a", "b", "c"]
LABELS = np.array([0, 0, 1, 1, 2, 2])
# predicted (argmax): a, b, b, b, c, a -> 4 of 6 right; the true class is in the top 2 for all
# but the last row (true c, top two a and b) -> top-2 accuracy 5/6.
PROBABILITIES = np.array(
    [
        [0.6, 0.3, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.7, 0.1],
        [0.15, 0.8, 0.05],
        [0.1, 0.2, 0.7],
        [0.5, 0.4, 0.1],
    ]
)


def test_accuracy_loss_and_confusion_matrix_of_a_hand_made_example():
    metrics = split_metrics(LABELS, PROBABILITIES, CLASSES, loss=0.42, top_k=5)
    assert metrics["loss"] == 0.42
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows: true class
    assert metrics["classes"] == CLASSES


def test_per_class_precision_recall_f1_and_support():
    per_class = split_metrics(LABELS, PROBABILITIES, CLASSES, 0.0, 5)["per_class"]
    expected = {
        "a": (1 / 2, 1 / 2, 1 / 2, 2),  # predicted a twice, once right
        "b": (2 / 3, 1.0, 0.8, 2),  # predicted b three times, twice right
        "c": (1.0, 1 / 2, 2 / 3, 2),
    }
    for name, (precision, recall, f1, support) in expected.items():
        assert per_class[name] == {
            "precision": pytest.approx(precision),
            "recall": pytest.approx(recall),
            "f1": pytest.approx(f1),
            "support": support,
        }


def test_macro_average_is_the_unweighted_mean_over_classes():
    macro = split_metrics(LABELS, PROBABILITIES, CLASSES, 0.0, 5)["macro_avg"]
    assert macro["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert macro["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert macro["f1"] == pytest.approx((1 / 2 + 0.8 + 2 / 3) / 3)
    assert macro["support"] == 6


def test_top_k_accuracy_only_when_there_are_more_classes_than_k():
    assert "top_2_accuracy" in split_metrics(LABELS, PROBABILITIES, CLASSES, 0.0, 2)
    assert split_metrics(LABELS, PROBABILITIES, CLASSES, 0.0, 2)["top_2_accuracy"] == (
        pytest.approx(5 / 6)
    )
    for k in (3, 5):
        assert not any(
            key.startswith("top_") for key in split_metrics(LABELS, PROBABILITIES, CLASSES, 0.0, k)
        )


def test_a_class_never_predicted_nor_present_gets_zeros_not_an_error():
    labels = np.array([0, 0, 1])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    metrics = split_metrics(labels, probabilities, CLASSES, 0.0, 5)
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["confusion_matrix"][2] == [0, 0, 0]
    assert metrics["accuracy"] == 1.0


def test_two_classes_with_top_1_give_top_1_equal_to_accuracy():
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    metrics = split_metrics(labels, probabilities, ["cat", "dog"], 0.0, 1)
    assert metrics["top_1_accuracy"] == metrics["accuracy"] == 0.5
