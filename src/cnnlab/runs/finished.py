"""FinishedRun: a run folder opened again, strictly: its experiment, classes, input shape,
normalisation, its model with the kept weights, its metrics, history and predictions.

Studies, cross-evaluation, prediction, export and features-from-a-run all start here. Opening
fails with a message naming the folder and each missing or unreadable file (a damaged run is
a user error, exit 2); the report reads the same files tolerantly instead (runfiles.read_run).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab import runfiles
from cnnlab.augment.degrade import Degradation
from cnnlab.augment.normalize import Normalization
from cnnlab.config import DataConfig, Experiment
from cnnlab.config_io import read_yaml, validate
from cnnlab.errors import ConfigError
from cnnlab.models import model_from_config
from cnnlab.runs.kinds import KINDS, kind_of
from cnnlab.runs.predict import Predictions, predict
from cnnlab.runs.skeleton import sized_for
from cnnlab.runtime import select_device
from cnnlab.train.checkpoint import load_weights

# What every finished run holds; a trained run also holds its normalisation and weights, a
# features run its normalisation, an ensemble nothing more (its members hold theirs).
REQUIRED = (runfiles.CONFIG, runfiles.MANIFEST, runfiles.METRICS)
OWN_FILES = {
    "trained": (runfiles.NORMALIZATION, runfiles.WEIGHTS),
    "features": (runfiles.NORMALIZATION,),
    "reconstruction": (runfiles.NORMALIZATION, runfiles.WEIGHTS),
}


@dataclass(frozen=True)
class FinishedRun:
    folder: Path
    config: Experiment  # the resolved experiment it ran
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, role: str = "") -> FinishedRun:
        """The run at `path`. `role` prefixes messages with the key that named the folder
        (`model.from_run`); a trained run also needs model.safetensors."""
        folder = Path(path).expanduser()
        prefix = f"{role}: " if role else ""
        trained_only = role == "model.from_run"  # only a trained run has a network to give
        if not folder.is_dir():
            what = "trained run" if trained_only else "run"
            raise ConfigError(
                f"{prefix}{folder} holds no finished {what} (no such folder); give the folder "
                "a finished `cnnlab run` wrote, e.g. runs/NAME"
            )
        required = [*REQUIRED, *OWN_FILES["trained"]] if trained_only else list(REQUIRED)
        _require(folder, required, prefix, "trained run" if trained_only else "run")
        config = _read_config(folder, prefix)
        _require(folder, list(OWN_FILES.get(kind_of(config), ())), prefix, "run")
        return cls(folder, config, _read_manifest(folder, prefix))

    # --- what it was ------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """ "trained", "features" (a classifier on a network's features) or "ensemble"."""
        return kind_of(self.config)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.manifest["data"]["classes"]]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) its network takes."""
        height, width, channels = (int(n) for n in self.manifest["data"]["input_shape"])
        return height, width, channels

    @property
    def network_input(self) -> tuple[int, int, int]:
        """(height, width, channels) of its network's input: the images', or for task:
        reconstruction their degraded copies'."""
        if self.config.reconstruction is None:
            return self.input_shape
        return Degradation(self.config.reconstruction.degrade).output_shape(self.input_shape)

    @property
    def model_name(self) -> str:
        return str(self.manifest.get("model", {}).get("name", "model"))

    def normalization(self) -> Normalization:
        """uint8 images -> the network's input, exactly as the run evaluated them."""
        if self.kind == "ensemble":
            raise ConfigError(
                f"{self.folder}: an ensemble has no input normalisation of its own; each of its "
                f"members (ensemble.members in its {runfiles.CONFIG}) has its own"
            )
        return Normalization.load(self.folder / runfiles.NORMALIZATION)

    def data_config(self) -> DataConfig:
        """The data section as the run read its data (its input size filled in where the
        network, not the file, chose it)."""
        data, model = self.config.data, self.config.model
        if data.target_size is None and model is not None and (model.backbone or model.from_run):
            return sized_for(data, self.input_shape, self.folder)
        return data

    # --- what it made -----------------------------------------------------------------------

    def model(self) -> torch.nn.Module:
        """The trained network with its kept (best) weights, on the CPU, in eval mode."""
        if self.config.model is None or self.kind not in ("trained", "reconstruction"):
            what = {"ensemble": "an ensemble has no network of its own"}.get(
                self.kind, "a features run trains no network"
            )
            raise ConfigError(f"{self.folder}: {what}; its model is {self.model_name}")
        model_cfg = self.config.model
        if model_cfg.backbone is not None:  # model.safetensors holds every weight, the base's too
            model_cfg = model_cfg.model_copy(update={"weights": "none"})
        model = model_from_config(model_cfg, self.network_input, len(self.classes))
        try:
            load_weights(model, self.folder / runfiles.WEIGHTS)
        except RuntimeError as err:
            raise ConfigError(
                f"{self.folder / runfiles.WEIGHTS} does not fit the model of its "
                f"{runfiles.CONFIG} ({str(err).splitlines()[0]})"
            ) from None
        return model.eval()

    @cached_property
    def network(self) -> torch.nn.Module:
        """model(), built once and kept: what repeated predictions (a served page) reuse."""
        return self.model()

    @cached_property
    def members(self) -> list[FinishedRun]:
        """An ensemble's runs, opened once and kept (their networks too, as predictions
        repeat); [] for any other run."""
        ensemble = self.config.ensemble
        if ensemble is None:
            return []
        return [FinishedRun.open(path, "ensemble.members") for path in ensemble.members]

    @cached_property
    def metrics(self) -> dict[str, Any]:
        return _read_json(self.folder / runfiles.METRICS, "")

    @cached_property
    def history(self) -> list[dict[str, str]]:
        """history.csv's rows (none for a features run)."""
        return _read_rows(self.folder / runfiles.HISTORY)

    @cached_property
    def predictions(self) -> list[dict[str, str]]:
        """predictions.csv's rows: split, path, label, predicted, confidence, p_<class>..."""
        return _read_rows(self.folder / runfiles.PREDICTIONS)

    def predict(
        self,
        inputs: Any,
        top_k: int = 5,
        tta: bool = False,
        batch_size: int | None = None,
        device: str = "auto",
    ) -> Predictions:
        """Predictions for new images: paths of files, folders (recursive) or zips, PIL
        images, HWC uint8 arrays, or a list of them. `.records()` gives one dict per image,
        `.to_pandas()` a DataFrame, `.skipped` the files that are not usable images."""
        return predict(self, inputs, top_k, tta, batch_size, device)

    def with_eval_batch(self, batch_size: int) -> FinishedRun:
        """The same run, evaluated in batches of `batch_size`."""
        evaluate = self.config.evaluate.model_copy(update={"batch_size": batch_size})
        return replace(self, config=self.config.model_copy(update={"evaluate": evaluate}))

    def predict_split(self, split: str = "test", device: str = "auto") -> np.ndarray:
        """(N, classes) probabilities of `split`, recomputed from the run's data: the network
        with its kept weights, or, for a features run, its saved classifier (fitted again for
        a run from before classifiers were saved: see cnnlab.runs.features)."""
        if split not in self.manifest["data"].get("split_sizes", {}):
            raise ConfigError(f"{self.folder}: the run has no {split!r} split")
        return KINDS.get(self.kind).predict(self, split, select_device(device))


def _require(folder: Path, names: list[str], prefix: str, what: str) -> None:
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"{prefix}{folder} holds no finished {what} (no {', '.join(missing)}); give the "
            "folder a finished `cnnlab run` wrote, e.g. runs/NAME"
        )


def _read_config(folder: Path, prefix: str) -> Experiment:
    path = folder / runfiles.CONFIG
    return validate(read_yaml(path), Experiment, source=f"{prefix}{path}")


def _read_manifest(folder: Path, prefix: str) -> dict[str, Any]:
    path = folder / runfiles.MANIFEST
    manifest = _read_json(path, prefix)
    try:
        data = manifest["data"]
        _ = [int(n) for n in data["input_shape"]], list(data["classes"])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{prefix}{path} is not a run manifest (no {err})") from None
    return manifest


def _read_json(path: Path, prefix: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{prefix}{path}: not readable JSON ({err})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{prefix}{path}: expected a JSON object")
    return value


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
