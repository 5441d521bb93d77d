"""The `cnnlab` command: parse, call the library, print. User errors exit 2 without a traceback."""

from __future__ import annotations

import errno
import functools
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cnnlab.errors import CnnlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Image-classification experiments with convolutional networks.",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., object])


def user_errors(command: F) -> F:
    """Print a CnnlabError's message and exit 2, and so for an OSError of the place written to
    (full, read-only, not permitted: atomic.WRITE_ERRNOS), naming the path and the option or
    key that chose it; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CnnlabError as problem:
            message = str(problem)
        except OSError as problem:
            from cnnlab.atomic import WRITE_ERRNOS

            if problem.errno not in WRITE_ERRNOS:
                raise
            message = disk_message(problem, kwargs)
        # escaped: a message's own brackets ("pip install cnnlab[export]") are not markup
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
        raise typer.Exit(2)

    return wrapper  # type: ignore[return-value]


# what to do, by errno; the path and the option or key that chose it come first
_DISK_ADVICE = {
    errno.ENOSPC: "free some space there, or choose another place",
    errno.EDQUOT: "free some space, or choose another place",
    errno.EFBIG: "choose another place, on a file system that takes larger files",
    errno.EROFS: "choose a place you can write to",
    errno.EACCES: "change its permissions, or choose another place",
    errno.EPERM: "change its permissions, or choose another place",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EISDIR: "it is a folder: give a file name",
    errno.EEXIST: "something is in the way there: move it, or choose another place",
    errno.ENAMETOOLONG: "choose a shorter name",
}
_WRITING = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
# the commands' options naming a place written to (parameter -> the option as typed)
_PATH_OPTIONS = {"json_path": "--json", "out_path": "--out", "output": "--output"}
_PATH_OPTIONS |= {"folder": "--folder", "run_folder": "RUN"}


def disk_message(problem: OSError, options: dict[str, Any]) -> str:
    """`cannot write PATH (OPTION): strerror; what to do`, for an OSError of the disk."""
    name = problem.filename2 or problem.filename
    verb = "write" if problem.errno in _WRITING else "use"  # EACCES may be a read
    advice = _DISK_ADVICE.get(problem.errno or 0, "choose another place")
    if name is None:
        return f"cannot write: {problem.strerror}; {advice}"
    path = Path(os.fsdecode(name))
    setting = _setting_for(path, options)
    chosen = f" (set by {setting})" if setting else ""
    return f"cannot {verb} {path}{chosen}: {problem.strerror}; {advice}"


def _setting_for(path: Path, options: dict[str, Any]) -> str | None:
    """The option given to this command, or else the experiment's key (output.dir,
    data.cache_dir), that `path` lies in."""
    for parameter, option in _PATH_OPTIONS.items():
        given = options.get(parameter)
        if isinstance(given, str | Path) and _related(path, Path(given)):
            return option
    config = options.get("config")
    if not isinstance(config, Path) or config.suffix not in (".yaml", ".yml"):
        return None
    from cnnlab.config_io import load_experiment
    from cnnlab.data.cache import default_cache_root

    try:  # the file loaded before the error, so it loads again; if not, no key is named
        experiment = load_experiment(config, options.get("set_") or ())
        cache = default_cache_root(experiment.data.cache_dir)
    except (CnnlabError, OSError):
        return None
    for key, place in (("output.dir", experiment.output.dir), ("data.cache_dir", cache)):
        if _related(path, Path(place)):
            return key
    return None


def _related(path: Path, place: Path) -> bool:
    """Whether `path` is `place`, lies inside it, or is a folder on the way to it."""
    inner, outer = os.path.abspath(path), os.path.abspath(place)
    return inner == outer or inner.startswith(outer + os.sep) or outer.startswith(inner + os.sep)


@app.command()
@user_errors
def inspect(
    path: str = typer.Argument(
        ..., help="A folder of class folders, a .zip, an IDX folder, or 'digits'."
    ),
    label_pattern: str | None = typer.Option(
        None, help=r"Regex on file names; group 1 is the class, e.g. '_(\d)[LR]\.png$'."
    ),
    labels_csv: str | None = typer.Option(None, help="CSV with path,label[,split] columns."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the full report here."),
) -> None:
    """Health check: classes, counts, sizes, modes, skipped files, duplicates and leakage."""
    from cnnlab.config import DataConfig
    from cnnlab.config_io import validate
    from cnnlab.data.pipeline import examine
    from cnnlab.inspect_view import print_report
    from cnnlab.runfiles import write_json

    raw = {"source": path, "label_pattern": label_pattern, "labels_csv": labels_csv}
    cfg = validate({k: v for k, v in raw.items() if v is not None}, DataConfig, source="inspect")
    report = examine(cfg, options=None).report
    print_report(out, report, json_path)
    if json_path is not None:
        write_json(json_path, report.to_json())
    report.raise_for_errors(max_bad_fraction=1.0)  # inspect reports bad files, only refuses empties


@app.command()
@user_errors
def run(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set train.epochs=5"),
    output: Path | None = typer.Option(None, help="Parent folder of the run folder (output.dir)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run from its last checkpoint."
    ),
) -> None:
    """Train and evaluate one experiment; write its run folder and report.html."""
    from cnnlab.errors import RunInterrupted
    from cnnlab.runs import run as run_experiment

    try:
        result = run_experiment(
            config, overrides=set_, output_dir=output, resume=resume, console=out
        )
    except RunInterrupted as stop:  # Ctrl-C: say where it stopped and how to go on; 128 + SIGINT
        again = ["cnnlab", "run", str(config), *(f"--set={item}" for item in set_)]
        again += [f"--output={output}"] if output is not None else []
        when = f"after epoch {stop.epoch}" if stop.epoch else "before its first epoch ended"
        err.print(
            f"interrupted {when}; continue with `{shlex.join([*again, '--resume'])}`",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(130) from None
    split = next(k for k in ("test", "val", "train") if k in result.metrics)
    headline = result.metrics[split]
    out.print(f"{split} accuracy: {headline['accuracy']:.4f}  loss: {headline['loss']:.4f}")
    out.print(f"Report: {result.report}")


@app.command("augment-preview")
@user_errors
def augment_preview(
    config: Path = typer.Argument(..., help="Experiment YAML file with an augment section."),
    out_path: Path = typer.Option(..., "--out", help="Where to write the PNG grid."),
    images: int = typer.Option(4, min=1, help="Training images shown (one row each)."),
    versions: int = typer.Option(8, min=1, help="Augmented versions per image."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a key: --set augment.zoom_range=0.3"
    ),
) -> None:
    """Write a grid of training images and augmented versions of each."""
    from cnnlab.atomic import atomic_path
    from cnnlab.config_io import load_experiment
    from cnnlab.runs.preflight import augment_preview as preview

    grid = preview(load_experiment(config, set_), images, versions)
    with atomic_path(out_path) as temp:
        temp.write_bytes(grid)
    out.print(f"Wrote {out_path}: {images} images x {versions} augmented versions")


@app.command("lr-find")
@user_errors
def lr_find(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set train.batch_size=64"),
    out_path: Path = typer.Option(Path("lr_find.png"), "--out", help="Where to write the plot."),
    steps: int = typer.Option(200, min=10, help="Most training steps of the sweep."),
    start: float = typer.Option(1e-7, help="The first step's learning rate."),
    end: float = typer.Option(10.0, help="The last step's learning rate."),
) -> None:
    """Sweep the learning rate exponentially over the experiment's first training steps (its
    data, augmentation, model and optimiser), stop when the loss diverges, and suggest an lr:
    what train.optimizer.lr: auto uses. Writes the loss-against-lr plot; nothing else."""
    from cnnlab.atomic import atomic_path
    from cnnlab.config_io import load_experiment
    from cnnlab.runs.preflight import lr_find as sweep
    from cnnlab.train.lr_find import plot

    result, batch_size, auto = sweep(load_experiment(config, set_), steps, start, end)
    with atomic_path(out_path) as temp:
        temp.write_bytes(plot(result))
    chosen = f" (auto: {auto['rule']})" if auto else ""
    out.print(f"Batch size: {batch_size}{chosen}", highlight=False, markup=False)
    out.print(result.line(), highlight=False, markup=False)
    out.print(f"Suggested lr: {result.suggested:.3g}", highlight=False, markup=False)
    out.print(f"Wrote {out_path}", highlight=False, markup=False)


@app.command()
@user_errors
def prepare(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a key: --set data.target_size=[64,64]"
    ),
    output: Path | None = typer.Option(None, help="Parent folder of the run folder (output.dir)."),
) -> None:
    """Check, split and decode an experiment's data (cached); write the run folder's data part."""
    from cnnlab.config_io import load_experiment
    from cnnlab.inspect_view import print_splits
    from cnnlab.runs.preflight import prepare as prepare_data

    experiment = load_experiment(config, set_)
    parent, name = output or experiment.output.dir, experiment.output.name or config.stem
    folder, data = prepare_data(experiment, parent, name)
    print_splits(out, data)
    out.print(f"Run folder: {folder.path}")


@app.command()
@user_errors
def summary(
    model: str = typer.Argument(..., help="A registered model name, or an experiment YAML file."),
    input_shape: str | None = typer.Option(None, help="H,W,C, e.g. 128,128,1 (Keras order)."),
    num_classes: int | None = typer.Option(None, help="Classes of the data the head is built for."),
    set_: list[str] = typer.Option([], "--set", help="Override a key of the experiment file."),
) -> None:
    """Keras-style table of a model: layers, output shapes, parameter counts.

    A backbone name (vgg16, resnet50, efficientnet_lite0, timm/NAME) with --num-classes 0
    shows the convolutional base alone, as Keras's include_top=False.
    """
    from cnnlab.runs.preflight import model_summary

    shape = _parse_shape(input_shape) if input_shape else None
    experiment = None
    if model.endswith((".yaml", ".yml")):
        from cnnlab.config_io import load_experiment
        from cnnlab.errors import ConfigError

        experiment = load_experiment(Path(model), set_)
        if experiment.model is None:
            raise ConfigError(f"{model}: model: required to summarise it")
        chosen = experiment.model
    else:
        chosen = _named_model(model)
    out.print(model_summary(chosen, shape, num_classes, experiment), highlight=False)


def _named_model(name: str):
    """A registered architecture or backbone by name; a typo gets the closest of either."""
    import difflib

    from cnnlab.config import ModelConfig
    from cnnlab.errors import ConfigError
    from cnnlab.models import MODELS
    from cnnlab.models.backbones import BACKBONES, TIMM_PREFIX

    for registry, key in ((MODELS, "name"), (BACKBONES, "backbone")):
        if name.startswith(TIMM_PREFIX) and key == "backbone":
            return ModelConfig(backbone=name)
        try:
            fields: dict[str, Any] = {key: registry.resolve(name)}
            return ModelConfig(**fields)
        except ConfigError:
            continue
    known = MODELS.names() + BACKBONES.names()
    close = difflib.get_close_matches(name.casefold(), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"unknown model {name!r}{hint} (models: {', '.join(MODELS.names())}; backbones: "
        f"{', '.join(BACKBONES.names())}, or timm/NAME)"
    )


def _parse_shape(text: str) -> tuple[int, int, int]:
    from cnnlab.errors import ConfigError

    try:
        height, width, channels = (int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: expected H,W,C, e.g. 150,150,3") from None
    return height, width, channels


@app.command()
@user_errors
def predict(
    run_folder: Path = typer.Argument(..., metavar="RUN", help="A finished run's folder."),
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH...", help="Images, folders (searched recursively) or .zip files."
    ),
    out_path: Path | None = typer.Option(
        None,
        "--out",
        help="Write here instead of stdout (a reconstruction run: the images' folder, "
        "default RUN/reconstructed/).",
    ),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Most probable classes per image."),
    tta: bool = typer.Option(False, "--tta", help="Average each image with its mirror image."),
    fmt: str = typer.Option(
        "csv", "--format", help="csv, json, or kaggle (a submission: --columns, --id-from)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Images per batch."),
    columns: str = typer.Option("id,label", help="kaggle: the two column names."),
    id_from: str = typer.Option("stem", help="kaggle: the id is the file's stem, name or path."),
) -> None:
    """Predict the class of new images with a finished run; unreadable files are listed."""
    from cnnlab.atomic import write_text
    from cnnlab.errors import ConfigError
    from cnnlab.runs import load_run

    if fmt not in ("csv", "json", "kaggle") or id_from not in ("stem", "name", "path"):
        raise ConfigError(
            f"--format {fmt} --id-from {id_from}: formats are csv, json, kaggle; ids come from "
            "stem, name or path"
        )
    run = load_run(run_folder)
    if run.kind == "reconstruction":  # output images, not classes
        from cnnlab.runs.reconstruction import write_reconstructions

        folder, written, unusable = write_reconstructions(run, paths, out_path)
        for name, reason in unusable:
            err.print(f"skipped {name}: {reason}", highlight=False, markup=False)
        out.print(f"Wrote {len(written)} reconstructions to {folder}", highlight=False)
        return
    result = run.predict(paths, top_k=top_k, tta=tta, batch_size=batch_size)
    text = result.formatted(fmt, columns.split(","), id_from)  # type: ignore[arg-type]
    for path, reason in result.skipped:
        err.print(f"skipped {path}: {reason}", highlight=False, markup=False)
    if out_path is None:
        typer.echo(text, nl=False)
        return
    write_text(out_path, text)
    skipped = f" ({len(result.skipped)} skipped: not usable images)" if result.skipped else ""
    out.print(f"Wrote {out_path}: {len(result.items)} predictions{skipped}", highlight=False)


@app.command()
@user_errors
def evaluate(
    run_folder: Path = typer.Argument(..., metavar="RUN", help="A finished run's folder."),
    data: str | None = typer.Argument(
        None,
        metavar="[DATA]",
        help="A labelled source (folder, zip, CSV, IDX); default: the run's.",
    ),
    split: str | None = typer.Option(
        None, help="train, val, test or all (default: test, else val; a new source: all)."
    ),
    augment: str = typer.Option(
        "none", help="none, train (the run's training augmentation) or a preset, e.g. s1."
    ),
    tta: bool = typer.Option(False, "--tta", help="Average each image with its mirror image."),
    name: str | None = typer.Option(
        None, help="The evaluation's folder name (default: from split, augment, tta)."
    ),
    seed: int | None = typer.Option(None, help="The augmentation's draws (default: the run's)."),
    label_pattern: str | None = typer.Option(None, help="A new source's labels from file names."),
    labels_csv: str | None = typer.Option(None, help="A new source's path,label CSV."),
) -> None:
    """Evaluate a finished run again, on its own or other labelled data, into RUN/evaluations/
    NAME/ (metrics.json, predictions.csv) and its report; the run's own metrics stay."""
    from cnnlab.runs.evaluation import EvaluationSpec, evaluate_run

    spec = EvaluationSpec(data, split, augment, tta, seed, label_pattern, labels_csv)
    for line in evaluate_run(run_folder, spec, name).lines():
        out.print(line, highlight=False, markup=False)


