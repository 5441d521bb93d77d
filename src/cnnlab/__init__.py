"""cnnlab: image-classification experiments with convolutional networks.

The public API, for notebooks and scripts (the CLI calls the same functions):

    import cnnlab

    cfg = cnnlab.load_experiment("examples/s1_carlosnet.yaml", ["train.epochs=2"])
    result = cnnlab.run(cfg)                      # a new folder under runs/
    finished = cnnlab.load_run(result.folder)     # config, classes, model, metrics, predictions
    cnnlab.evaluate_run(result.folder, cnnlab.EvaluationSpec(augment="s1"))  # evaluations/
    cnnlab.ensemble_runs(["runs/a", "runs/b"], "mean")   # a run folder combining finished runs
    cnnlab.explain_run(result.folder, ["cat.jpg"])     # Grad-CAM overlays into RUN/explain/
    study = cnnlab.run_study("examples/s1_study.yaml", jobs=2)   # study.html, study.json, ...
    sweep = cnnlab.run_sweep("examples/digits_sweep.yaml", trials=20)  # Optuna: sweep.html
    model = cnnlab.build_model("carlosnet", (128, 128, 1), 6)

Imports are lazy: `import cnnlab` loads neither torch nor the data pipeline until one of these
names is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Experiment": "cnnlab.config",
    "load_experiment": "cnnlab.config_io",
    "CnnlabError": "cnnlab.errors",
    "ConfigError": "cnnlab.errors",
    "DataError": "cnnlab.errors",
    "MODELS": "cnnlab.models",
    "build_model": "cnnlab.models",
    "model_from_config": "cnnlab.models",
    "run": "cnnlab.runs",
    "load_run": "cnnlab.runs",
    "FinishedRun": "cnnlab.runs",
    "RunFolder": "cnnlab.runs",
    "RunResult": "cnnlab.runs",
    "evaluate_run": "cnnlab.runs.evaluation",
    "ensemble_runs": "cnnlab.runs.ensemble",
    "EvaluationSpec": "cnnlab.runs.evaluation",
    "explain_run": "cnnlab.runs.explain",
    "run_study": "cnnlab.study.runner",
    "run_sweep": "cnnlab.sweep.runner",
    "compare": "cnnlab.study.compare",
    "Callback": "cnnlab.train.callbacks",
    "TrainState": "cnnlab.train.callbacks",
}
__all__ = [
    "MODELS",
    "Callback",
    "CnnlabError",
    "ConfigError",
    "DataError",
    "EvaluationSpec",
    "Experiment",
    "FinishedRun",
    "RunFolder",
    "RunResult",
    "TrainState",
    "__version__",
    "build_model",
    "compare",
    "ensemble_runs",
    "evaluate_run",
    "explain_run",
    "load_experiment",
    "load_run",
    "model_from_config",
    "run",
    "run_study",
    "run_sweep",
]

if TYPE_CHECKING:
    from cnnlab.config import Experiment
    from cnnlab.config_io import load_experiment
    from cnnlab.errors import CnnlabError, ConfigError, DataError
    from cnnlab.models import MODELS, build_model, model_from_config
    from cnnlab.runs import FinishedRun, RunFolder, RunResult, load_run, run
    from cnnlab.runs.ensemble import ensemble_runs
    from cnnlab.runs.evaluation import EvaluationSpec, evaluate_run
    from cnnlab.runs.explain import explain_run
    from cnnlab.study.compare import compare
    from cnnlab.study.runner import run_study
    from cnnlab.sweep.runner import run_sweep
    from cnnlab.train.callbacks import Callback, TrainState


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
