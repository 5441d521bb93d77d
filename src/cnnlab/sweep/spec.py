"""The sweep file, checked before any trial runs: its keys, every dotted key of the space
against the Experiment schema, and the base experiment at every bound of the space.

```yaml
name: digits_lr                      # the study's name in the storage (default: the file's)
experiment: digits_basenet.yaml      # beside this file (else the current folder), or a mapping
set: {train.epochs: 5}               # overrides of every trial
space:                               # what each trial samples, over dotted keys
  train.optimizer.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
  train.batch_size: {type: int, low: 16, high: 128, step: 16}
  train.optimizer.name: [adam, sgd]  # a list: categorical
metric: val_accuracy                 # maximised; a *loss is minimised (or direction:)
sampler: tpe                         # or random; seeded by seed:
pruner: median                       # or successive_halving, none; or a mapping with its settings
trials: 20                           # finished (complete + pruned) trials the study reaches
```

Trials live in `<output.dir>/<output.name>/trial-0000/`, ... (output.dir: the experiment's).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from cnnlab.config import TASK_MONITORS, Experiment
from cnnlab.config_io import base_experiment, read_yaml, set_dotted_at, validate
from cnnlab.errors import ConfigError
from cnnlab.sweep.keys import key_problem

Direction = Literal["minimize", "maximize"]
NAME = r"^[A-Za-z0-9_.-]+$"
DB_FILE = "optuna.db"  # the default storage, in the sweep folder


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(_Section):
    """One dimension of the space, as Optuna's suggest_float / suggest_int / suggest_categorical."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False  # sample the logarithm uniformly (learning rates, weight decays)
    step: PositiveFloat | None = None  # a grid: low, low + step, ... up to high
    choices: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_is_categorical(cls, data: Any) -> Any:
        return {"type": "categorical", "choices": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _consistent(self) -> Param:
        if self.type == "categorical":
            return self._categorical()
        if self.choices is not None:
            raise ValueError(f"choices: only for type: categorical (this is {self.type})")
        if self.low is None or self.high is None:
            raise ValueError(f"type: {self.type} needs low: and high:")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("log: true and step: cannot go together (Optuna's rule); drop one")
        if self.type == "int":
            numbers = [self.low, self.high, self.step or 1.0]
            if any(not float(v).is_integer() for v in numbers):
                raise ValueError("type: int needs whole numbers for low, high and step")
        if self.step is not None:
            steps = (self.high - self.low) / self.step
            if not math.isclose(steps, round(steps), abs_tol=1e-9):
                raise ValueError(
                    f"high - low ({self.high - self.low:g}) is not a multiple of step "
                    f"({self.step:g}); change high to low + a multiple of step"
                )
        return self

    def _categorical(self) -> Param:
        extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
        if extra or self.log:
            raise ValueError(f"{(extra or ['log'])[0]}: not for type: categorical (choices:)")
        if not self.choices:
            raise ValueError("type: categorical needs choices: [a, b, ...]")
        plain = (str, int, float, bool, type(None))
        if not all(isinstance(choice, plain) for choice in self.choices):
            raise ValueError(
                "choices must be numbers, strings, true/false or null (Optuna stores them as "
                "such); to try whole sections, sweep their keys one by one"
            )
        if len({repr(choice) for choice in self.choices}) != len(self.choices):
            raise ValueError("choices: a value is given twice; give each once")
        return self

    def bounds(self) -> list[Any]:
        """The values the sweep checks the experiment at before it starts."""
        if self.type == "categorical":
            return list(self.choices or [])
        low, high = self.low, self.high
        return [int(low), int(high)] if self.type == "int" else [low, high]  # type: ignore[arg-type]


class PrunerConfig(_Section):
    name: Literal["median", "successive_halving", "none"] = "median"
    # median: trials that finish before any is pruned, and the epochs each runs before it can
    # be (Optuna's MedianPruner defaults: 5 and 0)
    startup_trials: NonNegativeInt = 5
    warmup_epochs: NonNegativeInt = 0
    # successive halving: the first rung, in epochs, and 1/reduction_factor of the trials go on
    # at each rung (Optuna's SuccessiveHalvingPruner: min_resource, reduction_factor 3)
    min_epochs: PositiveInt = 1
    reduction_factor: int = Field(default=3, ge=2)


class SweepOutput(_Section):
    dir: Path | None = None  # None: the experiment's output.dir
    name: str | None = Field(default=None, pattern=NAME)  # None: the sweep's name


class SweepFile(_Section):
    name: str | None = Field(default=None, pattern=NAME)  # None: the file's name
    experiment: str | dict[str, Any]
    set: dict[str, Any] = {}
    space: dict[str, Param] = Field(min_length=1)
    metric: str = "val_accuracy"  # a validation value the run logs each epoch (TASK_MONITORS)
    direction: Direction | None = None  # None: a *loss is minimised, anything else maximised
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: PrunerConfig = PrunerConfig()
    trials: PositiveInt = 20  # complete + pruned trials of the study (failed ones are retried)
    timeout: PositiveFloat | None = None  # seconds after which no new trial starts
    workers: PositiveInt = 1  # local processes sharing the storage (--workers)
    seed: NonNegativeInt = 0  # the sampler's; each trial's experiment keeps its own seed
    output: SweepOutput = SweepOutput()

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


@dataclass(frozen=True)
class Sweep:
    name: str  # the study's name in the storage
    path: Path  # the sweep file
    spec: SweepFile
    base: dict[str, Any]  # the experiment, as a raw mapping with the sweep's `set` applied
    folder: Path  # <output.dir>/<output.name>: a trial-NNNN run folder per trial
    direction: Direction

    def experiment(self, params: dict[str, Any], where: str) -> Experiment:
        """The base experiment with a trial's (or a bound's) values at their dotted keys."""
        raw = copy.deepcopy(self.base)
        for key, value in params.items():
            set_dotted_at(raw, key, value, f"{self.path}: {where}")
        return validate(raw, Experiment, source=f"{self.path}: {where}")

    def trial_folder(self, number: int) -> Path:
        return self.folder / f"trial-{number:04d}"

    @property
    def default_storage(self) -> str:
        """An SQLite file in the sweep folder (SQLAlchemy's URL: sqlite:/// + absolute path)."""
        return f"sqlite:///{self.folder.resolve() / DB_FILE}"


def load_sweep(path: str | Path) -> Sweep:
    """The sweep in `path`, every check done: nothing has run when this raises ConfigError."""
    path = Path(path)
    spec = validate(read_yaml(path, "sweep file"), SweepFile, source=str(path))
    base = base_experiment(path, spec.experiment, "sweep")
    for key, value in spec.set.items():
        set_dotted_at(base, key, value, f"{path}: set")
    checked = validate(copy.deepcopy(base), Experiment, source=f"{path}: experiment")
    _check_trainable(path, checked)
    direction: Direction = spec.direction or (
        "minimize" if spec.metric.endswith("loss") else "maximize"
    )
    _check_metric(path, spec.metric, checked)
    name = spec.name or path.stem
    output = spec.output
    folder = (output.dir or checked.output.dir) / (output.name or name)
    sweep = Sweep(name, path, spec, base, folder, direction)
    for key, param in spec.space.items():
        problem = (
            "output: the sweep names its trials' folders" if key.startswith("output") else None
        )
        problem = problem or key_problem(key)
        if problem:
            raise ConfigError(f"{path}: space.{key}: {problem}")
        for value in param.bounds():  # each bound alone, the other keys at the base's values
            sweep.experiment({key: value}, f"space.{key} = {value!r}")
    return sweep


def _check_trainable(path: Path, experiment: Experiment) -> None:
    if experiment.model is None or experiment.classifier or experiment.ensemble:
        raise ConfigError(
            f"{path}: experiment: a sweep tunes a network trained epoch by epoch; this one "
            "has no model:, or is a features (classifier:) or ensemble run"
        )


def _check_metric(path: Path, metric: str, experiment: Experiment) -> None:
    logged = TASK_MONITORS[experiment.task]
    if metric in logged:
        return
    held_out = " (the test split stays held out: a sweep chooses on validation)"
    raise ConfigError(
        f"{path}: metric: {metric} is not a validation value task {experiment.task} logs each "
        f"epoch; use one of {', '.join(logged)}" + (held_out if metric.startswith("test") else "")
    )