@app.command()
@user_errors
def compare(
    runs: list[Path] = typer.Argument(..., metavar="RUN...", help="Finished runs' folders."),
    out_path: Path | None = typer.Option(
        None, "--out", help="Also write the comparison as a page, e.g. compare.html."
    ),
) -> None:
    """Finished runs side by side: accuracy, macro F1, loss, parameters, epochs, time, the
    over-fitting gap, per-class F1 and learning curves; McNemar's test on shared test images."""
    from cnnlab.study.compare import compare as compare_runs

    result = compare_runs(runs, out_path)
    for line in result.lines():
        out.print(line, highlight=False, markup=False)
    if out_path is not None:
        out.print(f"Wrote {out_path}", highlight=False, markup=False)


@app.command()
@user_errors
def ensemble(
    runs: list[Path] = typer.Argument(..., metavar="RUN...", help="Finished runs' folders."),
    method: str = typer.Option(
        "mean", help="mean (probabilities), vote (predicted classes) or stack (fitted on val)."
    ),
    name: str | None = typer.Option(None, help="The run folder's name (default: ensemble-METHOD)."),
    output: Path | None = typer.Option(
        None, help="Parent folder of the run folder (default: the first run's parent)."
    ),
) -> None:
    """Combine finished runs of the same data into one run folder (metrics, predictions,
    report) that predict, evaluate and compare read like any run."""
    from cnnlab.errors import ConfigError
    from cnnlab.runs.ensemble import ensemble_runs

    if method not in ("mean", "vote", "stack"):
        raise ConfigError(f"--method {method}: give mean, vote or stack")
    result = ensemble_runs(runs, method, name, output, console=out)  # type: ignore[arg-type]
    split = next(k for k in ("test", "val") if k in result.metrics)
    headline = result.metrics[split]
    out.print(f"{split} accuracy: {headline['accuracy']:.4f}  loss: {headline['loss']:.4f}")
    out.print(f"Report: {result.report}")


