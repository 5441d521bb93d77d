"""The study file, checked, and what it expands into: cells (one configuration each) x seeds,
every one an ordinary experiment with its own run folder.

```yaml
experiment: s1_carlosnet.yaml        # the base (relative to this file), or a mapping
set: {train.epochs: 3}               # overrides of every cell
matrix:                              # every combination of these values ...
  model.name: [carlosnet, ivannet]
  augment.preset: [null, s1]
variants:                            # ... and/or named override sets (applied after the matrix)
  long: {train.epochs: 30}
seeds: [0, 1, 2]
evaluate_on:                         # cross-evaluation: every run on every set (cnnlab evaluate)
  augmented_test: {split: test, augment: s1}
ensemble: {over: seeds, method: mean}  # also an ensemble of each cell's seeds (or: cells)
ladder:                              # or: ordered steps, each kept only if validation improves
  metric: val_accuracy
  min_delta: 0.005
  steps: [{name: featurewise, set: {augment.featurewise_center: true}}]
```

Cells are named by their values (`carlosnet-s1`, `carlosnet-s1-long`) or, in a ladder, by
their step (`00-baseline`, `01-featurewise`); runs live in `<output.dir>/<study>/<cell>/seed<k>`.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from cnnlab.config import Experiment
from cnnlab.config_io import base_experiment, parse_override, read_yaml, set_dotted_at, validate
from cnnlab.errors import ConfigError

BASELINE = "baseline"  # a ladder's first cell: the experiment as the file gives it


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EvaluationSet(_Section):
    """One evaluation of every run, as `cnnlab evaluate RUN [DATA] --split ... --augment ...`."""

    data: str | None = None  # None: each run's own data
    split: str | None = None  # None: test (else val; a new source: all)
    augment: str = "none"  # none, train, or a preset (S1's augmented test set: s1)
    tta: bool = False
    label_pattern: str | None = None
    labels_csv: str | None = None


class LadderStep(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    set: dict[str, Any]  # dotted keys, as `--set`


class Ladder(_Section):
    # the validation metric each step must improve, as history.csv and metrics.json name it
    metric: Literal["val_accuracy", "val_loss", "val_macro_f1"] = "val_accuracy"
    min_delta: NonNegativeFloat = 0.0  # an improvement of the mean over seeds must exceed it
    steps: list[LadderStep] = Field(min_length=1)


class Statistics(_Section):
    paired_test: Literal["t", "wilcoxon"] = "t"  # over seeds; Wilcoxon needs 6 seeds or more
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)


class StudyEnsemble(_Section):
    """Ensembles of the study's runs, one more row each in its tables (study/ensembles.py)."""

    over: Literal["seeds", "cells"]  # seeds: one per cell, of its seeds; cells: one per seed
    method: Literal["mean", "vote", "stack"] = "mean"  # as `cnnlab ensemble --method`


class StudyFile(_Section):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")  # None: the file's name
    experiment: str | dict[str, Any]
    set: dict[str, Any] = {}
    matrix: dict[str, list[Any]] = {}
    variants: dict[str, dict[str, Any]] = {}
    seeds: list[NonNegativeInt] = Field(default=[0], min_length=1)
    evaluate_on: dict[str, EvaluationSet] = {}
    ladder: Ladder | None = None
    ensemble: StudyEnsemble | None = None
    statistics: Statistics = Statistics()
    jobs: PositiveInt = 1  # cells run at once, in separate processes (--jobs)


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: dict[str, Any]  # dotted key -> value, on top of the study's `set`


@dataclass(frozen=True)
class Planned:
    """One run of a study: a cell at one seed."""

    cell: str
    seed: int | None  # None: an ensemble of the cell's seeds (study/ensembles.py)
    folder: Path
    experiment: Experiment


