"""run_sweep: the order of it all. Check the sweep file, open (or make) its study in the
storage, run the workers until the study holds its trials, then write sweep.json and
sweep.html from what the storage holds, after Ctrl-C too.

Run it again to continue: the study is found in the storage (by name) and the workers go on
until it holds `trials` finished trials; a study that already has them only gets its report
written again. Several invocations (on several machines) with one `--storage` share the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from cnnlab import track
from cnnlab.config import MlflowConfig
from cnnlab.runfiles import write_json
from cnnlab.sweep.collect import SWEEP_JSON, collect
from cnnlab.sweep.figures import figures
from cnnlab.sweep.page import write_sweep_html
from cnnlab.sweep.spec import DB_FILE, Sweep, load_sweep
from cnnlab.sweep.storage import (
    create_or_check,
    open_storage,
    optuna_module,
    quiet_optuna,
    refuse_orphans,
    shown,
)
from cnnlab.sweep.workers import FAILURE_STREAK, Plan, counts, run_workers


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: the report is written; the same command continues it."""

    def __init__(self, folder: Path, finished: int, wanted: int):
        super().__init__(f"{folder}: interrupted with {finished} of {wanted} trials finished")
        self.folder, self.finished, self.wanted = folder, finished, wanted


@dataclass
class SweepResult:
    folder: Path
    files: list[Path]
    best: dict[str, Any] | None  # the best trial's row of sweep.json
    counts: dict[str, int]
    problems: list[str] = field(default_factory=list)  # workers that died, trials that kept failing


def run_sweep(
    path: str | Path,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int | None = None,
    storage: str | None = None,
    console: Console | None = None,
) -> SweepResult:
    """The sweep in `path`; `trials`, `timeout` and `workers` override the file's; `storage`
    (an SQLAlchemy URL) instead of the SQLite file in the sweep folder."""
    optuna_module()  # the extra is there, before anything is checked or written
    with quiet_optuna():
        return _run_sweep(
            path, trials, timeout, workers, storage, console or Console(soft_wrap=True)
        )


def _run_sweep(
    path: str | Path,
    trials: int | None,
    timeout: float | None,
    workers: int | None,
    storage: str | None,
    console: Console,
) -> SweepResult:
    sweep = load_sweep(path)
    plan = Plan(
        trials=trials or sweep.spec.trials,
        timeout=timeout if timeout is not None else sweep.spec.timeout,
        url=storage or sweep.default_storage,
        shared=storage is not None,
    )
    if storage is None:  # the SQLite file lives in the sweep folder
        if not (sweep.folder / DB_FILE).is_file():
            refuse_orphans(sweep)
        sweep.folder.mkdir(parents=True, exist_ok=True)
    study = create_or_check(sweep, open_storage(plan.url))
    sweep.folder.mkdir(parents=True, exist_ok=True)
    before = counts(study)
    console.print(
        f"Sweep {sweep.name}: {before.finished} of {plan.trials} trials finished; storage "
        f"{shown(plan.url)}; trials in {sweep.folder}",
        highlight=False,
        markup=False,
    )
    # tracking.mlflow: one MLflow run for the sweep, each trial's run nested under it
    with track.parent(_tracking(sweep), sweep.name, sweep.folder, console, kind="sweep") as run:
        plan = replace(plan, tracking=track.current())
        try:
            problems = run_workers(sweep, plan, workers or sweep.spec.workers, console)
        except KeyboardInterrupt:
            write_report(sweep, study, plan)
            raise SweepInterrupted(sweep.folder, counts(study).finished, plan.trials) from None
        files, found = write_report(sweep, study, plan)
        if run is not None:
            best = found["best"]
            if best is not None and best.get("value") is not None:
                run.log_metrics({f"best_{sweep.spec.metric}": float(best["value"])}, step=0)
            run.log_artifacts(files)
    after = counts(study)
    if after.streak >= FAILURE_STREAK and after.finished < plan.trials:
        last = next(
            (r["error"] for r in reversed(found["trials"]) if r["error"] and not r["surplus"]),
            "",
        )
        problems.append(
            f"stopped: the last {after.streak} trials failed (the last one: {last}); fix the "
            "space or the experiment (see sweep.html), then run the sweep again"
        )
    return SweepResult(sweep.folder, files, found["best"], found["counts"], problems)


def _tracking(sweep: Sweep) -> MlflowConfig | None:
    """The base experiment's tracking.mlflow, which every trial shares."""
    experiment = sweep.experiment({}, "experiment")
    return experiment.tracking.mlflow if experiment.tracking is not None else None


def write_report(sweep: Sweep, study: Any, plan: Plan) -> tuple[list[Path], dict[str, Any]]:
    found = collect(sweep, study, plan.url, plan.trials)
    complete = found["counts"]["complete"]
    drawn = figures(
        study, sweep.spec.metric, complete, found["importances"] is not None, sweep.spec.seed
    )
    json_path = sweep.folder / SWEEP_JSON
    write_json(json_path, found)
    return [json_path, write_sweep_html(found, drawn, sweep.folder)], found
