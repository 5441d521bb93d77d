"""task: reconstruction in a trained run: what differs from classification around the same fit
loop. The network takes the degraded image (augment/degrade.py) and gives the target back;
validation and test inputs are degraded once per split; the run records per-image metrics in
predictions.csv, the images its report shows in reconstructions.npz, and, with
reconstruction.reference_run, how well a classifier still reads the reconstructions.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from cnnlab import runfiles
from cnnlab.augment.degrade import Degradation, DegradeTransform, InputTransform, degrade_once
from cnnlab.augment.normalize import Normalization
from cnnlab.config import Experiment, ReconstructionConfig
from cnnlab.data.batches import DeviceBatches
from cnnlab.data.pipeline import Data, Split
from cnnlab.errors import ConfigError
from cnnlab.runs.skeleton import eval_batch_size
from cnnlab.runtime import IMAGE_LAYOUT
from cnnlab.task.inference import infer
from cnnlab.task.reconstruction import IMAGE_METRICS, Reconstruction, image_metrics, split_metrics
from cnnlab.train.batch_size import CPU_BATCH
from cnnlab.train.loop import Trainee

if TYPE_CHECKING:
    from cnnlab.runs.finished import FinishedRun

SCALE = Normalization(rescale=1 / 255)  # inputs and targets on 0..1, as S4's x / 255


def settings(cfg: Experiment) -> ReconstructionConfig:
    assert cfg.reconstruction is not None  # cnnlab.config fills it in for task: reconstruction
    return cfg.reconstruction


def degradation(cfg: Experiment) -> Degradation:
    return Degradation(settings(cfg).degrade)


def network_input(cfg: Experiment, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(H, W, C) the network takes: the data's images after reconstruction.degrade."""
    return degradation(cfg).output_shape(image_shape)


def targets_of(split: Split) -> np.ndarray:
    return split.images if split.targets is None else split.targets


def make_trainee(model: torch.nn.Module, cfg: Experiment, data: Data, device: torch.device):
    """The reconstruction task, training's degradation and evaluation's input transform."""
    target = targets_of(data.splits["train"]).shape[1:]  # (C, H, W)
    output = cast("tuple[int, ...]", getattr(model, "output_shape", ()))
    if tuple(output) != (target[1], target[2], target[0]):
        raise ConfigError(
            f"model: the network gives {'x'.join(map(str, output)) or 'no image'} outputs but "
            f"the targets are {target[1]}x{target[2]}x{target[0]} images; end the network with "
            f"a Conv2D of {target[0]} filter(s) at {target[1]}x{target[2]}"
        )
    task_cfg = settings(cfg)
    head = getattr(model, "head_activation", None)
    if task_cfg.loss == "binary_crossentropy" and head != "sigmoid":
        raise ConfigError(
            "reconstruction.loss: binary_crossentropy compares probabilities; give the last "
            "layer activation: sigmoid, or use loss: mse or l1"
        )
    task = Reconstruction(task_cfg.loss, head, task_cfg.threshold)
    steps = degradation(cfg)
    augment = None
    if not steps.is_identity:
        augment = DegradeTransform(steps, SCALE, IMAGE_LAYOUT, cfg.seed, device)
    return Trainee(model, None, None, task, InputTransform(SCALE, IMAGE_LAYOUT), augment)


def train_batches(cfg: Experiment, data: Data, device: torch.device) -> DeviceBatches:
    """The training targets as batches; the inputs are degraded from them (or, paired, the
    source images beside them)."""
    split, size = data.splits["train"], cfg.train.batch_size
    return DeviceBatches(
        split.images,
        targets_of(split),
        batch_size=CPU_BATCH if size == "auto" else size,
        device=device,
        seed=cfg.seed,
    )


def fixed_batches(
    images: np.ndarray, targets: np.ndarray, cfg: Experiment, key: str, device: torch.device
) -> DeviceBatches:
    """Evaluation batches of `images` degraded once, from a generator seeded by `key`, with
    their targets."""
    inputs = degrade_once(images, degradation(cfg), SCALE, key, device)
    size = eval_batch_size(cfg, device)
    return DeviceBatches(inputs, targets, batch_size=size, device=device, shuffle=False)


def eval_batches(
    data: Data, name: str, cfg: Experiment, device: torch.device
) -> DeviceBatches | None:
    """A split's fixed inputs (seeded by the run's seed and the split's name) and targets."""
    split = data.splits.get(name)
    if split is None:
        return None
    return fixed_batches(split.images, targets_of(split), cfg, f"{cfg.seed}:{name}", device)


# --- after training -------------------------------------------------------------------------