@app.command()
@user_errors
def study(
    config: Path = typer.Argument(..., metavar="STUDY.yaml", help="A study file."),
    jobs: int | None = typer.Option(
        None, "--jobs", min=1, help="Runs at once, in separate processes (default: the file's)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a key of every run, over the cells: --set train.epochs=3"
    ),
) -> None:
    """Run a study (matrix, variants or ladder, over seeds): finished runs are skipped,
    interrupted ones resumed; writes study.html, study.json, study.csv, study.md, study.tex."""
    from cnnlab.study.runner import run_study

    result = run_study(config, jobs, set_, console=out)
    for path in result.files:
        out.print(f"Wrote {path}", highlight=False, markup=False)
    if result.failures:
        for failure in result.failures:
            err.print(
                f"failed: {failure['cell']} seed {failure['seed']}: {failure['error']}",
                highlight=False,
                markup=False,
            )
        err.print(f"{len(result.failures)} of the study's runs or evaluations failed")
        raise typer.Exit(1)


@app.command()
@user_errors
def sweep(
    config: Path = typer.Argument(..., metavar="SWEEP.yaml", help="A sweep file."),
    trials: int | None = typer.Option(
        None, "--trials", min=1, help="Finished trials the study must hold (default: the file's)."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.0, help="Seconds after which no new trial starts."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Local processes sharing the storage (default: the file's)."
    ),
    storage: str | None = typer.Option(
        None, "--storage", help="SQLAlchemy URL shared by workers anywhere (e.g. postgresql://...)."
    ),
) -> None:
    """Hyper-parameter search with Optuna (TPE, pruning on validation curves): each trial an
    ordinary run folder; rerun to continue; writes sweep.html and sweep.json."""
    from cnnlab.sweep.runner import SweepInterrupted, run_sweep

    try:
        result = run_sweep(config, trials, timeout, workers, storage, console=out)
    except SweepInterrupted as stop:  # Ctrl-C: the report is written; 128 + SIGINT
        err.print(
            f"interrupted with {stop.finished} of {stop.wanted} trials finished (report in "
            f"{stop.folder}); run the same command again to continue",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(130) from None
    best = result.best
    if best is not None:
        out.print(
            f"best: trial {best['number']} ({best['value']:.4f}), {result.folder / best['folder']}",
            highlight=False,
            markup=False,
        )
    for path in result.files:
        out.print(f"Wrote {path}", highlight=False, markup=False)
    for problem in result.problems:
        err.print(problem, highlight=False, markup=False)
    if result.problems:
        raise typer.Exit(1)


@app.command()
@user_errors
def kfold(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    folds: int = typer.Option(5, "--folds", min=2, help="Folds of the training pool."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set train.epochs=5"),
    output: Path | None = typer.Option(None, help="Parent folder (default: output.dir)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Folds at once, in separate processes."),
) -> None:
    """Stratified K-fold cross-validation: one ordinary run per fold (train+val in K folds),
    then mean ± std over the folds; a rerun skips finished folds."""
    from cnnlab.study.kfold import run_kfold

    result = run_kfold(config, folds, set_, output, jobs, console=out)
    for line in result.lines():
        out.print(line, highlight=False, markup=False)
    out.print(f"Wrote {result.folder}", highlight=False, markup=False)
    if result.failures:
        raise typer.Exit(1)


@app.command()
@user_errors
def auto(
    folder: str = typer.Argument(..., help="A folder (or .zip) of class folders of images."),
    time_budget: str = typer.Option("10m", "--time", help="Budget for everything: 90s, 10m, 1h."),
    quality: str = typer.Option("fast", help="fast (128x128 inputs) or best (224x224)."),
    output: Path = typer.Option(Path("runs"), help="Parent folder of the auto folder."),
) -> None:
    """From a folder to a verdict: health check, split, a features baseline, a fine-tuned
    EfficientNet-Lite0 within the time budget, their comparison; writes the YAML it used."""
    from cnnlab.errors import ConfigError
    from cnnlab.study.auto import parse_duration, run_auto

    if quality not in ("fast", "best"):
        raise ConfigError(f"--quality {quality}: choose fast or best")
    run_auto(folder, parse_duration(time_budget), quality, output, console=out)  # type: ignore[arg-type]


@app.command()
@user_errors
def serve(
    run_folder: Path = typer.Argument(..., metavar="RUN", help="A finished run's folder."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free one)."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on; 127.0.0.1 keeps the page to this machine."
    ),
    max_upload_mb: float = typer.Option(
        20.0, "--max-upload-mb", min=0.001, help="Largest upload per request, in MB."
    ),
) -> None:
    """A local web page for a finished run: choose or drop images, see the top classes."""
    from cnnlab.serve import open_server

    server = open_server(run_folder, host, port, max_upload_mb)
    run = server.run
    out.print(
        f"Serving {run.folder} ({run.model_name}, {len(run.classes)} classes) at {server.url}",
        highlight=False,
        markup=False,
    )
    out.print("Press Ctrl+C to stop.", highlight=False)
    server.serve_forever()


@app.command()
@user_errors
def export(
    run_folder: Path = typer.Argument(..., metavar="RUN", help="A finished trained run's folder."),
    fmt: str = typer.Option(
        "onnx", "--format", help="onnx, torchscript, or exported-program (torch.export)."
    ),
    out_path: Path | None = typer.Option(
        None, "--out", help="Folder for the files (default: RUN/export/)."
    ),
    dynamic_batch: bool = typer.Option(
        False, "--dynamic-batch", help="Any batch size (default: one image per call)."
    ),
) -> None:
    """Export a trained run as one file that takes uint8 NCHW images and gives probabilities,
    checked against PyTorch on the run's test images, with MODEL_CARD.md beside it."""
    from cnnlab.runs.export import export_run

    result = export_run(run_folder, fmt, out_path, dynamic_batch=dynamic_batch)
    for line in result.lines():
        out.print(line, highlight=False, markup=False)


@app.command()
@user_errors
def explain(
    run_folder: Path = typer.Argument(..., metavar="RUN", help="A finished trained run's folder."),
    images: list[Path] | None = typer.Argument(
        None,
        metavar="[IMAGES...]",
        help="Images, folders or .zip files (default: a few of the run's test images).",
    ),
    method: str = typer.Option(
        "gradcam",
        help="gradcam, gradcam++, hirescam, xgradcam, layercam, eigencam, eigengradcam, scorecam.",
    ),
    layer: str | None = typer.Option(
        None, help="A spatial layer's summary name (default: the last convolution block)."
    ),
    target: str | None = typer.Option(
        None, help="The class the heat is for (default: each image's predicted class)."
    ),
    out_path: Path | None = typer.Option(
        None, "--out", help="Folder for the PNG files (default: RUN/explain/)."
    ),
    feature_maps: str | None = typer.Option(
        None, "--feature-maps", help="LAYER[,LAYER...]: also a grid of each layer's channels."
    ),
) -> None:
    """Where the network looks: class-activation heat maps over images (one PNG each, with the
    predicted class and probability) and feature-map grids; files are never overwritten."""
    from cnnlab.runs.explain import explain_run

    layers = [name.strip() for name in feature_maps.split(",")] if feature_maps else None
    result = explain_run(run_folder, images, method, layer, target, out_path, layers)
    for line in result.lines():
        out.print(line, highlight=False, markup=False)


@app.command()
@user_errors
def demo(
    folder: Path = typer.Option(Path("cnnlab-demo"), help="Where the demo writes its files."),
) -> None:
    """Write scikit-learn's digits as PNG files, train two models on them, compare, report."""
    from cnnlab.demo import run_demo

    run_demo(folder, out)


def main() -> None:  # pragma: no cover - the console script
    app()
