"""A features run's fitted classifier, kept as plain arrays and JSON: no pickle.

scikit-learn saves a model by pickling it, and a pickle runs code when it is loaded; so the run
keeps what the fitted Pipeline (StandardScaler -> classifier, cnnlab.evaluate.classifiers)
computes with instead:

- `classifier.safetensors`: the arrays (tensors only, nothing executable), dtypes as fitted;
- `classifier.json`: what they are (kind, hyper-parameters, classes, scikit-learn version,
  the name, dtype and shape of every array).

Loading computes the probabilities from the arrays with numpy, step by step as scikit-learn
does (the scaler, decision functions, the one-vs-one to one-vs-rest transform of SVC, Platt's
sigmoid per class, the calibrator's normalisation and its mean over calibrated classifiers,
logistic's softmax), so it needs no private attribute of scikit-learn at load time (saving
reads a few: SVC's _gamma, the kNN's _fit_X and _y, checked by the tests) and gives
the fitted pipeline's probabilities: bit for bit for logistic, linear_svm and knn, to about
1e-15 for svm (its RBF kernel is summed by BLAS here, by libsvm there). kNN refits a
KNeighborsClassifier on the saved (standardised) training features: a kNN's fit only stores
them, so that is the same classifier.

Arrays (`N`: calibrated classifier N, one with ensemble=False):

    scaler.mean, scaler.scale                   (D,) float64
    classes                                     (K,) int64: the label indices it knows
    logistic.coef, logistic.intercept           (K or 1, D), (K or 1,)
    calibrated.N.coef, calibrated.N.intercept   linear_svm: (K or 1, D), (K or 1,)
    calibrated.N.support_vectors                svm: (S, D) float64
    calibrated.N.dual_coef                      svm: (classes - 1, S), SVC's public dual_coef_
    calibrated.N.intercept                      svm: (pairs,), SVC's public intercept_
    calibrated.N.n_support                      svm: (classes,) support vectors per class
    calibrated.N.estimator_classes              the SVM's classes_ (a fold may lack one)
    calibrated.N.calibrated_classes             the calibrator's classes (all it gives)
    calibrated.N.platt_a, calibrated.N.platt_b  one sigmoid per decision column: p = 1 / (1 +
                                                exp(a * f + b))
    calibrated.N.columns                        the probability column each sigmoid fills
    knn.train_features, knn.train_labels        (N, D) standardised, (N,) int64 label indices
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cnnlab import runfiles
from cnnlab.atomic import atomic_path
from cnnlab.errors import ConfigError

FORMAT = "cnnlab-classifier"
VERSION = 1
KINDS = ("logistic", "linear_svm", "svm", "knn")
ESTIMATORS = {
    "logistic": "LogisticRegression",
    "linear_svm": "LinearSVC",
    "svm": "SVC",
    "knn": "KNeighborsClassifier",
}
# SVC rows of support vectors x samples per kernel block: bounds the kernel's memory (32 MB)
KERNEL_BLOCK = 1 << 22

Arrays = dict[str, np.ndarray]


# --- saving ------------------------------------------------------------------------------------


def save_classifier(
    classifier: Any, folder: Path, kind: str, class_names: Sequence[str] = ()
) -> None:
    """classifier.safetensors and classifier.json of a fitted Pipeline, in `folder`, each
    written atomically (the JSON last: it names every array the other must hold)."""
    from safetensors.numpy import save_file

    tensors, info = to_arrays(classifier, kind, class_names)
    with atomic_path(folder / runfiles.CLASSIFIER) as temp:
        save_file(tensors, str(temp))
    runfiles.write_json(folder / runfiles.CLASSIFIER_INFO, info)


def to_arrays(
    classifier: Any, kind: str, class_names: Sequence[str] = ()
) -> tuple[Arrays, dict[str, Any]]:
    """The arrays and the description of a fitted StandardScaler -> `kind` Pipeline."""
    import sklearn

    if kind not in KINDS:
        raise ValueError(f"unknown classifier kind {kind!r}; one of {', '.join(KINDS)}")
    steps = list(getattr(classifier, "steps", []))
    if len(steps) != 2:
        raise ValueError("expected a fitted Pipeline of StandardScaler and one classifier")
    scaler, final = steps[0][1], steps[1][1]
    if type(scaler).__name__ != "StandardScaler" or not (scaler.with_mean and scaler.with_std):
        raise ValueError(f"expected a StandardScaler with mean and std first, got {scaler!r}")
    classes = np.asarray(classifier.classes_)
    if classes.dtype.kind not in "iu":
        raise ValueError(f"expected integer label indices as classes, got {classes.dtype}")
    tensors: Arrays = {
        "scaler.mean": np.asarray(scaler.mean_),
        "scaler.scale": np.asarray(scaler.scale_),
        "classes": classes.astype(np.int64),
    }
    info: dict[str, Any] = {}
    if kind == "logistic":
        _expect(final, "LogisticRegression")
        tensors |= _linear("logistic", final)
        info["probabilities"] = "softmax of the decision values (binary: their sigmoid)"
        shown = final
    elif kind == "knn":
        _expect(final, "KNeighborsClassifier")
        tensors |= _knn(final)
        info["probabilities"] = "the share of each class among the k nearest training images"
        shown = final
    else:
        _expect(final, "CalibratedClassifierCV")
        if final.method != "sigmoid":
            raise ValueError(f"only Platt (sigmoid) calibration is kept, not {final.method!r}")
        calibrated = final.calibrated_classifiers_
        for n, one in enumerate(calibrated):
            tensors |= _calibrated(f"calibrated.{n}", one, kind)
        shown = calibrated[0].estimator
        info["probabilities"] = (
            "Platt scaling (a sigmoid per class of the decision values, fitted out-of-fold), "
            "normalised, averaged over the calibrated classifiers"
        )
        info["calibration"] = {
            "method": "sigmoid",
            "ensemble": bool(final.ensemble) if final.ensemble != "auto" else "auto",
            "cv": final.cv if isinstance(final.cv, int) else repr(final.cv),
            "calibrated_classifiers": len(calibrated),
        }
        if kind == "svm":
            info["kernel"] = {"name": "rbf", "gamma": float(shown._gamma)}
    tensors = {name: np.ascontiguousarray(array) for name, array in tensors.items()}
    labels = [int(c) for c in classes]
    info = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "estimator": type(shown).__name__,
        "params": {k: _plain(v) for k, v in shown.get_params(deep=False).items()},
        "pipeline": ["StandardScaler", type(final).__name__],
        "classes": labels,
        "class_names": [str(class_names[c]) for c in labels] if class_names else [],
        "n_features": int(tensors["scaler.mean"].shape[0]),
        "sklearn_version": sklearn.__version__,
        **info,
        "tensors": {
            name: {"dtype": str(array.dtype), "shape": list(array.shape)}
            for name, array in tensors.items()
        },
    }
    return tensors, info


def _expect(estimator: Any, name: str) -> None:
    if type(estimator).__name__ != name:
        raise ValueError(f"expected a fitted {name}, got {type(estimator).__name__}")


def _linear(prefix: str, estimator: Any) -> Arrays:
    coef = np.asarray(estimator.coef_)
    intercept = np.broadcast_to(np.asarray(estimator.intercept_, dtype=coef.dtype), coef.shape[:1])
    return {f"{prefix}.coef": coef, f"{prefix}.intercept": intercept}


def _knn(knn: Any) -> Arrays:
    if knn.weights not in ("uniform", "distance") or callable(knn.metric) or knn.metric_params:
        raise ValueError("only uniform or distance weights and a named metric are kept for knn")
    labels = np.asarray(knn.classes_)[np.asarray(knn._y)]  # _y: indices into classes_
    return {"knn.train_features": np.asarray(knn._fit_X), "knn.train_labels": labels}


def _calibrated(prefix: str, one: Any, kind: str) -> Arrays:
    """One calibrated classifier: its SVM and one Platt sigmoid per decision column."""
    from sklearn.preprocessing import LabelEncoder

    svm = one.estimator
    if kind == "svm":
        _expect(svm, "SVC")
        if svm.kernel != "rbf" or svm.decision_function_shape != "ovr":
            raise ValueError("only an RBF SVC with one-vs-rest decision values is kept")
        arrays: Arrays = {
            f"{prefix}.support_vectors": np.asarray(svm.support_vectors_, dtype=np.float64),
            f"{prefix}.dual_coef": np.asarray(svm.dual_coef_, dtype=np.float64),
            f"{prefix}.intercept": np.asarray(svm.intercept_, dtype=np.float64),
            f"{prefix}.n_support": np.asarray(svm.n_support_, dtype=np.int64),
        }
    else:
        _expect(svm, "LinearSVC")
        arrays = _linear(prefix, svm)
    for calibrator in one.calibrators:
        _expect(calibrator, "_SigmoidCalibration")
    # as _CalibratedClassifier.predict_proba places each calibrator's probabilities
    everything = np.asarray(one.classes)
    positions = LabelEncoder().fit(everything).transform(svm.classes_)
    columns = [
        int(position) + (1 if len(everything) == 2 else 0)
        for position, _ in zip(positions, one.calibrators, strict=False)
    ]
    return arrays | {
        f"{prefix}.estimator_classes": np.asarray(svm.classes_, dtype=np.int64),
        f"{prefix}.platt_a": np.array([c.a_ for c in one.calibrators], dtype=np.float64),
        f"{prefix}.platt_b": np.array([c.b_ for c in one.calibrators], dtype=np.float64),
        f"{prefix}.columns": np.array(columns, dtype=np.int64),
        f"{prefix}.calibrated_classes": everything.astype(np.int64),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


# --- loading -----------------------------------------------------------------------------------


def has_saved_classifier(folder: Path) -> bool:
    return all(
        (folder / name).is_file() for name in (runfiles.CLASSIFIER, runfiles.CLASSIFIER_INFO)
    )


def load_classifier(folder: Path) -> SavedClassifier:
    """The classifier `save_classifier` kept in `folder`; a damaged pair of files is a
    ConfigError naming them."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    info_path, tensors_path = folder / runfiles.CLASSIFIER_INFO, folder / runfiles.CLASSIFIER
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{info_path}: not readable JSON ({err})") from None
    try:
        tensors = load_file(str(tensors_path))
    except (OSError, SafetensorError) as err:
        raise ConfigError(f"{tensors_path}: not a readable safetensors file ({err})") from None
    try:
        return from_arrays(tensors, info)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(
            f"{folder}: {runfiles.CLASSIFIER} and {runfiles.CLASSIFIER_INFO} do not describe a "
            f"saved classifier ({err}); rerun the experiment to save it again"
        ) from None