def evaluate_split(
    trainee: Trainee, batches: DeviceBatches
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, output images (both on 0..1) and per-image IMAGE_METRICS of one split."""
    result = infer(trainee.model, batches, trainee.task, trainee.preprocess, keep_predictions=True)
    assert result.predictions is not None
    outputs = result.predictions.numpy()
    targets = batches.labels.cpu().numpy()
    per_image = image_metrics(cast(Reconstruction, trainee.task), outputs, targets)
    inputs = trainee.preprocess(batches.images[: len(outputs)]).float().cpu().numpy()
    return inputs, outputs, per_image


def as_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)


def predictions_csv(rows: dict[str, tuple[Split, np.ndarray]]) -> str:
    """predictions.csv: split, path, and each image's IMAGE_METRICS."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["split", "path", *IMAGE_METRICS])
    for name, (split, per_image) in rows.items():
        for path, values in zip(split.paths, per_image, strict=True):
            writer.writerow([name, path, *(f"{v:.6f}" for v in values)])
    return out.getvalue()


def shown_images(
    split: Split, inputs: np.ndarray, outputs: np.ndarray, per_image: np.ndarray, count: int
) -> dict[str, np.ndarray]:
    """reconstructions.npz: the split's first `count` images (the same ones in every run of
    the data) and its `count` worst by loss, as uint8 input / output / target."""
    first = np.arange(min(count, len(outputs)))
    worst = np.argsort(-per_image[:, 0], kind="stable")[:count]
    saved: dict[str, np.ndarray] = {}
    for name, index in (("first", first), ("worst", worst)):
        saved[f"{name}_inputs"] = as_uint8(inputs[index])
        saved[f"{name}_outputs"] = as_uint8(outputs[index])
        saved[f"{name}_targets"] = np.asarray(targets_of(split)[index])
        saved[f"{name}_paths"] = np.asarray([split.paths[i] for i in index], dtype=str)
        saved[f"{name}_losses"] = per_image[index, 0].astype(np.float64)
    return saved


def reference_accuracy(
    reference: FinishedRun, outputs: np.ndarray, split: Split, device: torch.device
) -> float:
    """The share of reconstructions that a finished classification run puts in the image's
    own class (by class name): does the digit stay readable?"""
    from cnnlab.runs.kinds import KINDS

    height, width, channels = reference.input_shape
    images = torch.from_numpy(as_uint8(outputs))
    if images.shape[1] != channels:
        images = images.expand(-1, channels, -1, -1) if channels == 3 else images[:, :1]
    if images.shape[2:] != (height, width):
        resized = torch.nn.functional.interpolate(
            images.float(), size=(height, width), mode="bilinear", antialias=True
        )
        images = resized.round().clamp(0, 255).to(torch.uint8)
    probabilities = KINDS.get(reference.kind).classify(
        reference, images.contiguous().numpy(), device, False
    )
    names = [reference.classes[k] for k in probabilities.argmax(1)]
    truth = [split.classes[k] for k in split.labels]
    return float(np.mean([a == b for a, b in zip(names, truth, strict=True)])) if truth else 0.0


def open_reference(cfg: Experiment, data: Data) -> FinishedRun | None:
    """reconstruction.reference_run, checked before training: a finished run whose classes
    include the data's."""
    path = settings(cfg).reference_run
    if path is None:
        return None
    from cnnlab.runs.finished import FinishedRun

    reference = FinishedRun.open(path, "reconstruction.reference_run")
    unknown = sorted(set(data.classes) - set(reference.classes))
    if unknown:
        raise ConfigError(
            f"reconstruction.reference_run: {path} knows the classes "
            f"{', '.join(reference.classes)}, not {', '.join(unknown)}; give a run trained on "
            "the same classes"
        )
    return reference


def evaluate_all(
    trainee: Trainee,
    data: Data,
    cfg: Experiment,
    device: torch.device,
    splits: list[str],
) -> tuple[dict[str, Any], dict[str, tuple[Split, np.ndarray]], dict[str, np.ndarray]]:
    """metrics.json, predictions.csv's rows (val and test) and reconstructions.npz."""
    reference = open_reference(cfg, data)
    metrics: dict[str, Any] = {}
    rows: dict[str, tuple[Split, np.ndarray]] = {}
    shown: dict[str, np.ndarray] = {}
    for name in splits:
        split = data.splits[name]
        batches = eval_batches(data, name, cfg, device)
        assert batches is not None
        inputs, outputs, per_image = evaluate_split(trainee, batches)
        metrics[name] = split_metrics(per_image, targets_of(split))
        if reference is not None:
            metrics[name]["reference_accuracy"] = reference_accuracy(
                reference, outputs, split, device
            )
        if name != "train":
            rows[name] = (split, per_image)
            shown = shown_images(split, inputs, outputs, per_image, settings(cfg).shown)
            shown["split"] = np.asarray(name)
    return metrics, rows, shown


def save_shown(folder: Path, shown: dict[str, np.ndarray]) -> None:
    if shown:
        from cnnlab.atomic import atomic_path

        with atomic_path(folder / runfiles.RECONSTRUCTIONS) as temp, open(temp, "wb") as file:
            np.savez_compressed(file, **shown)  # type: ignore[arg-type]


# --- a finished run's network on images again ---------------------------------------------


def finished_trainee(run: FinishedRun, device: torch.device) -> Trainee:
    model = run.network.to(device, memory_format=IMAGE_LAYOUT)  # type: ignore[call-overload]
    task_cfg = settings(run.config)
    task = Reconstruction(
        task_cfg.loss, getattr(model, "head_activation", None), task_cfg.threshold
    )
    return Trainee(model, None, None, task, InputTransform(run.normalization(), IMAGE_LAYOUT))


def outputs_of(trainee: Trainee, batches: DeviceBatches) -> np.ndarray:
    result = infer(trainee.model, batches, trainee.task, trainee.preprocess, keep_predictions=True)
    assert result.predictions is not None
    return result.predictions.numpy()


def predict_again(run: FinishedRun, split: str, device: torch.device) -> np.ndarray:
    """A finished reconstruction run's output images (N, C, H, W) on 0..1 of `split`, from the
    same fixed inputs it was evaluated on."""
    from cnnlab.data.pipeline import load_data

    cfg = run.config
    data = load_data(run.data_config(), cfg.seed)
    batches = eval_batches(data, split, cfg, device)
    if batches is None:
        raise ConfigError(f"{run.folder}: the run has no {split} split")
    return outputs_of(finished_trainee(run, device), batches)


def reconstruct(
    run: FinishedRun, images: np.ndarray, device: torch.device, tta: bool = False
) -> np.ndarray:
    """Output images (N, C, H, W) on 0..1 of uint8 images at the run's image size, degraded
    as its test images were (a fixed draw: the same images give the same inputs)."""
    if tta:
        raise ConfigError("--tta: a reconstruction run has no test-time augmentation")
    batches = fixed_batches(images, images, run.config, f"{run.config.seed}:predict", device)
    return outputs_of(finished_trainee(run, device), batches)


def evaluate_images(
    run: FinishedRun, split: Split, key: str, device: torch.device
) -> tuple[dict[str, Any], str]:
    """`cnnlab evaluate` of a reconstruction run: the metrics.json entry and predictions.csv of
    `split`, its inputs degraded from a generator seeded by `key`."""
    targets = targets_of(split)
    batches = fixed_batches(split.images, targets, run.config, key, device)
    trainee = finished_trainee(run, device)
    per_image = image_metrics(
        cast(Reconstruction, trainee.task), outputs_of(trainee, batches), targets
    )
    return split_metrics(per_image, targets), predictions_csv({split.name: (split, per_image)})


def write_reconstructions(
    run: FinishedRun, inputs: Any, out: Path | None, device: str = "auto"
) -> tuple[Path, list[Path], list[tuple[str, str]]]:
    """`cnnlab predict` for a reconstruction run: each image's reconstruction as a PNG named
    after it in `out` (default RUN/reconstructed/); existing files are never overwritten."""
    from PIL import Image

    from cnnlab.runs.predict import CHUNK, decode_all, decoding_for, gather
    from cnnlab.runtime import select_device

    folder = out if out is not None else run.folder / "reconstructed"
    sources = list(gather(inputs))
    names = [Path(name).stem + ".png" for name, _ in sources]
    repeated = {name for name, times in Counter(names).items() if times > 1}
    taken = sorted({n for n in names if (folder / n).exists()} | repeated)
    if taken:
        raise ConfigError(
            f"--out {folder}: {', '.join(taken[:5])} would be written twice or over an existing "
            "file; choose an empty --out folder, or rename the images"
        )
    chosen, options = select_device(device), decoding_for(run)
    skipped: list[tuple[str, str]] = []
    written: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(sources), CHUNK):
        decoded_names, images = decode_all(sources[start : start + CHUNK], options, skipped)
        if not decoded_names:
            continue
        outputs = as_uint8(reconstruct(run, np.stack(images), chosen))
        for name, image in zip(decoded_names, outputs, strict=True):
            path = folder / (Path(name).stem + ".png")
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(pixels).save(path)
            written.append(path)
    return folder, written, skipped
