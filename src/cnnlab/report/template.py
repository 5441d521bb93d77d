"""The page's Jinja2 template, kept as a Python string so it ships with the package as is.

Autoescaping is on where it is rendered (html.py): every value below is escaped unless it is
one of our own `data:` URIs, which contain no characters that need it.
"""

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d8dee4; --card: #fff; --bg: #f6f8fa;
        --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 16px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; word-break: break-all; }
.sub { color: var(--muted); margin: 0 0 16px; }
.headline { display: flex; gap: 32px; flex-wrap: wrap; margin: 8px 0 16px; }
.headline .big { display: block; font-size: 34px; font-weight: 650;
                 font-variant-numeric: tabular-nums; }
.headline .label { color: var(--muted); font-size: 13px; text-transform: uppercase;
                   letter-spacing: .04em; }
nav { margin: 16px 0; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px; margin: 16px 0; }
h2 { font-size: 19px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
p.hint { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
img.figure { display: block; max-width: 100%; height: auto; margin: 8px auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { padding: 4px 12px; border-bottom: 1px solid var(--line); text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid var(--ink); }
tr.average td { font-weight: 600; border-top: 2px solid var(--line); }
table.kv td:first-child { color: var(--muted); padding-right: 24px; }
table.kv td { text-align: left; }
.columns { display: flex; gap: 40px; flex-wrap: wrap; align-items: flex-start; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 12px;
      overflow: auto; font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.scroll { max-height: 260px; overflow-y: auto; border: 1px solid var(--line); border-radius: 6px; }
.scroll table { width: 100%; }
.long { display: inline-block; max-height: 560px; overflow-y: auto; padding-right: 12px; }
.long thead th, .scroll thead th { position: sticky; top: 0; background: var(--card); }
.scroll th, .scroll td { text-align: left; word-break: break-all; }
.notes, .warnings { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;
                    padding: 8px 14px; margin: 12px 0; font-size: 14px; }
.notes ul, .warnings ul { margin: 4px 0; padding-left: 20px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 14px; }
.grid figure { margin: 0; text-align: center; }
.grid img { width: 120px; height: 120px; object-fit: contain; image-rendering: pixelated;
            background: #000; border-radius: 4px; }
.grid figcaption { font-size: 13px; margin-top: 4px; }
.grid .path { display: block; color: var(--muted); font-size: 11px; word-break: break-all; }
th.text, td.text { text-align: left; }
td.source { max-width: 320px; overflow-wrap: anywhere; }
#evaluations th, td.when { white-space: nowrap; }
ul.findings { margin: 4px 0; padding-left: 20px; }
ul.findings li { margin: 0 0 10px; }
ul.findings p { margin: 2px 0; }
ul.findings p.advice { color: var(--muted); font-size: 14px; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 24px; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · cnnlab report</title>
<style>{{ css }}</style>
</head>
<body>
<main>
<header id="top">
  <h1>{{ title }}</h1>
  <p class="sub">model <b>{{ model_name }}</b>
  {%- for key, value in info.general if key in ("total params", "device", "epochs run") %}
   · {{ key }} {{ value }}{% endfor %}</p>
  {% if headline %}
  <div class="headline">
    <div><span class="big">{{ headline.accuracy }}</span>
      <span class="label">{{ headline.split }} accuracy
      {%- if headline.ceiling %} (ceiling {{ headline.ceiling }}){% endif %}</span></div>
    <div><span class="big">{{ headline.loss }}</span>
      <span class="label">{{ headline.split }} loss</span></div>
  </div>
  {% if headline.caution %}
  <div class="warnings" id="no-test-split">{{ headline.caution }}</div>
  {% endif %}
  {% else %}
  <p class="hint">No final metrics were recorded (metrics.json is missing or empty).</p>
  {% endif %}
  {% if notes %}
  <div class="notes"><b>Missing or unreadable files</b><ul>
    {% for note in notes %}<li>{{ note }}</li>{% endfor %}
  </ul></div>
  {% endif %}
  {% if metrics.rows %}
  <table id="metrics">
    <thead><tr><th>split</th>{% for column in metrics.columns %}<th>{{ column }}</th>{% endfor %}
    </tr></thead>
    <tbody>{% for row in metrics.rows %}
      <tr><td>{{ row.split }}</td>{% for cell in row.cells %}<td>{{ cell }}</td>{% endfor %}</tr>
    {% endfor %}</tbody>
  </table>
  {% endif %}
</header>
<nav>{% for id, name in sections %}<a href="#{{ id }}">{{ name }}</a>{% endfor %}</nav>

{% if trained %}
<section id="curves">
  <h2>Learning curves</h2>
  {% if curves %}
  <p class="hint">Train against validation per epoch.
  {%- if curves.best_epoch %} Dashed line: best epoch {{ curves.best_epoch }} by
  {{ curves.monitor }}, whose weights were kept.{% endif %}
  {%- if curves.stage_starts %} Dotted lines: a fine-tuning stage begins (epoch
  {{ curves.stage_starts | join(", ") }}).{% endif %}
  {%- if not curves.has_val %} No validation split: training curves only.{% endif %}</p>
  <img class="figure" src="{{ curves.src }}" alt="loss and accuracy per epoch">
  {% if diagnosis %}
  <h3 id="diagnosis">Diagnosis</h3>
  <ul class="findings">
  {% for finding in diagnosis %}
    <li class="{{ finding.kind }}"><b>{{ finding.title }}</b>
      <p>{{ finding.text }}</p>
      <p class="advice">Next: {{ finding.advice }}</p></li>
  {% endfor %}
  </ul>
  <p class="hint">Read off the curves with fixed thresholds (cnnlab.report.diagnosis): hints,
  not a verdict.</p>
  {% endif %}
  {% else %}<p class="hint">No training history recorded (history.csv).</p>{% endif %}
</section>
{% endif %}

{% if per_class %}
<section id="confusion">
  <h2>Confusion matrix <small>({{ per_class.split }})</small></h2>
  {% if per_class.confusion_src %}
  <p class="hint">Rows: true class; columns: predicted class. Right: each row divided by its
  total, so the diagonal is the recall of each class.</p>
  <img class="figure" src="{{ per_class.confusion_src }}" alt="confusion matrix">
  {% else %}<p class="hint">No confusion matrix recorded.</p>{% endif %}
</section>

<section id="per-class">
  <h2>Per-class metrics <small>({{ per_class.split }})</small></h2>
  <div class="{{ 'long' if per_class.rows | length > 25 else '' }}"><table>
    <thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
    </thead>
    <tbody>
    {% for row in per_class.rows %}
      <tr><td>{{ row.name }}</td><td>{{ row.precision }}</td><td>{{ row.recall }}</td>
        <td>{{ row.f1 }}</td><td>{{ row.support }}</td></tr>
    {% endfor %}
    {% for row in per_class.averages %}
      <tr class="average"><td>{{ row.name }}</td><td>{{ row.precision }}</td>
        <td>{{ row.recall }}</td><td>{{ row.f1 }}</td><td>{{ row.support }}</td></tr>
    {% endfor %}
    </tbody>
  </table></div>
</section>
{% endif %}

{% if ranking %}
<section id="ranking">
  <h2>ROC, precision-recall and calibration <small>({{ ranking.split }})</small></h2>
  {% if ranking.curves_src %}
  <p class="hint">Each class against the rest
  {%- if ranking.binary %} (two classes: the second as the positive one){% endif %}
  {%- if ranking.many %}, one thin line per class, the black line their macro average{% endif %};
  drawn from the probabilities in predictions.csv.</p>
  <img class="figure" src="{{ ranking.curves_src }}" alt="ROC and precision-recall curves">
  {% else %}<p class="hint">No curves: predictions.csv has no probabilities of the
  {{ ranking.split }} split.</p>{% endif %}
  {% if ranking.undefined %}
  <p class="hint">ROC AUC undefined (no image of the class, or only images of it, in
  {{ ranking.split }}), left out of the macro average: {{ ranking.undefined | join(", ") }}.</p>
  {% endif %}
  <div class="columns">
    <div class="{{ 'long' if ranking.rows | length > 25 else '' }}"><table id="auc">
      <thead><tr><th>class</th><th>ROC AUC</th><th>average precision</th></tr></thead>
      <tbody>
      {% for row in ranking.rows %}
        <tr><td>{{ row.name }}</td><td>{{ row.auc }}</td><td>{{ row.ap }}</td></tr>
      {% endfor %}
        <tr class="average"><td>macro average</td><td>{{ ranking.macro.auc }}</td>
          <td>{{ ranking.macro.ap }}</td></tr>
      </tbody>
    </table></div>
    {% if ranking.reliability_src %}
    <div><img class="figure" src="{{ ranking.reliability_src }}" alt="reliability diagram"
      style="max-width: 520px">
    <p class="hint">Expected calibration error {{ ranking.ece }}: over {{ ranking.bins }}
    equal-width bins of the top class's probability, |accuracy &minus; confidence| weighted by
    each bin's share of the images. 0 is perfectly calibrated.</p></div>
    {% endif %}
  </div>
</section>
{% endif %}

{% if misclassified %}
<section id="misclassified">
  <h2>Misclassified {{ misclassified.split }} images</h2>
  {% if misclassified.tiles %}
  <p class="hint">{{ misclassified.tiles | length }} of {{ misclassified.total }} shown
  {%- if misclassified.by_loss %}, highest loss first (the most confident mistakes){% endif %}:
  true → predicted (probability of the prediction
  {%- if misclassified.by_loss %}; loss: &minus;log of the true class's probability{% endif %}).
  Every prediction is in predictions.csv.</p>
  <div class="grid">
  {% for tile in misclassified.tiles %}
    <figure title="{{ tile.path }}">
      <img src="{{ tile.src }}" alt="{{ tile.path }}">
      <figcaption>{{ tile.true }} → {{ tile.predicted }} (p={{ tile.confidence }})
        {%- if tile.loss %}<br>loss {{ tile.loss }}{% endif %}
        <span class="path">{{ tile.path }}</span></figcaption>
    </figure>
  {% endfor %}
  </div>
  {% else %}<p class="hint">Every test image was classified correctly.</p>{% endif %}
</section>
{% endif %}
{% if interpretation %}{{ interpretation }}{% endif %}
{% if reconstruction %}{{ reconstruction }}{% endif %}

{% if evaluations %}
<section id="evaluations">
  <h2>Evaluations</h2>
  <p class="hint">Evaluated after the run by <code>cnnlab evaluate</code> (in
  evaluations/&lt;name&gt;/ of the run folder); the run's own metrics above are unchanged.</p>
  <table>
    <thead><tr><th>name</th><th class="text">data (source, split)</th>
      <th class="text">augmentation</th><th>TTA</th><th>images</th><th>accuracy</th>
      <th>loss</th><th>macro F1</th><th class="text">created</th></tr></thead>
    <tbody>{% for row in evaluations %}
      <tr><td>{{ row.name }}</td>
        <td class="text source">{{ row.source }}, {{ row.split }}
          {%- if row.same_data %} (the run's own){% endif %}</td>
        <td class="text">{{ row.augment }}</td><td>{{ row.tta }}</td><td>{{ row.images }}</td>
        <td>{{ row.accuracy }}</td><td>{{ row.loss }}</td><td>{{ row.f1 }}</td>
        <td class="text when">{{ row.created }}</td></tr>
    {% endfor %}</tbody>
  </table>
  {% for row in evaluations if row.absent %}
  <p class="hint">{{ row.name }}: no images of {{ row.absent | join(", ") }}.</p>
  {% endfor %}
</section>
{% endif %}

<section id="model">
  <h2>Model</h2>
  {% if summary %}<pre>{{ summary }}</pre>
  {% else %}<p class="hint">No model summary recorded (summary.txt).</p>{% endif %}
  {% if stages %}
  <h3>Fine-tuning stages</h3>
  <p class="hint">The summary above counts the network as built, every layer trainable; each
  stage trains only what it unfreezes (Keras's <code>trainable = False</code>), counted here.
  The run's trainable count is the last stage's.</p>
  <table id="stages">
    <thead><tr><th>stage</th><th>epochs</th><th>unfreeze</th><th>trained</th>
      <th>trainable params</th><th>learning rate per group</th><th>BatchNorm</th></tr></thead>
    <tbody>{% for row in stages %}<tr><td>{{ row.stage }}</td><td>{{ row.epochs }}</td>
      <td>{{ row.unfreeze }}</td><td class="text">{{ row.trained }}</td><td>{{ row.trainable }}</td>
      <td class="text">{{ row.lr }}</td><td>{{ row.batchnorm }}</td></tr>{% endfor %}</tbody>
  </table>
  {% endif %}
</section>

<section id="data">
  <h2>Data</h2>
  {% if data %}
  <div class="columns">
    <table class="kv">
      {% if data.source %}<tr><td>source</td><td>{{ data.source }}</td></tr>{% endif %}
      {% if data.fingerprint %}<tr><td>fingerprint</td><td>{{ data.fingerprint }}</td></tr>
      {% endif %}
      <tr><td>classes</td><td>{{ data.classes | length }}</td></tr>
      <tr><td>skipped files</td><td>{{ data.skipped | length }}</td></tr>
      <tr><td>ignored files</td><td>{{ data.ignored }}</td></tr>
      <tr><td>duplicates</td><td>{{ data.duplicates }}</td></tr>
    </table>
    {% if data.sizes %}
    <table>
      <thead><tr><th>split</th><th>images</th></tr></thead>
      <tbody>{% for split, size in data.sizes %}<tr><td>{{ split }}</td><td>{{ size }}</td></tr>
      {% endfor %}<tr class="average"><td>total</td><td>{{ data.total }}</td></tr></tbody>
    </table>
    {% endif %}
  </div>
  {% if data.warnings %}
  <div class="warnings"><b>Warnings</b><ul>
    {% for warning in data.warnings %}<li>{{ warning }}</li>{% endfor %}
  </ul></div>
  {% endif %}
  {% if data.distribution_src %}
  <h3>Class distribution</h3>
  <img class="figure" src="{{ data.distribution_src }}" alt="images per class and split">
  {% endif %}
  <h3>Skipped files ({{ data.skipped | length }})</h3>
  {% if data.skipped %}
  <div class="scroll" id="skipped"><table>
    <thead><tr><th>file</th><th>reason</th></tr></thead>
    <tbody>{% for item in data.skipped %}
      <tr><td>{{ item.path }}</td><td>{{ item.reason }}</td></tr>{% endfor %}</tbody>
  </table></div>
  {% else %}<p class="hint">None: every file found was used.</p>{% endif %}
  {% else %}<p class="hint">No data summary recorded (manifest.json).</p>{% endif %}
</section>

{% if augmented %}
<section id="augmentation">
  <h2>Augmentation preview</h2>
  <img class="figure" src="{{ augmented }}" alt="augmented training images">
</section>
{% endif %}

<section id="run">
  <h2>Run</h2>
  <div class="columns">
    {% for heading, rows in (("", info.general), ("versions", info.versions),
                             ("timings", info.timings)) if rows %}
    <div>{% if heading %}<h3>{{ heading }}</h3>{% endif %}<table class="kv">
      {% for key, value in rows %}<tr><td>{{ key }}</td><td>{{ value }}</td></tr>{% endfor %}
    </table></div>
    {% else %}<p class="hint">No run information recorded (manifest.json).</p>
    {% endfor %}
  </div>
</section>

<section id="config">
  <h2>Configuration</h2>
  {% if config %}<pre>{{ config }}</pre>
  {% else %}<p class="hint">No configuration recorded (config.yaml).</p>{% endif %}
</section>
<footer>{{ folder }} · report by cnnlab {{ version }}</footer>
</main>
</body>
</html>
"""
