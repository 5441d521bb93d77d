"""`cnnlab kfold CONFIG --folds K`: stratified K-fold cross-validation, each fold an ordinary
run (`data.folds: K`, `data.fold: i`: fold i of the training pool is its validation split),
summarised as mean ± std and a 95 % interval over the folds with the studies' statistics.

Like a study, a rerun skips finished folds and resumes an interrupted one. Each fold's model
is also evaluated on the test split when the data has one: the same images for every fold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

import cnnlab
from cnnlab import runfiles
from cnnlab.atomic import write_text
from cnnlab.config import Experiment
from cnnlab.config_io import load_experiment, validate
from cnnlab.runs.manifest import now
from cnnlab.study import stats
from cnnlab.study.collect import read_records
from cnnlab.study.execute import Outcome, execute
from cnnlab.study.spec import Planned

KFOLD_JSON = "kfold.json"
KFOLD_MD = "kfold.md"
METRICS = (("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("loss", "loss"))


@dataclass
class KFoldResult:
    folder: Path
    record: dict[str, Any]  # kfold.json

    @property
    def failures(self) -> list[dict[str, Any]]:
        return list(self.record["failures"])

    def lines(self) -> list[str]:
        return markdown(self.record).splitlines()


def run_kfold(
    config: str | Path,
    folds: int,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    jobs: int = 1,
    console: Console | None = None,
) -> KFoldResult:
    base = load_experiment(config, overrides)
    name = base.output.name or Path(config).stem
    folder = Path(output_dir or base.output.dir) / f"{name}-kfold{folds}"
    plans = [
        Planned(f"fold{i}", base.seed, folder / f"fold{i}", _fold(base, folds, i, config))
        for i in range(folds)
    ]
    say = console or Console(quiet=True)
    say.print(f"K-fold folder: {folder}", highlight=False)

    def progress(outcome: Outcome, done: int, total: int) -> None:
        state = outcome.error or outcome.status
        say.print(f"[{done}/{total}] {outcome.planned.cell}: {state}", highlight=False)

    outcomes = execute(plans, jobs, progress)
    records = read_records(outcomes, [])
    summary = {
        split: {
            metric: _summary([r.scores.get(split, {}).get(metric, math.nan) for r in records])
            for metric, _ in METRICS
        }
        for split in ("val", "test")
        if any(split in r.scores for r in records)
    }
    record = {
        "config": str(config),
        "folds": folds,
        "seed": base.seed,
        "created": now(),
        "cnnlab": cnnlab.__version__,
        "runs": [str(p.folder.relative_to(folder)) for p in plans],
        "summary": summary,
        "failures": [{"fold": r.cell, "error": r.error} for r in records if not r.finished],
    }
    runfiles.write_json(folder / KFOLD_JSON, record)
    write_text(folder / KFOLD_MD, markdown(record))
    return KFoldResult(folder, record)


def _fold(base: Experiment, folds: int, fold: int, config: str | Path) -> Experiment:
    raw = base.model_dump(mode="json")
    raw["data"] = {**raw["data"], "folds": folds, "fold": fold, "validation_split": None}
    return validate(raw, Experiment, source=f"{config}: fold {fold}")


def _summary(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    return {
        **stats.summarize(finite).to_json(),
        "values": [v if math.isfinite(v) else None for v in values],
    }


def markdown(record: dict[str, Any]) -> str:
    """The summary as a table: one row per split and metric, mean ± std, interval, folds."""
    folds = record["folds"]
    head = " | ".join(f"fold {i}" for i in range(folds))
    lines = [
        f"# {folds}-fold cross-validation of {record['config']} (seed {record['seed']})",
        "",
        f"| split | metric | mean ± std | 95 % CI | {head} |",
        "|:---|:---|---:|---:|" + "---:|" * folds,
    ]
    for split, metrics in record["summary"].items():
        for metric, title in METRICS:
            entry = metrics[metric]
            low, high = entry["ci95"]
            cells = " | ".join(_number(v) for v in entry["values"])
            lines.append(
                f"| {split} | {title} | {_number(entry['mean'])} ± {_number(entry['std'])} | "
                f"[{_number(low)}, {_number(high)}] | {cells} |"
            )
    for failure in record["failures"]:
        lines.append(f"\n{failure['fold']} failed: {failure['error']}")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
