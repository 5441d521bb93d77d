"""`cnnlab export`: a finished trained run as one self-contained file (ONNX, TorchScript or a
torch.export ExportedProgram), verified against PyTorch, with a model card beside it.

What the caller feeds every format: uint8 images, NCHW `(N, C, H, W)`, at the run's input size
(C = 3 in RGB order, or 1 for grayscale), values 0..255, decoded as the run decoded its data
(colour mode, resize policy and interpolation, alpha onto the background: in the metadata).
Everything after that is inside the graph: the run's normalisation (normalization.json:
rescale, sample-wise and feature-wise statistics, a backbone's mean/std), the network, and the
probabilities its head implies (softmax; a one-unit sigmoid head gives [1 - p, p]). The output
is `probabilities`, `(N, classes)` in the run's class order. The TorchScript file also takes
float images on the same 0..255 scale; ONNX and the ExportedProgram take uint8 only.

Batch: by default the graph takes exactly one image (N = 1): static shapes, what mobile and
edge runtimes and a one-image-per-request server want, and the smallest, most optimisable
graph. `dynamic_batch=True` makes N free (any batch, 1 included) for batch scoring.

ONNX goes through torch.onnx.export's torch.export-based exporter (onnxscript), the one torch
supports since 2.9 (the TorchScript-based one warns that it will be removed). Each file is
checked before it appears: the exported graph and the PyTorch wrapper classify the run's own
test images (else val, else train; up to `check_images`), in fp32, and must agree within
|Δp| < 1e-4 with the same argmax on every image, else ParityError and no file. A run whose
data can no longer be read is checked on seeded random images, and the result says so.

The folder (default RUN/export/) holds the model files, MODEL_CARD.md (data, metrics,
preprocessing, intended use, how to load each file present), and export.json (what was
exported, when, with which libraries, and its parity numbers); the card is rewritten from it.
A features run (a scikit-learn classifier on a network's features) is refused: these formats
hold a network only.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab import runfiles
from cnnlab.atomic import atomic_path, write_text
from cnnlab.augment.normalize import Normalization
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.runs.export_card import (
    CARD,
    EXTRA_FILE,
    FILES,
    INPUT,
    OUTPUT,
    SIDECAR_SUFFIX,
    TITLES,
    TOLERANCE,
    Parity,
    model_card,
    package_version,
)
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.manifest import now
from cnnlab.task.classification import Classification

FORMATS = ("onnx", "torchscript", "exported-program")
RECORD = "export.json"  # every format exported into the folder: file, batch, parity, versions
CHECK_IMAGES = 512  # images the parity check classifies at most
CHUNK = 64  # images per call when the batch is dynamic
RANDOM_IMAGES = 32  # the check's images when the run's data cannot be read


class ParityError(CnnlabError):
    """The exported graph does not classify the run's images as PyTorch does; nothing written."""


class Exportable(nn.Module):
    """uint8 (or float 0..255) images (N, C, H, W) -> (N, classes) probabilities: the run's
    normalisation, its network and its head's probabilities, as one module to export."""

    def __init__(self, model: nn.Module, normalization: Normalization, task: Classification):
        super().__init__()
        self.model = model
        self.normalization = normalization
        self.task = task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.task.probabilities(self.model(self.normalization(images)))


@dataclass(frozen=True)
class Exported:
    format: str
    path: Path  # the model file
    card: Path  # MODEL_CARD.md
    record: Path  # export.json
    sidecar: Path | None  # an ExportedProgram's metadata JSON
    parity: Parity
    metadata: dict[str, Any]
    details: str  # opset or torch version, batch, shapes: the first printed line's parenthesis

    def lines(self) -> list[str]:
        """What `cnnlab export` prints."""
        wrote = f"Wrote {self.path} ({self.details})"
        if self.sidecar is not None:
            wrote += f" and {self.sidecar.name}"
        return [wrote, self.parity.line(), f"Model card: {self.card}"]


