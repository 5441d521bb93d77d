"""The page's interpretation section (report.interpret, on by default): the most confused class
pairs, from metrics.json's confusion matrix; Grad-CAM panels and an embedding of the penultimate
features, from interpretation.json (what runs/interpretation.py kept of the network at the end of
the run). A missing or damaged interpretation.json leaves its parts out and says so.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from jinja2 import Environment
from markupsafe import Markup

from cnnlab.report import view
from cnnlab.report.interpretation_figures import embedding_figure
from cnnlab.runfiles import INTERPRETATION, RunFiles, mapping

CONFUSED_PAIRS = 10  # the largest off-diagonal cells; the matrix above has the rest
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CSS = """
#interpretation .grid figcaption .right { color: #1a7f37; font-weight: 600; }
#interpretation .grid figcaption .wrong { color: #cf222e; font-weight: 600; }
"""

TEMPLATE = """<section id="interpretation">
  <h2>Interpretation <small>({{ split }})</small></h2>
  <h3>Most confused classes</h3>
  {% if pairs %}
  <table id="confused">
    <thead><tr><th>true class</th><th class="text">predicted as</th><th>images</th>
      <th>of the true class</th><th>of all mistakes</th></tr></thead>
    <tbody>{% for pair in pairs %}
      <tr><td>{{ pair.true }}</td><td class="text">{{ pair.predicted }}</td>
        <td>{{ pair.count }}</td><td>{{ pair.of_class }}</td><td>{{ pair.of_mistakes }}</td></tr>
    {% endfor %}</tbody>
  </table>
  <p class="hint">The largest off-diagonal cells of the confusion matrix, largest first.</p>
  {% elif has_matrix %}<p class="hint">No class was mistaken for another.</p>
  {% else %}<p class="hint">No confusion matrix recorded (metrics.json).</p>{% endif %}

  <h3 id="grad-cam">Grad-CAM</h3>
  {% if cam.tiles %}
  <p class="hint">Where the network looked for the class it predicted ({{ cam.method }}
  {%- if cam.layer %} at {{ cam.layer }}{% endif %}; red: most weight): the most confident
  right answers first, then the mistakes with the highest loss.</p>
  <div class="grid">
  {% for tile in cam.tiles %}
    <figure title="{{ tile.path }}">
      <img src="{{ tile.src }}" alt="Grad-CAM of {{ tile.path }}">
      <figcaption>{% if tile.correct %}<span class="right">right</span> {{ tile.true }}
        {%- else %}<span class="wrong">wrong</span> {{ tile.true }} → {{ tile.predicted }}
        {%- endif %} (p={{ tile.probability }})
        <span class="path">{{ tile.path }}</span></figcaption>
    </figure>
  {% endfor %}
  </div>
  {% else %}<p class="hint">No Grad-CAM panels: {{ cam.note }}.</p>{% endif %}

  <h3 id="embedding">Embedding of the penultimate features</h3>
  {% if embedding.src %}
  <p class="hint">{{ embedding.shown }} of {{ embedding.images }} {{ split }} images
  {%- if embedding.sampled %} (a random sample){% endif %}, each a point placed by its features
  ({{ embedding.features }}, {{ embedding.dimension }} values), coloured by its true class;
  black-edged crosses: misclassified. Nearby points look alike to the network; the axes have
  no units.{% for method, why in embedding.skipped %} {{ method }}: {{ why }}.{% endfor %}</p>
  <img class="figure" src="{{ embedding.src }}" alt="2-D embedding of the features">
  {% else %}<p class="hint">No embedding: {{ embedding.note }}.</p>{% endif %}
</section>
"""


def interpretation_html(run: RunFiles, environment: Environment) -> Markup | None:
    """The section's HTML, rendered with the page's (autoescaping) environment; None when the
    run's config.yaml sets report.interpret: false, or there is no evaluated split."""
    context = interpretation_section(run)
    if context is None:
        return None
    return Markup(environment.from_string(TEMPLATE).render(context))


def interpretation_section(run: RunFiles) -> dict[str, Any] | None:
    if mapping(run.config.get("report")).get("interpret") is False:
        return None
    saved, problem = _saved(run)
    split = str(saved.get("split") or view.evaluated_split(run.metrics) or "")
    if not split:
        return None
    values = mapping(run.metrics.get(split))
    classes = view.class_names(run, values)
    matrix = values.get("confusion_matrix")
    has_matrix = view._square(matrix) and len(matrix) == len(classes)
    saved_classes = [str(c) for c in saved.get("classes") or []] or classes
    return {
        "split": split,
        "has_matrix": has_matrix,
        "pairs": confused_pairs(matrix, classes) if has_matrix else [],
        "cam": _cam(mapping(saved.get("cam")), problem),
        "embedding": _embedding(mapping(saved.get("embedding")), saved_classes, problem),
    }


