"""A 20-trial sweep on scikit-learn's digits, end to end: two local worker processes sharing
the SQLite file, pruning, failed combinations, the report, ordinary run folders, and a rerun
that continues the same study."""

from __future__ import annotations

import json
import re

import optuna
import pytest
from optuna.trial import TrialState

import cnnlab
from cnnlab.sweep.runner import run_sweep

TRIALS = 20


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep run once with --workers 2: (its file, result, the study read back)."""
    from tests.sweep.conftest import write_sweep

    root = tmp_path_factory.mktemp("sweep")
    path = write_sweep(root, name="digits_lr", trials=TRIALS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNLAB_CACHE", str(root / "cache"))
        result = run_sweep(path, workers=2)
    storage = f"sqlite:///{result.folder}/optuna.db"
    return path, result, optuna.load_study(study_name="digits_lr", storage=storage)


def finished(study):
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_two_workers_finish_exactly_the_trials_asked_for(swept):
    _, result, study = swept
    assert result.problems == []
    assert len(finished(study)) == TRIALS
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    numbers = [t.number for t in study.trials]
    assert len(set(numbers)) == len(numbers)


def test_trials_falling_behind_are_pruned_and_their_runs_still_finish(swept):
    _, result, study = swept
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned and study.get_trials(states=(TrialState.COMPLETE,))
    for trial in pruned:
        run = cnnlab.load_run(result.folder / f"trial-{trial.number:04d}")
        manifest = run.manifest
        assert manifest["epochs_run"] == len(trial.intermediate_values) < 3
        assert manifest["stop_reason"].startswith("pruned by the sweep (median pruner)")
        assert run.metrics["val"]["accuracy"] == pytest.approx(trial.user_attrs["value"])


def test_an_invalid_combination_fails_its_trial_with_the_message_and_no_folder(swept):
    _, result, study = swept
    failed = study.get_trials(states=(TrialState.FAIL,))
    # nesterov without momentum: about one random trial in four draws it; each is replaced
    assert any("Nesterov momentum needs SGD" in t.user_attrs["error"] for t in failed)
    for trial in failed:
        if not trial.user_attrs.get("surplus"):
            assert not (result.folder / f"trial-{trial.number:04d}").exists()


def test_each_finished_trial_is_an_ordinary_run_folder_present_once(swept):
    _, result, study = swept
    folders = sorted(p.name for p in result.folder.glob("trial-*") if p.is_dir())
    assert folders == sorted(f"trial-{t.number:04d}" for t in finished(study))
    best = study.best_trial
    run = cnnlab.load_run(result.folder / f"trial-{best.number:04d}")
    assert run.metrics["val"]["accuracy"] == pytest.approx(best.value)
    assert run.config.train.optimizer.lr == pytest.approx(best.params["train.optimizer.lr"])
    assert result.best["number"] == best.number


def test_sweep_json_holds_the_storages_numbers(swept):
    _, result, study = swept
    found = json.loads((result.folder / "sweep.json").read_text(encoding="utf-8"))
    assert found["counts"]["finished"] == TRIALS
    assert found["counts"]["pruned"] == len(study.get_trials(states=(TrialState.PRUNED,)))
    assert found["best"]["value"] == pytest.approx(study.best_value)
    assert found["direction"] == "maximize" and found["metric"] == "val_accuracy"
    assert [t["number"] for t in found["trials"]] == [t.number for t in study.trials]
    assert set(found["importances"]) == set(study.best_params)
    assert sum(found["importances"].values()) == pytest.approx(1.0)


def test_sweep_html_has_its_sections_and_is_self_contained(swept):
    _, result, study = swept
    page = (result.folder / "sweep.html").read_text(encoding="utf-8")
    for section in ("best", "history", "curves", "importances", "parallel", "trials"):
        assert f'<section id="{section}">' in page
    assert page.count('src="data:image/png;base64,') == 4  # every figure drawn and embedded
    assert "<script" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    best = f"trial-{study.best_trial.number:04d}/report.html"
    assert f'href="{best}"' in page and (result.folder / best).is_file()
    pruned = len(study.get_trials(states=(TrialState.PRUNED,)))
    assert page.count('<td class="left PRUNED">pruned</td>') == pruned


def test_a_rerun_continues_the_study_to_the_new_target(swept, monkeypatch, tmp_path):
    path, _, _ = swept
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    again = run_sweep(path, trials=TRIALS + 1)  # one worker, in this process
    study = optuna.load_study(study_name="digits_lr", storage=f"sqlite:///{again.folder}/optuna.db")
    assert len(finished(study)) == TRIALS + 1
    assert again.counts["finished"] == TRIALS + 1
