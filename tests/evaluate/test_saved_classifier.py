"""A features run's classifier kept as safetensors + JSON: loaded, it gives the fitted
scikit-learn pipeline's probabilities, for every kind, binary and multiclass, without pickle."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab import runfiles
from cnnlab.config import ClassifierConfig
from cnnlab.errors import ConfigError
from cnnlab.evaluate.classifiers import fit, make_classifier, probabilities_of
from cnnlab.evaluate.saved_classifier import (
    has_saved_classifier,
    load_classifier,
    save_classifier,
)

KINDS = ("logistic", "linear_svm", "svm", "knn")
# libsvm sums the RBF kernel in its own order, the saved SVM with BLAS: the last bits differ
TOLERANCE = {"svm": 1e-12}


def features(count: int, classes: int, seed: int, dims: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """float32 features (as extraction gives), classes overlapping enough to need calibration."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    centres = rng.normal(scale=1.5, size=(classes, dims))
    values = centres[labels] + rng.normal(size=(count, dims)) + 3.0  # off-centre: the scaler acts
    return values.astype(np.float32), labels


def fitted(kind: str, labels: np.ndarray, train: np.ndarray, classes: int, **knobs):
    cfg = ClassifierConfig(name=kind, **knobs)
    pipeline = make_classifier(cfg, 0, labels, [f"c{k}" for k in range(classes)])
    fit(pipeline, train, labels)
    return pipeline


def calibrated_svm(kind: str, cv: int, ensemble: bool):
    """make_classifier's SVM pipeline, with other calibration settings."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    svm = SVC(gamma=0.05, random_state=0) if kind == "svm" else LinearSVC(C=0.5, random_state=0)
    calibrated = CalibratedClassifierCV(svm, method="sigmoid", cv=cv, ensemble=ensemble)
    return Pipeline([("standardscaler", StandardScaler()), (kind, calibrated)])


def assert_same(kind: str, expected: np.ndarray, found: np.ndarray) -> None:
    assert found.shape == expected.shape and found.dtype == expected.dtype
    if kind in TOLERANCE:
        np.testing.assert_allclose(found, expected, rtol=0, atol=TOLERANCE[kind])
    else:
        np.testing.assert_array_equal(found, expected)  # bit for bit


@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("kind", KINDS)
def test_the_loaded_classifier_gives_the_fitted_pipelines_probabilities(tmp_path, kind, classes):
    train, labels = features(90, classes, seed=classes)
    test, _ = features(70, classes, seed=100 + classes)
    pipeline = fitted(kind, labels, train, classes)

    save_classifier(pipeline, tmp_path, kind, [f"c{k}" for k in range(classes)])
    loaded = load_classifier(tmp_path)

    assert loaded.kind == kind and loaded.n_features == train.shape[1]
    np.testing.assert_array_equal(loaded.classes_, pipeline.classes_)
    assert_same(kind, pipeline.predict_proba(test), loaded.predict_proba(test))
    assert_same(
        kind, probabilities_of(pipeline, test, classes), probabilities_of(loaded, test, classes)
    )
    assert_same(kind, pipeline.predict_proba(train), loaded.predict_proba(train))


@pytest.mark.parametrize("kind", KINDS)
def test_a_class_the_training_split_lacked_keeps_probability_zero(tmp_path, kind):
    train, labels = features(60, 3, seed=7)
    labels = np.where(labels == 1, 3, labels)  # classes 0, 2, 3 of four
    test, _ = features(20, 3, seed=8)
    if kind in ("svm", "linear_svm"):  # make_classifier asks for 2 images of every class
        pipeline = calibrated_svm(kind, cv=3, ensemble=False).fit(train, labels)
    else:
        pipeline = fitted(kind, labels, train, 4)

    save_classifier(pipeline, tmp_path, kind, ["a", "b", "c", "d"])
    loaded = load_classifier(tmp_path)

    expected = probabilities_of(pipeline, test, 4)
    assert_same(kind, expected, probabilities_of(loaded, test, 4))
    assert not expected[:, 1].any()
    info = json.loads((tmp_path / runfiles.CLASSIFIER_INFO).read_text(encoding="utf-8"))
    assert info["classes"] == [0, 2, 3] and info["class_names"] == ["a", "c", "d"]


@pytest.mark.parametrize("kind", ["svm", "linear_svm"])
@pytest.mark.parametrize("classes", [2, 4])
def test_an_ensemble_of_calibrated_classifiers_is_averaged_as_scikit_learn_does(
    tmp_path, kind, classes
):
    """ensemble=True keeps one SVM and its sigmoids per fold; the runs use ensemble=False."""
    train, labels = features(80, classes, seed=3)
    test, _ = features(40, classes, seed=4)
    pipeline = calibrated_svm(kind, cv=3, ensemble=True).fit(train, labels)
    assert len(pipeline[-1].calibrated_classifiers_) == 3

    save_classifier(pipeline, tmp_path, kind)
    loaded = load_classifier(tmp_path)

    assert_same(kind, pipeline.predict_proba(test), loaded.predict_proba(test))


@pytest.mark.parametrize(("kind", "knobs"), [("svm", {"gamma": 0.3, "C": 3.0}), ("knn", {"k": 1})])
def test_hyper_parameters_other_than_the_defaults_are_kept(tmp_path, kind, knobs):
    train, labels = features(60, 3, seed=11)
    test, _ = features(30, 3, seed=12)
    pipeline = fitted(kind, labels, train, 3, **knobs)

    save_classifier(pipeline, tmp_path, kind)

    assert_same(kind, pipeline.predict_proba(test), load_classifier(tmp_path).predict_proba(test))
    info = json.loads((tmp_path / runfiles.CLASSIFIER_INFO).read_text(encoding="utf-8"))
    if kind == "svm":
        assert info["kernel"] == {"name": "rbf", "gamma": 0.3} and info["params"]["C"] == 3.0
    else:
        assert info["params"]["n_neighbors"] == 1


def read_safetensors_header(path: Path) -> dict:
    """The format's own header: 8 bytes of length, then JSON; the rest is raw array bytes."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header.pop("__metadata__", None)
    return header


