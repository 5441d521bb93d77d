"""`cnnlab evaluate`: a finished run evaluated again, on its own data or any labelled source,
with its own preprocessing, optionally on augmented images or with test-time augmentation.

Each evaluation is a record of its own, `evaluations/<name>/` (evaluation.json: what was
evaluated; metrics.json; predictions.csv), written whole or not at all, and a section of the
run's report. The run's own metrics.json and predictions.csv are never touched: S1's
"generalisation" table (each model on the other kind of data) and a re-evaluation with TTA
sit beside the numbers the run made, instead of over them.

    evaluate_run("runs/carlosnet", EvaluationSpec(split="test", augment="s1"))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cnnlab
from cnnlab import runfiles
from cnnlab.atomic import atomic_folder, write_text
from cnnlab.config import AugmentConfig, DataConfig
from cnnlab.config_io import validate
from cnnlab.data.pipeline import Data, Split, examine, load_data
from cnnlab.errors import ConfigError
from cnnlab.runs import reconstruction
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.kinds import KINDS
from cnnlab.runs.manifest import now
from cnnlab.runs.rerender import rewrite_report
from cnnlab.runtime import IMAGE_LAYOUT, select_device
from cnnlab.task.classification import predictions_csv, split_metrics

ALL = "all"  # --split all: every usable image of the source, whatever part it is in
AUGMENT_CHUNK = 256  # images augmented per draw: fixed, so the draws do not follow the batch size
EPSILON = 1e-7  # Keras's clip before the log of a probability


@dataclass(frozen=True)
class EvaluationSpec:
    """What to evaluate a run on. Unset: the run's own data and its test split."""

    data: str | None = None  # a labelled source (folder, zip, CSV, IDX); None: the run's own
    split: str | None = None  # train, val, test or all; None: test (else val, else all)
    augment: str = "none"  # none, train (the run's training augmentation) or a preset name
    tta: bool = False  # the mean of each image's and its mirror image's predictions
    seed: int | None = None  # the augmentation's draws; None: the run's seed
    label_pattern: str | None = None  # a new source's labels, when the run's do not apply
    labels_csv: str | None = None

    def default_name(self, split: str) -> str:
        """e.g. `test`, `test-tta`, `test-augment-s1`, `fingers-all`: what it is, in a word."""
        parts = [split if self.data is None else f"{Path(self.data).stem}-{split}"]
        if self.augment != "none":
            parts.append(f"augment-{self.augment}")
        if self.tta:
            parts.append("tta")
        return "-".join(parts)


@dataclass(frozen=True)
class Evaluation:
    name: str
    folder: Path  # RUN/evaluations/<name>
    record: dict[str, Any]  # evaluation.json
    metrics: dict[str, Any]  # metrics.json: one split's metrics, as the run's own

    def lines(self) -> list[str]:
        images, split = self.record["images"], self.record["split"]
        if "accuracy_ceiling" in self.metrics:  # a reconstruction run's
            m = self.metrics
            return [
                f"{self.name}: {images:,} images ({split})  accuracy: {m['accuracy']:.4f} "
                f"(ceiling {m['accuracy_ceiling']:.4f})  PSNR: {m['psnr']:.2f} dB  "
                f"SSIM: {m['ssim']:.4f}  loss: {m['loss']:.4f}",
                f"Wrote {self.folder}",
            ]
        return [
            f"{self.name}: {images:,} images ({split})  accuracy: {self.metrics['accuracy']:.4f}"
            f"  loss: {self.metrics['loss']:.4f}  macro F1: {self.metrics['macro_avg']['f1']:.4f}",
            f"Wrote {self.folder}",
        ]


