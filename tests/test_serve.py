"""`cnnlab serve`: a finished run's page over real HTTP on 127.0.0.1, and in a real browser
(Debian's chromium driven through chromium-driver by selenium)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnlab
from cnnlab.cli import app
from cnnlab.data.arrays import read_array_source
from cnnlab.serve import Server, open_server, page_html

UPLOAD_LIMIT_MB = 1  # small, so the oversize test sends little
BROWSER_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, train_digits) -> Path:
    """One tiny trained run on scikit-learn's digits (no files needed), one epoch."""
    return train_digits(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(run_folder: Path) -> Iterator[Server]:
    """The page served from a thread on a free port of 127.0.0.1."""
    served = open_server(run_folder, "127.0.0.1", 0, max_upload_mb=UPLOAD_LIMIT_MB)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    """A real PNG: one of the digits images, written with Pillow."""
    pixels = read_array_source("digits")[0].images[3]
    path = tmp_path_factory.mktemp("uploads") / "digit.png"
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(path)
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "notes.txt"
    path.write_text("a shopping list, not a picture\n", encoding="utf-8")
    return path


def post_files(url: str, files: list[tuple[str, bytes]]) -> tuple[int, dict[str, Any]]:
    """POST `files` (name, content) as multipart field `files`; (status, JSON answer)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, content in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url + "predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as problem:
        return problem.code, json.loads(problem.read())


def api_answer(run_folder: Path, path: Path) -> dict[str, Any]:
    return cnnlab.load_run(run_folder).predict(path).records()[0]


# --- over HTTP ------------------------------------------------------------------------------


def test_the_page_is_one_self_contained_file(server: Server, run_folder: Path) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(server.url, timeout=30) as answer:
        page = answer.read().decode("utf-8")
        policy = answer.headers["Content-Security-Policy"]
    assert answer.status == 200
    assert run_folder.name in page and 'type="file"' in page and "multiple" in page
    assert "http:" not in page and "https:" not in page and "src=" not in page.split("<script")[0]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy


def test_a_png_gets_the_apis_top_class(server: Server, run_folder: Path, png: Path) -> None:
    status, answer = post_files(server.url, [("digit.png", png.read_bytes())])

    assert status == 200, answer
    [result] = answer["results"]
    expected = api_answer(run_folder, png)
    assert result["name"] == "digit.png"
    assert result["predicted"] == expected["predicted"]
    assert result["confidence"] == pytest.approx(expected["confidence"], abs=1e-6)
    assert [name for name, _ in result["top_k"]] == [name for name, _ in expected["top_k"]]
    assert len(result["top_k"]) == 5


def test_a_text_file_is_refused_with_the_decoders_reason(
    server: Server, run_folder: Path, png: Path, text_file: Path
) -> None:
    reason = cnnlab.load_run(run_folder).predict(text_file).skipped[0][1]
    assert reason == "not an image"

    status, alone = post_files(server.url, [("notes.txt", text_file.read_bytes())])
    assert status == 415
    assert alone["error"] == "notes.txt was refused: not an image"

    # Beside an image, the image is classified and the text file refused, in upload order.
    status, mixed = post_files(
        server.url, [("notes.txt", text_file.read_bytes()), ("digit.png", png.read_bytes())]
    )
    assert status == 200
    refused, classified = mixed["results"]
    assert refused == {"index": 0, "name": "notes.txt", "refused": reason}
    assert classified["predicted"] == api_answer(run_folder, png)["predicted"]
    assert mixed["refused"] == 1


def test_an_oversize_upload_gets_413(server: Server) -> None:
    status, answer = post_files(server.url, [("big.png", b"\0" * (UPLOAD_LIMIT_MB * 2**20 + 1))])
    assert status == 413
    assert f"at most {UPLOAD_LIMIT_MB} MB per request" in answer["error"]
    assert "--max-upload-mb" in answer["error"]


def test_a_request_without_files_gets_400(server: Server) -> None:
    status, answer = post_files(server.url, [])
    assert status == 400
    assert "no files uploaded" in answer["error"]


def test_the_header_escapes_what_the_run_names() -> None:
    hostile = "<script>alert(1)</script>"
    run = SimpleNamespace(
        classes=[hostile, "cat"],
        model_name='<img src=x onerror="alert(2)">',
        metrics={"test": {"accuracy": 0.5}},
        input_shape=(8, 8, 1),
        folder=Path("/runs/<b>run</b>"),
    )
    page = page_html(run, 2**20)  # type: ignore[arg-type]
    assert hostile not in page and "<img src=x" not in page and "<b>run</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "test accuracy" in page and "0.5000" in page


# --- the command ----------------------------------------------------------------------------


def test_serve_prints_its_url_and_serves_the_page(run_folder: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CNNLAB_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "serve", str(run_folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"Serving {run_folder} (layers, 10 classes) at http://127.0.0.1:")
        url = line.split(" at ")[1].strip()
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert answer.status == 200
            assert b'<input id="files"' in answer.read()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_a_missing_or_damaged_run_exits_2(run_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["serve", str(tmp_path / "nowhere"), "--port", "0"])
    assert missing.exit_code == 2
    assert "no such folder" in missing.output

    damaged = Path(shutil.copytree(run_folder, tmp_path / "damaged"))
    (damaged / "metrics.json").unlink()
    answer = runner.invoke(app, ["serve", str(damaged), "--port", "0"])
    assert answer.exit_code == 2
    assert "metrics.json" in answer.output


# --- in a real browser ----------------------------------------------------------------------


def browser_and_driver() -> tuple[str, str]:
    """Chromium's and chromedriver's paths; absent: skip locally, but fail on CI, where they
    must be installed (.ci/run installs chromium and chromium-driver)."""
    browser = next(
        (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))),
        None,
    )
    driver = shutil.which("chromedriver")
    missing = ""
    if not (browser and driver):
        missing = "chromium and chromedriver (apt-get install chromium chromium-driver)"
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            missing = "selenium (pip install -e '.[dev]')"
    if missing:
        reason = f"the browser test needs {missing}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must provide it")
        pytest.skip(reason)
    assert browser and driver
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = browser_and_driver()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(BROWSER_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_browser_uploads_a_png_and_shows_the_apis_top_class(
    browser: Any, server: Server, run_folder: Path, png: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # A text file whose name is markup: refused, and its name shown as text, not as markup.
    hostile = tmp_path / "<img src=x onerror=alert(1)>notes.txt"
    hostile.write_text("not a picture", encoding="utf-8")
    expected = api_answer(run_folder, png)

    browser.get(server.url)
    assert browser.find_element(By.TAG_NAME, "h1").text == run_folder.name
    browser.find_element(By.ID, "files").send_keys(f"{png}\n{hostile}")
    WebDriverWait(browser, BROWSER_TIMEOUT_S).until(
        lambda page: page.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
    )

    card = browser.find_element(By.CSS_SELECTOR, ".result:not(.refused)")
    assert card.find_element(By.CLASS_NAME, "name").text == "digit.png"
    assert card.find_element(By.CLASS_NAME, "top-class").text == expected["predicted"]
    shown = card.find_element(By.CLASS_NAME, "top-prob").text
    assert shown.endswith("%")
    assert float(shown[:-1]) == pytest.approx(expected["confidence"] * 100, abs=0.051)
    bars = [e.text for e in card.find_elements(By.CSS_SELECTOR, ".bar .label")]
    assert bars == [name for name, _ in expected["top_k"]]

    refused = browser.find_element(By.CSS_SELECTOR, ".result.refused")
    assert refused.find_element(By.CLASS_NAME, "name").text == hostile.name
    assert "not an image" in refused.text
    message = browser.find_element(By.ID, "message").text
    assert message == f"{hostile.name} was refused: not an image"
    assert not refused.find_elements(By.TAG_NAME, "img")  # the name stayed text
