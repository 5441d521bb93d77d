"""task: reconstruction's section of the page: input / output / target of fixed test images and
of the worst reconstructions by loss, from the run's reconstructions.npz (runs/reconstruction.py
writes it), and the words for its metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jinja2 import Environment
from markupsafe import Markup

from cnnlab.report import figures
from cnnlab.report.view import data_uri
from cnnlab.runfiles import RECONSTRUCTIONS

ROWS = ("inputs", "outputs", "targets")
GROUPS = {
    "first": "The same test images in every run of this data (the split's first)",
    "worst": "The worst reconstructions, highest loss first",
}

SECTION = """
<section id="reconstruction">
  <h2>Reconstructions ({{ split }})</h2>
  <p class="hint">Each column: the network's input (the degraded image, enlarged), its output
  and the target. Every image's loss, accuracy, PSNR and SSIM are in predictions.csv.</p>
  {% for group in groups %}
  <h3>{{ group.title }}</h3>
  <div class="grid">
  {% for column in group.columns %}
    <figure title="{{ column.path }}">
      {% for src in column.images %}<img src="{{ src }}" alt="{{ column.path }}">{% endfor %}
      <figcaption>loss {{ column.loss }}<span class="path">{{ column.path }}</span></figcaption>
    </figure>
  {% endfor %}
  </div>
  {% endfor %}
</section>
"""


def reconstruction_section(folder: Path, environment: Environment) -> Markup | None:
    """The section's HTML, or None when the run holds no reconstructions.npz."""
    path = folder / RECONSTRUCTIONS
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except (OSError, ValueError):
        return None  # damaged: the page is written without this section
    groups = []
    for name, title in GROUPS.items():
        if f"{name}_paths" not in arrays:
            continue
        columns = [
            {
                "images": [
                    data_uri(figures.image_tile(arrays[f"{name}_{row}"][i])) for row in ROWS
                ],
                "path": str(arrays[f"{name}_paths"][i]),
                "loss": f"{float(arrays[f'{name}_losses'][i]):.4f}",
            }
            for i in range(len(arrays[f"{name}_paths"]))
        ]
        groups.append({"title": title, "columns": columns})
    split = str(arrays["split"]) if "split" in arrays else "test"
    return Markup(environment.from_string(SECTION).render(split=split, groups=groups))