def from_arrays(tensors: Arrays, info: dict[str, Any]) -> SavedClassifier:
    """The classifier of `to_arrays`'s arrays and description, checked against each other."""
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} description")
    if info.get("version") != VERSION:
        raise ValueError(f"format version {info.get('version')!r}, this cnnlab reads {VERSION}")
    described = info["tensors"]
    if set(described) != set(tensors):
        raise ValueError(f"arrays {sorted(tensors)}, but the description names {sorted(described)}")
    for name, array in tensors.items():
        expected = (described[name]["dtype"], list(described[name]["shape"]))
        if (str(array.dtype), list(array.shape)) != expected:
            found = (str(array.dtype), list(array.shape))
            raise ValueError(f"{name} is {found}, described as {expected}")
    kind = info["kind"]
    classes = tensors["classes"]
    if [int(c) for c in classes] != list(info["classes"]):
        raise ValueError("the classes of the arrays and of the description differ")
    scaler = Scaler(tensors["scaler.mean"], tensors["scaler.scale"])
    top: Top
    if kind == "logistic":
        top = Logistic(Linear(tensors["logistic.coef"], tensors["logistic.intercept"]))
    elif kind == "knn":
        top = Neighbours(
            tensors["knn.train_features"], tensors["knn.train_labels"], dict(info["params"])
        )
    elif kind in ("svm", "linear_svm"):
        count = int(info["calibration"]["calibrated_classifiers"])
        gamma = float(info["kernel"]["gamma"]) if kind == "svm" else 0.0
        top = Calibrated(
            [_calibrated_from(tensors, f"calibrated.{n}", kind, gamma) for n in range(count)],
            len(classes),
        )
    else:
        raise ValueError(f"unknown classifier kind {kind!r}")
    return SavedClassifier(kind, classes, scaler, top, info)