def evaluate_run(
    run: FinishedRun | str | Path,
    spec: EvaluationSpec = EvaluationSpec(),
    name: str | None = None,
    device: str = "auto",
    report: bool = True,
) -> Evaluation:
    """Evaluate a finished run as `spec` says into RUN/evaluations/<name>/ (a name that exists
    is refused: earlier evaluations stay) and add it to the run's report."""
    finished = run if isinstance(run, FinishedRun) else FinishedRun.open(run)
    augment = _augment_config(finished, spec.augment)
    same_data = _is_own_source(finished, spec.data)
    data = _load(finished, spec, same_data)
    split = _split_of(data, spec.split, same_data)
    name = name or spec.default_name(split.name)
    target = _new_record(finished.folder, name)

    dev = select_device(device)
    seed = finished.config.seed if spec.seed is None else spec.seed
    if finished.kind == "reconstruction":
        if augment is not None or spec.tta:
            raise ConfigError(
                "--augment/--tta: a reconstruction run's inputs are made by its "
                "reconstruction.degrade; evaluate without them"
            )
        # its own split: the run's fixed draw of that split's inputs, so the numbers repeat
        key = f"{seed}:{split.name}" if same_data else f"{seed}:evaluate:{name}"
        metrics, predictions = reconstruction.evaluate_images(finished, split, key, dev)
    else:
        metrics, predictions = _classified(finished, split, augment, spec.tta, seed, dev)
    record = {
        "name": name,
        **{k: v for k, v in asdict(spec).items() if k not in ("data", "split", "seed")},
        "source": spec.data or finished.config.data.source,
        "same_data": same_data,
        "split": split.name,
        "seed": seed,
        "images": len(split),
        "classes_absent": [c for k, c in enumerate(finished.classes) if k not in set(split.labels)],
        "device": str(dev),
        "fingerprint": data.fingerprint,
        "created": now(),
        "cnnlab": cnnlab.__version__,
    }
    _write_record(target, record, metrics, predictions)
    if report:
        rewrite_report(finished)
    return Evaluation(name, target, record, metrics)


def _classified(
    finished: FinishedRun,
    split: Split,
    augment: AugmentConfig | None,
    tta: bool,
    seed: int,
    device: torch.device,
) -> tuple[dict[str, Any], str]:
    """A classification run's metrics.json entry and predictions.csv of `split`."""
    images = split.images if augment is None else _augmented(finished, split, augment, seed, device)
    probabilities = KINDS.get(finished.kind).classify(finished, np.asarray(images), device, tta)
    metrics = split_metrics(
        split.labels,
        probabilities,
        finished.classes,
        cross_entropy(probabilities, split.labels),
        finished.config.evaluate.top_k,
    )
    return metrics, predictions_csv({split.name: (split, probabilities)})


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (Keras's categorical cross-entropy on
    probabilities, clipped as Keras clips)."""
    true = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(true, EPSILON, 1.0)).mean()) if len(labels) else float("nan")


def find_evaluation(folder: Path, name: str) -> dict[str, Any] | None:
    """The evaluation.json of RUN/evaluations/<name>, when that evaluation is complete."""
    record = folder / runfiles.EVALUATIONS / name
    if not (record / runfiles.METRICS).is_file():
        return None
    return runfiles.read_mapping(record / runfiles.EVALUATION) or None


# --- what is evaluated -----------------------------------------------------------------------


def _augment_config(run: FinishedRun, choice: str) -> AugmentConfig | None:
    if choice == "none":
        return None
    if choice == "train":
        if run.kind != "trained" or _no_random_ops(run.config.augment):
            raise ConfigError(
                f"--augment train: {run.folder} trained without augmentation; give a preset "
                "(e.g. --augment s1) to evaluate on augmented images"
            )
        return run.config.augment
    return validate({"preset": choice}, AugmentConfig, source=f"--augment {choice}")


def _no_random_ops(cfg: AugmentConfig) -> bool:
    from cnnlab.augment.keras import KerasParams
    from cnnlab.augment.pipeline import modern_params

    return KerasParams.from_config(cfg).is_identity and modern_params(cfg).is_identity


def _is_own_source(run: FinishedRun, data: str | None) -> bool:
    own = run.config.data.source
    if data is None:
        return True
    return Path(data).expanduser().resolve() == Path(own).expanduser().resolve()


def _load(run: FinishedRun, spec: EvaluationSpec, same_data: bool) -> Data:
    """The run's own data as it split it, or a new source at the run's input size, in the
    parts it comes in (train/val/test folders or zips), with the run's labels where it has
    none of its own."""
    if same_data and spec.label_pattern is None and spec.labels_csv is None:
        return load_data(run.data_config(), run.config.seed)
    height, width, channels = run.input_shape
    update: dict[str, Any] = {
        "source": spec.data or run.config.data.source,
        "target_size": (height, width),
        "color_mode": "grayscale" if channels == 1 else "rgb",
        "validation_split": None,
        "test_split": None,
    }
    if spec.label_pattern or spec.labels_csv:
        update |= {"label_pattern": spec.label_pattern, "labels_csv": spec.labels_csv}
    cfg = run.data_config().model_copy(update=update)
    if "val" not in _parts(cfg):
        cfg = cfg.model_copy(update={"validation_split": 0.0})  # keep every image, carve none
    data = load_data(cfg, run.config.seed)
    unknown = [c for c in data.classes if c not in run.classes]
    if unknown:
        raise ConfigError(
            f"{cfg.source}: classes the run does not know: {', '.join(unknown)} (the run's: "
            f"{', '.join(run.classes)}); class names must match the run's, by name"
        )
    return _relabelled(data, run.classes)


def _parts(cfg: DataConfig) -> set[str]:
    return {s.split for s in examine(cfg, options=None).samples if s.split}


def _relabelled(data: Data, classes: list[str]) -> Data:
    """The data with its labels as indices into the run's classes (a source may lack some)."""
    index = np.asarray([classes.index(c) for c in data.classes], dtype=np.int64)
    splits = {
        name: Split(name, s.images, index[s.labels], s.paths, classes)
        for name, s in data.splits.items()
    }
    return Data(splits, classes, data.health, data.manifest, data.fingerprint)