def export_run(
    run: str | Path | FinishedRun,
    fmt: str = "onnx",
    out: str | Path | None = None,
    dynamic_batch: bool = False,
    check_images: int = CHECK_IMAGES,
) -> Exported:
    """Export the trained run at `run` as `fmt` (onnx, torchscript, exported-program) into
    `out` (default RUN/export/), verified on the run's images, with MODEL_CARD.md beside it.

    The file takes uint8 (N, C, H, W) images at the run's input size and gives (N, classes)
    probabilities (see the module docstring); N is 1 unless `dynamic_batch`. Raises
    ConfigError for an unknown format, a missing run or a features run, and ParityError when
    the exported graph disagrees with PyTorch (then no model file is written)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if check_images < 1:
        raise ConfigError(f"check_images: {check_images}; the parity check needs an image")
    finished = run if isinstance(run, FinishedRun) else FinishedRun.open(run)
    refuse_features_run(finished)
    if fmt == "onnx":
        require_onnx()
    folder = Path(out).expanduser() if out is not None else finished.folder / runfiles.EXPORT
    module = exportable(finished)
    metadata = export_metadata(finished, module, fmt, dynamic_batch)
    images, split, note = check_set(finished, check_images)
    exporter = {"onnx": _onnx, "torchscript": _torchscript, "exported-program": _program}[fmt]
    path = folder / FILES[fmt]
    with atomic_path(path) as temp:
        details, run_exported = exporter(module, finished, metadata, dynamic_batch, temp)
        parity = measure(fmt, module, run_exported, images, dynamic_batch, split, note)
        if not parity.ok:
            raise ParityError(
                f"{TITLES[fmt]} export of {finished.folder} does not match PyTorch: "
                f"{parity.line().split(': ', 1)[1]} (allowed: max |Δp| < {TOLERANCE:g} and the "
                f"same argmax on every image); no {path.name} written. Try another --format"
            )
    sidecar = None
    if fmt == "exported-program":
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        write_text(sidecar, json.dumps(metadata, indent=2) + "\n")
    record = _record(finished, folder, fmt, path, details, parity, dynamic_batch)
    card = folder / CARD
    write_text(card, model_card(finished, metadata, record))
    return Exported(fmt, path, card, folder / RECORD, sidecar, parity, metadata, details)


def refuse_features_run(run: FinishedRun) -> None:
    """A features run's scikit-learn classifier is no network these formats can hold."""
    if run.kind == "trained":
        return
    classifier = run.config.classifier
    name = classifier.name if classifier is not None else "scikit-learn"
    raise ConfigError(
        f"{run.folder} is a features run: {run.model_name} (a scikit-learn {name} classifier "
        "on a network's features). cnnlab export supports trained runs only (model.name, "
        "model.layers or model.backbone, without a classifier: section), whose whole "
        "pipeline is one network; a scikit-learn classifier is not exported (ONNX for it "
        f"would need skl2onnx). Classify images with it by `cnnlab predict {run.folder} PATH`"
    )


def require_onnx() -> None:
    """The export extra's packages, or a message that says how to install them."""
    from importlib.util import find_spec

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"--format onnx needs {', '.join(missing)} (cnnlab's export extra): pip install "
            "onnx onnxscript onnxruntime"
        )


def exportable(run: FinishedRun) -> Exportable:
    """The run's normalisation + network + probabilities as one module, CPU, eval mode."""
    model = run.model()
    task = Classification.for_model(model, len(run.classes))
    return Exportable(model, run.normalization(), task).eval()


def export_metadata(
    run: FinishedRun, module: Exportable, fmt: str, dynamic_batch: bool
) -> dict[str, Any]:
    """What a caller needs beside the file: classes, input, preprocessing, provenance."""
    height, width, channels = run.input_shape
    data = run.data_config()
    head = getattr(module.model, "head_activation", None)
    binary = module.task.binary
    batch: str | int = "batch" if dynamic_batch else 1
    return {
        "format": fmt,
        "classes": run.classes,
        "input_name": INPUT,
        "input_dtype": "uint8",
        "input_layout": "NCHW",
        "input_shape": [batch, channels, height, width],
        "input_size": [height, width],
        "channels": channels,
        "color_mode": "grayscale" if channels == 1 else "rgb",
        "value_range": [0, 255],
        "resize": data.resize,
        "interpolation": data.interpolation,
        "background": list(data.background),
        "normalization": asdict(run.normalization()),
        "output_name": OUTPUT,
        "output_shape": [batch, len(run.classes)],
        "output": "sigmoid [1 - p, p]" if binary else f"{head or 'softmax'} probabilities",
        "dynamic_batch": dynamic_batch,
        "model": run.model_name,
        "run": run.folder.name,
        "seed": run.config.seed,
        "cnnlab_version": package_version("cnnlab"),
        "torch_version": torch.__version__,
    }


