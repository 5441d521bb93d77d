"""The exact count of trials, on an in-memory Optuna study (no runs): a trial numbered behind
the target is surplus, failed ones are replaced, and a worker waits while running trials of
others may still fail. And the sampler that leaves TPE's loop on an invalid corner."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from cnnlab.sweep import workers
from cnnlab.sweep.sampler import RandomAfterFailure
from cnnlab.sweep.workers import Plan, _go_on, _surplus, counts


def study_with(*states: TrialState) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    for state in states:
        value = 0.5 if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(state=state, value=value))
    return study


def plan(trials: int) -> Plan:
    return Plan(trials=trials, timeout=None, url="sqlite://", shared=False)


def test_a_trial_with_the_target_of_unfailed_trials_before_it_is_surplus():
    study = study_with(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    late = study.ask()  # number 3, behind 2 finished (the failed one does not count)
    assert not _surplus(study, late.number, 3)
    assert _surplus(study, late.number, 2)


def test_a_running_trial_numbered_before_counts_against_a_later_one():
    study = study_with(TrialState.COMPLETE)
    first, second = study.ask(), study.ask()  # two workers asked at the same moment
    assert not _surplus(study, first.number, 2)
    assert _surplus(study, second.number, 2)


def test_failed_trials_do_not_count_and_surplus_or_interrupted_are_no_failures():
    study = study_with(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for attr in ("surplus", "interrupted"):
        trial = study.ask()
        trial.set_user_attr(attr, True)
        study.tell(trial, state=TrialState.FAIL)
    study.ask()
    assert counts(study) == workers.Counts(finished=2, running=1, failed=1, streak=1)


def test_a_worker_stops_once_the_finished_trials_reach_the_target():
    study = study_with(TrialState.COMPLETE, TrialState.PRUNED)
    assert not _go_on(study, plan(2), None)
    assert _go_on(study, plan(3), None)


def test_a_worker_stops_after_a_streak_of_failures_or_past_its_deadline():
    streak = [TrialState.FAIL] * (workers.FAILURE_STREAK - 1)
    assert _go_on(study_with(*streak, TrialState.COMPLETE, *streak), plan(3), None)
    assert not _go_on(study_with(TrialState.COMPLETE, *streak, TrialState.FAIL), plan(3), None)
    assert not _go_on(study_with(), plan(3), time.monotonic() - 1)


def test_a_worker_waits_while_running_trials_decide_and_replaces_one_that_fails(monkeypatch):
    monkeypatch.setattr(workers, "POLL", 0.05)
    study = study_with(TrialState.COMPLETE)
    running = study.ask()  # another worker's trial: 1 finished + 1 running reach the target 2
    timer = threading.Timer(0.3, lambda: study.tell(running, state=TrialState.FAIL))
    timer.start()
    started = time.monotonic()
    assert _go_on(study, plan(2), None)  # it failed: a trial is still wanted
    assert time.monotonic() - started >= 0.25
    timer.join()


@pytest.mark.parametrize("outcome", [TrialState.COMPLETE, TrialState.PRUNED])
def test_a_worker_that_waited_stops_when_the_running_trial_finishes(monkeypatch, outcome):
    monkeypatch.setattr(workers, "POLL", 0.05)
    study = study_with(TrialState.COMPLETE)
    running = study.ask()
    value = 0.7 if outcome == TrialState.COMPLETE else None
    timer = threading.Timer(0.2, lambda: study.tell(running, value, state=outcome))
    timer.start()
    assert not _go_on(study, plan(2), None)
    timer.join()


class Counting(optuna.samplers.RandomSampler):
    def __init__(self, seed: int):
        super().__init__(seed=seed)
        self.trials: list[int] = []

    def sample_independent(self, study, trial, param_name, param_distribution):
        self.trials.append(trial.number)
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_the_trial_after_a_failed_one_is_drawn_by_the_fallback_sampler():
    main, fallback = Counting(seed=0), Counting(seed=1)
    study = optuna.create_study(sampler=RandomAfterFailure(main, fallback))

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number in (1, 2, 4):
            raise ValueError("an invalid combination")
        return x

    study.optimize(objective, n_trials=6, catch=(ValueError,))
    assert main.trials == [0, 1, 4]  # after 1 and 2 failed, 2 and 3 were random; after 4, 5
    assert fallback.trials == [2, 3, 5]
