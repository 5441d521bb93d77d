"""Several models' probabilities of the same images, combined into one model's.

    mean   the average of the members' probabilities
    vote   the majority of the members' predicted classes, a tie broken by the mean probability:
           reported as (votes + mean probability) / (members + 1), a distribution whose most
           probable class is the vote's winner (the votes are whole, the mean adds less than
           one), so accuracy, predictions.csv and the report read it like any probabilities
    stack  scikit-learn's LogisticRegression on the members' probabilities side by side
           (standardised), fitted on the validation split only: `fit_stack` takes no other

Inputs are lists of (N, classes) arrays, one per member, rows in the same image order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from cnnlab.config import ClassifierConfig

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

Method = Literal["mean", "vote", "stack"]
# the meta-classifier of stack: scikit-learn's defaults (C=1, L2), enough iterations to converge
STACKER = ClassifierConfig(name="logistic")


class Stacker(Protocol):
    """A fitted Pipeline, or the SavedClassifier it was kept as."""

    @property
    def classes_(self) -> np.ndarray: ...

    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


def mean_of(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack(probabilities), axis=0)


def vote_of(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """(votes + mean probability) / (members + 1): see the module's docstring."""
    stacked = np.stack(probabilities)  # (members, N, classes)
    members, count, _ = stacked.shape
    votes = np.zeros(stacked.shape[1:], dtype=np.float64)
    rows = np.arange(count)
    for member in stacked:
        votes[rows, member.argmax(axis=1)] += 1
    return (votes + stacked.mean(axis=0)) / (members + 1)


def stack_features(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """(N, members x classes): each member's probabilities, side by side, in member order."""
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in probabilities], axis=1)


def fit_stack(
    val_probabilities: Sequence[np.ndarray],
    val_labels: np.ndarray,
    classes: list[str],
    seed: int,
) -> tuple[Pipeline, list[str]]:
    """The meta-classifier, fitted on the members' validation probabilities and the validation
    labels (nothing else reaches it), and what scikit-learn warned about."""
    from cnnlab.evaluate.classifiers import fit, make_classifier

    classifier = make_classifier(STACKER, seed, val_labels, classes)
    return classifier, fit(classifier, stack_features(val_probabilities), val_labels)


def combine(
    method: Method,
    probabilities: Sequence[np.ndarray],
    stacker: Stacker | None = None,
) -> np.ndarray:
    """The ensemble's (N, classes) probabilities; stack needs its fitted meta-classifier."""
    if method == "mean":
        return mean_of(probabilities)
    if method == "vote":
        return vote_of(probabilities)
    if stacker is None:
        raise ValueError("stack: give the fitted meta-classifier")
    from cnnlab.evaluate.classifiers import probabilities_of

    count = probabilities[0].shape[1]
    return probabilities_of(stacker, stack_features(probabilities), count)