# --- the three formats: write the file at `temp`, give a callable of it for the check ---------

Runner = Callable[[np.ndarray], np.ndarray]  # uint8 (n, C, H, W) -> (n, classes) probabilities


def _example(run: FinishedRun, dynamic_batch: bool) -> torch.Tensor:
    """A batch to trace or export with: 2 images when the batch is dynamic (torch.export
    specialises a dimension it sees as 1), else the one image the graph takes."""
    height, width, channels = run.input_shape
    return torch.zeros(2 if dynamic_batch else 1, channels, height, width, dtype=torch.uint8)


def _batch_dim(dynamic_batch: bool) -> tuple[dict[int, Any], ...] | None:
    return ({0: torch.export.Dim("batch")},) if dynamic_batch else None


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' deprecation and tracer warnings and progress lines, which tell a user
    nothing they can act on (the parity check tells what matters)."""
    with warnings.catch_warnings(), redirect_stdout(StringIO()):
        for category in (FutureWarning, DeprecationWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        yield


def _onnx(
    module: Exportable,
    run: FinishedRun,
    metadata: dict[str, Any],
    dynamic_batch: bool,
    temp: Path,
) -> tuple[str, Runner]:
    import onnxruntime

    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (_example(run, dynamic_batch),),
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=_batch_dim(dynamic_batch),
            verbose=False,
        )
    assert program is not None  # the torch.export-based exporter always returns its program
    program.model.metadata_props.update(onnx_metadata(metadata))
    program.model.doc_string = (
        f"cnnlab run {run.folder.name}: uint8 NCHW images -> (N, classes) probabilities"
    )
    opset = program.model.opset_imports.get("", 0)
    program.save(temp, external_data=False)
    session = onnxruntime.InferenceSession(str(temp), providers=["CPUExecutionProvider"])

    def infer(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([OUTPUT], {INPUT: images})[0])

    return f"opset {opset}, {_shapes(metadata)}", infer


def onnx_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props hold strings: text as it is, everything else as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def _torchscript(
    module: Exportable,
    run: FinishedRun,
    metadata: dict[str, Any],
    dynamic_batch: bool,
    temp: Path,
) -> tuple[str, Runner]:
    with _quiet(), torch.no_grad():
        # trace, not script: a timm network is not scriptable as a whole; the check below
        # (not trace's own, which runs the model twice more) proves the trace
        traced = torch.jit.trace(module, (_example(run, dynamic_batch),), check_trace=False)
        torch.jit.save(traced, str(temp), _extra_files={EXTRA_FILE: json.dumps(metadata)})
        loaded = torch.jit.load(str(temp))
    return f"torch {torch.__version__}, {_shapes(metadata)}", _torch_runner(loaded)


def _program(
    module: Exportable,
    run: FinishedRun,
    metadata: dict[str, Any],
    dynamic_batch: bool,
    temp: Path,
) -> tuple[str, Runner]:
    with _quiet(), torch.no_grad():
        program = torch.export.export(
            module, (_example(run, dynamic_batch),), dynamic_shapes=_batch_dim(dynamic_batch)
        )
        # through bytes: torch.export wants a path ending in .pt2, and the temporary file's
        # name ends in .tmp; what is checked is what lies on disk all the same
        buffer = BytesIO()
        torch.export.save(program, buffer, extra_files={EXTRA_FILE: json.dumps(metadata)})
        temp.write_bytes(buffer.getvalue())
        loaded = torch.export.load(BytesIO(temp.read_bytes())).module()
    return f"torch {torch.__version__}, {_shapes(metadata)}", _torch_runner(loaded)


def _torch_runner(module: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    def infer(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(images)).numpy()

    return infer


def _shapes(metadata: dict[str, Any]) -> str:
    batch = "dynamic batch" if metadata["dynamic_batch"] else "fixed batch 1"
    shape = ", ".join(str(n) for n in metadata["input_shape"])
    out = ", ".join(str(n) for n in metadata["output_shape"])
    return f"{batch}: uint8 ({shape}) -> probabilities ({out})"


# --- the parity check -------------------------------------------------------------------------


def check_set(run: FinishedRun, limit: int) -> tuple[np.ndarray, str, str]:
    """Up to `limit` of the run's test images (else val, else train): uint8 (n, C, H, W), the
    split's name, and a note; seeded random images when the data can no longer be read."""
    from cnnlab.data.pipeline import load_data

    try:
        splits = load_data(run.data_config(), run.config.seed).splits
    except CnnlabError as problem:
        height, width, channels = run.input_shape
        rng = np.random.default_rng(run.config.seed)
        shape = (min(limit, RANDOM_IMAGES), channels, height, width)
        reason = str(problem).splitlines()[0]
        return rng.integers(0, 256, shape, dtype=np.uint8), "random", f"data unreadable: {reason}"
    name = next(n for n in ("test", "val", "train") if n in splits)
    return np.ascontiguousarray(splits[name].images[:limit], dtype=np.uint8), name, ""


