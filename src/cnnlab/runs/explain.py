"""`cnnlab explain`: where a finished run's network looks, as heat maps over images, and what
its layers output (feature-map grids).

Images are read as `cnnlab predict` reads them (the run's decoding at its input size) and
normalised as the run evaluated them; without images, a few of the run's own test images (one
per class in turn). Each image gives `<stem>.png` (the image beside its overlay, titled with the
predicted class, its probability and the class the heat is for), and with feature maps
`<stem>.<layer>.png` per layer. Files are never overwritten: a name already taken gets `-2`,
`-3`, ... A features run (a scikit-learn classifier on a network's features) passes no gradient
from its class scores back to the image, so it is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.atomic import atomic_path
from cnnlab.data.pipeline import load_data
from cnnlab.errors import ConfigError
from cnnlab.explain import (
    CAM_METHODS,
    class_activation_maps,
    feature_grid_png,
    find_layer,
    overlay,
    overlay_png,
)
from cnnlab.explain import feature_maps as layer_outputs
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.predict import decode_all, decoding_for, gather
from cnnlab.runtime import select_device
from cnnlab.task.classification import Classification

DEFAULT_IMAGES = 8  # of the run's test split when no image is given
CHUNK = 32  # images on the device at a time
FOLDER = "explain"  # inside the run folder, the default --out


@dataclass(frozen=True)
class Explained:
    image: str  # the file given, or the test image's path in the run's source
    predicted: str
    probability: float  # of the predicted class
    target: str  # the class the heat map is for
    overlay: Path  # the image beside its heat map
    feature_maps: dict[str, Path]  # layer -> its grid


@dataclass
class Explanation:
    folder: Path
    method: str
    layer: str
    items: list[Explained]
    skipped: list[tuple[str, str]]  # (file, why it is not a usable image)

    @property
    def files(self) -> list[Path]:
        return [path for item in self.items for path in (item.overlay, *item.feature_maps.values())]

    def lines(self) -> list[str]:
        lines = [f"skipped {path}: {reason}" for path, reason in self.skipped]
        for item in self.items:
            lines.append(
                f"{item.image}: {item.predicted} ({item.probability:.1%}), {self.method} for "
                f"{item.target} at {self.layer} -> {item.overlay}"
            )
            lines += [f"  {name} -> {path}" for name, path in item.feature_maps.items()]
        return lines


def explain_run(
    run_folder: str | Path,
    images: Sequence[str | Path] | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    target: str | None = None,
    out: str | Path | None = None,
    feature_maps: Sequence[str] | None = None,
    device: str = "auto",
) -> Explanation:
    """Heat maps of `method` at `layer` (default: the last convolution block) for the class
    `target` (default: each image's predicted class), written under `out` (default
    RUN/explain/); with `feature_maps`, a grid of those layers' outputs per image too."""
    run = FinishedRun.open(run_folder)
    if run.kind != "trained":
        why = {
            "features": f"a features run classifies {run.model_name}'s features with a "
            "scikit-learn classifier, so no gradient reaches the image",
            "ensemble": "an ensemble has no network of its own; explain one of its members",
            "reconstruction": "a reconstruction run's network outputs images, not classes",
        }.get(run.kind, f"a {run.kind} run has no class scores to explain")
        raise ConfigError(
            f"{run.folder}: {why}; explain a run that trains a classification network "
            "(model: without classifier:)"
        )
    method = CAM_METHODS.resolve(method)
    target_index = None if target is None else _class_index(run, target)
    chosen = select_device(device)
    model = run.network.to(chosen)
    layer_name = find_layer(model, run.input_shape, layer).name
    for name in feature_maps or ():
        find_layer(model, run.input_shape, name)  # every name checked before anything is read
    names, pixels, skipped = _images(run, images)
    folder = Path(out).expanduser() if out is not None else run.folder / FOLDER
    explain = Explanation(folder, method, layer_name, [], skipped)
    for start in range(0, len(names), CHUNK):
        chunk = slice(start, start + CHUNK)
        explain.items += _explain_chunk(
            run, model, names[chunk], pixels[chunk], target_index, explain, feature_maps
        )
    return explain


