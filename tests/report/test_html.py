"""The run report: one self-contained HTML page with every section and number a reader needs."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.report import Misclassified, render_report

from .fake_run import CLASSES, misclassified, write_evaluation, write_run

IMG_SRC = re.compile(r'<img[^>]*\ssrc="([^"]*)"')
SECTION_TITLES = [
    "Learning curves",
    "Confusion matrix",
    "Per-class metrics",
    "Misclassified test images",
    "Evaluations",
    "Model",
    "Data",
    "Augmentation preview",
    "Run",
    "Configuration",
]


def preview_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 160), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def embedded_images(html: str) -> list[Image.Image]:
    prefix = "data:image/png;base64,"
    images = []
    for src in IMG_SRC.findall(html):
        assert src.startswith(prefix), src[:60]
        image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :], validate=True)))
        image.load()
        images.append(image)
    return images


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every section present; rendered once for the tests that only read it (figures are slow)."""
    folder = write_run(tmp_path_factory.mktemp("runs") / "basenet-seed0")
    write_evaluation(folder, "augmented_test", 0.8125, 0.5312, augment="s1")
    path = render_report(folder, misclassified(5), augmented=preview_png())
    return path.read_text(encoding="utf-8")


def test_report_is_written_into_the_run_folder(run_folder: Path) -> None:
    path = render_report(run_folder)
    assert path == run_folder / "report.html"
    assert path.is_file()
    assert not [p for p in run_folder.iterdir() if p.name.endswith(".tmp")]


def test_report_is_self_contained_with_no_external_urls(full_report: str) -> None:
    assert "http://" not in full_report and "https://" not in full_report
    assert 'src="http' not in full_report
    assert "<link" not in full_report
    assert "<script" not in full_report
    assert "<style>" in full_report
    sources = IMG_SRC.findall(full_report)
    assert len(sources) >= 4
    assert all(src.startswith("data:image/png;base64,") for src in sources)


def test_sections_appear_in_the_documented_order(full_report: str) -> None:
    positions = [full_report.find(f"<h2>{title}") for title in SECTION_TITLES]
    assert -1 not in positions, dict(zip(SECTION_TITLES, positions, strict=True))
    assert positions == sorted(positions)


def test_title_names_the_run_and_model_and_headlines_test_accuracy(full_report: str) -> None:
    assert "<h1>basenet-seed0</h1>" in full_report
    assert "<b>basenet</b>" in full_report
    headline = full_report[: full_report.find("<nav>")]
    assert "88.89%" in headline  # 80 of 90 test images right
    assert "test accuracy" in headline
    assert "0.4213" in headline


def test_metrics_table_has_every_split_and_top_k(full_report: str) -> None:
    table = full_report[full_report.find('<table id="metrics">') : full_report.find("<nav>")]
    for split, loss, accuracy in (
        ("train", "0.3702", "87.14%"),
        ("val", "0.4810", "83.33%"),
        ("test", "0.4213", "88.89%"),
    ):
        assert f"<td>{split}</td><td>{loss}</td><td>{accuracy}</td>" in table
    assert "top-2 accuracy" in table
    assert "96.67%" in table


def test_per_class_table_shows_each_class_and_the_macro_average(full_report: str) -> None:
    section = full_report[full_report.find('id="per-class"') : full_report.find('id="misclass')]
    for name in CLASSES:
        assert f"<td>{name}</td>" in section
    assert "<td>0.871</td>" in section  # cats precision: 27 / 31
    assert "macro average" in section
    assert "<td>90</td>" in section


def test_learning_curves_mark_the_best_validation_epoch(full_report: str) -> None:
    assert "best epoch 4 by" in full_report  # lowest val_loss, 0.4810, at epoch 4


def test_misclassified_images_have_true_predicted_and_confidence_captions(
    full_report: str,
) -> None:
    assert "cats → dogs (p=0.93)" in full_report
    assert "dogs → birds (p=0.83)" in full_report
    assert "cats/img_000.png" in full_report
    assert "5 of 5 shown" in full_report


def test_model_summary_data_and_run_info_are_shown(full_report: str) -> None:
    assert "Total params: 22,499" in full_report
    assert "cats/broken.jpg" in full_report and "truncated image" in full_report
    assert "dogs/empty.jpg" in full_report and "zero-byte file" in full_report
    assert "Skipped files (2)" in full_report
    assert "class &#39;birds&#39; has 13% fewer images" in full_report
    assert "sha256:3f9a0c41d2" in full_report
    for text in ("cpu", "2.5.1", "3.11.2", "10.0 s", "validation_split: 0.15"):
        assert text in full_report


def test_every_embedded_png_decodes_with_a_plausible_size(full_report: str) -> None:
    images = embedded_images(full_report)
    # curves, confusion, 5 misclassified, class distribution, augmentation preview
    assert len(images) == 9
    for image in images:
        assert image.format == "PNG"
        assert 32 <= image.width <= 4000 and 32 <= image.height <= 4000
    curves = images[0]
    assert curves.width > 2 * curves.height  # two panels side by side
    assert 1000 <= curves.width <= 1200  # the page's width: shown without rescaling blur


def test_tiny_grayscale_misclassified_images_are_enlarged_sharply_and_stay_gray(
    run_folder: Path,
) -> None:
    wrong = misclassified(1, channels=1, size=8)
    html = render_report(run_folder, wrong).read_text(encoding="utf-8")
    tile = embedded_images(html)[2]
    assert tile.mode == "L"
    assert tile.size == (96, 96)  # 8 x 12, nearest neighbour
    pixels = np.asarray(tile)
    assert np.array_equal(pixels[::12, ::12], wrong.images[0, 0])