def measure(
    fmt: str,
    module: Exportable,
    exported: Runner,
    images: np.ndarray,
    dynamic_batch: bool,
    split: str,
    note: str = "",
) -> Parity:
    """The exported graph and PyTorch on the same images: one at a time for a fixed batch,
    in batches of CHUNK (the last one shorter) for a dynamic one."""
    step = CHUNK if dynamic_batch else 1
    got = [exported(images[i : i + step]) for i in range(0, len(images), step)]
    with torch.no_grad():
        want = [
            module(torch.from_numpy(images[i : i + CHUNK])) for i in range(0, len(images), CHUNK)
        ]
    classes = module.task.num_targets
    expected = torch.cat(want).numpy() if want else np.zeros((0, classes), np.float32)
    actual = np.concatenate(got) if got else np.zeros((0, classes), np.float32)
    if actual.shape != expected.shape:
        raise ParityError(
            f"{TITLES[fmt]} export gives probabilities of shape {actual.shape}, PyTorch "
            f"{expected.shape}"
        )
    diff = float(np.abs(actual.astype(np.float64) - expected).max()) if len(images) else 0.0
    differs = int((actual.argmax(1) != expected.argmax(1)).sum())
    return Parity(fmt, split, len(images), diff, differs, note)


# --- the folder's record and model card -------------------------------------------------------


def _record(
    run: FinishedRun,
    folder: Path,
    fmt: str,
    path: Path,
    details: str,
    parity: Parity,
    dynamic_batch: bool,
) -> dict[str, Any]:
    """export.json with this export in it; entries whose file is gone, or that hold other
    weights (another run's, or this run's before it was trained again), are dropped."""
    weights = _weights_digest(run)
    record_path = folder / RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        exports = dict(record.get("exports", {}))
    except (OSError, ValueError, AttributeError):
        exports = {}
    exports[fmt] = {
        "file": path.name,
        "run": str(run.folder),
        "weights_sha256": weights,
        "details": details,
        "dynamic_batch": dynamic_batch,
        "exported": now(),
        "parity": asdict(parity) | {"tolerance": TOLERANCE},
        "versions": {p: package_version(p) for p in ("cnnlab", "torch", "onnx", "onnxruntime")},
    }
    kept = {
        k: v
        for k, v in exports.items()
        if k in FORMATS
        and isinstance(v, dict)
        and v.get("weights_sha256") == weights
        and (folder / str(v.get("file", ""))).is_file()
    }
    record = {"exports": {k: kept[k] for k in FORMATS if k in kept}}
    write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record


def _weights_digest(run: FinishedRun) -> str:
    digest = hashlib.sha256()
    with (run.folder / runfiles.WEIGHTS).open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
