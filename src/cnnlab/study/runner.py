"""`cnnlab study STUDY.yaml`: expand, run (skipping finished runs, resuming interrupted ones),
cross-evaluate, summarise, and write study.json, study.html and the paper tables.

    result = run_study("examples/s1_study.yaml", jobs=2)
    result.failures   # [] when every run and evaluation finished
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cnnlab import runfiles, track
from cnnlab.config import MlflowConfig
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.runs.evaluation import EvaluationSpec, evaluate_run, find_evaluation
from cnnlab.study.collect import read_records, scores_of, study_record
from cnnlab.study.ensembles import ensemble_rows, make_ensembles
from cnnlab.study.execute import Outcome, execute
from cnnlab.study.ladder import FINAL_TEST, check_steps, climb
from cnnlab.study.spec import Cell, EvaluationSet, Planned, Study, load_study

STUDY_JSON = "study.json"


@dataclass
class StudyResult:
    folder: Path
    record: dict[str, Any]  # study.json
    files: list[Path]  # what the study wrote besides the run folders

    @property
    def failures(self) -> list[dict[str, Any]]:
        return list(self.record["failures"])


def run_study(
    path: str | Path,
    jobs: int | None = None,
    overrides: Sequence[str] = (),
    console: Console | None = None,
) -> StudyResult:
    study = load_study(path, list(overrides))
    say = console or Console(quiet=True)
    session = _Session(study, jobs or study.spec.jobs, say)
    say.print(f"Study folder: {study.folder}", highlight=False)
    # tracking.mlflow: one MLflow run for the study, each cell's run nested under it
    described = {"study": study.spec.model_dump(mode="json", exclude={"experiment"})}
    with track.parent(_tracking(study), study.name, study.folder, say, described) as parent:
        record = _run_all(study, session)
        files = write_study(record, study.folder)
        if parent is not None:
            parent.log_metrics({"failures": len(record["failures"])}, step=0)
            parent.log_artifacts(files)
    return StudyResult(study.folder, record, files)


def _run_all(study: Study, session: _Session) -> dict[str, Any]:
    """The study's runs, ensembles and evaluations, as study.json records them."""
    if study.spec.ladder is not None:
        check_steps(study)
        cells, ladder = climb(study.spec.ladder, {}, session.run_cells)
        ladder["final"]["test"] = session.final_test(ladder["final"]["cell"])
    else:
        cells, ladder = study.cells(), None
        session.run_cells(cells)
    ensembles = session.run_ensembles(cells)  # none without the ensemble: key
    records = read_records([*session.outcomes, *ensembles], list(study.spec.evaluate_on))
    rows = [(c.name, c.overrides) for c in cells] + ensemble_rows(study, cells)
    record = study_record(study, rows, records, ladder)
    record["failures"] += session.problems
    return record


def _tracking(study: Study) -> MlflowConfig | None:
    """The study's tracking.mlflow: its experiment's (with --set), which every cell shares."""
    experiment = study.experiment(study.cells()[0], study.spec.seeds[0])
    return experiment.tracking.mlflow if experiment.tracking is not None else None


def write_study(record: dict[str, Any], folder: Path) -> list[Path]:
    from cnnlab.study.page import write_study_html
    from cnnlab.study.paper import write_paper_tables

    folder.mkdir(parents=True, exist_ok=True)
    runfiles.write_json(folder / STUDY_JSON, record)
    return [
        folder / STUDY_JSON,
        write_study_html(record, folder),
        *write_paper_tables(record, folder),
    ]


