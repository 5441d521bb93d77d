"""The kinds of run, as peers: each registers how it runs and how a finished one predicts again.

`cnnlab.runs.run_experiment` picks a kind by the experiment (a `classifier` section makes a
features run) and belongs to none of them; FinishedRun asks its kind to predict. A new kind of
run is one module that registers itself here and is imported by cnnlab/runs/__init__.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.console import Console

from cnnlab.config import Experiment
from cnnlab.registry import Registry
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.skeleton import RunResult
from cnnlab.train.callbacks import Callback

if TYPE_CHECKING:
    from cnnlab.runs.finished import FinishedRun

# (experiment, folder, console, resume, callbacks) -> result
Runner = Callable[[Experiment, RunFolder, Console, bool, Sequence[Callback]], RunResult]
# (finished run, split name, device) -> (N, classes) probabilities of that split, recomputed
Predictor = Callable[["FinishedRun", str, torch.device], np.ndarray]
# (finished run, uint8 (N, C, H, W) images at its input size, device, tta) -> (N, classes)
# probabilities: what `cnnlab predict` and FinishedRun.predict ask of a run
Classifier = Callable[["FinishedRun", np.ndarray, torch.device, bool], np.ndarray]


@dataclass(frozen=True)
class RunKind:
    run: Runner
    predict: Predictor
    classify: Classifier


KINDS: Registry[RunKind] = Registry("kind of run")


def kind_of(cfg: Experiment) -> str:
    if cfg.ensemble is not None:
        return "ensemble"
    if cfg.task == "reconstruction":  # a trained run whose network outputs images
        return "reconstruction"
    return "features" if cfg.classifier is not None else "trained"
