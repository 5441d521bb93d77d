"""The report in a real browser: headless Chromium opens it offline and draws every figure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.report import render_report

from .fake_run import misclassified, write_interpretation, write_run

BROWSER_TIMEOUT_S = 60
WINDOW = (1200, 3000)
# Reports each image's decoded size into the DOM, in a test-only copy: the page has no script.
PROBE = """<script>
window.addEventListener("load", () => {
  const sizes = [...document.images].map((img) => `${img.naturalWidth}x${img.naturalHeight}`);
  document.body.setAttribute("data-image-sizes", sizes.join(" "));
});
</script>"""
MATPLOTLIB_BLUE, MATPLOTLIB_ORANGE = (31, 119, 180), (255, 127, 14)  # train, validation


def chromium() -> str:
    """The browser's path; absent: skip locally, but fail on CI, where it must be installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    reason = "headless Chromium not found (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


def browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *extra,
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def pixels_near(image: np.ndarray, color: tuple[int, int, int], tolerance: int = 12) -> int:
    return int((np.abs(image.astype(int) - color).max(axis=-1) <= tolerance).sum())


@pytest.fixture
def report(tmp_path: Path) -> Path:
    folder = tmp_path / "runs" / "basenet-seed0"
    write_run(folder)
    write_interpretation(folder, tiles=2)
    return render_report(folder, misclassified(6))


def test_chromium_draws_the_report_offline_with_its_figures(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "screenshot.png"
    browse(report.as_uri(), tmp_path / "profile", f"--screenshot={shot}")

    assert shot.is_file()
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (WINDOW[1], WINDOW[0], 3)
    assert image.std() > 20, "the screenshot is blank"
    # The learning curves (below the header) are drawn: their train and validation lines.
    figure_area = image[300:1200]
    assert pixels_near(figure_area, MATPLOTLIB_BLUE) > 200
    assert pixels_near(figure_area, MATPLOTLIB_ORANGE) > 200


def test_chromium_decodes_every_embedded_image(report: Path, tmp_path: Path) -> None:
    html = report.read_text(encoding="utf-8")
    probe = report.with_name("probe.html")
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = browse(
        probe.as_uri(), tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom"
    ).stdout

    sources = re.findall(r'<img[^>]*\ssrc="([^"]{0,40})', dom)
    # curves, confusion, 6 misclassified, 2 Grad-CAM, embedding, class distribution
    assert len(sources) == 12
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    found = re.search(r'data-image-sizes="([^"]*)"', dom)
    assert found, "the load event never fired"
    sizes = [tuple(map(int, size.split("x"))) for size in found.group(1).split()]
    assert len(sizes) == 12
    assert all(width >= 32 and height >= 32 for width, height in sizes), sizes