class _Session:
    """The runs of one invocation, as the cells come (all at once in a grid, step by step in
    a ladder), each followed by its evaluations."""

    def __init__(self, study: Study, jobs: int, console: Console):
        self.study, self.jobs, self.console = study, jobs, console
        self.outcomes: list[Outcome] = []
        self.problems: list[dict[str, Any]] = []  # evaluations that failed
        self.unreported: set[Path] = set()  # runs with evaluations their report lacks

    def _rewrite_report(self, outcome: Outcome) -> None:
        """Once per run, however many evaluations it gained."""
        from cnnlab.runs.finished import FinishedRun
        from cnnlab.runs.rerender import rewrite_report

        folder = outcome.planned.folder
        if folder in self.unreported:
            rewrite_report(FinishedRun.open(folder))
            self.unreported.discard(folder)

    def run_cells(self, cells: list[Cell]) -> dict[str, list[float]]:
        """Run the cells' seeds; per cell, the ladder's validation metric of each seed."""
        plans = [planned for cell in cells for planned in self.study.plan(cell)]
        outcomes = execute(plans, self.jobs, self._progress)
        self.outcomes += outcomes
        self._evaluate_all(outcomes)
        return {cell.name: self._validation(cell, outcomes) for cell in cells}

    def run_ensembles(self, cells: list[Cell]) -> list[Outcome]:
        """The ensembles of the finished runs (study/ensembles.py), evaluated as runs are."""
        made, problems = make_ensembles(self.study, cells, self.outcomes, self._made)
        self.problems += problems
        for problem in problems:
            self.console.print(f"[red]failed[/] {problem['error']}", highlight=False)
        self._evaluate_all(made)
        return made

    def _evaluate_all(self, outcomes: list[Outcome]) -> None:
        """Every finished run of `outcomes` on each evaluation set."""
        evaluated = [o for o in outcomes if o.ok] if self.study.spec.evaluate_on else []
        for done, outcome in enumerate(evaluated, start=1):
            scores = {
                name: self._evaluate(outcome, name, _spec_of(evaluation))
                for name, evaluation in self.study.spec.evaluate_on.items()
            }
            self._rewrite_report(outcome)
            shown = "  ".join(f"{k} {v['accuracy']:.4f}" for k, v in scores.items() if v)
            planned = outcome.planned
            self.console.print(
                f"[{done}/{len(evaluated)}] evaluated {_named(planned)}: accuracy {shown}",
                highlight=False,
            )

    def final_test(self, cell: str) -> dict[str, Any]:
        """The ladder's final configuration on test, once per seed (as evaluations/test)."""
        from cnnlab.study import stats

        values = []
        for outcome in self.outcomes:
            if outcome.planned.cell == cell and outcome.ok:
                metrics = self._evaluate(outcome, FINAL_TEST, EvaluationSpec(split="test"))
                self._rewrite_report(outcome)
                values.append(metrics["accuracy"] if metrics else math.nan)
        finite = [v for v in values if math.isfinite(v)]
        return {
            "metric": "accuracy",
            "summary": stats.summarize(finite).to_json(),
            "values": values,
        }

    def _validation(self, cell: Cell, outcomes: list[Outcome]) -> list[float]:
        ladder = self.study.spec.ladder
        if ladder is None:
            return []
        metric = ladder.metric.removeprefix("val_")
        values = []
        for outcome in outcomes:
            if outcome.planned.cell != cell.name:
                continue
            split = _metrics(outcome.planned.folder).get("val") if outcome.ok else None
            if outcome.ok and split is None:
                raise ConfigError(
                    f"ladder: {outcome.planned.folder} has no validation split to choose on; "
                    "set data.validation_split in the experiment"
                )
            values.append(scores_of(split)[metric] if split else math.nan)
        return values

    def _evaluate(self, outcome: Outcome, name: str, spec: EvaluationSpec) -> dict | None:
        """The run's evaluation `name` (made now, or found from an earlier invocation)."""
        folder = outcome.planned.folder
        where = f"{_named(outcome.planned)}: evaluation {name}"
        found = find_evaluation(folder, name)
        try:
            if found is None:
                self.unreported.add(folder)
                return evaluate_run(folder, spec, name, report=False).metrics
            if any(found.get(key) != value for key, value in _identity(spec).items()):
                raise ConfigError(
                    f"{folder / runfiles.EVALUATIONS / name} was made with other settings; "
                    "delete it to evaluate again, or rename the evaluation set"
                )
        except CnnlabError as err:
            self.problems.append(
                {
                    "cell": outcome.planned.cell,
                    "seed": outcome.planned.seed,
                    "error": f"{where}: {err}",
                }
            )
            self.console.print(f"[red]failed[/] {where}: {err}", highlight=False)
            return None
        return _metrics(folder / runfiles.EVALUATIONS / name)

    def _made(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self.console.print(f"[red]failed[/] {outcome.error}", highlight=False)
            return
        metrics = _metrics(outcome.planned.folder)
        split = next((s for s in ("test", "val") if s in metrics), None)
        score = f"  {split} accuracy {metrics[split]['accuracy']:.4f}" if split else ""
        words = "kept from before" if outcome.status == "skipped" else "made"
        self.console.print(f"{_named(outcome.planned)}: {words}{score}", highlight=False)

    def _progress(self, outcome: Outcome, done: int, total: int) -> None:
        planned = outcome.planned
        head = f"[{done}/{total}] {planned.cell} seed {planned.seed}:"
        if not outcome.ok:
            self.console.print(f"{head} [red]failed[/]: {outcome.error}", highlight=False)
            return
        metrics = _metrics(planned.folder)
        split = next((s for s in ("test", "val") if s in metrics), None)
        score = f"  {split} accuracy {metrics[split]['accuracy']:.4f}" if split else ""
        took = "" if outcome.status == "skipped" else f" in {outcome.seconds:.1f} s"
        words = {"skipped": "finished before", "resumed": "resumed and finished"}
        self.console.print(
            f"{head} {words.get(outcome.status, 'finished')}{took}{score}", highlight=False
        )


def _named(planned: Planned) -> str:
    """ "adam seed 0", or an ensemble of a cell's seeds by its row's name alone."""
    return planned.cell if planned.seed is None else f"{planned.cell} seed {planned.seed}"


def _spec_of(evaluation: EvaluationSet) -> EvaluationSpec:
    return EvaluationSpec(**evaluation.model_dump())


def _identity(spec: EvaluationSpec) -> dict[str, Any]:
    """What must match for an earlier evaluation to stand for this one."""
    fields = asdict(spec)
    identity = {k: fields[k] for k in ("augment", "tta", "label_pattern", "labels_csv")}
    if spec.split is not None:
        identity["split"] = spec.split
    if spec.data is not None:
        identity["source"] = spec.data
    return identity


def _metrics(folder: Path) -> dict[str, Any]:
    return runfiles.read_mapping(folder / runfiles.METRICS)