def confused_pairs(
    matrix: Any, classes: list[str], limit: int = CONFUSED_PAIRS
) -> list[dict[str, str]]:
    """The `limit` largest off-diagonal cells: true class, predicted class, how many images,
    and their share of the true class's images and of all mistakes."""
    counts = np.asarray(matrix, dtype=float)
    wrong = counts.copy()
    np.fill_diagonal(wrong, 0)
    mistakes, per_class = wrong.sum(), counts.sum(axis=1)
    cells = [(int(i), int(j)) for i, j in zip(*np.nonzero(wrong), strict=True)]
    cells.sort(key=lambda cell: (-wrong[cell], cell))  # ties: in class order
    return [
        {
            "true": classes[i],
            "predicted": classes[j],
            "count": view.count(wrong[i, j]),
            "of_class": view.percent(wrong[i, j] / per_class[i]),
            "of_mistakes": view.percent(wrong[i, j] / mistakes),
        }
        for i, j in cells[:limit]
    ]


def _saved(run: RunFiles) -> tuple[dict[str, Any], str | None]:
    """interpretation.json, and why it is not there when it is not."""
    path = run.folder / INTERPRETATION
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if mapping(run.config.get("ensemble")):
            return (
                {},
                "an ensemble has no network of its own: `cnnlab explain MEMBER` shows a member's",
            )
        return {}, f"the run wrote no {INTERPRETATION}"
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return {}, f"{INTERPRETATION} could not be read ({error})"
    if not isinstance(saved, dict):
        return {}, f"{INTERPRETATION} holds no mapping"
    return saved, None


def _cam(saved: dict[str, Any], problem: str | None) -> dict[str, Any]:
    if not saved:
        return {"tiles": [], "note": problem or "none were drawn"}
    tiles = [tile for tile in map(_cam_tile, saved.get("tiles") or []) if tile is not None]
    note = str(saved.get("skipped") or "")
    if not tiles and not note:
        note = f"{INTERPRETATION} holds no readable panel"
    return {
        "tiles": tiles,
        "note": note,
        "method": str(saved.get("method") or "Grad-CAM"),
        "layer": str(saved.get("layer") or ""),
    }


def _cam_tile(value: Any) -> dict[str, Any] | None:
    tile = mapping(value)
    try:
        png = base64.b64decode(str(tile.get("png", "")), validate=True)
    except ValueError:
        return None
    if not png.startswith(PNG_SIGNATURE):
        return None
    return {
        "src": view.data_uri(png),
        "correct": tile.get("correct") is True,
        "true": str(tile.get("true", "")),
        "predicted": str(tile.get("predicted", "")),
        "probability": view.decimal(tile.get("probability"), 2),
        "path": str(tile.get("path", "")),
    }


def _embedding(saved: dict[str, Any], classes: list[str], problem: str | None) -> dict[str, Any]:
    if not saved:
        return {"src": None, "note": problem or "none was computed"}
    if saved.get("skipped") and isinstance(saved["skipped"], str):
        return {"src": None, "note": saved["skipped"]}
    try:
        labels = np.asarray(saved["label"], dtype=np.int64)
        predicted = np.asarray(saved["predicted"], dtype=np.int64)
        coordinates = {
            str(method): np.asarray(xy, dtype=float).reshape(len(labels), 2)
            for method, xy in mapping(saved.get("coordinates")).items()
        }
        if labels.size and (labels.min() < 0 or max(labels.max(), predicted.max()) >= len(classes)):
            raise ValueError("a class index beyond the run's classes")
    except (KeyError, TypeError, ValueError) as error:
        return {"src": None, "note": f"{INTERPRETATION}: its embedding is damaged ({error})"}
    if not coordinates or len(predicted) != len(labels):
        return {"src": None, "note": f"{INTERPRETATION}: its embedding holds no coordinates"}
    shown, images = len(labels), saved.get("images")
    return {
        "src": view.data_uri(embedding_figure(coordinates, labels, predicted, classes)),
        "shown": view.count(shown),
        "images": view.count(images),
        "sampled": isinstance(images, int) and images > shown,
        "features": str(saved.get("features") or "the penultimate layer's output"),
        "dimension": view.count(saved.get("dimension")),
        "skipped": [(str(m), str(why)) for m, why in mapping(saved.get("skipped")).items()],
    }
