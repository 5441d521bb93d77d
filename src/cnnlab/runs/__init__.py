"""The kinds of run as peers over one skeleton (trained, features, ensemble), the folder they
write, and the finished runs they leave. `run` starts one; `load_run` opens a finished one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console

from cnnlab import distributed, runfiles
from cnnlab.config import Experiment
from cnnlab.config_io import load_experiment
from cnnlab.errors import CnnlabError, ConfigError, RunInterrupted
from cnnlab.progress import silenced
from cnnlab.runs import ensemble, features, trained  # noqa: F401  (each registers its kind)
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.kinds import KINDS, kind_of
from cnnlab.runs.skeleton import RunResult
from cnnlab.track import Tracker, tracked
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
    that fails before its first epoch leaves no folder it made behind.

    Under torchrun every process calls it and they train the run together (cnnlab.distributed):
    rank 0 alone makes and writes the folder and prints (the other ranks' `console` is made
    quiet); every rank returns the metrics."""
    if isinstance(experiment, Experiment):
        cfg, name = experiment, experiment.output.name or "run"
    else:
        cfg = load_experiment(experiment, overrides)
        name = cfg.output.name or Path(experiment).stem
    if cfg.model is None and cfg.ensemble is None:
        raise ConfigError(f"{experiment}: model: required, e.g. model: {{name: carlosnet}}")
    check_torchrun(cfg)
    context = distributed.start(cfg.train.device)  # None without torchrun
    try:
        main = distributed.is_main()
        if not main:
            quiet = True
            if console is not None:  # the caller's lines after the run too: rank 0 prints
                console.quiet = True
        parent = Path(output_dir) if output_dir is not None else cfg.output.dir
        target = Path(folder) if folder is not None else parent / name
        out = distributed.from_rank_zero(lambda: _folder(cfg, target, parent, name, folder, resume))
        channel = Console(quiet=True) if quiet else (console or Console())
        channel.print(f"Run folder: {out.path}", highlight=False)
        if out.done:  # read only: a finished run may be in a read-only archive
            return distributed.from_rank_zero(lambda: already_finished(out, channel))
        # one process at a time: a second --resume is refused (exit 2); under torchrun, rank 0
        # holds the lock for its group
        with out.locked() if main else nullcontext():
            return _run_locked(cfg, out, resume, callbacks, quiet, channel)
    finally:
        if context is not None:
            distributed.stop()


def _folder(
    cfg: Experiment,
    target: Path,
    parent: Path,
    name: str,
    folder: str | Path | None,
    resume: bool,
) -> RunFolder:
    """The run's folder: the one to resume, the empty one given, or a new one under parent."""
    if resume:
        return RunFolder.for_resume(target, cfg)
    if folder is not None:
        if target.is_dir() and any(target.iterdir()):
            raise ConfigError(
                f"{target}: the folder is not empty; a run never writes over earlier files: "
                "give a new or empty folder, or resume the run in it (resume=True)"
            )
        target.mkdir(parents=True, exist_ok=True)
        return RunFolder(target)
    return RunFolder.create(parent, name)


def check_torchrun(cfg: Experiment) -> None:
    """Under torchrun, what one run across processes cannot do, said before anything runs."""
    if not distributed.launched():
        return
    kind = kind_of(cfg)
    if kind not in ("trained", "reconstruction"):
        raise ConfigError(
            f"torchrun: a {kind} run trains no network to share across processes; run it "
            "without torchrun (cnnlab run CONFIG)"
        )
    train, world = cfg.train, int(os.environ["WORLD_SIZE"])
    for key, value in (("batch_size", train.batch_size), ("optimizer.lr", train.optimizer.lr)):
        if value == "auto":
            raise ConfigError(
                f"train.{key}: auto is not searched under torchrun (each process would search "
                "alone); find it in one process (cnnlab run, or cnnlab lr-find), then set it"
            )
    if isinstance(train.batch_size, int) and train.batch_size < world:
        raise ConfigError(
            f"train.batch_size: {train.batch_size} is the global batch, split over the {world} "
            f"processes torchrun started; set it to at least {world} (or start fewer)"
        )
    if train.sync_batchnorm and distributed.backend_for(train.device) == "gloo":
        raise ConfigError(
            "train.sync_batchnorm: torch's SyncBatchNorm runs on CUDA GPUs only and this run "
            "trains on the CPU; remove the key (each process then normalises its own slice)"
        )
    if train.sync_batchnorm and train.swa is not None:  # update_bn would wait for the others
        raise ConfigError(
            "train.sync_batchnorm: SWA's BatchNorm statistics are recomputed by rank 0 alone "
            "after training, which synchronised BatchNorm cannot do; remove train.swa or "
            "train.sync_batchnorm"
        )


def _run_locked(
    cfg: Experiment,
    out: RunFolder,
    resume: bool,
    callbacks: Sequence[Callback],
    quiet: bool,
    channel: Console,
) -> RunResult:
    main = distributed.is_main()  # torchrun: rank 0 alone tidies, tracks and discards
    restarted = distributed.from_rank_zero(lambda: _tidy(out, resume, channel))
    try:
        # tracking.mlflow: the store is checked and the params logged here, before any data
        tracking = tracked(cfg, out.path, resume, channel) if main else nullcontext(Tracker())
        with silenced(quiet), tracking as tracker:
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
        if not resume and main:
            out.discard_unstarted()
        raise
    except KeyboardInterrupt:  # Ctrl-C: the folder stays, to be continued with --resume
        raise RunInterrupted(str(out.path), checkpointed_epoch(out)) from None


def _tidy(out: RunFolder, resume: bool, channel: Console) -> bool:
    """Remove what a killed process left half-written; whether a resumed run that never
    reached its first checkpoint starts again from the beginning (then its files are cleared)."""
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
    return restarted


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