@pytest.mark.parametrize("kind", KINDS)
def test_the_files_are_safetensors_and_json_and_loading_unpickles_nothing(
    tmp_path, monkeypatch, kind
):
    train, labels = features(60, 3, seed=5)
    pipeline = fitted(kind, labels, train, 3)
    save_classifier(pipeline, tmp_path, kind, ["x", "y", "z"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        runfiles.CLASSIFIER_INFO,
        runfiles.CLASSIFIER,
    ]  # nothing else, and no temporary file left behind

    info = json.loads((tmp_path / runfiles.CLASSIFIER_INFO).read_text(encoding="utf-8"))
    assert info["format"] == "cnnlab-classifier" and info["version"] == 1
    assert info["kind"] == kind and info["classes"] == [0, 1, 2]
    assert info["class_names"] == ["x", "y", "z"] and info["n_features"] == 12
    assert info["sklearn_version"] and info["params"]
    header = read_safetensors_header(tmp_path / runfiles.CLASSIFIER)
    assert set(header) == set(info["tensors"])
    assert {"scaler.mean", "scaler.scale", "classes"} <= set(header)
    for name, described in info["tensors"].items():
        assert header[name]["shape"] == described["shape"]
        assert header[name]["dtype"] in {"F64", "F32", "I64"}

    def refuse(*_args, **_kwargs):
        raise AssertionError("loading a saved classifier must not unpickle")

    for module, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (torch, "load"),
        (np, "load"),
    ]:
        monkeypatch.setattr(module, name, refuse)
    loaded = load_classifier(tmp_path)
    assert loaded.predict_proba(train).shape == (60, 3)


def test_a_damaged_pair_of_files_is_a_config_error_naming_the_folder(tmp_path):
    train, labels = features(40, 2, seed=9)
    save_classifier(fitted("logistic", labels, train, 2), tmp_path, "logistic")
    info_path = tmp_path / runfiles.CLASSIFIER_INFO
    info = json.loads(info_path.read_text(encoding="utf-8"))

    info["tensors"]["logistic.coef"]["shape"] = [1, 99]
    info_path.write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"logistic\.coef is .*described as") as err:
        load_classifier(tmp_path)
    assert str(tmp_path) in str(err.value) and "rerun the experiment" in str(err.value)

    info_path.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_classifier(tmp_path)

    (tmp_path / runfiles.CLASSIFIER).write_bytes(b"not safetensors")
    info_path.write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_classifier(tmp_path)


def test_features_of_another_width_are_refused_and_absent_files_are_reported(tmp_path):
    assert not has_saved_classifier(tmp_path)
    train, labels = features(40, 3, seed=10)
    save_classifier(fitted("knn", labels, train, 3), tmp_path, "knn")
    assert has_saved_classifier(tmp_path)
    with pytest.raises(ConfigError, match="takes 12 features per image, got an array of shape"):
        load_classifier(tmp_path).predict_proba(np.zeros((2, 13), dtype=np.float32))
