"""Ensembles of finished runs (`cnnlab ensemble`): three real trained members, each wrong on a
different class, combined by vote, mean and stack into run folders that predict, evaluate and
compare read like any run; stacking never sees a test label; mismatched members are refused."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.config import Experiment
from cnnlab.config_io import validate
from cnnlab.data.pipeline import Data, Split, load_data
from cnnlab.errors import ConfigError
from cnnlab.evaluate.ensemble import vote_of
from cnnlab.runs.ensemble import ensemble_runs
from cnnlab.runs.ensemble_members import member_probabilities
from cnnlab.runs.evaluation import EvaluationSpec, evaluate_run
from cnnlab.runs.finished import FinishedRun

TRIO = ("a", "b", "c")  # conftest's blind-spot members: each wrong on a class of its own


@pytest.fixture(scope="module")
def members(tmp_path_factory, blind_spots, blind_spot_runs) -> dict[str, Path]:
    """a, b, c: the session's blind-spot members (val 2/3, test 2/3 each); noval: true
    labels, no val split, trained here."""
    root = tmp_path_factory.mktemp("ensemble")
    no_val = blind_spots.experiment(blind_spot_runs["data"], "carved", root)
    no_val["data"]["validation_split"] = 0.0
    no_val["train"] = {"epochs": 5, "batch_size": 10, "optimizer": {"name": "adam"}}
    no_val["output"] = {"dir": str(root / "runs"), "name": "noval"}
    before = torch.are_deterministic_algorithms_enabled()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CNNLAB_CACHE", str(root / "cache"))
            noval = cnnlab.run(validate(no_val, Experiment, "noval"), quiet=True).folder
    finally:
        torch.use_deterministic_algorithms(before)
    return {**{m: blind_spot_runs[m] for m in TRIO}, "noval": noval}


@pytest.fixture(scope="module")
def made(members, tmp_path_factory) -> dict[str, Any]:
    """vote, mean and stack ensembles of a, b and c, each made once: vote beside the members
    (the default folder), mean by the command line (its output kept), stack elsewhere."""
    out = tmp_path_factory.mktemp("ensembles")
    trio = [members[m] for m in TRIO]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(out / "cache"))
        vote = ensemble_runs(trio, "vote", quiet=True).folder
        command = ["ensemble", *map(str, trio), "--method", "mean", "--output", str(out)]
        mean = CliRunner().invoke(app, command)
        stack = ensemble_runs(trio, "stack", out_dir=out, quiet=True).folder
    return {"vote": vote, "mean": out / "ensemble-mean", "stack": stack, "cli": mean}


def metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def test_each_member_is_wrong_on_its_own_class_and_vote_and_stack_beat_every_one(members, made):
    accuracy = {m: metrics(members[m])["test"]["accuracy"] for m in TRIO}
    assert all(value <= 2 / 3 + 1e-9 for value in accuracy.values()), accuracy
    for method in ("vote", "stack"):
        combined = metrics(made[method])["test"]["accuracy"]
        assert combined > max(accuracy.values()) + 0.2, (method, combined, accuracy)
    manifest = json.loads((made["vote"] / "manifest.json").read_text())
    assert manifest["ensemble"]["method"] == "vote"
    assert {m["probabilities"]["test"] for m in manifest["ensemble"]["members"]} == {"read"}
    assert "majority vote" in manifest["ensemble"]["probabilities"]
    for name in ("config.yaml", "metrics.json", "predictions.csv", "report.html", "summary.txt"):
        assert (made["vote"] / name).is_file(), name
    assert (made["stack"] / "classifier.safetensors").is_file()
    assert not (made["vote"] / "classifier.safetensors").exists()
    page = (made["vote"] / "report.html").read_text(encoding="utf-8")
    assert "an ensemble has no network of its own" in page and "wrote no" not in page


def test_mean_averages_the_members_probabilities_image_by_image(members, made):
    def test_rows(folder: Path) -> dict[str, np.ndarray]:
        with (folder / "predictions.csv").open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
        columns = [c for c in rows[0] if c.startswith("p_")]
        return {row["path"]: np.array([float(row[c]) for c in columns]) for row in rows}

    each = [test_rows(members[m]) for m in TRIO]
    combined = test_rows(made["mean"])
    assert len(combined) == 18
    for path, probabilities in combined.items():
        np.testing.assert_allclose(probabilities, np.mean([e[path] for e in each], 0), atol=2e-6)


def test_vote_is_the_majority_and_a_tie_goes_to_the_higher_mean_probability():
    sure_a, sure_b, unsure_b = [0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.4, 0.6, 0.0]
    majority = vote_of([np.array([sure_a]), np.array([unsure_b]), np.array([unsure_b])])
    assert majority.argmax() == 1 and majority.sum() == pytest.approx(1.0)
    tie = vote_of([np.array([sure_a]), np.array([unsure_b])])  # one vote each: mean 0.65 / 0.35
    assert tie.argmax() == 0
    assert vote_of([np.array([sure_a]), np.array([sure_b])])[0, 0] == pytest.approx(1.5 / 3)


def test_stacking_fits_on_validation_labels_only_and_never_reads_test_labels(
    members, made, tmp_path, monkeypatch
):
    """The members' test labels scrambled in their predictions.csv, and the ensemble's own test
    labels scrambled as its data loads: the stacked test probabilities do not move."""
    import cnnlab.evaluate.classifiers as classifiers
    import cnnlab.runs.skeleton as skeleton

    trio = [members[m] for m in TRIO]
    plain = FinishedRun.open(made["stack"])

    copies = []
    for folder in trio:
        copy = Path(shutil.copytree(folder, tmp_path / "copies" / folder.name))
        with (copy / "predictions.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        test = [row for row in rows if row["split"] == "test"]
        for row, label in zip(test, [r["label"] for r in test][::-1], strict=True):
            row["label"] = label
        with (copy / "predictions.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        copies.append(copy)

    def scrambled(cfg, seed) -> Data:
        data = load_data(cfg, seed)
        test = data.splits["test"]
        data.splits["test"] = Split(
            "test", test.images, (test.labels + 1) % 3, test.paths, test.classes
        )
        return data

    fitted_on: list[np.ndarray] = []
    fit = classifiers.fit

    def watched(classifier, features, labels):
        fitted_on.append(np.asarray(labels))
        return fit(classifier, features, labels)

    monkeypatch.setattr(skeleton, "load_data", scrambled)
    monkeypatch.setattr(classifiers, "fit", watched)
    blind = ensemble_runs(copies, "stack", out_dir=tmp_path / "blind", quiet=True)

    val = load_data(plain.data_config(), 0).splits["val"]
    assert len(fitted_on) == 1 and np.array_equal(fitted_on[0], val.labels)
    assert blind.metrics["test"]["accuracy"] != plain.metrics["test"]["accuracy"]  # it took

    def stacked_test(folder: Path) -> list[list[str]]:
        with (folder / "predictions.csv").open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
        return [[row["path"], *(v for k, v in row.items() if k.startswith("p_"))] for row in rows]

    assert stacked_test(blind.folder) == stacked_test(made["stack"])


def test_stack_is_refused_without_a_validation_split_and_mean_then_combines_test(members, tmp_path):
    twin = Path(shutil.copytree(members["noval"], tmp_path / "twin"))
    with pytest.raises(ConfigError, match="stack fits its meta-classifier on the members' val"):
        ensemble_runs([members["noval"], twin], "stack", out_dir=tmp_path, quiet=True)
    assert not (tmp_path / "ensemble-stack").exists()  # nothing left behind
    result = ensemble_runs([members["noval"], twin], "mean", out_dir=tmp_path, quiet=True)
    assert list(result.metrics) == ["test"]
    assert result.metrics["test"]["accuracy"] == metrics(members["noval"])["test"]["accuracy"]


def test_members_evaluated_on_other_images_are_refused_naming_the_run_and_the_split(
    members, tmp_path
):
    with pytest.raises(ConfigError) as refused:
        ensemble_runs([members["a"], members["noval"]], "mean", out_dir=tmp_path, quiet=True)
    message = str(refused.value)
    assert str(members["noval"]) in message and "other val images" in message
    assert "split.csv differ" in message
    result = CliRunner().invoke(app, ["ensemble", str(members["a"]), str(members["noval"])])
    assert result.exit_code == 2 and "other val images" in result.output


def test_a_member_whose_predictions_are_gone_is_recomputed_to_the_same_probabilities(
    members, tmp_path
):
    run = FinishedRun.open(members["b"])
    copy = Path(shutil.copytree(members["b"], tmp_path / "b"))
    (copy / "predictions.csv").unlink()
    test = load_data(run.data_config(), run.config.seed).splits["test"]
    read, how = member_probabilities(run, test, torch.device("cpu"))
    again, how_again = member_probabilities(FinishedRun.open(copy), test, torch.device("cpu"))
    assert (how, how_again) == ("read", "recomputed")
    np.testing.assert_allclose(read, again, atol=1e-6)


def test_a_finished_ensemble_predicts_evaluates_and_compares_like_any_run(members, made, tmp_path):
    for method in ("vote", "stack"):
        ensemble = cnnlab.load_run(made[method])
        assert ensemble.kind == "ensemble" and ensemble.classes == ["blue", "green", "red"]
        with (made[method] / "predictions.csv").open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
        saved = np.array([[float(row[f"p_{c}"]) for c in ensemble.classes] for row in rows])
        # recomputed members against their 6 decimals in predictions.csv, through the stacker
        np.testing.assert_allclose(ensemble.predict_split("test"), saved, atol=1e-5)

    runner = CliRunner()
    stacked = made["stack"]
    images = [row["path"] for row in rows[:4]]
    predicted = runner.invoke(app, ["predict", str(stacked), *images, "--format", "json"])
    assert predicted.exit_code == 0, predicted.output
    answers = json.loads(predicted.output)["predictions"]
    assert [a["predicted"] for a in answers] == [row["predicted"] for row in rows[:4]]

    copy = Path(shutil.copytree(stacked, tmp_path / "stack"))
    evaluated = runner.invoke(app, ["evaluate", str(copy)])
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads((copy / "evaluations" / "test" / "metrics.json").read_text())
    assert again["accuracy"] == metrics(stacked)["test"]["accuracy"]
    shifted = evaluate_run(copy, EvaluationSpec(augment="s1"), report=False)
    assert shifted.record["images"] == 18 and 0.0 <= shifted.metrics["accuracy"] <= 1.0

    trio = [str(members[m]) for m in TRIO]
    compared = runner.invoke(app, ["compare", *trio, str(made["vote"])])
    assert compared.exit_code == 0, compared.output
    best = next(line for line in compared.output.splitlines() if "\u2605" in line)
    assert made["vote"].name in best and "vote ensemble of 3 runs" in best


def test_the_command_line_makes_an_ensemble_and_the_default_folder_is_beside_the_members(
    members, made
):
    result = made["cli"]
    assert result.exit_code == 0, result.output
    assert f"Run folder: {made['mean']}" in result.output
    assert "test accuracy: " in result.output and "Report: " in result.output
    assert made["vote"] == members["a"].parent / "ensemble-vote"
    config = (made["vote"] / "config.yaml").read_text()
    assert "method: vote" in config and str(members["c"]) in config
    bad = CliRunner().invoke(app, ["ensemble", str(members["a"]), "--method", "median"])
    assert bad.exit_code == 2 and "give mean, vote or stack" in bad.output


@pytest.mark.parametrize(
    ("ensemble", "extra", "message"),
    [
        ({"members": ["runs/a"]}, {}, "ensemble.members: .*at least 2"),
        ({"members": ["runs/a", "runs/a"]}, {}, "runs/a is given twice"),
        ({"members": ["runs/a", "runs/b"], "method": "median"}, {}, "ensemble.method"),
        ({"members": ["runs/a", "runs/b"]}, {"model": {"name": "carlosnet"}}, "no network of its"),
    ],
)
def test_an_ensemble_section_is_checked_with_the_key_that_is_wrong(ensemble, extra, message):
    raw = {"data": {"source": "digits"}, "ensemble": ensemble, **extra}
    with pytest.raises(ConfigError, match=message):
        validate(raw, Experiment, "ensemble.yaml")
