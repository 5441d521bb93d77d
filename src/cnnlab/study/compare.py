"""`cnnlab compare`: finished runs side by side, as a terminal table and a compare.html page.

Each run is read through the tolerant `read_run`, so a run missing history or timings still
gets its row with blanks. The runs are tested against the best (highest accuracy on its
evaluated split, test if present else val) with McNemar's exact test on per-image correctness,
only when every run evaluated the very same images; the test's p-values are Holm-corrected.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup
from rich.console import Console
from rich.table import Table

from cnnlab.atomic import write_text
from cnnlab.errors import ConfigError
from cnnlab.report import view
from cnnlab.report.template import CSS
from cnnlab.runfiles import METRICS, PREDICTIONS, RunFiles, mapping, read_run
from cnnlab.study import figures, stats
from cnnlab.study.paper import MISSING, number, pvalue

ALPHA = 0.05
COMPARE_HTML = "compare.html"


@dataclass
class RunRow:
    """One run's numbers on its evaluated split; None where the run did not record them."""

    name: str
    folder: Path
    model: str
    total_params: int | None
    epochs_run: int | None
    best_epoch: int | None
    train_s: float | None
    split: str | None  # test if the run has it, else val
    accuracy: float | None
    macro_f1: float | None
    loss: float | None
    gap: float | None  # train accuracy - val accuracy: how much the model over-fits
    f1: dict[str, float] = field(default_factory=dict)  # per class
    history: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Versus:
    """McNemar's exact test of one run against the best, on the same images."""

    run: str
    only_run: int  # images only this run classified correctly
    only_best: int  # images only the best run classified correctly
    p: float
    p_holm: float
    significant: bool


@dataclass
class Comparison:
    runs: list[RunRow]
    best: int | None  # index into runs; None when no run recorded an accuracy
    classes: list[str]  # union of the runs' class names, in first-seen order
    tests: list[Versus]
    no_test: str | None  # why no McNemar test is shown, when none is

    def table(self) -> Table:
        """The runs as a rich table for the terminal; the best marked with a star."""
        table = Table(title="compare", title_justify="left")
        for name in RUN_COLUMNS:
            table.add_column(name, justify="left" if name in ("run", "model", "split") else "right")
        for index, (row, p) in enumerate(zip(self.runs, self.p_column(), strict=True)):
            table.add_row(*run_cells(row, index == self.best), p)
        return table

    def p_column(self) -> list[str]:
        """Each run's Holm-corrected p against the best: "best" for the best, blank untested."""
        p_holm = {test.run: pvalue(test.p_holm) for test in self.tests}
        return [
            "best" if k == self.best else p_holm.get(row.name, "")
            for k, row in enumerate(self.runs)
        ]

    def lines(self) -> list[str]:
        """The table as plain text lines, then what the McNemar column means (or why absent)."""
        buffer = io.StringIO()
        Console(file=buffer, width=160, color_system=None).print(self.table())
        text = buffer.getvalue()
        return [*(line.rstrip() for line in text.rstrip().splitlines()), self.test_note()]

    def test_note(self) -> str:
        if self.no_test:
            return f"No McNemar test: {self.no_test}."
        return (
            "p (Holm): McNemar's exact test of each run against the best on the same images, "
            f"Holm-corrected over {len(self.tests)} comparison(s); significant at p <= {ALPHA}."
        )


RUN_COLUMNS = (
    "run", "model", "params", "epochs", "best epoch", "train time", "split", "accuracy",
    "macro F1", "loss", "gap", "p (Holm)",
)  # fmt: skip


def run_cells(row: RunRow, best: bool) -> list[str]:
    """A row's values as text, without the p column (the page and terminal add their own)."""
    return [
        row.name + (" \u2605" if best else ""),
        row.model,
        view.count(row.total_params),
        view.count(row.epochs_run),
        view.count(row.best_epoch),
        view.seconds(row.train_s),
        row.split or MISSING,
        number(row.accuracy),
        number(row.macro_f1),
        number(row.loss),
        MISSING if row.gap is None else f"{row.gap:+.4f}",
    ]


def compare(folders: Sequence[Path], out: Path | None = None) -> Comparison:
    """What `cnnlab compare` calls: the comparison, and compare.html at `out` when given."""
    comparison = compare_runs(folders)
    if out is not None:
        write_compare_html(comparison, out)
    return comparison


