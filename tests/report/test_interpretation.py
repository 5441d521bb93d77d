"""The report's interpretation section: the most confused class pairs from the confusion matrix,
Grad-CAM tiles and the embedding from interpretation.json, and what the page says without it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from cnnlab.report import render_report
from cnnlab.report.interpretation import confused_pairs

from .fake_run import CLASSES, CONFUSION, misclassified, write_interpretation
from .test_html import embedded_images


def section(html: str) -> str:
    start = html.find('<section id="interpretation">')
    assert start >= 0, "no interpretation section"
    return html[start : html.find("</section>", start)]


def test_confused_pairs_are_the_largest_off_diagonal_cells_in_class_order_on_ties() -> None:
    pairs = confused_pairs(CONFUSION, CLASSES)

    cells = [(p["true"], p["predicted"], p["count"]) for p in pairs]
    assert cells == [
        ("dogs", "cats", "3"),
        ("cats", "dogs", "2"),
        ("dogs", "birds", "2"),
        ("cats", "birds", "1"),
        ("birds", "cats", "1"),
        ("birds", "dogs", "1"),
    ]
    assert pairs[0]["of_class"] == "10.00%"  # 3 of the 30 dogs
    assert pairs[0]["of_mistakes"] == "30.00%"  # 3 of the 10 mistakes
    assert len(confused_pairs(CONFUSION, CLASSES, limit=2)) == 2


def test_section_shows_pairs_grad_cam_tiles_and_the_embedding(run_folder: Path) -> None:
    write_interpretation(run_folder, tiles=3)

    html = render_report(run_folder, misclassified(2)).read_text(encoding="utf-8")

    part = section(html)
    assert "Interpretation <small>(test)</small>" in part
    assert '<a href="#interpretation">Interpretation</a>' in html
    assert re.search(r"<td>dogs</td><td class=\"text\">cats</td>\s*<td>3</td>", part)
    assert "Grad-CAM at conv2d" in part
    assert part.count('<span class="right">right</span> cats') == 1
    assert part.count('<span class="wrong">wrong</span> dogs → cats (p=0.81)') == 2
    assert "90 of 90 test images, each a point" in part
    assert "7,200 values" in part
    assert "UMAP: not installed (pip install umap-learn)" in part
    images = embedded_images(part)
    assert len(images) == 3 + 1  # the tiles, then the embedding
    embedding = images[-1]
    assert embedding.width > 2 * embedding.height  # PCA and t-SNE side by side
    assert 900 <= embedding.width <= 1200


def test_without_interpretation_json_the_pairs_stay_and_the_rest_says_why(
    run_folder: Path,
) -> None:
    part = section(render_report(run_folder).read_text(encoding="utf-8"))

    assert "<td>dogs</td>" in part  # the pairs need only metrics.json
    assert "No Grad-CAM panels: the run wrote no interpretation.json." in part
    assert "No embedding: the run wrote no interpretation.json." in part
    assert "<img" not in part


def test_damaged_interpretation_json_is_noted_and_damaged_parts_leave_the_rest(
    run_folder: Path,
) -> None:
    (run_folder / "interpretation.json").write_text("{not json", "utf-8")
    part = section(render_report(run_folder).read_text(encoding="utf-8"))
    assert "No embedding: interpretation.json could not be read" in part

    saved = write_interpretation(run_folder, tiles=2)
    saved["embedding"]["label"] = saved["embedding"]["label"][:5]  # fewer labels than points
    saved["cam"]["tiles"][0]["png"] = "not base64 at all!"
    (run_folder / "interpretation.json").write_text(json.dumps(saved), "utf-8")
    part = section(render_report(run_folder).read_text(encoding="utf-8"))

    assert "No embedding: interpretation.json: its embedding is damaged" in part
    assert len(embedded_images(part)) == 1  # the one readable tile
    assert "<td>dogs</td>" in part


def test_report_interpret_false_leaves_the_section_out(run_folder: Path) -> None:
    write_interpretation(run_folder)
    config = yaml.safe_load((run_folder / "config.yaml").read_text(encoding="utf-8"))
    config["report"] = {"interpret": False}
    (run_folder / "config.yaml").write_text(yaml.safe_dump(config), "utf-8")

    html = render_report(run_folder).read_text(encoding="utf-8")

    assert 'id="interpretation"' not in html and "Grad-CAM" not in html
