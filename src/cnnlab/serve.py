"""`cnnlab serve`: a finished run as a small local web page. Choose or drop images; each gets
its top classes with their probabilities.

One self-contained page (inline CSS and script, nothing loaded from elsewhere: its
Content-Security-Policy says so too) and one upload endpoint, `POST /predict`, that takes
multipart files (the field `files`, several at once) and answers JSON. The run is opened and
checked with one prediction when the server starts, so a damaged run fails there, not on the
first upload. Uploads pass through FinishedRun.predict and so through cnnlab's own decoder: a
file that is not a usable image is refused with the decoder's reason. A request over the
upload limit gets 413. File names come back as JSON and the page shows them as text only.

Flask (the optional extra `serve`) is imported only here, when a server is made.
"""

from __future__ import annotations

import errno
import html
import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.progress import silenced
from cnnlab.runs import FinishedRun, load_run

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.serving import BaseWSGIServer

TOP_K = 5  # classes shown per image
MB = 1024 * 1024
# Nothing from elsewhere: the page's own inline style and script, previews of the chosen files
# (blob: URLs), and requests back to this server only.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _flask() -> Any:
    try:
        import flask
    except ImportError:
        raise ConfigError(
            "cnnlab serve needs Flask: pip install 'cnnlab[serve]' (or pip install flask)"
        ) from None
    return flask


# --- the application ------------------------------------------------------------------------


def create_app(run: FinishedRun, max_upload_mb: float = 20.0) -> Flask:
    """The page and the upload endpoint for `run`; a request body over `max_upload_mb` MB
    (2**20 bytes each) gets 413."""
    if max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb {max_upload_mb}: give a positive size in MB")
    flask = _flask()
    app = flask.Flask("cnnlab.serve")
    limit = int(max_upload_mb * MB)
    app.config["MAX_CONTENT_LENGTH"] = limit
    lock = threading.Lock()  # one prediction at a time: the run's network is not shared
    page = page_html(run, limit)

    @app.after_request
    def headers(response: Any) -> Any:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index() -> Any:
        return flask.Response(page, mimetype="text/html")

    @app.post("/predict")
    def predict_uploads() -> Any:
        uploads = [f for f in flask.request.files.getlist("files") if f]
        if not uploads:
            return _error(flask, 400, "no files uploaded: send images as the form field 'files'")
        with tempfile.TemporaryDirectory(prefix="cnnlab-serve-") as temp:
            names, paths = [], []
            for index, upload in enumerate(uploads):
                # Saved under a plain name of ours: the upload's own name is only shown, and
                # no suffix means every upload is read as one file (never a zip's contents).
                path = Path(temp) / f"{index:04d}.upload"
                upload.save(path)
                names.append(upload.filename or f"upload #{index + 1}")
                paths.append(path)
            with lock, silenced():
                answer = run.predict(paths, top_k=TOP_K)
        results = _results(names, [str(p) for p in paths], answer)
        refused = [r for r in results if "refused" in r]
        body = {"results": results, "refused": len(refused)}
        if len(refused) == len(results):
            first = refused[0]
            others = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            body["error"] = f"{first['name']} was refused: {first['refused']}{others}"
            return flask.jsonify(body), 415
        return flask.jsonify(body)

    @app.errorhandler(413)
    def too_large(_problem: Any) -> Any:
        return _error(
            flask,
            413,
            f"upload too large: at most {max_upload_mb:g} MB per request "
            "(send fewer or smaller images, or start cnnlab serve with a larger --max-upload-mb)",
        )

    return app


def _error(flask: Any, status: int, message: str) -> Any:
    return flask.jsonify({"error": message}), status


def _results(names: list[str], paths: list[str], answer: Any) -> list[dict[str, Any]]:
    """One entry per upload, in upload order: its top classes, or why it was refused."""
    by_path: dict[str, dict[str, Any]] = {}
    for record in answer.records():
        by_path[record["path"]] = {
            "predicted": record["predicted"],
            "confidence": record["confidence"],
            "top_k": record["top_k"],
        }
    for path, reason in answer.skipped:
        by_path[path] = {"refused": reason}
    results = []
    for index, (name, path) in enumerate(zip(names, paths, strict=True)):
        entry = by_path.get(path, {"refused": "not classified"})
        results.append({"index": index, "name": name, **entry})
    return results


# --- the server -----------------------------------------------------------------------------


@dataclass
class Server:
    """A running page for one run: `url`, `serve_forever()` (Ctrl+C stops it), `shutdown()`."""

    run: FinishedRun
    wsgi: BaseWSGIServer

    @property
    def url(self) -> str:
        host = self.wsgi.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.wsgi.port}/"

    def serve_forever(self) -> None:
        self.wsgi.serve_forever()  # returns on Ctrl+C, the socket closed

    def shutdown(self) -> None:
        """Stop a server that serves in another thread."""
        self.wsgi.shutdown()
        self.wsgi.server_close()


