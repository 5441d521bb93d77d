"""The kinds of run as peers over one skeleton (trained, features, ensemble), the folder they
write, and the finished runs they leave. `run` starts one; `load_run` opens a finished one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from cnnlab import runfiles
from cnnlab.config import Experiment
from cnnlab.config_io import load_experiment
from cnnlab.errors import CnnlabError, ConfigError, RunInterrupted
from cnnlab.progress import silenced
from cnnlab.runs import ensemble, features, trained  # noqa: F401  (each registers its kind)
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.kinds import KINDS, kind_of
from cnnlab.runs.skeleton import RunResult
from cnnlab.track import tracked
from cnnlab.train.callbacks import Callback

__all__ = ["FinishedRun", "RunFolder", "RunResult", "load_run", "run", "run_experiment"]


def run(
    experiment: Experiment | str | Path,
    folder: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Run an experiment (a file, with `--set`-style `overrides`, or an Experiment) into a new
    folder under `output_dir` (default output.dir) named output.name (default the file's name),
    or into `folder`; with `resume`, continue the run in that folder. `callbacks` join the
    run's own in every stage; `quiet` prints nothing (no epoch lines, no progress bars). A run
    that fails before its first epoch leaves no folder it made behind."""
    if isinstance(experiment, Experiment):
        cfg, name = experiment, experiment.output.name or "run"
    else:
        cfg = load_experiment(experiment, overrides)
        name = cfg.output.name or Path(experiment).stem
    if cfg.model is None and cfg.ensemble is None:
        raise ConfigError(f"{experiment}: model: required, e.g. model: {{name: carlosnet}}")
    parent = Path(output_dir) if output_dir is not None else cfg.output.dir
    target = Path(folder) if folder is not None else parent / name
    if resume:
        out = RunFolder.for_resume(target, cfg)
    elif folder is not None:
        if target.is_dir() and any(target.iterdir()):
            raise ConfigError(
                f"{target}: the folder is not empty; a run never writes over earlier files: "
                "give a new or empty folder, or resume the run in it (resume=True)"
            )
        target.mkdir(parents=True, exist_ok=True)
        out = RunFolder(target)
    else:
        out = RunFolder.create(parent, name)
    channel = Console(quiet=True) if quiet else (console or Console())
    channel.print(f"Run folder: {out.path}", highlight=False)
    if out.done:  # read only: a finished run may be in a read-only archive
        return already_finished(out, channel)
    with out.locked():  # one process at a time: a second --resume is refused (exit 2)
        return _run_locked(cfg, out, resume, callbacks, quiet, channel)


def _run_locked(
    cfg: Experiment,
    out: RunFolder,
    resume: bool,
    callbacks: Sequence[Callback],
    quiet: bool,
    channel: Console,
) -> RunResult:
    removed = out.remove_temporary()  # a killed process's half-written files
    if removed:
        files = "1 file" if len(removed) == 1 else f"{len(removed)} files"
        channel.print(
            f"removed {files} a killed run left half-written: {', '.join(removed)}",
            highlight=False,
        )
    restarted = resume and not out.started_training and not out.finished
    if restarted:  # killed before its first checkpoint: nothing to continue from
        out.restart()
        channel.print(
            f"--resume: {out.path} has no checkpoint (the run stopped before its first epoch "
            "ended); starting the run from the beginning in this folder",
            highlight=False,
        )
    try:
        # tracking.mlflow: the store is checked and the params logged here, before any data
        with silenced(quiet), tracked(cfg, out.path, resume, channel) as tracker:
            result = run_experiment(
                cfg,
                out,
                resume=resume and not restarted,
                callbacks=[*callbacks, *tracker.callbacks],
                console=channel,
            )
            tracker.finish(result.metrics)  # the split metrics and the run's files
            return result
    except (CnnlabError, OSError):  # OSError: a full or read-only disk (the CLI says which)
        if not resume:
            out.discard_unstarted()
        raise
    except KeyboardInterrupt:  # Ctrl-C: the folder stays, to be continued with --resume
        raise RunInterrupted(str(out.path), checkpointed_epoch(out)) from None


def already_finished(out: RunFolder, channel: Console) -> RunResult:
    """--resume of a run that ran to its end (a kill after it finished, a second call): its
    results as they are, nothing rewritten."""
    report = out.file(runfiles.REPORT)
    channel.print(
        f"--resume: {out.path} is finished (see {report.name}); nothing to resume. To train "
        "it on, resume with more epochs (--set train.epochs=N); to evaluate it again, "
        "`cnnlab evaluate RUN`",
        highlight=False,
    )
    finished = FinishedRun.open(out.path)  # its files, read strictly
    return RunResult(out.path, finished.metrics, finished.manifest, report)


def checkpointed_epoch(folder: RunFolder) -> int:
    """The epoch a resume would continue after: its checkpoint's (0 without a readable one)."""
    if not folder.started_training:
        return 0
    from cnnlab.train.checkpoint import load_state

    try:
        return int(load_state(folder.path)["state"]["epoch"])
    except (CnnlabError, KeyError, TypeError, ValueError):
        return 0


def run_experiment(
    cfg: Experiment,
    folder: RunFolder | Path,
    resume: bool = False,
    console: Console | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Run `cfg` into an existing `folder`, as the kind of run it describes."""
    out = folder if isinstance(folder, RunFolder) else RunFolder(Path(folder))
    kind = KINDS.get(kind_of(cfg))
    return kind.run(cfg, out, console or Console(), resume, callbacks)


def load_run(path: str | Path) -> FinishedRun:
    """A finished run folder, opened: config, classes, model, metrics, predictions, history."""
    return FinishedRun.open(path)