@dataclass(frozen=True)
class Study:
    name: str
    path: Path  # the study file
    spec: StudyFile
    base: dict[str, Any]  # the experiment, as a raw mapping with the study's `set` applied
    folder: Path  # <output.dir>/<name>
    forced: tuple[tuple[str, Any], ...] = ()  # `--set` overrides: over every cell's own values

    @property
    def is_ladder(self) -> bool:
        return self.spec.ladder is not None

    def cells(self) -> list[Cell]:
        """The grid's cells: matrix combinations x variants (a ladder's cells come one step at
        a time, from its decisions: see cnnlab.study.ladder)."""
        keys = list(self.spec.matrix)
        combos = list(itertools.product(*self.spec.matrix.values())) or [()]
        variants = list(self.spec.variants.items()) or [("", {})]
        cells = []
        for combo in combos:
            values = dict(zip(keys, combo, strict=True))
            label = [_label(key, value, self.spec.matrix[key]) for key, value in values.items()]
            for variant, overrides in variants:
                name = "-".join([*label, variant] if variant else label) or "base"
                cells.append(Cell(name, {**values, **overrides}))
        _unique([cell.name for cell in cells])
        return cells

    def plan(self, cell: Cell) -> list[Planned]:
        """The cell's runs, one per seed, each experiment validated."""
        return [
            Planned(
                cell.name,
                seed,
                self.folder / cell.name / f"seed{seed}",
                self.experiment(cell, seed),
            )
            for seed in self.spec.seeds
        ]

    def experiment(self, cell: Cell, seed: int) -> Experiment:
        raw = copy.deepcopy(self.base)
        for key, value in cell.overrides.items():
            set_dotted_at(raw, key, value, f"{self.path}: cell {cell.name}")
        for key, value in self.forced:
            set_dotted_at(raw, key, value, "--set")
        raw["seed"] = seed
        return validate(raw, Experiment, source=f"{self.path}: cell {cell.name}, seed {seed}")


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """The study in `path`; `overrides` (`key=value`, as `--set`) change every run, over the
    cells' own values (`--set train.epochs=3` shortens them all)."""
    path = Path(path)
    spec = validate(read_yaml(path, "study file"), StudyFile, source=str(path))
    if spec.ladder is not None and (spec.matrix or spec.variants):
        raise ConfigError(
            f"{path}: ladder: climbs one configuration step by step; a matrix or variants "
            "compare several: write them as two studies"
        )
    if not (spec.ladder or spec.matrix or spec.variants) and len(spec.seeds) < 2:
        raise ConfigError(
            f"{path}: nothing to compare: add matrix:, variants:, ladder: or several seeds"
        )
    _unique([str(s) for s in spec.seeds], what="seeds")
    base = base_experiment(path, spec.experiment, "study")
    for key, value in spec.set.items():
        set_dotted_at(base, key, value, f"{path}: set")
    forced = tuple(parse_override(item) for item in overrides or [])
    forced_base = copy.deepcopy(base)
    for key, value in forced:
        set_dotted_at(forced_base, key, value, "--set")
    checked = validate(forced_base, Experiment, source=f"{path}: experiment")
    name = spec.name or path.stem
    return _check_ensemble(Study(name, path, spec, base, checked.output.dir / name, forced))


def _check_ensemble(study: Study) -> Study:
    ensemble, path = study.spec.ensemble, study.path
    if ensemble is None:
        return study
    if study.is_ladder:
        raise ConfigError(
            f"{path}: ensemble: a ladder keeps one configuration; ensemble a grid's seeds or cells"
        )
    names = [cell.name for cell in study.cells()]
    if ensemble.over == "seeds" and len(study.spec.seeds) < 2:
        raise ConfigError(f"{path}: ensemble.over: seeds needs two seeds or more (seeds: [0, 1])")
    if ensemble.over == "cells" and len(names) < 2:
        raise ConfigError(f"{path}: ensemble.over: cells needs two cells or more (matrix:)")
    if ensemble.over == "cells" and "ensemble" in names:
        raise ConfigError(f"{path}: a cell is named ensemble, as the ensemble's row is; rename it")
    return study


def _label(key: str, value: Any, values: list[Any]) -> str:
    """A matrix value as a word of a cell's name: the value itself when it is short and plain,
    a section's `name` (`adam`), else the key's last part and the value's position
    (`optimizer2`)."""
    names = [v.get("name") for v in values if isinstance(v, dict)]
    if isinstance(value, dict) and names.count(value.get("name")) == 1:
        value = value["name"]
    text = "none" if value is None else str(value).lower()
    if isinstance(value, str | int | float | bool | None) and re.fullmatch(r"[\w.+-]{1,24}", text):
        return text
    return f"{key.rsplit('.', 1)[-1]}{values.index(value) + 1}"


def _unique(names: list[str], what: str = "cell names") -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"study: repeated {what}: {', '.join(repeated)}; make each one distinct")
