"""A study's runs, read back from their folders, into the study's record (study.json): per-cell
summaries over seeds, comparisons with the best cell, mean learning curves, the
cross-evaluation table and the curves' diagnosis.

Comparisons: every cell against the table's best, on the same seeds. The paired test over
seeds (t or Wilcoxon) is the primary test, as it asks whether the configuration is better,
whatever the seed; McNemar's exact test on per-image correctness (the pairs of every shared
seed, pooled) asks it of these trained models and is the primary one when a study has one
seed. Holm's correction runs over the primary p-values of one table.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import cnnlab
from cnnlab import runfiles
from cnnlab.report.diagnosis import diagnose
from cnnlab.runs.manifest import now
from cnnlab.study import stats
from cnnlab.study.execute import Outcome
from cnnlab.study.spec import Study

METRICS = (("accuracy", "accuracy", True), ("macro_f1", "macro F1", True), ("loss", "loss", False))
# task: reconstruction's image metrics, tabulated where the runs have them
IMAGE_METRICS = (("psnr", "PSNR (dB)", True), ("ssim", "SSIM", True))
CURVES = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class RunRecord:
    """One finished (or failed) run, as the study reads it."""

    cell: str
    seed: int | None  # None: an ensemble of the cell's seeds, paired with each of them
    folder: Path
    error: str | None
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metric -> value
    correct: dict[str, dict[str, bool]] = field(default_factory=dict)  # split -> path -> right?
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.error is None


def read_records(outcomes: Sequence[Outcome], evaluations: Sequence[str]) -> list[RunRecord]:
    records = []
    for outcome in outcomes:
        planned = outcome.planned
        record = RunRecord(planned.cell, planned.seed, planned.folder, outcome.error)
        if record.finished:
            _read_run(record, evaluations)
        records.append(record)
    return records


def _read_run(record: RunRecord, evaluations: Sequence[str]) -> None:
    files = runfiles.read_run(record.folder)
    record.history = files.history
    for split, values in files.metrics.items():
        if isinstance(values, dict) and "accuracy" in values:
            record.scores[split] = scores_of(values)
    record.correct = _correctness(record.folder / runfiles.PREDICTIONS)
    for name in evaluations:
        folder = record.folder / runfiles.EVALUATIONS / name
        metrics_path = folder / runfiles.METRICS
        if metrics_path.is_file():
            record.scores[name] = scores_of(json.loads(metrics_path.read_text(encoding="utf-8")))
            record.correct[name] = _correctness(folder / runfiles.PREDICTIONS).get(
                _evaluated_split(folder), {}
            )


def scores_of(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers a study tabulates, from one split's metrics: accuracy, macro F1 and loss,
    and a reconstruction's PSNR and SSIM (which have no macro F1)."""
    scores = {
        "accuracy": float(metrics["accuracy"]),
        "macro_f1": float(metrics.get("macro_avg", {}).get("f1", math.nan)),
        "loss": float(metrics.get("loss", math.nan)),
    }
    return scores | {key: float(metrics[key]) for key, _, _ in IMAGE_METRICS if key in metrics}


def _evaluated_split(folder: Path) -> str:
    record = json.loads((folder / runfiles.EVALUATION).read_text(encoding="utf-8"))
    return str(record["split"])


def _correctness(path: Path) -> dict[str, dict[str, bool]]:
    if not path.is_file():
        return {}
    found: dict[str, dict[str, bool]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"label", "predicted"} <= set(reader.fieldnames or ()):
            return {}  # task: reconstruction's per-image metrics: no right or wrong per image
        for row in reader:
            found.setdefault(row["split"], {})[row["path"]] = row["label"] == row["predicted"]
    return found


# --- the record ------------------------------------------------------------------------------


