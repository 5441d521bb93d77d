"""Running a study's runs: each an ordinary `cnnlab.run` into its own folder, so a study that
stops (Ctrl+C, SIGKILL, a power cut) reruns where it was:

- a finished run (metrics.json written) is skipped, its files untouched;
- an interrupted one (a checkpoint, no metrics) resumes from its last complete epoch;
- one stopped before its first epoch ended holds only its data files and starts again.

A run that fails is recorded with its error and the others go on. `jobs` > 1 runs that many at
once in separate processes (spawned: CUDA and threads survive no fork), each with its share of
the CPU threads; several small models share one GPU this way.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from cnnlab import runfiles, track
from cnnlab.atomic import write_text
from cnnlab.config import Experiment
from cnnlab.config_io import read_yaml, validate
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.runs.folder import resume_differences
from cnnlab.study.spec import Planned

State = Literal["new", "finished", "interrupted"]
Status = Literal["finished", "skipped", "resumed", "failed"]


@dataclass(frozen=True)
class Outcome:
    planned: Planned
    status: Status  # skipped: finished before this invocation
    seconds: float = 0.0
    error: str | None = None  # the message (a user error) or the exception's last line (a bug)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def state_of(planned: Planned) -> State:
    """Where a run stands, refusing a folder that holds another experiment than the study now
    describes (the study file changed): its results would be mislabelled."""
    folder = planned.folder
    saved_path = folder / runfiles.CONFIG
    if not saved_path.is_file():
        return "new"
    saved = validate(read_yaml(saved_path), Experiment, str(saved_path))
    changed = resume_differences(saved, planned.experiment)
    if saved.train.epochs != planned.experiment.train.epochs:
        changed.append("train.epochs")
    if saved.evaluate != planned.experiment.evaluate:
        changed.append("evaluate")
    if changed:
        raise ConfigError(
            f"{folder} was run with other settings than the study now gives its cell "
            f"({', '.join(sorted(changed))}); give the study another name, or delete that "
            "folder to run it again"
        )
    if (folder / runfiles.METRICS).is_file():
        return "finished"
    if (folder / runfiles.CHECKPOINT).is_file():
        return "interrupted"
    return "new"


def execute(
    runs: Sequence[Planned],
    jobs: int = 1,
    report: Callable[[Outcome, int, int], None] = lambda *_: None,
) -> list[Outcome]:
    """Every planned run, finished or failed; `report(outcome, done, total)` after each."""
    states = {planned.folder: state_of(planned) for planned in runs}  # all checked up front
    outcomes: dict[Path, Outcome] = {}
    todo = []
    for planned in runs:
        if states[planned.folder] == "finished":
            outcomes[planned.folder] = Outcome(planned, "skipped")
            report(outcomes[planned.folder], len(outcomes), len(runs))
        else:
            todo.append(planned)
    if jobs <= 1 or len(todo) <= 1:
        for planned in todo:
            outcomes[planned.folder] = run_one(planned, states[planned.folder])
            report(outcomes[planned.folder], len(outcomes), len(runs))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=get_context("spawn"),
            initializer=_worker_threads,
            initargs=(threads,),
        ) as pool:
            futures = {pool.submit(_run_in_worker, _portable(p), states[p.folder]): p for p in todo}
            for future in as_completed(futures):
                planned = futures[future]
                status, seconds, error = future.result()
                outcomes[planned.folder] = Outcome(planned, status, seconds, error)
                report(outcomes[planned.folder], len(outcomes), len(runs))
    return [outcomes[planned.folder] for planned in runs]


def run_one(planned: Planned, state: State) -> Outcome:
    """One run, in this process; its error (user error or bug) is kept, not raised."""
    from cnnlab.runs import run

    clock = time.perf_counter()
    resume = state == "interrupted"
    if state == "new" and planned.folder.exists():
        shutil.rmtree(planned.folder)  # a start that never finished an epoch: data files only
    try:
        with track.child(cell=planned.cell, seed=planned.seed):  # tags of a tracked study's run
            run(planned.experiment, planned.folder, resume=resume, quiet=True)
    except CnnlabError as err:
        return Outcome(planned, "failed", time.perf_counter() - clock, str(err))
    except Exception as err:  # a bug or an out-of-memory: keep the trace beside the run
        trace = planned.folder.parent / f"{planned.folder.name}.error.txt"
        trace.parent.mkdir(parents=True, exist_ok=True)
        write_text(trace, traceback.format_exc())
        message = f"{type(err).__name__}: {err} (traceback: {trace})"
        return Outcome(planned, "failed", time.perf_counter() - clock, message)
    status: Status = "resumed" if resume else "finished"
    return Outcome(planned, status, time.perf_counter() - clock)


# --- worker processes --------------------------------------------------------------------------


def _portable(planned: Planned) -> dict[str, Any]:
    return {
        "cell": planned.cell,
        "seed": planned.seed,
        "folder": str(planned.folder),
        "experiment": planned.experiment.model_dump(mode="json"),
        "tracking_parent": track.current(),  # the study's MLflow run, for the worker's runs
    }


def _worker_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(portable: dict[str, Any], state: State) -> tuple[Status, float, str | None]:
    experiment = Experiment.model_validate(portable["experiment"])
    planned = Planned(portable["cell"], portable["seed"], Path(portable["folder"]), experiment)
    with track.within(portable["tracking_parent"]):
        outcome = run_one(planned, state)
    return outcome.status, outcome.seconds, outcome.error