def open_server(
    run_path: str | Path, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20.0
) -> Server:
    """The run at `run_path` opened, checked with one prediction, and its page bound to
    `host`:`port` (0: any free port), ready to serve."""
    _flask()  # missing: say so before the run is read
    run = load_run(run_path)
    warm_up(run)
    app = create_app(run, max_upload_mb)
    from werkzeug.serving import make_server

    listener = _listen(host, port)
    try:
        wsgi = make_server(host, port, app, threaded=True, fd=listener.fileno())
    finally:
        listener.close()  # werkzeug keeps its own copy of the socket
    return Server(run, wsgi)


def warm_up(run: FinishedRun) -> None:
    """One prediction on a blank image: the network is built and its weights read now, so a
    run that cannot predict (a damaged one, a features run) fails at start."""
    height, width, channels = run.input_shape
    blank = np.zeros((height, width, 3 if channels == 3 else 1), dtype=np.uint8)
    with silenced():
        run.predict(blank, top_k=1)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family)
    except OSError as problem:
        reason = os.strerror(problem.errno) if problem.errno else str(problem)
        hint = "; choose another with --port" if problem.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}{hint}") from None
    return listener


# --- the page -------------------------------------------------------------------------------


def header_facts(run: FinishedRun) -> list[tuple[str, str]]:
    """(label, value) pairs for the page header: model, classes, headline accuracy, folder."""
    classes = run.classes
    shown = ", ".join(classes[:12]) + (f", … (+{len(classes) - 12})" if len(classes) > 12 else "")
    facts = [("model", run.model_name), (f"{len(classes)} classes", shown)]
    for split in ("test", "val", "train"):
        accuracy = (run.metrics.get(split) or {}).get("accuracy")
        if isinstance(accuracy, int | float):
            facts.append((f"{split} accuracy", f"{accuracy:.4f}"))
            break
    height, width, channels = run.input_shape
    facts.append(("input", f"{height}x{width}x{channels}"))
    facts.append(("run", str(run.folder)))
    return facts