def _split_of(data: Data, split: str | None, same_data: bool) -> Split:
    parts = list(data.splits)
    if split is None:
        split = next((s for s in ("test", "val") if s in parts), ALL if not same_data else "train")
    if split == ALL:
        chosen = list(data.splits.values())
        return Split(
            ALL,
            np.concatenate([s.images for s in chosen]),
            np.concatenate([s.labels for s in chosen]),
            [p for s in chosen for p in s.paths],
            data.classes,
        )
    if split not in data.splits:
        raise ConfigError(
            f"--split {split}: the data has no {split} split (it has {', '.join(parts)}, or all)"
        )
    return data.splits[split]


@torch.no_grad()
def _augmented(
    run: FinishedRun, split: Split, augment: AugmentConfig, seed: int, device: torch.device
) -> np.ndarray:
    """The split's images through the augmentation's random part, once, as uint8: the same
    images for every evaluation with this seed (on this kind of device)."""
    from cnnlab.augment.normalize import Normalization
    from cnnlab.augment.pipeline import TrainTransform
    from cnnlab.augment.preview import augmented_pixels

    # only the random part runs, on 0..1 values (an ensemble has no normalisation of its own)
    own = Normalization(1 / 255) if run.kind == "ensemble" else run.normalization()
    transform = TrainTransform(augment, own, IMAGE_LAYOUT, seed, device)
    out = np.empty_like(np.asarray(split.images))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the modern operations draw from torch's global generator
        for start in range(0, len(split), AUGMENT_CHUNK):
            batch = torch.from_numpy(np.ascontiguousarray(split.images[start:][:AUGMENT_CHUNK]))
            out[start : start + len(batch)] = augmented_pixels(transform, batch.to(device))
    return out


# --- the record --------------------------------------------------------------------------------


def _new_record(folder: Path, name: str) -> Path:
    if not name or name.startswith(".") or Path(name).name != name:
        raise ConfigError(f"--name {name!r}: give a plain folder name, e.g. --name augmented_test")
    target = folder / runfiles.EVALUATIONS / name
    if target.exists():
        raise ConfigError(
            f"{target} exists: an evaluation is never written over; give another --name, or "
            "delete that folder to evaluate it again"
        )
    return target


def _write_record(
    target: Path, record: dict[str, Any], metrics: dict[str, Any], predictions: str
) -> None:
    with atomic_folder(target) as temp:  # a crash leaves no half-written evaluation
        runfiles.write_json(temp / runfiles.EVALUATION, record)
        runfiles.write_json(temp / runfiles.METRICS, metrics)
        write_text(temp / runfiles.PREDICTIONS, predictions)