def study_record(
    study: Study,
    cells: Sequence[tuple[str, dict[str, Any]]],
    records: Sequence[RunRecord],
    ladder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """study.json: everything study.html and the paper tables show."""
    spec = study.spec
    seeds = list(spec.seeds)
    by_cell = {name: [r for r in records if r.cell == name] for name, _ in cells}
    splits = [s for s in ("test", "val") if any(s in r.scores for r in records)]
    # an evaluation set named like a split (val, test) repeats that split's numbers: one table
    splits += [
        name
        for name in spec.evaluate_on
        if name not in splits and any(name in r.scores for r in records)
    ]
    tables = metric_tables(by_cell, seeds, splits, spec.statistics)
    return {
        "study": study.name,
        "file": str(study.path),
        "created": now(),
        "cnnlab": cnnlab.__version__,
        "kind": "ladder" if study.is_ladder else "grid",
        "seeds": seeds,
        "alpha": spec.statistics.alpha,
        "paired_test": spec.statistics.paired_test,
        "cells": [
            _cell_entry(name, overrides, by_cell[name], study.folder) for name, overrides in cells
        ],
        "tables": tables,
        "cross_evaluation": _cross_evaluation(by_cell, list(spec.evaluate_on)),
        "ladder": ladder,
        "curves": {name: mean_curves(runs) for name, runs in by_cell.items() if mean_curves(runs)},
        "diagnosis": {
            name: [finding.to_json() for finding in diagnose(_means(curves))]
            for name, runs in by_cell.items()
            if (curves := mean_curves(runs))
        },
        "failures": [
            {"cell": r.cell, "seed": r.seed, "error": r.error} for r in records if not r.finished
        ],
    }


def comparison_table(
    by_cell: dict[str, list[RunRecord]],
    seeds: list[int],
    split: str,
    metric: str,
    title: str,
    higher_is_better: bool,
    settings: Any,
) -> dict[str, Any]:
    values = {cell: _per_seed(runs, seeds, split, metric) for cell, runs in by_cell.items()}
    # over every finished run: the seeds', or an ensemble of seeds' one value
    summaries = {cell: stats.summarize(_all(runs, split, metric)) for cell, runs in by_cell.items()}
    ranked = [cell for cell in values if summaries[cell].n > 0]
    best = None
    if ranked:
        sign = 1 if higher_is_better else -1
        best = max(ranked, key=lambda cell: sign * summaries[cell].mean)
    comparisons = {
        cell: _versus(
            by_cell[cell], by_cell[best], values[cell], values[best], split, metric, settings
        )
        for cell in ranked
        if best is not None and cell != best
    }
    adjusted = stats.holm([c["p"] for c in comparisons.values()])
    for comparison, p_holm in zip(comparisons.values(), adjusted, strict=True):
        comparison["p_holm"] = _json(p_holm)
        comparison["significant"] = stats.significant(p_holm, settings.alpha)
        del comparison["p"]
    rows = [
        {
            "cell": cell,
            "summary": summaries[cell].to_json(),
            "values": [_json(v) for v in cell_values],
            "best": cell == best,
            "vs_best": comparisons.get(cell),
        }
        for cell, cell_values in values.items()
    ]
    n = min((len(_finite(values[c])) for c in ranked if _finite(values[c])), default=0)
    note = stats.seeds_note(n, settings.paired_test, settings.alpha)
    return {
        "metric": metric,
        "split": split,
        "title": f"{split.capitalize() if split in ('test', 'val', 'train') else split} {title}",
        "higher_is_better": higher_is_better,
        "rows": rows,
        "notes": [note] if note else [],
    }


def _versus(
    runs: list[RunRecord],
    best_runs: list[RunRecord],
    values: list[float],
    best_values: list[float],
    split: str,
    metric: str,
    settings: Any,
) -> dict[str, Any]:
    """One cell against the best: the paired test over seeds, and McNemar on accuracy."""
    paired = stats.paired_test(values, best_values, settings.paired_test)
    mcnemar = _mcnemar(runs, best_runs, split) if metric == "accuracy" else None
    primary = paired.p
    if paired.n < 2 and mcnemar is not None:
        primary = mcnemar.p
    return {
        "paired": paired.to_json(),
        "mcnemar": mcnemar.to_json() if mcnemar else None,
        "primary": "paired" if paired.n >= 2 or mcnemar is None else "mcnemar",
        "p": primary,
    }


def _mcnemar(runs: list[RunRecord], best_runs: list[RunRecord], split: str) -> stats.McNemar | None:
    """Per-image correctness of the two cells, paired by seed and image, over every seed both
    finished (an ensemble of seeds pairs with each seed of the other cell)."""
    mine, theirs = [], []
    for run, other in _pairs(runs, best_runs):
        a, b = run.correct.get(split, {}), other.correct.get(split, {})
        shared = sorted(set(a) & set(b))
        mine += [a[p] for p in shared]
        theirs += [b[p] for p in shared]
    return stats.mcnemar_exact(mine, theirs) if mine else None


def _pairs(runs: list[RunRecord], others: list[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """Finished runs of the same seed, or with an ensemble of seeds (seed None) on either side."""
    return [
        (run, other)
        for run in runs
        for other in others
        if run.finished
        and other.finished
        and (run.seed == other.seed or None in (run.seed, other.seed))
    ]


def metric_tables(
    by_cell: dict[str, list[RunRecord]], seeds: list[int], splits: Sequence[str], settings: Any
) -> list[dict[str, Any]]:
    """A comparison table per split and metric that some run recorded: accuracy, macro F1 and
    loss for classification; accuracy, loss, PSNR and SSIM for a reconstruction."""
    runs = [run for cell in by_cell.values() for run in cell]
    return [
        comparison_table(by_cell, seeds, split, metric, title, higher, settings)
        for split in splits
        for metric, title, higher in METRICS + IMAGE_METRICS
        if _all(runs, split, metric)
    ]


def _all(runs: list[RunRecord], split: str, metric: str) -> list[float]:
    found = [r.scores.get(split, {}).get(metric, math.nan) for r in runs if r.finished]
    return _finite(found)


def _per_seed(runs: list[RunRecord], seeds: list[int], split: str, metric: str) -> list[float]:
    by_seed = {r.seed: r for r in runs if r.finished}
    return [
        by_seed[s].scores.get(split, {}).get(metric, math.nan) if s in by_seed else math.nan
        for s in seeds
    ]


def _cell_entry(
    name: str, overrides: dict[str, Any], runs: list[RunRecord], root: Path
) -> dict[str, Any]:
    entries = []
    for run in runs:
        relative = run.folder.relative_to(root).as_posix()
        report = run.folder / runfiles.REPORT
        entries.append(
            {
                "seed": run.seed,
                "folder": relative,
                "status": "finished" if run.finished else "failed",
                "error": run.error,
                "report": f"{relative}/{runfiles.REPORT}" if report.is_file() else None,
            }
        )
    return {"name": name, "overrides": overrides, "runs": entries}


def _cross_evaluation(
    by_cell: dict[str, list[RunRecord]], sets: list[str]
) -> dict[str, Any] | None:
    if not sets:
        return None
    rows = []
    for cell, runs in by_cell.items():
        cells = []
        for name in sets:
            scores = [r.scores[name]["accuracy"] for r in runs if r.finished and name in r.scores]
            cells.append(stats.summarize(scores).to_json())
        rows.append({"cell": cell, "values": cells})
    return {"metric": "accuracy", "sets": sets, "rows": rows}


def mean_curves(runs: list[RunRecord]) -> dict[str, Any]:
    """Per epoch, the mean and std over seeds of each curve (seeds that stopped early count
    until they stopped)."""
    histories = [r.history for r in runs if r.finished and r.history]
    if not histories:
        return {}
    length = max(len(h.get("loss", [])) for h in histories)
    curves: dict[str, Any] = {"epoch": list(range(1, length + 1))}
    for column in CURVES:
        rows = [
            h[column] + [math.nan] * (length - len(h[column])) for h in histories if column in h
        ]
        matrix = np.asarray(rows, dtype=float)
        if not rows or np.isnan(matrix).all():
            continue
        mean, std = _mean_std(matrix)
        curves[column] = {"mean": [_json(v) for v in mean], "std": [_json(v) for v in std]}
    return curves


def _mean_std(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the mean and sample std of the values that are there (NaN: none, or one
    value for the std), without numpy's warnings about empty columns."""
    present = ~np.isnan(matrix)
    counts = present.sum(0)
    values = np.where(present, matrix, 0.0)
    mean = np.where(counts > 0, values.sum(0) / np.maximum(counts, 1), np.nan)
    squares = np.where(present, (matrix - mean) ** 2, 0.0).sum(0)
    std = np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), np.nan)
    return mean, std


def _means(curves: dict[str, Any]) -> dict[str, list[float]]:
    """The mean curves as a history (what the run report's diagnosis reads)."""
    history = {"epoch": [float(e) for e in curves["epoch"]]}
    for column in CURVES:
        if column in curves:
            history[column] = [math.nan if v is None else v for v in curves[column]["mean"]]
    return history


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _json(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
