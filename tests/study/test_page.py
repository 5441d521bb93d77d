"""study.html: one self-contained page for a whole study, opened in headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from cnnlab.study.page import write_study_html
from report.test_browser import PROBE, browse

from .test_paper import sample_study

HEADINGS = [
    "Failures",
    "Test accuracy",
    "Test loss",
    "Learning curves",
    "Cross-evaluation",
    "Ladder",
    "Final configuration",
    "Diagnosis",
    "Runs",
]
IMG_SRC = re.compile(r'<img[^>]*\ssrc="([^"]*)"')


@pytest.fixture
def page(tmp_path: Path) -> Path:
    return write_study_html(sample_study(), tmp_path / "runs" / "s1_study")


def row_of(text: str, cell: str, table: int = 0) -> str:
    """The text of `cell`'s row in the page's `table`-th study table, tags stripped."""
    tables = re.findall(r'<table class="study">.*?</table>', text, re.S)
    for row in re.findall(r"<tr.*?</tr>", tables[table], re.S):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td.*?</td>", row, re.S)
        ]
        if cells and cells[0].startswith(cell):
            return " | ".join(cells)
    raise AssertionError(f"no row for {cell}")


def test_chromium_shows_every_section_and_decodes_every_figure(page: Path, tmp_path: Path) -> None:
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text("utf-8").replace("</body>", PROBE + "</body>"), "utf-8")

    dom = browse(
        probe.as_uri(), tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom"
    ).stdout

    headings = [html.unescape(h).strip() for h in re.findall(r"<h[23][^>]*>(.*?)</h[23]>", dom)]
    for heading in HEADINGS:
        assert heading in headings, heading
    nav = re.search(r"<nav>(.*?)</nav>", dom, re.S)
    assert nav and all(
        f">{h}</a>" in html.unescape(nav.group(1)) for h in HEADINGS if h != "Final configuration"
    )
    sources = IMG_SRC.findall(dom)
    assert len(sources) == 3  # loss curves, accuracy curves, cross-evaluation heatmap
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    found = re.search(r'data-image-sizes="([^"]*)"', dom)
    assert found, "the load event never fired"
    sizes = [tuple(map(int, size.split("x"))) for size in found.group(1).split()]
    assert len(sizes) == 3 and all(w > 100 and h > 100 for w, h in sizes), sizes


def test_every_figure_is_an_embedded_png(page: Path) -> None:
    for src in IMG_SRC.findall(page.read_text("utf-8")):
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and image.width > 0 and image.height > 0


def test_table_shows_the_numbers_given(page: Path) -> None:
    text = page.read_text("utf-8")

    best = row_of(text, "carlosnet-base")
    assert best.startswith(
        "carlosnet-base ★ | 0.9700 ± 0.0100 | [0.9500, 0.9900] | 0.9600 | 0.9700 | 0.9800 | best"
    )
    assert row_of(text, "ivannet_s1") == (
        "ivannet_s1 | 0.9123 ± 0.0042 | [0.8746, 0.9500] | 0.9093 | 0.9153 | \u2013 | 0.077 | no"
        " | t n=2 p=0.077 · McNemar 10/2 p=0.039"
    )
    assert row_of(text, "basenet & 50%").endswith("| 0.010 | yes | t n=3 p=0.005")
    assert row_of(text, "ivannet_s1", table=1).startswith("ivannet_s1 | 0.3000 | \u2013 |")
    assert re.search(r'<tr class="best"><td>carlosnet-base', text)
    assert "with 3 seeds the t-test sees only large, consistent differences" in text
    legend = html.unescape(re.findall(r'<p class="legend">(.*?)</p>', text, re.S)[0])
    for words in (
        "a paired t-test",
        "McNemar's exact test",
        "Holm-corrected",
        "2 comparisons",
        "alpha = 0.05",
    ):
        assert words in " ".join(legend.split()), words


def test_header_counts_finished_and_failed_runs(page: Path) -> None:
    header = " ".join(re.sub(r"<[^>]+>", "", page.read_text("utf-8").split("</header>")[0]).split())
    assert "grid study · seeds 0, 1, 2 · 8 runs finished, 1 failed" in header
    assert "2026-12-01" in header


def test_runs_link_their_reports_relatively_and_failed_runs_show_the_error(page: Path) -> None:
    text = page.read_text("utf-8")
    runs = text.split('<section id="runs">')[1]

    hrefs = re.findall(r'href="([^"]*)"', runs)
    assert len(hrefs) == 8
    assert "carlosnet-base/seed0/report.html" in hrefs
    assert "basenet%20%26%2050%25/seed1/report.html" in hrefs  # quoted: spaces, & and %
    assert all(not h.startswith(("/", "file:")) for h in hrefs)
    assert all((page.parent / h.replace("%20", " ")).parent.name.startswith("seed") for h in hrefs)
    assert "CUDA out of memory at epoch 3" in runs


def test_ladder_shows_decisions_and_the_single_test_result(page: Path) -> None:
    ladder = html.unescape(
        re.sub(r"<[^>]+>", " ", page.read_text("utf-8").split('<section id="ladder">')[1])
    )
    words = " ".join(ladder.split())

    assert (
        "featurewise augment.featurewise_center=True 0.4120 ± 0.0040 0.4000 ± 0.0050 +0.0120"
        " adopted" in words
    )
    assert "+0.0020 rejected mean val_accuracy 0.414 vs 0.412" in words
    assert "test 0.4055 ± 0.0071 [0.3880, 0.4230]" in words
    assert "The test split was evaluated once, for the final configuration only." in words


def test_sections_without_content_are_left_out(tmp_path: Path) -> None:
    study = sample_study()
    for key in ("cross_evaluation", "ladder"):
        study[key] = None
    study |= {"curves": {}, "diagnosis": {}, "failures": [], "tables": []}

    text = write_study_html(study, tmp_path).read_text("utf-8")

    headings = re.findall(r"<h2>(.*?)</h2>", text)
    assert headings == ["Runs"]
    assert "<img" not in text


def test_user_text_is_escaped(tmp_path: Path) -> None:
    study = sample_study()
    study["failures"][0]["error"] = "<script>alert(1)</script>"

    text = write_study_html(study, tmp_path).read_text("utf-8")

    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
