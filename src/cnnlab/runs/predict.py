"""Predictions on new images through a finished run: image files, folders (searched recursively,
no class folders needed), zips, PIL images or HWC uint8 arrays.

Each image is decoded as the run decoded its training data (colour mode, resize policy,
interpolation, EXIF orientation) at the run's input size, then classified in batches on the
device with the run's own normalisation. A file that is not a usable image is listed with its
reason and never stops the others.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from cnnlab.data.decode import DecodeError, DecodeOptions, convert_array, read_image
from cnnlab.data.pipeline import decode_options
from cnnlab.data.tree import open_tree
from cnnlab.errors import ConfigError
from cnnlab.progress import progress_bar
from cnnlab.runs.kinds import KINDS
from cnnlab.runs.skeleton import sized_for
from cnnlab.runtime import select_device

if TYPE_CHECKING:
    from cnnlab.runs.finished import FinishedRun

CHUNK = 1024  # images decoded and classified at a time: bounded memory on large folders
Input = str | Path | Image.Image | np.ndarray
Format = Literal["csv", "json", "kaggle"]
IdFrom = Literal["stem", "name", "path"]


@dataclass
class Prediction:
    path: str  # the file (inside a zip: zip/inner path), or `image#k` for an in-memory image
    predicted: str
    confidence: float  # probability of the predicted class
    probabilities: dict[str, float]  # every class, in the run's class order
    top: list[tuple[str, float]]  # the k most probable classes, most probable first


@dataclass
class Predictions:
    classes: list[str]
    items: list[Prediction] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def records(self) -> list[dict[str, Any]]:
        """One dict per image: path, predicted, confidence, top_k, p_<class>..."""
        return [
            {
                "path": item.path,
                "predicted": item.predicted,
                "confidence": item.confidence,
                "top_k": [[name, p] for name, p in item.top],
                **{f"p_{c}": item.probabilities[c] for c in self.classes},
            }
            for item in self.items
        ]

    def to_pandas(self) -> Any:
        """The records as a pandas DataFrame (pandas is not a dependency of cnnlab)."""
        try:
            import pandas as pd
        except ImportError:
            raise ConfigError("to_pandas: needs pandas; pip install pandas") from None
        return pd.DataFrame.from_records(self.records())

    def to_csv(self) -> str:
        """path, predicted, confidence, top-k names with probabilities, p_<class>...; the
        skipped files last, with their reason."""
        k = max((len(item.top) for item in self.items), default=0)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        top_columns = [f"{kind}_{n}" for n in range(1, k + 1) for kind in ("top", "p_top")]
        writer.writerow(
            ["path", "predicted", "confidence", *top_columns]
            + [f"p_{c}" for c in self.classes]
            + ["skipped"]
        )
        for item in self.items:
            tops = [value for name, p in item.top for value in (name, f"{p:.6f}")]
            probabilities = [f"{item.probabilities[c]:.6f}" for c in self.classes]
            writer.writerow(
                [item.path, item.predicted, f"{item.confidence:.6f}", *tops, *probabilities, ""]
            )
        blanks = [""] * (2 + len(top_columns) + len(self.classes))
        for path, reason in self.skipped:
            writer.writerow([path, *blanks, reason])
        return out.getvalue()

    def to_json(self) -> str:
        skipped = [{"path": path, "reason": reason} for path, reason in self.skipped]
        payload = {"classes": self.classes, "predictions": self.records(), "skipped": skipped}
        return json.dumps(payload, indent=2) + "\n"

    def to_submission(self, columns: Sequence[str] = ("id", "label"), id_from: IdFrom = "stem"):
        """A competition's submission file (S0's Kaggle test folder): one row per readable
        image, its id from the file name and its predicted class name."""
        if len(columns) != 2:
            raise ConfigError(f"--columns {','.join(columns)}: give two names, e.g. id,label")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for item in self.items:
            writer.writerow([image_id(item.path, id_from), item.predicted])
        return out.getvalue()

    def formatted(self, fmt: Format, columns: Sequence[str], id_from: IdFrom) -> str:
        if fmt == "json":
            return self.to_json()
        if fmt == "kaggle":
            return self.to_submission(columns, id_from)
        return self.to_csv()


def image_id(path: str, id_from: IdFrom) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if id_from == "path":
        return path
    return name if id_from == "name" else name.rsplit(".", 1)[0] if "." in name else name


def predict(
    run: FinishedRun,
    inputs: Input | Iterable[Input],
    top_k: int = 5,
    tta: bool = False,
    batch_size: int | None = None,
    device: str = "auto",
) -> Predictions:
    """Predictions of `run` for every image `inputs` names or holds."""
    if top_k < 1:
        raise ConfigError(f"--top-k {top_k}: give at least 1")
    if run.kind == "reconstruction":
        raise ConfigError(
            f"{run.folder}: a reconstruction run outputs images, not classes; use "
            "`cnnlab predict RUN IMAGES --out DIR` (cnnlab.runs.reconstruction."
            "write_reconstructions)"
        )
    options = decoding_for(run)
    result = Predictions(list(run.classes))
    if batch_size is not None:
        run = run.with_eval_batch(batch_size)
    chosen = select_device(device)
    classify = KINDS.get(run.kind).classify
    sources = list(gather(inputs))
    with progress_bar("predict", len(sources)) as advance:
        for start in range(0, len(sources), CHUNK):
            names, images = decode_all(sources[start : start + CHUNK], options, result.skipped)
            if names:
                probabilities = classify(run, np.stack(images), chosen, tta)
                result.items += [
                    prediction(name, row, result.classes, top_k)
                    for name, row in zip(names, probabilities, strict=True)
                ]
            advance(len(sources[start : start + CHUNK]))
    return result


def decoding_for(run: FinishedRun) -> DecodeOptions:
    """The run's decode options at its network's input size, whatever size new images have."""
    return decode_options(sized_for(run.config.data, run.input_shape, run.folder))


def prediction(name: str, row: np.ndarray, classes: list[str], top_k: int) -> Prediction:
    order = np.argsort(-row, kind="stable")[:top_k]
    best = int(order[0])
    return Prediction(
        path=name,
        predicted=classes[best],
        confidence=float(row[best]),
        probabilities={c: float(p) for c, p in zip(classes, row, strict=True)},
        top=[(classes[int(k)], float(row[k])) for k in order],
    )


# --- where the images come from -------------------------------------------------------------


@dataclass(frozen=True)
class Unreadable:
    """An entry the listing or the read refused (a broken symlink, a zip bomb, ...): skipped,
    with its reason, like a file that does not decode."""

    reason: str


# (display name, encoded bytes), (display name, a decoded HWC/HW array) or an entry refused
Source = tuple[str, bytes | np.ndarray | Unreadable]


def gather(inputs: Input | Iterable[Input]) -> Iterator[Source]:
    """Every image `inputs` names, in order: folders and zips searched recursively (sorted),
    system entries (.DS_Store, __MACOSX/, ...) left out."""
    items = [inputs] if isinstance(inputs, str | Path | Image.Image | np.ndarray) else inputs
    for index, item in enumerate(items):
        if isinstance(item, Image.Image):
            buffer = io.BytesIO()
            item.save(buffer, "PNG")  # decoded again as a file is: same mode conversions
            yield f"image#{index}", buffer.getvalue()
        elif isinstance(item, np.ndarray):
            yield f"image#{index}", item
        else:
            yield from _files(Path(item))


def _files(path: Path) -> Iterator[Source]:
    if path.is_file() and path.suffix.lower() != ".zip":
        yield str(path), path.read_bytes()
        return
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder to predict")
    tree = open_tree(path)  # a folder, or a .zip read in place
    files, _ignored = tree.files()
    for entry in sorted(files, key=lambda f: f.inner):
        if entry.problem is not None:
            yield tree.display(entry.inner), Unreadable(entry.problem)
        elif not entry.is_empty_folder:
            try:
                content: bytes | Unreadable = tree.read(entry.inner)
            except OSError as error:  # a member that fails its CRC, a file gone meanwhile
                content = Unreadable(f"cannot be read ({error})")
            yield tree.display(entry.inner), content


def decode_all(
    sources: list[Source], options: DecodeOptions, skipped: list[tuple[str, str]]
) -> tuple[list[str], list[np.ndarray]]:
    names, images = [], []
    for name, content in sources:
        if isinstance(content, Unreadable):
            skipped.append((name, content.reason))
            continue
        try:
            if isinstance(content, np.ndarray):
                pixels = convert_array(content, options)
            else:
                _info, decoded = read_image(content, options)
                assert decoded is not None  # options given: the pixels come back
                pixels = decoded
        except DecodeError as problem:
            skipped.append((name, problem.reason))
            continue
        except ValueError as problem:  # an array of another dtype or shape
            skipped.append((name, str(problem)))
            continue
        names.append(name)
        images.append(pixels)
    return names, images
