"""The workers of a sweep: each runs trials until the study holds exactly `trials` finished
(complete + pruned) ones, however many workers, processes or machines share its storage.

Not Optuna's MaxTrialsCallback: it is checked when a trial ends, so K workers that each start
one more trial at the last moment finish up to K - 1 too many. Here instead:
- before each trial a worker waits while finished + running trials reach the target (a running
  one may still fail, and is then replaced), and stops once the finished ones do;
- a trial's number is its place in the storage's creation order (Optuna numbers trials under a
  lock on the study row), so a trial that finds `trials` unfailed trials numbered before it
  was started by two workers at the same moment: it ends at once, FAIL with the user attribute
  `surplus`, having run nothing.
At most `trials` can finish, and the workers go on until they have, replacing failed trials;
FAILURE_STREAK failures in a row (the space or the experiment wrong for nearly every trial)
stop them.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

from rich.console import Console

from cnnlab import track
from cnnlab.errors import CnnlabError
from cnnlab.sweep.spec import Sweep
from cnnlab.sweep.storage import (
    open_storage,
    optuna_module,
    pruner_for,
    quiet_optuna,
    sampler_for,
)
from cnnlab.sweep.trial import TrialFailed, run_trial

if TYPE_CHECKING:
    from cnnlab.track import Parent

POLL = 2.0  # seconds between looks at the storage while other workers' trials decide the count
# Trials failed in a row (by number) that stop a sweep: TPE learns nothing from a failed trial,
# so a space invalid almost everywhere would otherwise sample it for ever; an invalid corner of
# it (a fraction of the trials) only costs their validation, and they are replaced
FAILURE_STREAK = 10


class Surplus(Exception):
    """A trial started when the study already had its trials (two workers at once)."""


@dataclass(frozen=True)
class Plan:
    trials: int  # finished trials the study must hold
    timeout: float | None  # seconds: no trial starts after them
    url: str  # the storage
    shared: bool  # --storage given: other invocations, on other machines too, may join
    # tracking.mlflow: the sweep's MLflow run, each trial's run nested under it (None: untracked)
    tracking: Parent | None = None


@dataclass(frozen=True)
class Counts:
    finished: int  # complete + pruned
    running: int
    failed: int  # failed runs; surplus and interrupted trials are not failures of the sweep
    streak: int = 0  # of those, how many the last ended trials were, in a row


def counts(study: Any) -> Counts:
    states = optuna_module().trial.TrialState
    finished = running = failed = streak = 0
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if trial.state in (states.COMPLETE, states.PRUNED):
            finished, streak = finished + 1, 0
        elif trial.state in (states.RUNNING, states.WAITING):
            running += 1
        elif not (trial.user_attrs.get("surplus") or trial.user_attrs.get("interrupted")):
            failed, streak = failed + 1, streak + 1
    return Counts(finished, running, failed, streak)


def work(sweep: Sweep, plan: Plan, worker: int = 0, console: Console | None = None) -> None:
    """Trials in this process until the study has its trials, the time is up, or trials keep
    failing."""
    with quiet_optuna():
        _work(sweep, plan, worker, console or Console(soft_wrap=True))


def _work(sweep: Sweep, plan: Plan, worker: int, console: Console) -> None:
    optuna = optuna_module()
    deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
    storage = open_storage(plan.url)
    before = len(storage.get_all_trials(storage.get_study_id_from_name(sweep.name)))
    study = optuna.load_study(
        study_name=sweep.name,
        storage=storage,
        sampler=sampler_for(sweep, worker, before, plan.shared),
        pruner=pruner_for(sweep),
    )

    def objective(trial: Any) -> float:
        if _surplus(study, trial.number, plan.trials):
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("error", f"not run: the study had its {plan.trials} trials")
            raise Surplus
        return run_trial(sweep, trial, console)

    def after_trial(study: Any, _trial: Any) -> None:
        if not _go_on(study, plan, deadline):
            study.stop()

    if _go_on(study, plan, deadline):
        study.optimize(
            objective,
            timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
            callbacks=[after_trial],
            catch=(TrialFailed, Surplus),
        )


def _go_on(study: Any, plan: Plan, deadline: float | None) -> bool:
    """Whether this worker starts another trial; waits while running trials decide it."""
    optuna = optuna_module()
    while True:
        now = counts(study)
        if now.finished >= plan.trials or now.streak >= FAILURE_STREAK:
            return False
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if now.finished + now.running < plan.trials:
            return True
        time.sleep(POLL)
        with warnings.catch_warnings():  # a killed worker's trial, silent past GRACE, fails
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def _surplus(study: Any, number: int, trials: int) -> bool:
    states = optuna_module().trial.TrialState
    ahead = sum(
        1 for t in study.get_trials(deepcopy=False) if t.number < number and t.state != states.FAIL
    )
    return ahead >= trials


# --- several local workers ------------------------------------------------------------------


def run_workers(sweep: Sweep, plan: Plan, workers: int, console: Console) -> list[str]:
    """`workers` processes (spawned: CUDA and threads survive no fork), each with its share of
    the CPU threads; one runs in this process. Returns what went wrong with any of them."""
    if workers <= 1:
        work(sweep, plan, 0, console)
        return []
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = get_context("spawn")
    processes = [
        context.Process(target=_child, args=(sweep, plan, k, threads), name=f"sweep-worker-{k}")
        for k in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        _stop(processes)
        raise
    return [
        f"worker {k} exited with code {p.exitcode} (its messages are above)"
        for k, p in enumerate(processes)
        if p.exitcode != 0
    ]


def _child(sweep: Sweep, plan: Plan, worker: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        with track.within(plan.tracking):
            work(sweep, plan, worker, Console(soft_wrap=True))
    except CnnlabError as err:  # as the command prints it: the message, no trace
        Console(stderr=True).print(f"error: worker {worker}: {err}", highlight=False, markup=False)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C reaches every worker: its trial is recorded, no trace
        raise SystemExit(130) from None


def _stop(processes: list[Any]) -> None:
    """After Ctrl-C: the workers (which got it too, from a terminal) finish recording their
    trials; one interrupted by other means is passed the interrupt; none is left behind."""
    time.sleep(1.0)
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(timeout=60)
        if process.is_alive():
            process.terminate()
            process.join()
