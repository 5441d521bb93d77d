"""Tracking: a run, a study or a sweep also logged to MLflow (`tracking: {mlflow: {...}}`, the
`track` extra, imported only when a config asks for it).

    with track.tracked(cfg, folder, resume, console) as tracker:   # runs/__init__.py
        result = run_experiment(cfg, folder, callbacks=[*callbacks, *tracker.callbacks])
        tracker.finish(result.metrics)

    with track.parent(cfg.tracking.mlflow, "s1", study_folder, console) as parent:
        with track.child(cell="adam", seed=0):                     # nested: a child run
            cnnlab.run(experiment, folder)
        if parent is not None:
            parent.log_metrics({"best_val_accuracy": 0.93}, step=0)

store.py talks to MLflow, values.py turns cnnlab's files into MLflow params and metrics,
tracker.py is a run's life as an MLflow run, nesting.py the parent runs.
"""

from cnnlab.track.nesting import Parent, child, current, within
from cnnlab.track.store import MlflowRun
from cnnlab.track.tracker import Tracker, parent, tracked

__all__ = [
    "MlflowRun",
    "Parent",
    "Tracker",
    "child",
    "current",
    "parent",
    "tracked",
    "within",
]
