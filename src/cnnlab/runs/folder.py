"""RunFolder: the writer of one run's folder, never overwriting an earlier run.

Every file goes through here, by its name in cnnlab.runfiles, written atomically. A folder this
command made is removed again when the run fails before its first epoch completes (a config or
data error found while running), so no empty run is left to mislead.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel

from cnnlab import runfiles
from cnnlab.atomic import WRITE_ERRNOS, write_text
from cnnlab.config import Experiment
from cnnlab.config_io import read_yaml, validate
from cnnlab.errors import ConfigError
from cnnlab.runs.lock import LOCK, locked
from cnnlab.runs.resume_data import check_same_data

if TYPE_CHECKING:
    from cnnlab.data.pipeline import Data


@dataclass(frozen=True)
class RunFolder:
    path: Path
    # made by for_resume: its data is checked against the run's split.csv before it is written
    resumed: bool = False
    # for_resume: metrics.json there and the same train.epochs: nothing is left to run
    done: bool = False

    @classmethod
    def create(cls, parent: Path, name: str) -> RunFolder:
        """`parent/name`, or `name-2`, `name-3`, ... when that exists: earlier results stay.
        A parent that cannot hold folders (a file, read-only, full) is a ConfigError naming
        output.dir, before anything is written."""
        _make_parent(parent)
        for attempt in range(1, 10_000):
            folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
            try:
                folder.mkdir()
                return cls(folder)
            except FileExistsError:
                continue
            except OSError as err:
                if err.errno not in WRITE_ERRNOS:
                    raise
                raise ConfigError(
                    f"output.dir: cannot make the run folder {folder} ({err.strerror}); set "
                    "output.dir (or --output) to a folder you can write to"
                ) from None
        raise RuntimeError(f"{parent}: too many runs named {name}")

    @classmethod
    def for_resume(cls, path: Path, cfg: Experiment) -> RunFolder:
        """The run at `path`, which must be the same experiment (see resume_differences)."""
        saved_path = path / runfiles.CONFIG
        if not saved_path.is_file():
            if killed_while_reading_data(path):  # nothing to compare: it starts again
                return cls(path, resumed=True)
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
        done = finished and (path / runfiles.REPORT).is_file()  # the last file a run writes
        return cls(path, resumed=True, done=done)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def weights(self) -> Path:
        return self.path / runfiles.WEIGHTS

    @property
    def started_training(self) -> bool:
        checkpoints = (runfiles.CHECKPOINT, runfiles.PREVIOUS_CHECKPOINT)
        return any((self.path / name).exists() for name in checkpoints)

    @property
    def finished(self) -> bool:
        return (self.path / runfiles.METRICS).is_file()

    def restart(self) -> None:
        """Clear what a run killed before its first checkpoint left (its first epoch's weights
        and history, half-written temporary files), so the run starts again in this folder."""
        for name in (runfiles.WEIGHTS, runfiles.HISTORY):
            self.file(name).unlink(missing_ok=True)
        self.remove_temporary()

    def remove_temporary(self) -> list[str]:
        """Remove the half-written temporary files (`.NAME.XXXX.tmp`, atomic writes) a killed
        process left in the folder and its checkpoints/; call it holding the folder's lock, so
        no live writer's file goes. Returns their names."""
        removed = []
        for temp in (*self.path.glob(".*.tmp"), *self.path.glob("checkpoints/.*.tmp")):
            if temp.is_dir():
                shutil.rmtree(temp, ignore_errors=True)
            else:
                temp.unlink(missing_ok=True)
            removed.append(str(temp.relative_to(self.path)))
        return removed

    @contextmanager
    def locked(self) -> Iterator[None]:
        """This process alone in the folder for the block (runs.lock)."""
        with locked(self.path):
            yield

    def discard_unstarted(self) -> None:
        """Remove the folder unless an epoch completed (then its checkpoint is worth keeping)."""
        if not self.started_training:
            shutil.rmtree(self.path, ignore_errors=True)

    def write_config(self, experiment: BaseModel) -> None:
        """The resolved experiment, every default filled in, loadable with `cnnlab run`."""
        resolved = experiment.model_dump(mode="json")
        write_text(self.file(runfiles.CONFIG), yaml.safe_dump(resolved, sort_keys=False))

    def write_data(self, experiment: BaseModel, data: Data) -> None:
        """The data half of a run folder: resolved config, health check, split manifest. A run
        resumed from a checkpoint must have the same data: checked before anything is written."""
        if self.resumed and self.started_training:
            check_same_data(self.path, data.manifest)
        self.write_config(experiment)
        self.write_json(runfiles.HEALTH, data.health.to_json())
        write_text(self.file(runfiles.SPLIT), data.manifest)

    def write_summary(self, text: str) -> None:
        write_text(self.file(runfiles.SUMMARY), text)

    def write_predictions(self, csv_text: str) -> None:
        write_text(self.file(runfiles.PREDICTIONS), csv_text)

    def write_json(self, name: str, payload: Any) -> None:
        runfiles.write_json(self.file(name), payload)


def _make_parent(parent: Path) -> None:
    """`parent` as a folder (made with its parents), or a ConfigError naming output.dir."""
    blocking = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "" if blocking == parent else f" ({blocking} is a file)"
        raise ConfigError(
            f"output.dir: {parent} is not a folder{where}; runs are written in folders under "
            "it: set output.dir (or --output) to a folder, or move the file"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        raise ConfigError(
            f"output.dir: cannot make {err.filename or parent} ({err.strerror}); set output.dir "
            "(or --output) to a folder you can write to"
        ) from None


def killed_while_reading_data(path: Path) -> bool:
    """Whether `path` is a run folder made by a run killed before it wrote config.yaml, its
    first file, once the data is read: an empty folder, or one of half-written temporary files."""
    if not path.is_dir():
        return False
    return all(
        entry.name == LOCK or (entry.name.startswith(".") and entry.name.endswith(".tmp"))
        for entry in path.iterdir()
    )


def resume_differences(saved: Experiment, current: Experiment) -> list[str]:
    """The dotted keys in which `current` is another experiment than `saved`. Only train.epochs
    may grow; how fast it runs (train.compile), how it is evaluated (evaluate.*) and reported
    (report.*) and where it is logged (tracking.*) may change too: they do not change the
    training. Keys added to cnnlab since the run began take their defaults (the saved file is
    validated anew)."""
    dumped = (saved.model_dump(mode="json"), current.model_dump(mode="json"))
    for section in dumped:
        for key in ("epochs", "compile"):
            section["train"].pop(key)
        for key in ("output", "evaluate", "report", "tracking"):
            section.pop(key, None)
    return sorted(_differences(*dumped))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            found += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return found
    return [] if a == b else [prefix.rstrip(".")]