def page_html(run: FinishedRun, limit_bytes: int) -> str:
    """The whole page: every value from the run escaped, the rest is this module's text."""
    facts = "".join(
        f"<div><dt>{html.escape(label)}</dt><dd>{html.escape(value)}</dd></div>"
        for label, value in header_facts(run)
    )
    return (
        PAGE.replace("__TITLE__", html.escape(f"cnnlab · {run.folder.name}"))
        .replace("__NAME__", html.escape(run.folder.name))
        .replace("__FACTS__", facts)
        .replace("__LIMIT_BYTES__", str(int(limit_bytes)))
        .replace("__LIMIT_MB__", html.escape(f"{limit_bytes / MB:g}"))
    )


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  :root { --ink: #1d2430; --muted: #5d6878; --line: #d8dde5; --accent: #2563eb;
          --bad: #b42318; --bad-bg: #fef3f2; --bg: #f6f7f9; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--ink); background: var(--bg); }
  header { background: #fff; border-bottom: 1px solid var(--line); padding: 16px 24px; }
  h1 { margin: 0 0 8px; font-size: 20px; }
  dl { display: flex; flex-wrap: wrap; gap: 4px 24px; margin: 0; }
  dl div { display: flex; gap: 6px; }
  dt { color: var(--muted); }
  dd { margin: 0; font-weight: 600; word-break: break-all; }
  main { max-width: 980px; margin: 0 auto; padding: 24px; }
  #drop { display: block; border: 2px dashed #9aa5b5; border-radius: 10px; background: #fff;
          padding: 32px; text-align: center; cursor: pointer; }
  #drop.over { border-color: var(--accent); background: #eef4ff; }
  #drop strong { color: var(--accent); }
  #drop small { display: block; color: var(--muted); margin-top: 4px; }
  #files { position: absolute; width: 1px; height: 1px; opacity: 0; }
  #status { min-height: 1.5em; margin: 12px 0; color: var(--muted); }
  #message { display: none; margin: 12px 0; padding: 10px 14px; border-radius: 8px;
             color: var(--bad); background: var(--bad-bg); border: 1px solid #fecdca; }
  #message.shown { display: block; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr));
             gap: 16px; }
  .result { background: #fff; border: 1px solid var(--line); border-radius: 10px;
            padding: 14px; display: flex; gap: 14px; }
  .result img { width: 72px; height: 72px; object-fit: contain; image-rendering: pixelated;
                background: #eef0f3; border-radius: 6px; flex: none; }
  .result .body { flex: 1; min-width: 0; }
  .name { color: var(--muted); font-size: 13px; overflow-wrap: anywhere; }
  .top { display: flex; align-items: baseline; gap: 10px; margin: 2px 0 8px; }
  .top-class { font-size: 22px; font-weight: 700; overflow-wrap: anywhere; }
  .top-prob { color: var(--muted); font-variant-numeric: tabular-nums; }
  .bar { display: grid; grid-template-columns: minmax(0, 1fr) 3fr 52px; gap: 6px;
         align-items: center; font-size: 13px; }
  .bar .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar .track { height: 8px; background: #e8ebf0; border-radius: 4px; overflow: hidden; }
  .bar .fill { height: 100%; background: var(--accent); }
  .bar .p { text-align: right; font-variant-numeric: tabular-nums; }
  .result.refused { border-color: #fecdca; background: var(--bad-bg); }
  .result.refused .reason { color: var(--bad); }
</style>
</head>
<body>
<header>
  <h1>__NAME__</h1>
  <dl>__FACTS__</dl>
</header>
<main>
  <label id="drop" for="files">
    <strong>Choose images</strong> or drop them here
    <small>Several at once; at most __LIMIT_MB__ MB per upload.</small>
    <input id="files" type="file" name="files" accept="image/*" multiple>
  </label>
  <div id="status" role="status"></div>
  <div id="message" role="alert"></div>
  <section id="results" aria-live="polite"></section>
</main>
<script>
"use strict";
const LIMIT = __LIMIT_BYTES__;
const input = document.getElementById("files");
const drop = document.getElementById("drop");
const statusLine = document.getElementById("status");
const message = document.getElementById("message");
const results = document.getElementById("results");
let previews = [];

// Every text from a file or the server goes in through textContent, never as markup.
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
function percent(p) { return (p * 100).toFixed(1) + "%"; }
function showMessage(text) {
  message.textContent = text;
  message.classList.toggle("shown", Boolean(text));
}

function card(entry, file) {
  const box = el("article", "result");
  box.dataset.index = String(entry.index);
  if (file && !entry.refused) {
    const url = URL.createObjectURL(file);
    previews.push(url);
    const img = el("img");
    img.src = url;
    img.alt = "";
    box.append(img);
  }
  const body = el("div", "body");
  body.append(el("div", "name", entry.name));
  if (entry.refused) {
    box.classList.add("refused");
    body.append(el("div", "reason", "Refused: " + entry.refused));
  } else {
    const top = el("div", "top");
    top.append(el("span", "top-class", entry.predicted), el("span", "top-prob",
      percent(entry.confidence)));
    body.append(top);
    for (const [name, p] of entry.top_k) {
      const row = el("div", "bar");
      const track = el("div", "track");
      const fill = el("div", "fill");
      fill.style.width = Math.max(0, Math.min(100, p * 100)).toFixed(1) + "%";
      track.append(fill);
      row.append(el("span", "label", name), track, el("span", "p", percent(p)));
      body.append(row);
    }
  }
  box.append(body);
  return box;
}

async function upload(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  showMessage("");
  const total = files.reduce((sum, f) => sum + f.size, 0);
  if (total > LIMIT) {
    showMessage("Upload too large: at most " + (LIMIT / 1048576) + " MB per upload; choose " +
      "fewer or smaller images.");
    return;
  }
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  statusLine.textContent = "Classifying " + files.length + (files.length === 1 ? " image…" :
    " images…");
  document.body.dataset.state = "busy";
  let answer = {};
  let status = 0;
  try {
    const response = await fetch("predict", { method: "POST", body: form });
    status = response.status;
    answer = await response.json().catch(() => ({}));
  } catch (problem) {
    answer = { error: "The server did not answer (" + problem + "). Is cnnlab serve running?" };
  }
  for (const url of previews) URL.revokeObjectURL(url);
  previews = [];
  results.replaceChildren(...(answer.results || []).map((e) => card(e, files[e.index])));
  const done = (answer.results || []).filter((e) => !e.refused).length;
  statusLine.textContent = answer.results ? done + " of " + files.length + " classified" : "";
  if (answer.error) {
    showMessage(answer.error);
  } else if (answer.refused) {
    showMessage(answer.results.filter((e) => e.refused)
      .map((e) => e.name + " was refused: " + e.refused).join("; "));
  } else if (status !== 200) {
    showMessage("The server answered " + status + ".");
  }
  document.body.dataset.state = "done";
  input.value = "";
}

input.addEventListener("change", () => upload(input.files));
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  upload(event.dataTransfer.files);
});
// Files dropped beside the box would otherwise be opened by the browser, leaving the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());
</script>
</body>
</html>
"""
