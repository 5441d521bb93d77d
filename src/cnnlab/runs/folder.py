"""RunFolder: the writer of one run's folder, never overwriting an earlier run.

Every file goes through here, by its name in cnnlab.runfiles, written atomically. A folder this
command made is removed again when the run fails before its first epoch completes (a config or
data error found while running), so no empty run is left to mislead.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel

from cnnlab import runfiles
from cnnlab.atomic import write_text
from cnnlab.config import Experiment
from cnnlab.config_io import read_yaml, validate
from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    from cnnlab.data.pipeline import Data


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def create(cls, parent: Path, name: str) -> RunFolder:
        """`parent/name`, or `name-2`, `name-3`, ... when that exists: earlier results stay."""
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 10_000):
            folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
            try:
                folder.mkdir()
                return cls(folder)
            except FileExistsError:
                continue
        raise RuntimeError(f"{parent}: too many runs named {name}")

    @classmethod
    def for_resume(cls, path: Path, cfg: Experiment) -> RunFolder:
        """The run at `path`, which must be the same experiment (see resume_differences)."""
        saved_path = path / runfiles.CONFIG
        if not saved_path.is_file():
            if killed_while_reading_data(path):  # nothing to compare: it starts again
                return cls(path)
            raise ConfigError(
                f"--resume: {path} holds no run to resume ({runfiles.CONFIG} is missing)"
            )
        saved = validate(read_yaml(saved_path), Experiment, str(saved_path))
        changed = resume_differences(saved, cfg)
        if changed:
            raise ConfigError(
                f"--resume: {path} was run with a different configuration ({', '.join(changed)}); "
                "resume with the same settings (only train.epochs may change), or start a new run"
            )
        finished = (path / runfiles.METRICS).is_file() and saved.train.epochs == cfg.train.epochs
        if finished and saved.evaluate != cfg.evaluate:
            raise ConfigError(
                f"--resume: {path} is finished; evaluating it again with other evaluate.* "
                "settings would replace its metrics. `cnnlab evaluate RUN` (e.g. --tta) keeps "
                f"a new evaluation in {path / runfiles.EVALUATIONS} beside them"
            )
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def weights(self) -> Path:
        return self.path / runfiles.WEIGHTS

    @property
    def started_training(self) -> bool:
        return (self.path / runfiles.CHECKPOINT).exists()

    @property
    def finished(self) -> bool:
        return (self.path / runfiles.METRICS).is_file()

    def restart(self) -> None:
        """Clear what a run killed before its first checkpoint left (its first epoch's weights
        and history, half-written temporary files), so the run starts again in this folder."""
        for name in (runfiles.WEIGHTS, runfiles.HISTORY):
            self.file(name).unlink(missing_ok=True)
        for temp in (*self.path.glob(".*.tmp"), *self.path.glob("checkpoints/.*.tmp")):
            temp.unlink(missing_ok=True)

    def discard_unstarted(self) -> None:
        """Remove the folder unless an epoch completed (then its checkpoint is worth keeping)."""
        if not self.started_training:
            shutil.rmtree(self.path, ignore_errors=True)

    def write_config(self, experiment: BaseModel) -> None:
        """The resolved experiment, every default filled in, loadable with `cnnlab run`."""
        resolved = experiment.model_dump(mode="json")
        write_text(self.file(runfiles.CONFIG), yaml.safe_dump(resolved, sort_keys=False))

    def write_data(self, experiment: BaseModel, data: Data) -> None:
        """The data half of a run folder: resolved config, health check, split manifest."""
        self.write_config(experiment)
        self.write_json(runfiles.HEALTH, data.health.to_json())
        write_text(self.file(runfiles.SPLIT), data.manifest)

    def write_summary(self, text: str) -> None:
        write_text(self.file(runfiles.SUMMARY), text)

    def write_predictions(self, csv_text: str) -> None:
        write_text(self.file(runfiles.PREDICTIONS), csv_text)

    def write_json(self, name: str, payload: Any) -> None:
        runfiles.write_json(self.file(name), payload)


def killed_while_reading_data(path: Path) -> bool:
    """Whether `path` is a run folder made by a run killed before it wrote config.yaml, its
    first file, once the data is read: an empty folder, or one of half-written temporary files."""
    if not path.is_dir():
        return False
    return all(
        entry.name.startswith(".") and entry.name.endswith(".tmp") for entry in path.iterdir()
    )


def resume_differences(saved: Experiment, current: Experiment) -> list[str]:
    """The dotted keys in which `current` is another experiment than `saved`. Only train.epochs
    may grow; how fast it runs (train.compile), how it is evaluated (evaluate.*) and reported
    (report.*) may change too: they do not change the training. Keys added to cnnlab since the
    run began take their defaults (the saved file is validated anew)."""
    dumped = (saved.model_dump(mode="json"), current.model_dump(mode="json"))
    for section in dumped:
        for key in ("epochs", "compile"):
            section["train"].pop(key)
        section.pop("output")
        section.pop("evaluate")
        section.pop("report")
    return sorted(_differences(*dumped))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]
