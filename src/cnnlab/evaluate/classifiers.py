"""scikit-learn classifiers on extracted features: S2's hybrid CNN's top.

Every classifier is a Pipeline behind a StandardScaler (fitted on the training split, so the
SVMs' RBF distances and the penalties weigh every feature alike) and gives probabilities: the
SVMs by Platt scaling fitted on out-of-fold decision values (CalibratedClassifierCV with
ensemble=False, scikit-learn's replacement for SVC(probability=True), deprecated in 1.9), so
the log-loss, top-k and per-class numbers mean what they mean for a trained network.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.pipeline import Pipeline

from cnnlab.config import ClassifierConfig
from cnnlab.errors import ConfigError

CALIBRATION_FOLDS = 5  # Platt scaling of the SVMs: fitted on 5-fold out-of-fold scores


def make_classifier(
    cfg: ClassifierConfig, seed: int, labels: np.ndarray, classes: list[str]
) -> Pipeline:
    """Standardised features (fitted on the training split) into the chosen classifier."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    model: ClassifierMixin
    if cfg.name == "logistic":
        model = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=seed)
    elif cfg.name == "knn":
        if cfg.k > len(labels):
            raise ConfigError(
                f"classifier.k: {cfg.k} neighbours, but the training split has {len(labels)} "
                "images; lower classifier.k"
            )
        model = KNeighborsClassifier(n_neighbors=cfg.k)
    else:  # an SVM; probabilities by Platt scaling, fitted on out-of-fold decision values
        svm = (
            SVC(C=cfg.C, gamma=cfg.gamma, random_state=seed)
            if cfg.name == "svm"
            else LinearSVC(C=cfg.C, max_iter=cfg.max_iter, random_state=seed)
        )
        folds = min(CALIBRATION_FOLDS, _fewest(labels, classes, cfg.name))
        model = CalibratedClassifierCV(svm, method="sigmoid", cv=folds, ensemble=False)
    return Pipeline([("standardscaler", StandardScaler()), (cfg.name, model)])


def _fewest(labels: np.ndarray, classes: list[str], name: str) -> int:
    """The smallest training class; calibration's cross-validation needs 2 images in each."""
    counts = np.bincount(labels, minlength=len(classes))
    smallest = int(counts.argmin())
    if counts[smallest] < 2:
        raise ConfigError(
            f"classifier.name: {name} calibrates its probabilities by cross-validation, which "
            f"needs 2 training images per class, but {classes[smallest]!r} has "
            f"{counts[smallest]}; add images, or use logistic or knn"
        )
    return int(counts[smallest])


def describe(cfg: ClassifierConfig) -> str:
    """One line for the model summary: what the features go into."""
    knobs = {
        "logistic": f"LogisticRegression(C={cfg.C:g}, max_iter={cfg.max_iter})",
        "linear_svm": f"LinearSVC(C={cfg.C:g}, max_iter={cfg.max_iter}), Platt-scaled",
        "svm": f"SVC(kernel='rbf', C={cfg.C:g}, gamma={cfg.gamma!r}), Platt-scaled",
        "knn": f"KNeighborsClassifier(n_neighbors={cfg.k})",
    }
    return f"StandardScaler -> {knobs[cfg.name]} (scikit-learn)"


def fit(classifier: Pipeline, features: np.ndarray, labels: np.ndarray) -> list[str]:
    """Fit; the warnings scikit-learn gave (e.g. a solver that did not converge), once each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier.fit(features, labels)
    return list(dict.fromkeys(str(w.message).strip().splitlines()[0] for w in caught))


def probabilities_of(classifier: Pipeline, features: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, classes) float64 probabilities; a class the training split lacked gets 0."""
    found = classifier.predict_proba(features)
    full = np.zeros((len(features), num_classes), dtype=np.float64)
    full[:, classifier.classes_] = found
    # float32 features give float32 sums a few 1e-8 from 1, which log_loss warns about
    return full / full.sum(axis=1, keepdims=True)


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the true class: a network's cross-entropy."""
    from sklearn.metrics import log_loss as sklearn_log_loss

    return float(sklearn_log_loss(labels, probabilities, labels=range(probabilities.shape[1])))


def classifier_manifest(cfg: ClassifierConfig, classifier: Pipeline) -> dict[str, Any]:
    """The settings and every scikit-learn parameter of the fitted classifier."""
    final = classifier[-1]
    inner = getattr(final, "estimator", None)  # the SVM inside its calibration
    shown = inner if inner is not None else final
    return {
        "name": cfg.name,
        "estimator": type(shown).__name__,
        "params": {k: _plain(v) for k, v in shown.get_params(deep=False).items()},
        "probabilities": "Platt scaling, out-of-fold" if inner is not None else "predict_proba",
        "standardized": True,
    }


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