def _calibrated_from(tensors: Arrays, prefix: str, kind: str, gamma: float) -> PlattScaled:
    decision: Decision
    if kind == "svm":
        decision = KernelSVM(
            tensors[f"{prefix}.support_vectors"],
            tensors[f"{prefix}.dual_coef"],
            tensors[f"{prefix}.intercept"],
            tensors[f"{prefix}.n_support"],
            gamma,
        )
    else:
        decision = Linear(tensors[f"{prefix}.coef"], tensors[f"{prefix}.intercept"])
    return PlattScaled(
        decision,
        tensors[f"{prefix}.platt_a"],
        tensors[f"{prefix}.platt_b"],
        tensors[f"{prefix}.columns"],
        len(tensors[f"{prefix}.calibrated_classes"]),
    )


# --- the computation, as scikit-learn's -------------------------------------------------------


class Top(Protocol):
    def probabilities(self, scaled: np.ndarray) -> np.ndarray: ...


class Decision(Protocol):
    def __call__(self, scaled: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Scaler:
    mean: np.ndarray
    scale: np.ndarray

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """StandardScaler.transform: float inputs keep their dtype, in which it computes."""
        x = np.asarray(features)
        dtype = x.dtype if x.dtype in (np.float64, np.float32, np.float16) else np.float64
        x = np.array(x, dtype=dtype, copy=True)
        x -= self.mean.astype(x.dtype)
        x /= self.scale.astype(x.dtype)
        return x


@dataclass(frozen=True)
class Linear:
    """LinearClassifierMixin.decision_function: X @ coef.T + intercept, one column if binary."""

    coef: np.ndarray
    intercept: np.ndarray

    def __call__(self, scaled: np.ndarray) -> np.ndarray:
        scores = scaled @ self.coef.T + self.intercept
        return scores.reshape(-1) if scores.shape[1] == 1 else scores


@dataclass(frozen=True)
class Logistic:
    """LogisticRegression.predict_proba."""

    linear: Linear

    def probabilities(self, scaled: np.ndarray) -> np.ndarray:
        scores = self.linear(scaled)
        if scores.ndim == 1:  # LogisticRegression._predict_proba_lr
            positive = _expit(scores, out=scores)
            return np.stack([1 - positive, positive], axis=1)
        scores -= scores.max(axis=1).reshape(-1, 1)  # sklearn.utils.extmath.softmax
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1).reshape(-1, 1)
        return scores


