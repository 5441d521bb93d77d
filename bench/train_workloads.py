"""The training benchmark's workloads, and the one copy of their data every pipeline trains on.

A workload is a real data set (a per-class subset of the shared zips, extracted with path
checks), a model, an augmentation preset, a batch size and an optimiser, as the seed reports set
them. `prepare` decodes it once with cnnlab's own `load_data` (into a cache the cnnlab row then
reuses) and saves the train and validation splits as .npy files for the peers, so every pipeline
sees the same pixels and no pipeline's training time includes decoding.

Adding a workload is one more `Workload` in `WORKLOADS`: `model` is what cnnlab's config takes,
`peer_model` tells the PyTorch peers how to build the same network (`{"timm": name}`; left
empty, they and Keras build cnnlab's zoo layer list), and `gpu_only` skips it on the CPU with a
printed reason (Keras, tensorflow-cpu, then has no row). A model cnnlab cannot build yet gives a
"not run" row naming cnnlab's error, not a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import extract_subset
from cnnlab.config import DataConfig
from cnnlab.data.pipeline import load_data
from cnnlab.models import MODELS


@dataclass(frozen=True)
class Size:
    per_class: int | None  # files of each class (and zip) extracted; None: all of them
    epochs: int  # each one pass over the training split; the first is the warm-up


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    dataset: str  # folder under the shared datasets
    zips: tuple[str, ...]
    data: dict[str, Any]  # cnnlab DataConfig fields besides source and cache_dir
    model: dict[str, Any]  # cnnlab ModelConfig fields
    augment: str  # a cnnlab preset; the peers get the same parameters
    batch_size: int
    optimizer: dict[str, Any]  # cnnlab OptimizerConfig fields
    target: float  # validation accuracy whose first arrival is timed
    full: Size
    quick: Size
    peer_model: dict[str, Any] = field(default_factory=dict)  # empty: cnnlab's zoo layer list
    gpu_only: bool = False
    ceiling: bool = False  # CUDA: also the synthetic-data ceiling (the reference on one batch)
    speed_goal: float | None = None  # the CPU goal: cnnlab img/s ÷ Keras img/s
    cuda_speed_goal: float | None = None  # the same on one GPU (Keras 3 on PyTorch there)

    def size(self, quick: bool) -> Size:
        return self.quick if quick else self.full


FINGER_COUNT = r"_(\d)[LR]\.png$"  # S1's label: the number of fingers (L/R hand ignored)

WORKLOADS: tuple[Workload, ...] = (
    Workload(
        key="s4_catsdogs",
        title="S4 catsdogs_cnn, cats_vs_dogs 150x150 RGB",
        dataset="cats_vs_dogs",
        zips=("train.zip", "validation.zip"),  # the validation part is the validation split
        data={"target_size": (150, 150)},
        model={"name": "catsdogs_cnn"},
        augment="s0",
        batch_size=40,  # S4's
        optimizer={"name": "rmsprop", "lr": 1e-4},  # examples/s4_catsdogs.yaml
        target=0.6,  # S4's given baseline reached 0.57, the report 0.797 after 40 epochs
        speed_goal=3.0,
        cuda_speed_goal=30.0,  # at S4's batch 40, Keras 3 on PyTorch on the same GPU
        full=Size(per_class=None, epochs=4),  # 300 train, 150 validation images
        quick=Size(per_class=12, epochs=2),
    ),
    Workload(
        key="s1_ivannet",
        title="S1 ivannet, fingers 128x128 grayscale",
        dataset="fingers",
        zips=("train.zip",),  # 600 files; validation_split carves 1/5 of them
        data={
            "target_size": (128, 128),
            "color_mode": "grayscale",
            "label_pattern": FINGER_COUNT,
            "validation_split": 0.2,
        },
        model={"name": "ivannet"},
        augment="s1",
        batch_size=32,  # examples/s1_ivannet.yaml
        optimizer={"name": "adam", "lr": 1e-4},
        target=0.9,
        speed_goal=3.0,
        full=Size(per_class=None, epochs=4),  # 480 train, 120 validation images
        quick=Size(per_class=6, epochs=2),
    ),
    Workload(
        key="s3_basenet",
        title="S3 basenet, cifar10 32x32 RGB",
        dataset="cifar10",
        zips=("train.zip",),
        data={"target_size": (32, 32), "validation_split": 0.1},
        model={"name": "basenet"},
        augment="s0",
        batch_size=32,
        optimizer={"name": "sgd", "lr": 0.01},  # S3's
        target=0.25,  # ten classes: chance is 0.1; S3's 25-class baseline ended near 0.40
        full=Size(per_class=500, epochs=8),  # 4,500 train, 500 validation images
        quick=Size(per_class=6, epochs=2),
    ),
    Workload(
        key="resnet50",
        title="timm ResNet-50, cats_vs_dogs 224x224 RGB",
        dataset="cats_vs_dogs",
        zips=("train.zip", "validation.zip"),
        data={"target_size": (224, 224)},
        model={"backbone": "resnet50", "weights": "none"},  # GAP + Dense softmax head
        augment="s0",
        batch_size=64,
        optimizer={"name": "adamw", "lr": 1e-3},
        target=0.6,
        full=Size(per_class=None, epochs=4),
        quick=Size(per_class=32, epochs=2),
        peer_model={"timm": "resnet50"},
        gpu_only=True,
        ceiling=True,
    ),
    Workload(
        key="efficientnet_lite0",
        title="EfficientNet-Lite0 fine-tuning (ImageNet weights), cats_vs_dogs 128x128 RGB",
        dataset="cats_vs_dogs",
        zips=("train.zip", "validation.zip"),
        data={"target_size": (128, 128)},
        model={"backbone": "efficientnet_lite0"},  # its local ImageNet weights; all trains
        augment="s0",
        batch_size=32,
        optimizer={"name": "adam", "lr": 1e-4},
        target=0.9,
        full=Size(per_class=None, epochs=4),
        quick=Size(per_class=16, epochs=2),
        peer_model={"timm": "tf_efficientnet_lite0"},  # the same network, random weights
        gpu_only=True,
    ),
)


@dataclass
class Prepared:
    folder: Path  # the extracted source, as cnnlab's config names it
    cache_dir: Path  # cnnlab's decode cache, already holding this data
    arrays: dict[str, Path]  # x_train, y_train, x_val, y_val (.npy; x uint8 N,C,H,W)
    input_shape: tuple[int, int, int]  # H, W, C
    classes: list[str]
    layers: list[Any] | None  # cnnlab's layer list for the peers, when the model is in its zoo
    train_size: int
    val_size: int
    decode_s: float  # cnnlab's load_data into the empty cache: the folder's one-time cost


def missing(datasets: Path, workloads: tuple[Workload, ...] = WORKLOADS) -> list[Path]:
    """The zips these workloads need that are not there."""
    needed = {datasets / w.dataset / name for w in workloads for name in w.zips}
    return sorted(path for path in needed if not path.is_file())


def cnnlab_data(workload: Workload, source: Path, cache_dir: Path) -> DataConfig:
    return DataConfig(source=str(source), cache_dir=str(cache_dir), **workload.data)


def prepare(workload: Workload, datasets: Path, work: Path, quick: bool) -> Prepared:
    """Extract, decode once (cnnlab's load_data, seed 0) and save the splits for the peers."""
    folder = work / "source"
    pattern = workload.data.get("label_pattern")
    for name in workload.zips:
        extract_subset(
            datasets / workload.dataset / name, folder, workload.size(quick).per_class, pattern
        )
    cache_dir = work / "cache"
    started = time.perf_counter()
    data = load_data(cnnlab_data(workload, folder, cache_dir), seed=0)
    decode_s = time.perf_counter() - started
    arrays: dict[str, Path] = {}
    for split, tag in (("train", "train"), ("val", "val")):
        part = data.splits[split]
        for prefix, values in (("x", part.images), ("y", part.labels)):
            arrays[f"{prefix}_{tag}"] = work / f"{prefix}_{tag}.npy"
            np.save(arrays[f"{prefix}_{tag}"], np.ascontiguousarray(values))
    name = workload.model.get("name")
    layers = None
    if name in MODELS and not workload.peer_model:
        layers = MODELS.get(name)(data.input_shape, data.num_classes)
    return Prepared(
        folder=folder,
        cache_dir=cache_dir,
        arrays=arrays,
        input_shape=data.input_shape,
        classes=data.classes,
        layers=layers,
        train_size=len(data.splits["train"]),
        val_size=len(data.splits["val"]),
        decode_s=decode_s,
    )
