"""write_study_html: a study (the dict saved as study.json) in, one self-contained study.html out.

The page looks like the run report (its CSS), embeds every figure as a base64 PNG and links
each run's own report.html relative to the study folder, so the folder can be copied or
zipped whole and still opens offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

from cnnlab.atomic import write_text
from cnnlab.report.template import CSS
from cnnlab.report.view import data_uri
from cnnlab.study import figures
from cnnlab.study.paper import interval, mean_std, number, overrides_text, pvalue

STUDY_HTML = "study.html"
PAIRED_NAMES = {"t": "a paired t-test", "wilcoxon": "a Wilcoxon signed-rank test"}
# Autoescape on: cell names, overrides and error messages come from users' files.
ENVIRONMENT = Environment(
    autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
EXTRA_CSS = """
tr.best td { font-weight: 650; background: #dafbe1; }
table.study td { white-space: nowrap; }
table.study td.left { white-space: normal; min-width: 12em; }
td.error, .error { color: #cf222e; word-break: break-word; text-align: left; }
.legend { color: var(--muted); font-size: 13px; margin: 8px 0 4px; }
.diagnosis { border-left: 4px solid #d4a72c; padding: 4px 12px; margin: 8px 0; }
th.left, td.left { text-align: left; }
"""


def write_study_html(study: dict[str, Any], folder: Path) -> Path:
    """Writes folder / "study.html" atomically and returns its path; every section appears
    only when the study has something for it."""
    target = Path(folder) / STUDY_HTML
    write_text(target, ENVIRONMENT.from_string(TEMPLATE).render(page_context(study)))
    return target


def page_context(study: dict[str, Any]) -> dict[str, Any]:
    runs = [run for cell in study.get("cells") or [] for run in cell.get("runs") or []]
    finished = sum(run.get("status") == "finished" for run in runs)
    context: dict[str, Any] = {
        "css": Markup(CSS + EXTRA_CSS),  # our own constants; escaping would break the CSS
        "study": study,
        "name": str(study.get("study") or "study"),
        "seeds": ", ".join(str(s) for s in study.get("seeds") or []),
        "finished": finished,
        "failed": len(runs) - finished,
        "failures": study.get("failures") or [],
        "tables": [
            _table(table, index, study)
            for index, table in enumerate(study.get("tables") or [], start=1)
        ],
        "curves": _curves(study.get("curves") or {}),
        "cross": _cross(study.get("cross_evaluation")),
        "ladder": _ladder(study.get("ladder")),
        "diagnosis": {cell: d for cell, d in (study.get("diagnosis") or {}).items() if d},
        "links": _links(study.get("cells") or []),
    }
    context["sections"] = _sections(context)
    return context


def _sections(context: dict[str, Any]) -> list[tuple[str, str]]:
    """The table of contents: only the sections the page shows."""
    present = [
        ("failures", "Failures", context["failures"]),
        *((t["anchor"], t["title"], True) for t in context["tables"]),
        ("curves", "Learning curves", context["curves"]),
        ("cross-evaluation", "Cross-evaluation", context["cross"]),
        ("ladder", "Ladder", context["ladder"]),
        ("diagnosis", "Diagnosis", context["diagnosis"]),
        ("runs", "Runs", context["links"]),
    ]
    return [(anchor, title) for anchor, title, shown in present if shown]


def _table(table: dict[str, Any], index: int, study: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for row in table.get("rows") or []:
        versus = row.get("vs_best") or {}
        significant = versus.get("significant")
        rows.append(
            {
                "cell": row.get("cell"),
                "best": bool(row.get("best")),
                "mean": mean_std(row.get("summary")),
                "ci": interval(row.get("summary")),
                "values": [number(v) for v in row.get("values") or []],
                "p": "best" if row.get("best") else pvalue(versus.get("p_holm")),
                "significant": "" if significant is None else "yes" if significant else "no",
                "tests": _tests(versus),
            }
        )
    return {
        "anchor": f"table-{index}",
        "title": str(table.get("title") or f"{table.get('split')} {table.get('metric')}"),
        "direction": "higher" if table.get("higher_is_better", True) else "lower",
        "rows": rows,
        "notes": table.get("notes") or [],
        "legend": _legend(study, sum(bool(r.get("vs_best")) for r in table.get("rows") or [])),
    }


def _tests(versus: dict[str, Any]) -> str:
    """The raw tests behind p (Holm), in words, e.g. "t n=3 p=0.170 · McNemar 10/2 p=0.039"."""
    parts = []
    paired = versus.get("paired")
    if paired:
        parts.append(f"{paired.get('method')} n={paired.get('n')} p={pvalue(paired.get('p'))}")
    mcnemar = versus.get("mcnemar")
    if mcnemar:
        counts = f"{mcnemar.get('only_a')}/{mcnemar.get('only_b')}"
        parts.append(f"McNemar {counts} p={pvalue(mcnemar.get('p'))}")
    return " \u00b7 ".join(parts)


def _legend(study: dict[str, Any], comparisons: int) -> str:
    paired = PAIRED_NAMES.get(str(study.get("paired_test")), "a paired test")
    return (
        f"p vs best: {paired} over the seeds (the same seed pairs the two runs); McNemar's exact "
        "test on per-image correctness where both were evaluated on the same images (counts: "
        "images only this cell / only the best got right); p-values Holm-corrected across this "
        f"table's {comparisons} comparison{'' if comparisons == 1 else 's'}; significant: "
        f"p (Holm) \u2264 alpha = {study.get('alpha', 0.05)}."
    )


def _curves(curves: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"metric": metric, "src": data_uri(figures.overlaid_curves(curves, metric))}
        for metric in ("loss", "accuracy")
        if curves and figures.has_curve(curves, metric)
    ]


def _cross(cross: dict[str, Any] | None) -> dict[str, Any] | None:
    if not cross or not cross.get("rows") or not cross.get("sets"):
        return None
    cells = [str(row.get("cell")) for row in cross["rows"]]
    summaries = [[s or {} for s in row.get("values") or []] for row in cross["rows"]]
    return {
        "metric": cross.get("metric"),
        "sets": cross["sets"],
        "rows": [(c, [mean_std(s) for s in row]) for c, row in zip(cells, summaries, strict=True)],
        "src": data_uri(figures.heatmap(cells, cross["sets"], summaries)),
    }


def _ladder(ladder: dict[str, Any] | None) -> dict[str, Any] | None:
    if not ladder or not ladder.get("steps"):
        return None
    steps = [
        {
            "name": step.get("name"),
            "overrides": overrides_text(step.get("overrides")),
            "mean": mean_std(step.get("summary")),
            "reference": mean_std(step.get("reference")),
            "delta": "\u2013" if step.get("delta") is None else f"{step['delta']:+.4f}",
            "adopted": bool(step.get("adopted")),
            "reason": step.get("reason") or "",
        }
        for step in ladder["steps"]
    ]
    final = ladder.get("final") or {}
    test = final.get("test") or {}
    return {
        "metric": ladder.get("metric"),
        "min_delta": ladder.get("min_delta"),
        "steps": steps,
        "final": final
        and {
            "cell": final.get("cell"),
            "overrides": overrides_text(final.get("overrides")),
            "mean": mean_std(test.get("summary")),
            "ci": interval(test.get("summary")),
            "values": ", ".join(number(v) for v in test.get("values") or []),
            "note": final.get("note") or "",
        },
    }


def _links(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each cell's runs: a relative link to the run's report, or its error when it failed."""
    return [
        {
            "cell": cell.get("name"),
            "runs": [
                {
                    # None: an ensemble of the cell's seeds (study/ensembles.py)
                    "seed": "all" if run.get("seed") is None else run.get("seed"),
                    "href": quote(str(run["report"])) if run.get("report") else None,
                    "status": run.get("status"),
                    "error": run.get("error") or "",
                }
                for run in cell.get("runs") or []
            ],
        }
        for cell in cells
        if cell.get("runs")
    ]


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ name }} · cnnlab study</title>
<style>{{ css }}</style>
</head>
<body>
<main>
<header id="top">
  <h1>{{ name }}</h1>
  <p class="sub">{{ study.kind or "grid" }} study · seeds {{ seeds }} · {{ finished }} run{{
  "" if finished == 1 else "s" }} finished, {{ failed }} failed
  {%- if study.created %} · {{ study.created }}{% endif %}
  {%- if study.file %} · {{ study.file }}{% endif %}</p>
</header>
<nav>{% for id, title in sections %}<a href="#{{ id }}">{{ title }}</a>{% endfor %}</nav>

{% if failures %}
<section id="failures">
  <h2>Failures</h2>
  <table><thead><tr><th>cell</th><th>seed</th><th>error</th></tr></thead><tbody>
  {% for failure in failures %}<tr><td>{{ failure.cell }}</td>
    <td>{{ "all" if failure.seed is none else failure.seed }}</td>
    <td class="error">{{ failure.error }}</td></tr>{% endfor %}
  </tbody></table>
</section>
{% endif %}

{% for table in tables %}
<section id="{{ table.anchor }}">
  <h2>{{ table.title }}</h2>
  <p class="hint">Mean ± sample std over seeds and the 95 % Student-t interval of the mean;
  {{ table.direction }} is better. Bold row: the best cell.</p>
  <table class="study">
    <thead><tr><th>cell</th><th>mean ± std</th><th>95 % CI</th>
      {% for seed in study.seeds %}<th>seed {{ seed }}</th>{% endfor %}
      <th>p vs best (Holm)</th><th>significant</th><th class="left">tests</th></tr></thead>
    <tbody>{% for row in table.rows %}
      <tr class="{{ 'best' if row.best else '' }}"><td>{{ row.cell }}{{ " ★" if row.best }}</td>
        <td>{{ row.mean }}</td><td>{{ row.ci }}</td>
        {% for value in row["values"] %}<td>{{ value }}</td>{% endfor %}
        <td>{{ row.p }}</td><td>{{ row.significant }}</td><td class="left">{{ row.tests }}</td></tr>
    {% endfor %}</tbody>
  </table>
  {% if table.notes %}<div class="notes"><ul>
    {% for note in table.notes %}<li>{{ note }}</li>{% endfor %}</ul></div>{% endif %}
  <p class="legend">{{ table.legend }}</p>
</section>
{% endfor %}

{% if curves %}
<section id="curves">
  <h2>Learning curves</h2>
  <p class="hint">Each cell one colour: the mean over its seeds, the band ±1 std; validation
  solid, training dashed.</p>
  {% for curve in curves %}<h3>{{ curve.metric }}</h3>
  <img class="figure" src="{{ curve.src }}" alt="{{ curve.metric }} per epoch, every cell">
  {% endfor %}
</section>
{% endif %}

{% if cross %}
<section id="cross-evaluation">
  <h2>Cross-evaluation</h2>
  <p class="hint">{{ cross.metric }} of every cell on every evaluation set: mean ± std over
  seeds.</p>
  <img class="figure" src="{{ cross.src }}" alt="cross-evaluation heatmap">
  <table><thead><tr><th>cell</th>{% for set in cross.sets %}<th>{{ set }}</th>{% endfor %}
  </tr></thead><tbody>{% for cell, values in cross.rows %}<tr><td>{{ cell }}</td>
    {% for value in values %}<td>{{ value }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
</section>
{% endif %}

{% if ladder %}
<section id="ladder">
  <h2>Ladder</h2>
  <p class="hint">Each step is tried on top of every step adopted before it and kept when mean
  {{ ladder.metric }} gains more than min_delta = {{ ladder.min_delta }}.</p>
  <table class="study"><thead><tr><th>step</th><th class="left">overrides</th>
    <th>mean ± std</th><th>reference</th><th>delta</th><th>decision</th>
    <th class="left">reason</th></tr></thead><tbody>
  {% for step in ladder.steps %}<tr class="{{ 'best' if step.adopted else '' }}">
    <td>{{ step.name }}</td><td class="left">{{ step.overrides }}</td><td>{{ step.mean }}</td>
    <td>{{ step.reference }}</td><td>{{ step.delta }}</td>
    <td>{{ "adopted" if step.adopted else "rejected" }}</td>
    <td class="left">{{ step.reason }}</td></tr>{% endfor %}
  </tbody></table>
  {% if ladder.final %}
  <h3>Final configuration</h3>
  <table class="kv">
    <tr><td>cell</td><td>{{ ladder.final.cell }}</td></tr>
    <tr><td>overrides</td><td>{{ ladder.final.overrides }}</td></tr>
    <tr><td>test</td><td>{{ ladder.final.mean }} {{ ladder.final.ci }}</td></tr>
    <tr><td>per seed</td><td>{{ ladder.final["values"] }}</td></tr>
  </table>
  {% if ladder.final.note %}<p class="hint">{{ ladder.final.note }}</p>{% endif %}
  {% endif %}
</section>
{% endif %}

{% if diagnosis %}
<section id="diagnosis">
  <h2>Diagnosis</h2>
  {% for cell, items in diagnosis.items() %}<h3>{{ cell }}</h3>
  {% for item in items %}<div class="diagnosis"><b>{{ item.title }}</b>
    <p>{{ item.text }}</p>{% if item.advice %}<p class="hint">{{ item.advice }}</p>{% endif %}
  </div>{% endfor %}{% endfor %}
</section>
{% endif %}

{% if links %}
<section id="runs">
  <h2>Runs</h2>
  <table><thead><tr><th>cell</th><th>seed</th><th class="left">report</th></tr></thead><tbody>
  {% for cell in links %}{% for run in cell.runs %}<tr><td>{{ cell.cell }}</td>
    <td>{{ run.seed }}</td>
    {% if run.href and run.status != "failed" %}<td class="left"><a href="{{ run.href }}">
      report.html</a></td>
    {% else %}<td class="error">{{ run.error or run.status or "no report" }}</td>{% endif %}
  </tr>{% endfor %}{% endfor %}
  </tbody></table>
</section>
{% endif %}
<footer>{{ study.file or name }} · study by cnnlab {{ study.cnnlab or "" }}</footer>
</main>
</body>
</html>
"""
