"""A study's ensembles (its `ensemble:` key): each an ensemble run (cnnlab.runs.ensemble) of the
study's finished runs, in the study's folder, read back as one more row of its tables.

    ensemble: {over: seeds, method: mean}   # per cell, its seeds: <study>/<cell>/ensemble,
                                            # the row "<cell>+ensemble" (one run, no seed)
    ensemble: {over: cells, method: vote}   # per seed, every cell's run: <study>/ensemble/
                                            # seed<k>, the row "ensemble" (one run per seed)

An ensemble is made again from its members when it is missing or its members changed (it holds
nothing they do not give); a finished one of the same members and method is kept. Members must
share their val and test images, so over seeds needs a source whose val and test splits do not
follow the seed (val/ and test/ parts); an ensemble that cannot be made is a failure of the
study, with the reason, and the other rows stand.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlab import runfiles
from cnnlab.config import Experiment
from cnnlab.config_io import read_yaml, validate
from cnnlab.errors import CnnlabError
from cnnlab.runs import run
from cnnlab.runs.ensemble import ensemble_experiment
from cnnlab.study.execute import Outcome
from cnnlab.study.spec import Cell, Planned, Study

FOLDER = "ensemble"  # over seeds: <study>/<cell>/ensemble; over cells: <study>/ensemble/seed<k>


def ensemble_rows(study: Study, cells: list[Cell]) -> list[tuple[str, dict[str, Any]]]:
    """The tables' rows the ensembles add: (name, what they are), as the cells' (name,
    overrides)."""
    spec = study.spec.ensemble
    if spec is None:
        return []
    shown = {"ensemble": spec.model_dump()}
    if spec.over == "cells":
        return [(FOLDER, shown)]
    return [(f"{cell.name}+{FOLDER}", shown) for cell in cells]


def make_ensembles(
    study: Study,
    cells: list[Cell],
    outcomes: list[Outcome],
    report: Callable[[Outcome], None] = lambda _: None,
) -> tuple[list[Outcome], list[dict[str, Any]]]:
    """Every ensemble the study asks for, of its finished runs, each Outcome as a run's; and
    the ensembles that could not be planned (fewer than two finished members), as failures."""
    spec = study.spec.ensemble
    if spec is None:
        return [], []
    finished = [o.planned for o in outcomes if o.ok]
    groups: list[tuple[str, int | None, Path, list[Path]]]
    if spec.over == "seeds":
        groups = [
            (
                f"{cell.name}+{FOLDER}",
                None,
                study.folder / cell.name / FOLDER,
                [p.folder for p in finished if p.cell == cell.name],
            )
            for cell in cells
        ]
    else:
        groups = [
            (
                FOLDER,
                seed,
                study.folder / FOLDER / f"seed{seed}",
                [p.folder for p in finished if p.seed == seed],
            )
            for seed in study.spec.seeds
        ]
    made, problems = [], []
    for name, seed, folder, members in groups:
        try:
            experiment = ensemble_experiment(members, spec.method, folder.name, folder.parent)
        except CnnlabError as err:  # fewer than two finished members, or one unreadable
            problems.append({"cell": name, "seed": seed, "error": f"ensemble {name}: {err}"})
            continue
        made.append(_make(Planned(name, seed, folder, experiment)))
        report(made[-1])
    return made, problems


def _make(planned: Planned) -> Outcome:
    clock, folder, experiment = time.perf_counter(), planned.folder, planned.experiment
    if _is_finished(planned):
        return Outcome(planned, "skipped")
    if folder.exists():
        shutil.rmtree(folder)  # another set of members, or an ensemble that did not finish
    try:
        run(experiment, folder, quiet=True)
    except CnnlabError as err:
        return Outcome(planned, "failed", time.perf_counter() - clock, str(err))
    return Outcome(planned, "finished", time.perf_counter() - clock)


def _is_finished(planned: Planned) -> bool:
    saved_path = planned.folder / runfiles.CONFIG
    if not (planned.folder / runfiles.METRICS).is_file() or not saved_path.is_file():
        return False
    try:
        saved = validate(read_yaml(saved_path), Experiment, str(saved_path))
    except CnnlabError:
        return False
    return saved.ensemble == planned.experiment.ensemble