def test_large_colour_misclassified_images_are_shrunk_for_the_page(run_folder: Path) -> None:
    wrong = misclassified(2, channels=3, size=300)
    html = render_report(run_folder, wrong).read_text(encoding="utf-8")
    tiles = embedded_images(html)[2:4]
    assert all(tile.mode == "RGB" and max(tile.size) == 160 for tile in tiles)


def test_at_most_32_misclassified_images_are_shown(run_folder: Path) -> None:
    html = render_report(run_folder, misclassified(40)).read_text(encoding="utf-8")
    assert "32 of 40 shown" in html
    assert html.count("<figure") == 32


def test_no_misclassified_images_says_so(run_folder: Path) -> None:
    none = Misclassified(np.zeros((0, 1, 8, 8), np.uint8), [], [], [], [])
    html = render_report(run_folder, none).read_text(encoding="utf-8")
    assert "Every test image was classified correctly" in html


def test_without_test_split_or_validation_history_the_page_still_renders(
    make_run: Callable[..., Path],
) -> None:
    folder = make_run("train-only", splits=("train",))
    html = render_report(folder).read_text(encoding="utf-8")
    assert "training curves only" in html
    assert "Per-class metrics" not in html
    assert "87.14%" in html  # the train row of the metrics table
    assert len(embedded_images(html)) == 2  # curves and class distribution


def test_without_test_split_the_validation_numbers_lead_the_page(
    make_run: Callable[..., Path],
) -> None:
    folder = make_run("no-test", splits=("train", "val"))
    html = render_report(folder).read_text(encoding="utf-8")
    headline = html[: html.find("<nav>")]
    assert "val accuracy" in headline and "88.89%" in headline
    assert "Per-class metrics <small>(val)</small>" in html
    assert "Confusion matrix <small>(val)</small>" in html
    # ... with a warning under the headline, and the gallery named for that split
    assert 'id="no-test-split"' in headline and "data.test_split" in headline
    wrong = replace(misclassified(3), split="val")
    html = render_report(folder, wrong).read_text(encoding="utf-8")
    assert "<h2>Misclassified validation images</h2>" in html


def test_a_test_split_leads_the_page_without_the_warning(full_report: str) -> None:
    assert 'id="no-test-split"' not in full_report


def test_a_staged_run_lists_each_stages_trainable_params_and_learning_rates(
    make_run: Callable[..., Path],
) -> None:
    folder = make_run("staged")
    record = json.loads((folder / "manifest.json").read_text("utf-8"))
    record["stages"] = [
        {"stage": 1, "first_epoch": 1, "epochs": 2, "unfreeze": 0, "trainable_blocks": [],
         "trainable_params": 2562, "lr": {"head": 0.001}, "batchnorm": "frozen"},
        {"stage": 2, "first_epoch": 3, "epochs": 3, "unfreeze": 1, "trainable_blocks": ["block5"],
         "trainable_params": 2672802, "lr": {"head": 1e-4, "block5": 1e-5}, "batchnorm": "frozen"},
    ]  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(record), "utf-8")
    html = render_report(folder).read_text(encoding="utf-8")
    table = html[html.find('<table id="stages">') :]
    table = table[: table.find("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    cells = [re.sub(r"<[^>]+>", "|", row).replace("\n", "") for row in rows]
    assert "2 (epochs 1-2)" in cells[0] and "head only" in cells[0] and "2,562" in cells[0]
    assert "3 (epochs 3-5)" in cells[1] and "head + block5" in cells[1]
    assert "2,672,802" in cells[1] and "head 0.0001, block5 1e-05" in cells[1]
    assert "trainable params (last stage)" in html


def test_missing_and_damaged_files_are_noted_not_fatal(run_folder: Path) -> None:
    (run_folder / "history.csv").unlink()
    (run_folder / "summary.txt").unlink()
    (run_folder / "metrics.json").write_text("{not json", encoding="utf-8")
    html = render_report(run_folder).read_text(encoding="utf-8")
    assert "history.csv: not found in the run folder" in html
    assert "summary.txt: not found" in html
    assert "metrics.json: could not be parsed" in html
    assert "No training history recorded" in html


def test_an_empty_folder_still_gets_a_page(tmp_path: Path) -> None:
    folder = tmp_path / "crashed-run"
    folder.mkdir()
    html = render_report(folder).read_text(encoding="utf-8")
    assert "<h1>crashed-run</h1>" in html
    assert "config.yaml: not found" in html


def test_a_folder_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        render_report(tmp_path / "nope")


def test_html_special_characters_in_class_names_and_paths_are_escaped(
    make_run: Callable[..., Path],
) -> None:
    evil = ['<script>alert("x")</script>', "a&b", "dogs"]
    folder = make_run("escape", classes=evil)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["data"]["skipped"].append({"path": "<img src=x onerror=1>.jpg", "reason": "<b>"})
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    wrong = misclassified(1)
    wrong.true, wrong.paths = [evil[0]], ['"><svg onload=1>.png']
    html = render_report(folder, wrong).read_text(encoding="utf-8")
    assert "<script" not in html
    assert "<img src=x" not in html and "<svg" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<td>a&amp;b</td>" in html
    assert "&lt;img src=x onerror=1&gt;.jpg" in html
    assert "&#34;&gt;&lt;svg onload=1&gt;.png" in html


def test_rendering_again_replaces_the_previous_page(run_folder: Path) -> None:
    first = render_report(run_folder).read_text(encoding="utf-8")
    second = render_report(run_folder, augmented=preview_png()).read_text(encoding="utf-8")
    assert "Augmentation preview" not in first
    assert "Augmentation preview" in second