def compare_runs(folders: Sequence[Path]) -> Comparison:
    """Reads every run folder (ConfigError for one that is not a finished run) and compares."""
    if len(folders) < 2:
        raise ConfigError(f"compare needs at least two run folders, got {len(folders)}")
    paths = [Path(folder) for folder in folders]
    for path in paths:
        if not (path / METRICS).is_file():
            raise ConfigError(f"{path}: not a finished run (no {METRICS}); pass run folders")
    runs = [
        run_row(read_run(path), name) for path, name in zip(paths, unique_names(paths), strict=True)
    ]
    accuracies = [-math.inf if r.accuracy is None else r.accuracy for r in runs]
    best = accuracies.index(max(accuracies)) if any(r.accuracy is not None for r in runs) else None
    classes = list(dict.fromkeys(name for row in runs for name in row.f1))
    tests, reason = mcnemar_tests(runs, best)
    return Comparison(runs, best, classes, tests, reason)


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Folder names, with as many parent folders as it takes to tell duplicates apart."""
    depth = 1
    while True:
        names = ["/".join(path.resolve().parts[-depth:]) for path in paths]
        if len(set(names)) == len(names) or depth > max(len(p.resolve().parts) for p in paths):
            return names
        depth += 1


def run_row(run: RunFiles, name: str) -> RunRow:
    split = view.evaluated_split(run.metrics)
    scores = mapping(run.metrics.get(split)) if split else {}
    model = mapping(run.manifest.get("model"))
    train, val = mapping(run.metrics.get("train")), mapping(run.metrics.get("val"))
    gap = _float(train.get("accuracy")) - _float(val.get("accuracy"))
    best_epoch = run.manifest.get("best_epoch") or view.best_epoch(run)[0]
    epochs = run.manifest.get("epochs_run") or len(run.history.get("epoch", [])) or None
    return RunRow(
        name=name,
        folder=run.folder,
        model=view.model_name(run),
        total_params=_int(model.get("total_params")),
        epochs_run=_int(epochs),
        best_epoch=_int(best_epoch),
        train_s=_finite(mapping(run.manifest.get("timings")).get("train_s")),
        split=split,
        accuracy=_finite(scores.get("accuracy")),
        macro_f1=_finite(mapping(scores.get("macro_avg")).get("f1")),
        loss=_finite(scores.get("loss")),
        gap=None if math.isnan(gap) else gap,
        f1=class_f1(mapping(scores.get("per_class"))),
        history=run.history,
    )


def class_f1(per_class: dict[str, Any]) -> dict[str, float]:
    """Class name -> F1, leaving out classes whose F1 was not recorded."""
    f1 = {str(name): _finite(mapping(values).get("f1")) for name, values in per_class.items()}
    return {name: value for name, value in f1.items() if value is not None}


def mcnemar_tests(runs: list[RunRow], best: int | None) -> tuple[list[Versus], str | None]:
    """Each run against the best, image by image: only when all evaluated the same images."""
    if best is None:
        return [], "no run recorded an accuracy"
    correct = []
    for row in runs:
        answers = read_correct(row)
        if isinstance(answers, str):
            return [], answers
        correct.append(answers)
    images = set(correct[best])
    for row, answers in zip(runs, correct, strict=True):
        if set(answers) != images:
            return [], (
                f"the runs evaluated different images ({runs[best].name}: {len(images)} on "
                f"{runs[best].split}, {row.name}: {len(answers)} on {row.split}, "
                f"{len(images & set(answers))} shared)"
            )
    order = sorted(images)
    reference = [correct[best][path] for path in order]
    others = [k for k in range(len(runs)) if k != best]
    results = [stats.mcnemar_exact([correct[k][p] for p in order], reference) for k in others]
    adjusted = stats.holm([r.p for r in results])
    tests = [
        Versus(runs[k].name, r.only_a, r.only_b, r.p, p, stats.significant(p, ALPHA))
        for k, r, p in zip(others, results, adjusted, strict=True)
    ]
    return tests, None


def read_correct(row: RunRow) -> dict[str, bool] | str:
    """path -> whether the run classified it correctly on its evaluated split; or why not."""
    try:
        text = (row.folder / PREDICTIONS).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return f"{row.name} has no readable {PREDICTIONS}"
    lines = [r for r in csv.DictReader(text.splitlines()) if r.get("split") == row.split]
    correct = {r.get("path") or "": r.get("label") == r.get("predicted") for r in lines}
    if not lines or len(correct) != len(lines):
        return f"{row.name}'s {PREDICTIONS} has no single row per {row.split} image"
    return correct


def write_compare_html(comparison: Comparison, out: Path) -> Path:
    """Writes the comparison as one self-contained page at `out` (a folder: compare.html in
    it; a path ending in .html: that file); returns the path written."""
    out = Path(out)
    target = out if out.suffix.lower() in (".html", ".htm") else out / COMPARE_HTML
    write_text(target, ENVIRONMENT.from_string(TEMPLATE).render(page_context(comparison)))
    return target


def page_context(comparison: Comparison) -> dict[str, Any]:
    rows = [
        (k == comparison.best, [*run_cells(row, False), p])
        for k, (row, p) in enumerate(zip(comparison.runs, comparison.p_column(), strict=True))
    ]
    curves = {
        row.name: {"epoch": row.history.get("epoch", [])}
        | {key: {"mean": row.history[key]} for key in CURVE_COLUMNS if key in row.history}
        for row in comparison.runs
    }
    return {
        "css": Markup(CSS + "tr.best td { font-weight: 650; background: #dafbe1; }"),
        "columns": RUN_COLUMNS,
        "rows": rows,
        "classes": comparison.classes,
        "f1": [
            (r.name, [number(r.f1.get(c)) for c in comparison.classes]) for r in comparison.runs
        ],
        "comparison": comparison,
        "pvalue": pvalue,
        "note": comparison.test_note(),
        "curves": [
            (metric, view.data_uri(figures.overlaid_curves(curves, metric, f"{metric} per epoch")))
            for metric in ("accuracy", "loss")
            if figures.has_curve(curves, metric)
        ],
    }


CURVE_COLUMNS = ("loss", "val_loss", "accuracy", "val_accuracy")
# Autoescape on: run names and class names come from users' folders.
ENVIRONMENT = Environment(
    autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>compare · cnnlab</title><style>{{ css }}</style></head>
<body><main>
<header><h1>Compare {{ rows | length }} runs</h1>
<p class="sub">Each run on its evaluated split (test if present, else val); gap: train accuracy
minus val accuracy. Bold: the best accuracy.</p></header>
<nav><a href="#runs">Runs</a><a href="#per-class">Per-class F1</a><a href="#mcnemar">McNemar</a>
{% if curves %}<a href="#curves">Learning curves</a>{% endif %}</nav>
<section id="runs"><h2>Runs</h2>
<table><thead><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for best, cells in rows %}<tr class="{{ 'best' if best else '' }}">
{% for cell in cells %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
</section>
<section id="per-class"><h2>Per-class F1</h2>
{% if classes %}<table><thead><tr><th>run</th>{% for c in classes %}<th>{{ c }}</th>
{% endfor %}</tr></thead><tbody>{% for name, values in f1 %}<tr><td>{{ name }}</td>
{% for v in values %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
<p class="hint">A dash: the run has no such class.</p>
{% else %}<p class="hint">No run recorded per-class metrics.</p>{% endif %}
</section>
<section id="mcnemar"><h2>McNemar</h2>
{% if comparison.tests %}<table><thead><tr><th>run</th><th>only this run right</th>
<th>only the best right</th><th>p</th><th>p (Holm)</th><th>significant</th></tr></thead><tbody>
{% for t in comparison.tests %}<tr><td>{{ t.run }}</td><td>{{ t.only_run }}</td>
<td>{{ t.only_best }}</td><td>{{ pvalue(t.p) }}</td><td>{{ pvalue(t.p_holm) }}</td>
<td>{{ "yes" if t.significant else "no" }}</td></tr>{% endfor %}</tbody></table>{% endif %}
<p class="hint">{{ note }}</p>
</section>
{% if curves %}<section id="curves"><h2>Learning curves</h2>
<p class="hint">Each run one colour: validation solid, training dashed.</p>
{% for metric, src in curves %}<h3>{{ metric }}</h3>
<img class="figure" src="{{ src }}" alt="{{ metric }} per epoch, every run">{% endfor %}
</section>{% endif %}
</main></body></html>
"""


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _finite(value: Any) -> float | None:
    number_ = _float(value)
    return number_ if math.isfinite(number_) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and math.isfinite(value) else None
