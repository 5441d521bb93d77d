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


# --- ROC AUC, average precision, calibration ------------------------------------------------


def _random_split(classes: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(size) % classes  # every class present
    logits = rng.normal(size=(size, classes)) + 1.5 * np.eye(classes)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probabilities


@pytest.mark.parametrize("classes", [3, 12])
def test_roc_auc_and_average_precision_equal_scikit_learns_one_vs_rest(classes):
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.preprocessing import label_binarize

    labels, probabilities = _random_split(classes, 240, seed=classes)
    names = [f"c{k}" for k in range(classes)]
    metrics = split_metrics(labels, probabilities, names, 0.0, 5)
    indicator = label_binarize(labels, classes=list(range(classes)))
    assert metrics["roc_auc"]["macro"] == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    )
    assert metrics["average_precision"]["macro"] == pytest.approx(
        average_precision_score(indicator, probabilities, average="macro")
    )
    per_class_ap = average_precision_score(indicator, probabilities, average=None)
    for k, name in enumerate(names):
        assert metrics["roc_auc"]["per_class"][name] == pytest.approx(
            roc_auc_score(labels == k, probabilities[:, k])
        )
        assert metrics["average_precision"]["per_class"][name] == pytest.approx(per_class_ap[k])
    assert metrics["roc_auc"]["undefined"] == metrics["average_precision"]["undefined"] == []


def test_two_classes_give_scikit_learns_binary_roc_auc_for_both():
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    positive = np.array([0.1, 0.8, 0.35, 0.4, 0.9, 0.2, 0.7, 0.6])
    probabilities = np.stack([1 - positive, positive], axis=1)
    metrics = split_metrics(labels, probabilities, ["cat", "dog"], 0.0, 1)
    binary = roc_auc_score(labels, positive)
    assert binary == pytest.approx(13 / 16)  # 13 of the 16 (dog, cat) pairs ranked right
    assert metrics["roc_auc"]["per_class"] == {"cat": pytest.approx(binary), "dog": binary}
    assert metrics["average_precision"]["per_class"]["dog"] == pytest.approx(
        average_precision_score(labels, positive)
    )


def test_a_class_absent_from_the_split_has_no_auc_and_stays_out_of_the_macro_mean():
    labels = np.array([0, 0, 1, 1])  # no "c"
    probabilities = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1]])
    metrics = split_metrics(labels, probabilities, CLASSES, 0.0, 5)
    for key in ("roc_auc", "average_precision"):
        assert metrics[key]["undefined"] == ["c"]
        assert set(metrics[key]["per_class"]) == {"a", "b"}
        assert metrics[key]["macro"] == pytest.approx(
            np.mean(list(metrics[key]["per_class"].values()))
        )
    assert metrics["roc_auc"]["per_class"]["a"] == 1.0  # both a images above both b ones


def test_a_split_of_one_class_has_no_macro_auc():
    labels = np.array([1, 1])
    probabilities = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    metrics = split_metrics(labels, probabilities, CLASSES, 0.0, 5)
    assert metrics["roc_auc"] == {"macro": None, "per_class": {}, "undefined": CLASSES}
    assert metrics["average_precision"]["per_class"] == {"b": 1.0}


def test_expected_calibration_error_of_a_hand_made_example():
    # top-class confidence, right?: 0.9 yes, 0.9 no -> bin (13/15, 14/15]: accuracy 0.5,
    # confidence 0.9; 0.6 yes -> bin (8/15, 9/15]; 0.7 no -> bin (10/15, 11/15].
    # ECE = 2/4 * |0.5 - 0.9| + 1/4 * |1 - 0.6| + 1/4 * |0 - 0.7| = 0.2 + 0.1 + 0.175
    labels = np.array([0, 1, 2, 0])
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2]]
    )
    metrics = split_metrics(labels, probabilities, CLASSES, 0.0, 5)
    assert metrics["ece"] == pytest.approx(0.475)
    bins = metrics["calibration"]
    assert len(bins["bins"]) == 16 and bins["bins"][0] == 0.0 and bins["bins"][-1] == 1.0
    assert bins["count"] == [0] * 8 + [1, 0, 1, 0, 0, 2, 0]
    assert bins["accuracy"][13] == 0.5 and bins["confidence"][13] == pytest.approx(0.9)
    assert bins["accuracy"][8] == 1.0 and bins["accuracy"][10] == 0.0
    assert bins["accuracy"][0] is None and bins["confidence"][14] is None  # empty bins


def test_calibration_bins_agree_with_scikit_learns_calibration_curve():
    from sklearn.calibration import calibration_curve

    labels, probabilities = _random_split(4, 400, seed=7)
    bins = split_metrics(labels, probabilities, list("abcd"), 0.0, 5)["calibration"]
    correct = probabilities.argmax(1) == labels
    accuracy, confidence = calibration_curve(correct, probabilities.max(1), n_bins=15)
    assert [a for a in bins["accuracy"] if a is not None] == pytest.approx(accuracy)
    assert [c for c in bins["confidence"] if c is not None] == pytest.approx(confidence)
    assert sum(bins["count"]) == 400