def _explain_chunk(
    run: FinishedRun,
    model: torch.nn.Module,
    names: list[str],
    pixels: np.ndarray,
    target_index: int | None,
    explain: Explanation,
    feature_maps: Sequence[str] | None,
) -> list[Explained]:
    """Heat maps of some images, written with their feature-map grids."""
    device = next(model.parameters()).device
    inputs = run.normalization()(torch.from_numpy(pixels).to(device))
    probabilities = _probabilities(model, inputs, len(run.classes))
    predicted = [int(k) for k in probabilities.argmax(1)]
    targets = predicted if target_index is None else [target_index] * len(names)
    heat = class_activation_maps(model, inputs, targets, explain.layer, explain.method)
    pictures = overlay(pixels, heat)
    items = []
    for k, name in enumerate(names):
        best, stem = predicted[k], Path(name).stem
        title = (
            f"{Path(name).name}\npredicted {run.classes[best]} ({probabilities[k, best]:.1%}); "
            f"{explain.method} for {run.classes[targets[k]]} at {explain.layer}"
        )
        grids = {
            layer: _write_new(explain.folder, f"{stem}.{layer.replace('/', '_')}", png)
            for layer, png in _grids(model, inputs[k : k + 1], feature_maps).items()
        }
        png = overlay_png(pixels[k], pictures[k], title)
        probability = float(probabilities[k, best])
        chosen = run.classes[targets[k]]
        written = _write_new(explain.folder, stem, png)
        items.append(Explained(name, run.classes[best], probability, chosen, written, grids))
    return items


def _class_index(run: FinishedRun, target: str) -> int:
    if target not in run.classes:
        raise ConfigError(
            f"--target {target!r}: the run's classes are {', '.join(run.classes)}; give one"
        )
    return run.classes.index(target)


def _images(
    run: FinishedRun, images: Sequence[str | Path] | None
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """(names, uint8 (N, C, H, W) pixels at the run's input size, skipped files)."""
    if not images:
        return (*_test_images(run), [])
    skipped: list[tuple[str, str]] = []
    names, pixels = decode_all(list(gather(list(images))), decoding_for(run), skipped)
    if not names:
        raise ConfigError(
            f"explain: none of {', '.join(str(p) for p in images)} is a usable image"
            + "".join(f"; {path}: {reason}" for path, reason in skipped)
        )
    return names, np.stack(pixels), skipped


def _test_images(run: FinishedRun) -> tuple[list[str], np.ndarray]:
    """Up to DEFAULT_IMAGES of the run's test split (else validation), one per class in turn."""
    splits = load_data(run.data_config(), run.config.seed).splits
    split = splits.get("test") or splits.get("val")
    if split is None or len(split) == 0:
        raise ConfigError(f"{run.folder}: the run has no test or validation images; give images")
    by_class = [np.flatnonzero(split.labels == k).tolist() for k in range(len(run.classes))]
    order = [row for rank in itertools.zip_longest(*by_class) for row in rank if row is not None]
    chosen = sorted(order[:DEFAULT_IMAGES])
    return [split.paths[k] for k in chosen], np.asarray(split.images[chosen])


def _probabilities(model: torch.nn.Module, inputs: torch.Tensor, classes: int) -> np.ndarray:
    task = Classification.for_model(model, classes)
    with torch.no_grad():
        return task.probabilities(model.eval()(inputs)).float().cpu().numpy()


def _grids(
    model: torch.nn.Module, image: torch.Tensor, layers: Sequence[str] | None
) -> dict[str, bytes]:
    if not layers:
        return {}
    return {
        name: feature_grid_png(name, maps)
        for name, maps in layer_outputs(model, image, layers).items()
    }


def _write_new(folder: Path, stem: str, png: bytes) -> Path:
    """`folder/stem.png`, or `stem-2.png`, `stem-3.png`, ... when that name is taken: nothing
    already there is overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    path, number = folder / f"{stem}.png", 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.png"
    with atomic_path(path) as temp:
        temp.write_bytes(png)
    return path