@dataclass(frozen=True)
class KernelSVM:
    """SVC.decision_function with the RBF kernel: libsvm's one-vs-one values (public dual
    coefficients and intercepts, so binary needs no sign flip), one-vs-rest when multiclass."""

    support_vectors: np.ndarray
    dual_coef: np.ndarray
    intercept: np.ndarray
    n_support: np.ndarray
    gamma: float

    def kernel(self, x: np.ndarray) -> np.ndarray:
        sv = self.support_vectors
        sv_norms = np.einsum("ij,ij->i", sv, sv)
        rows = max(1, KERNEL_BLOCK // max(1, len(sv)))
        blocks = []
        for start in range(0, len(x), rows):
            part = x[start : start + rows]
            squared = np.einsum("ij,ij->i", part, part)[:, None] + sv_norms[None, :]
            squared -= 2.0 * (part @ sv.T)
            np.maximum(squared, 0.0, out=squared)
            blocks.append(np.exp(-self.gamma * squared))
        return np.concatenate(blocks) if blocks else np.zeros((0, len(sv)))

    def __call__(self, scaled: np.ndarray) -> np.ndarray:
        x = np.asarray(scaled, dtype=np.float64)
        kernel = self.kernel(x)
        classes = len(self.n_support)
        starts = np.concatenate([[0], np.cumsum(self.n_support)])
        pairs = []
        for i in range(classes):
            for j in range(i + 1, classes):
                of_i, of_j = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
                pairs.append(
                    kernel[:, of_i] @ self.dual_coef[j - 1, of_i]
                    + kernel[:, of_j] @ self.dual_coef[i, of_j]
                )
        dec = np.stack(pairs, axis=1) + self.intercept
        if classes == 2:
            return dec.reshape(-1)
        return _ovr_decision(dec < 0, -dec, classes)


def _expit(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """scipy's logistic sigmoid, which scikit-learn uses (numpy's 1 / (1 + exp(-x)) may differ
    in the last bit); scipy is imported on first use, as scikit-learn is."""
    from scipy.special import expit  # type: ignore[import-untyped]

    return np.asarray(expit(x, out=out) if out is not None else expit(x))


def _ovr_decision(predictions: np.ndarray, confidences: np.ndarray, classes: int) -> np.ndarray:
    """sklearn.utils.multiclass._ovr_decision_function: votes plus confidences in (-1/3, 1/3)."""
    votes = np.zeros((len(predictions), classes))
    sums = np.zeros((len(predictions), classes))
    k = 0
    for i in range(classes):
        for j in range(i + 1, classes):
            sums[:, i] -= confidences[:, k]
            sums[:, j] += confidences[:, k]
            votes[predictions[:, k] == 0, i] += 1
            votes[predictions[:, k] == 1, j] += 1
            k += 1
    return votes + sums / (3 * (np.abs(sums) + 1))


@dataclass(frozen=True)
class PlattScaled:
    """_CalibratedClassifier.predict_proba with sigmoid calibrators."""

    decision: Decision
    a: np.ndarray
    b: np.ndarray
    columns: np.ndarray
    classes: int

    def probabilities(self, scaled: np.ndarray) -> np.ndarray:
        values = self.decision(scaled)
        if values.ndim == 1:
            values = values.reshape(-1, 1)
        proba = np.zeros((len(scaled), self.classes))
        for column, a, b, value in zip(self.columns, self.a, self.b, values.T, strict=False):
            proba[:, column] = _expit(-(a * value + b))
        if self.classes == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
        else:
            denominator = np.sum(proba, axis=1)[:, np.newaxis]
            uniform = np.full_like(proba, 1 / self.classes)
            proba = np.divide(proba, denominator, out=uniform, where=denominator != 0)
        proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
        return proba


@dataclass(frozen=True)
class Calibrated:
    """CalibratedClassifierCV.predict_proba: the mean of its calibrated classifiers'."""

    calibrated: list[PlattScaled]
    classes: int

    def probabilities(self, scaled: np.ndarray) -> np.ndarray:
        mean = np.zeros((len(scaled), self.classes))
        for one in self.calibrated:
            mean += one.probabilities(scaled)
        mean /= len(self.calibrated)
        return mean


class Neighbours:
    """KNeighborsClassifier, fitted again on the saved features: its fit only stores them."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, params: dict[str, Any]):
        from sklearn.neighbors import KNeighborsClassifier

        self.knn = KNeighborsClassifier(**params).fit(features, labels)

    def probabilities(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(self.knn.predict_proba(scaled))


@dataclass(frozen=True)
class SavedClassifier:
    """A loaded classifier: the fitted Pipeline's `classes_` and `predict_proba`, from arrays."""

    kind: str
    classes_: np.ndarray  # the label indices it knows, as the Pipeline's classes_
    scaler: Scaler
    top: Top
    info: dict[str, Any]

    @property
    def n_features(self) -> int:
        return int(self.scaler.mean.shape[0])

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ConfigError(
                f"the saved {self.kind} classifier takes {self.n_features} features per image, "
                f"got an array of shape {list(x.shape)}"
            )
        return self.top.probabilities(self.scaler(x))
