"""render_report: a run folder in, one self-contained report.html out.

Every figure is embedded as a base64 PNG and the CSS is inline, so the page opens offline,
from an e-mail attachment or a copied folder, exactly as it was written. Under the learning
curves, their diagnosis in words (diagnosis.py); after the per-class table, the ROC and
precision-recall curves and the reliability diagram (view.ranking_section); after the test
images, their interpretation (interpretation.py: confused pairs, Grad-CAM, embedding) and the
run's later evaluations (`cnnlab evaluate`, evaluations/<name>/), when it has any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

import cnnlab
from cnnlab.atomic import write_text
from cnnlab.report import view
from cnnlab.report.diagnosis import diagnose
from cnnlab.report.interpretation import CSS as INTERPRETATION_CSS
from cnnlab.report.interpretation import interpretation_html
from cnnlab.report.reconstruction import reconstruction_section
from cnnlab.report.template import CSS, TEMPLATE
from cnnlab.report.view import Misclassified
from cnnlab.runfiles import REPORT, read_run

# Autoescape on: class names, paths and warnings come from users' files and folders.
ENVIRONMENT = Environment(
    autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)


def render_report(
    folder: Path, misclassified: Misclassified | None = None, augmented: bytes | None = None
) -> Path:
    """Reads the run folder's files and writes folder / "report.html" atomically; returns its path.

    Missing optional files (no test split, no history, ...) leave their section out or say
    what is missing; they never stop the page from being written.
    """
    folder = Path(folder)
    html = render_html(folder, misclassified, augmented)
    target = folder / REPORT
    write_text(target, html)
    return target


def render_html(
    folder: Path, misclassified: Misclassified | None = None, augmented: bytes | None = None
) -> str:
    return ENVIRONMENT.from_string(TEMPLATE).render(page_context(folder, misclassified, augmented))


def page_context(
    folder: Path, misclassified: Misclassified | None, augmented: bytes | None
) -> dict[str, Any]:
    run = read_run(folder)
    curves = view.curves(run)
    reconstructs = run.config.get("task") == "reconstruction"
    context: dict[str, Any] = {
        "title": run.name,
        "folder": str(folder),
        "version": cnnlab.__version__,
        # our own constants; escaping would break quotes inside <style>
        "css": Markup(CSS + INTERPRETATION_CSS),
        "model_name": view.model_name(run),
        "headline": view.headline(run),
        "notes": run.notes,
        "metrics": view.metrics_table(run.metrics),
        "trained": run.trained,  # a features run has no epochs: no curves section
        "curves": curves,
        "diagnosis": diagnose(diagnosed(run.history, reconstructs)) if curves else [],
        "per_class": view.per_class_section(run),
        "ranking": view.ranking_section(run),  # ROC, precision-recall, calibration
        "misclassified": view.misclassified_tiles(misclassified),
        # confused pairs, Grad-CAM, embedding (report.interpret): rendered HTML, or None
        "interpretation": None if reconstructs else interpretation_html(run, ENVIRONMENT),
        # task: reconstruction: input / output / target images; rendered HTML, or None
        "reconstruction": reconstruction_section(folder, ENVIRONMENT),
        "evaluations": view.evaluations_table(run),  # `cnnlab evaluate`, after the run
        "summary": run.summary.rstrip(),
        "stages": view.stages_table(run),  # a staged transfer run's fine-tuning stages
        "data": view.data_section(run),
        "augmented": view.data_uri(augmented) if augmented else None,
        "info": view.run_info(run),
        "config": run.config_text.rstrip(),
    }
    context["sections"] = _sections(context)
    return context


def diagnosed(history: dict[str, list[float]], reconstructs: bool) -> dict[str, list[float]]:
    """The curves diagnosis reads. A reconstruction's pixel accuracy is capped by the data's
    ceiling (task/reconstruction.py), which the accuracy thresholds would read as
    underfitting: its loss curves alone are judged."""
    if not reconstructs:
        return history
    return {name: values for name, values in history.items() if "accuracy" not in name}


def _sections(context: dict[str, Any]) -> list[tuple[str, str]]:
    """The page's table of contents: only the sections it shows."""
    per_class = context["per_class"] is not None
    present = [
        ("curves", "Learning curves", context["trained"]),
        ("confusion", "Confusion matrix", per_class),
        ("per-class", "Per-class metrics", per_class),
        ("ranking", "ROC and calibration", context["ranking"] is not None),
        ("misclassified", "Misclassified", context["misclassified"] is not None),
        ("interpretation", "Interpretation", context["interpretation"] is not None),
        ("reconstruction", "Reconstructions", context["reconstruction"] is not None),
        ("evaluations", "Evaluations", bool(context["evaluations"])),
        ("model", "Model", True),
        ("data", "Data", True),
        ("augmentation", "Augmentation", context["augmented"] is not None),
        ("run", "Run", True),
        ("config", "Configuration", True),
    ]
    return [(anchor, title) for anchor, title, shown in present if shown]
