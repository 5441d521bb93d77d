"""write_sweep_html: a sweep (the dict saved as sweep.json) and its figures in, one
self-contained sweep.html out: the run report's CSS inline, every figure a base64 PNG, no
script, each trial's report.html linked relative to the sweep folder (which can be copied or
zipped whole and still opens offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

from cnnlab.atomic import write_text
from cnnlab.report.template import CSS
from cnnlab.report.view import data_uri

SWEEP_HTML = "sweep.html"
# Autoescape on: parameter values, errors and names come from users' files.
ENVIRONMENT = Environment(
    autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
EXTRA_CSS = """
tr.best td { font-weight: 650; background: #dafbe1; }
td.error { color: #cf222e; text-align: left; font-size: 13px; padding-left: 40px; }
tr.has-error td { border-bottom: none; }
td.run { white-space: nowrap; }
.wide { overflow-x: auto; }
th.left, td.left { text-align: left; }
td.PRUNED { color: #9a6700; } td.FAIL { color: #cf222e; } td.COMPLETE { color: #1a7f37; }
"""
FIGURES = (
    ("history", "Optimisation history", "Each complete trial's value and the best so far."),
    (
        "curves",
        "Validation curves",
        "The metric each trial reported after every epoch, the curves the pruner compared; a "
        "pruned trial's curve ends where it was stopped.",
    ),
    (
        "importances",
        "Parameter importances",
        "Optuna's fANOVA: how much of the metric's "
        "variation over the complete trials each parameter explains.",
    ),
    (
        "parallel",
        "Parallel coordinates",
        "Every complete trial as one line through its parameter values, coloured by its value.",
    ),
)


def write_sweep_html(sweep: dict[str, Any], figures: dict[str, Any], folder: Path) -> Path:
    target = Path(folder) / SWEEP_HTML
    write_text(target, ENVIRONMENT.from_string(TEMPLATE).render(page_context(sweep, figures)))
    return target


def page_context(sweep: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    rows = [_row(trial, sweep) for trial in sweep.get("trials") or [] if not trial["surplus"]]
    best = sweep.get("best")
    shown = [
        {"id": name, "title": title, "hint": hint, **_figure(figures.get(name))}
        for name, title, hint in FIGURES
    ]
    sections = [("best", "Best trial"), *((f["id"], f["title"]) for f in shown)]
    return {
        "css": Markup(CSS + EXTRA_CSS),  # our own constants; escaping would break the CSS
        "sweep": sweep,
        "counts": sweep.get("counts") or {},
        "surplus": sum(bool(t["surplus"]) for t in sweep.get("trials") or []),
        "best": best and _row(best, sweep),
        "figures": shown,
        "importances": sorted((sweep.get("importances") or {}).items(), key=lambda kv: -kv[1]),
        "params": list(sweep.get("space") or {}),
        "rows": rows,
        "sections": [*sections, ("trials", "Trials")],
    }


def _figure(value: Any) -> dict[str, Any]:
    if isinstance(value, bytes):
        return {"src": data_uri(value), "reason": ""}
    return {"src": None, "reason": str(value or "not drawn")}


def _row(trial: dict[str, Any], sweep: dict[str, Any]) -> dict[str, Any]:
    best = sweep.get("best") or {}
    value, seconds = trial.get("value"), trial.get("seconds")
    return {
        **trial,
        "is_best": trial.get("number") == best.get("number"),
        "value_text": "\u2013" if value is None else f"{value:.4f}",
        "seconds_text": "\u2013" if seconds is None else f"{seconds:.1f}",
        "href": quote(trial["report"]) if trial.get("report") else None,
        "params_text": {k: _text(v) for k, v in (trial.get("params") or {}).items()},
        "error_text": _error(trial.get("error"), sweep.get("file"), trial.get("number")),
        "elsewhere": _elsewhere(trial),
    }


def _elsewhere(trial: dict[str, Any]) -> str:
    """A finished trial whose folder is not here: another machine's worker ran it."""
    finished = trial.get("state") in ("COMPLETE", "PRUNED")
    return f"on {trial.get('host')}" if finished and not trial.get("folder") else ""


def _error(message: Any, file: Any, number: Any) -> str:
    """A trial's error for the table: without the "SWEEP.yaml: trial N:" every one starts with,
    its key lines on one line."""
    if not message:
        return ""
    text = str(message).removeprefix(f"{file}: trial {number}: ")
    return text.replace("\n  ", "; ")


def _text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ sweep.sweep }} · cnnlab sweep</title>
<style>{{ css }}</style>
</head>
<body>
<main>
<header id="top">
  <h1>{{ sweep.sweep }}</h1>
  <p class="sub">{{ sweep.direction }} {{ sweep.metric }} · {{ counts.finished }} of {{
  sweep.trials_wanted }} trials finished: {{ counts.complete }} complete, {{ counts.pruned }}
  pruned · {{ counts.fail }} failed{% if counts.running %} · {{ counts.running }} running{%
  endif %} · sampler {{ sweep.sampler }} (seed {{ sweep.seed }}) · pruner {{ sweep.pruner.name
  }} · {{ sweep.created }}</p>
  <p class="sub">storage {{ sweep.storage }} · {{ sweep.file }}</p>
  {% if surplus %}<p class="hint">{{ surplus }} more trial{{ "" if surplus == 1 else "s" }}
  started by two workers at the same moment after the study had its trials: recorded as
  failed, never run, left out below.</p>{% endif %}
</header>
<nav>{% for id, title in sections %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}</nav>

<section id="best">
  <h2>Best trial</h2>
  {% if best %}
  <table class="kv">
    <tr><td>trial</td><td>{{ best.number }}</td></tr>
    <tr><td>{{ sweep.metric }}</td><td><b>{{ best.value_text }}</b></td></tr>
    {% for key, value in best.params_text.items() %}<tr><td>{{ key }}</td><td>{{ value }}</td>
    </tr>{% endfor %}
    <tr><td>epochs</td><td>{{ best.epochs }}</td></tr>
    <tr><td>run</td><td>{% if best.href %}<a href="{{ best.href }}">{{ best.folder
    }}/report.html</a>{% else %}{{ best.folder or "on another machine" }}{% if best.host %}
    ({{ best.host }}){% endif %}{% endif %}</td></tr>
  </table>
  {% else %}<p class="hint">No trial has completed yet.</p>{% endif %}
</section>

{% for figure in figures %}
<section id="{{ figure.id }}">
  <h2>{{ figure.title }}</h2>
  {% if figure.src %}<p class="hint">{{ figure.hint }}</p>
  <img class="figure" src="{{ figure.src }}" alt="{{ figure.title }}">
  {% else %}<p class="hint">Not drawn: {{ figure.reason }}.</p>{% endif %}
  {% if figure.id == "importances" %}
  {% if importances %}<table><thead><tr><th>parameter</th><th>importance</th></tr></thead>
  <tbody>{% for key, value in importances %}<tr><td>{{ key }}</td><td>{{ "%.3f"|format(value)
  }}</td></tr>{% endfor %}</tbody></table>{% endif %}
  <p class="hint">{{ sweep.importance_note }}</p>
  {% endif %}
</section>
{% endfor %}

<section id="trials">
  <h2>Trials</h2>
  <p class="hint">The value of a pruned trial is its run's evaluation at the stop; Optuna
  ranks complete trials only.</p>
  <div class="wide"><table>
    <thead><tr><th>trial</th><th class="left">state</th>{% for key in params %}<th>{{
    key.replace(".", ".\u200b") }}</th>{%
    endfor %}<th>{{ sweep.metric }}</th><th>epochs</th><th>seconds</th>
    <th class="left">run</th></tr></thead>
    <tbody>{% for row in rows %}
    <tr class="{{ 'best' if row.is_best else '' }}{{ ' has-error' if row.error }}"><td>{{
    row.number }}{{ " ★" if row.is_best }}</td><td class="left {{ row.state }}">{{
    row.state.lower() }}</td>
      {% for key in params %}<td>{{ row.params_text.get(key, "\u2013") }}</td>{% endfor %}
      <td>{{ row.value_text }}</td><td>{{ row.epochs }}</td><td>{{ row.seconds_text }}</td>
      {% if row.href %}<td class="left run"><a href="{{ row.href }}">{{ row.folder }}</a></td>
      {% else %}<td class="left run">{{ row.elsewhere }}</td>{% endif %}
    </tr>{% if row.error %}<tr><td class="error" colspan="{{ params|length + 6 }}">{{
    row.error_text }}</td></tr>{% endif %}{% endfor %}</tbody>
  </table></div>
</section>
<footer>{{ sweep.file }} · sweep by cnnlab {{ sweep.cnnlab }} on Optuna {{ sweep.optuna }}</footer>
</main>
</body>
</html>
"""
