"""An ensemble run: finished runs' probabilities of the same images combined (mean, vote or
stack: cnnlab.evaluate.ensemble), written as a run folder like any other, so `cnnlab predict`,
`evaluate`, `compare` and studies read it as they read a trained run.

    ensemble_runs(["runs/a", "runs/b", "runs/c"], "mean")     # runs/ensemble-mean/

Its config.yaml is an experiment with an `ensemble:` section (the members' folders, resolved,
and the method) and no model: the data section is the first member's, which the members share
for their val and test images (checked: cnnlab.runs.ensemble_members). It combines val and
test, never train, which members may not share. Nothing of the members is copied: predicting
opens them again, so they must stay where they were. stack keeps its meta-classifier without
pickle, as a features run keeps its classifier (classifier.safetensors + classifier.json).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console

from cnnlab import runfiles
from cnnlab.config import EnsembleConfig, EvaluateConfig, Experiment, OutputConfig, TrainConfig
from cnnlab.data.pipeline import load_data
from cnnlab.errors import ConfigError
from cnnlab.evaluate.ensemble import Method, Stacker, combine, fit_stack
from cnnlab.evaluate.saved_classifier import load_classifier, save_classifier
from cnnlab.runs.ensemble_members import (
    check_members,
    evaluation_rows,
    fingerprint,
    member_probabilities,
)
from cnnlab.runs.evaluation import cross_entropy
from cnnlab.runs.finished import FinishedRun
from cnnlab.runs.folder import RunFolder
from cnnlab.runs.kinds import KINDS, RunKind
from cnnlab.runs.skeleton import Predicted, RunResult, begin, evaluated, finish
from cnnlab.task.classification import split_metrics
from cnnlab.train.callbacks import Callback

if TYPE_CHECKING:
    from cnnlab.runs.skeleton import Started

PROBABILITIES = {
    "mean": "the mean of the members' probabilities",
    "vote": (
        "(votes + mean probability) / (members + 1): the most probable class is the majority "
        "vote of the members' predicted classes, a tie broken by the mean probability"
    ),
    "stack": (
        "LogisticRegression on the members' standardised probabilities, fitted on the val "
        "split alone (its val numbers are of the images it was fitted on; test is held out)"
    ),
}


def ensemble_runs(
    members: Sequence[str | Path],
    method: Method = "mean",
    name: str | None = None,
    out_dir: str | Path | None = None,
    *,
    device: str = "auto",
    quiet: bool = False,
    console: Console | None = None,
) -> RunResult:
    """An ensemble of the finished runs `members` into a new folder `out_dir/name` (default:
    the first member's parent folder, `ensemble-<method>`; `-2`, `-3` when it exists)."""
    from cnnlab.runs import run

    cfg = ensemble_experiment(members, method, name, out_dir, device)
    return run(cfg, quiet=quiet, console=console)


def ensemble_experiment(
    members: Sequence[str | Path],
    method: Method = "mean",
    name: str | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
) -> Experiment:
    """What config.yaml records: the members (absolute: predicting reopens them from anywhere),
    the method, and the first member's data section and seed (its split is the shared one)."""
    if len(members) < 2:
        raise ConfigError(f"ensemble: give two finished runs or more, got {len(members)}")
    folders = [Path(member).expanduser().resolve() for member in members]
    first = FinishedRun.open(folders[0], "ensemble.members")
    runs = [first, *(FinishedRun.open(folder, "ensemble.members") for folder in folders[1:])]
    return Experiment(
        seed=first.config.seed,
        data=first.data_config(),
        ensemble=EnsembleConfig(members=folders, method=method),
        train=TrainConfig(device=device),
        # a member that held test out (evaluate.test: false) keeps it held out here too
        evaluate=EvaluateConfig(
            top_k=first.config.evaluate.top_k, test=all(r.config.evaluate.test for r in runs)
        ),
        output=OutputConfig(
            dir=Path(out_dir) if out_dir is not None else folders[0].parent,
            name=name or f"ensemble-{method}",
        ),
    )


def run_ensemble(
    cfg: Experiment,
    folder: RunFolder,
    console: Console,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Members checked, their val and test probabilities, combined, metrics, report. Nothing
    trains in epochs: there is nothing to resume and no callback is called."""
    assert cfg.ensemble is not None  # kind_of chose this kind by it
    method = cfg.ensemble.method
    members = [FinishedRun.open(path, "ensemble.members") for path in cfg.ensemble.members]
    rows = check_members(members)
    if not rows["val"] and not (rows["test"] and cfg.evaluate.test):
        raise ConfigError(
            f"ensemble: {members[0].folder} has no val or test split to combine; give runs "
            "with a validation or test split"
        )
    if method == "stack" and not rows["val"]:
        raise ConfigError(
            f"ensemble.method: stack fits its meta-classifier on the members' validation "
            f"predictions, and {members[0].folder} has no val split; use mean or vote, or "
            "members with a validation split"
        )
    run = begin(cfg, folder, console, cfg.data)
    if evaluation_rows(run.data.manifest) != rows:
        raise ConfigError(
            f"ensemble: {cfg.data.source} no longer holds the val and test images the members "
            f"were evaluated on ({members[0].folder / runfiles.SPLIT}); run the members again"
        )
    clock = time.perf_counter()
    names = [name for name in evaluated(run.data, cfg) if name != "train"]
    found = {name: [_probabilities(m, run, name) for m in members] for name in names}
    run.timings["members_s"] = time.perf_counter() - clock
    probabilities = {name: [p for p, _ in found[name]] for name in names}

    stacker: Stacker | None = None
    warnings: list[str] = []
    if method == "stack":
        stacker, warnings = fit_stack(
            probabilities["val"], run.data.splits["val"].labels, run.data.classes, cfg.seed
        )
        save_classifier(stacker, folder.path, "logistic", run.data.classes)
    metrics, predicted = _evaluate(run, method, probabilities, stacker)
    folder.write_summary(summary_text(members, method))
    sources = {name: [source for _, source in found[name]] for name in names}
    console.print(
        f"{method} ensemble of {len(members)} runs; member probabilities "
        + ", ".join(f"{name}: {', '.join(sorted(set(s)))}" for name, s in sources.items()),
        highlight=False,
    )
    model = {
        "name": f"{method} ensemble of {len(members)} runs",
        "method": method,
        "members": [str(m.folder) for m in members],
    }
    details = {
        "ensemble": {
            "method": method,
            "probabilities": PROBABILITIES[method],
            "evaluation_fingerprint": fingerprint(rows),
            "members": [
                {
                    "folder": str(member.folder),
                    "model": member.model_name,
                    "kind": member.kind,
                    "probabilities": {name: sources[name][k] for name in names},
                }
                for k, member in enumerate(members)
            ],
        },
        "fit_warnings": warnings,
        "note": "an ensemble: no network of its own; its members are opened to predict",
    }
    return finish(run, metrics, predicted, model, None, **details)


def _probabilities(member: FinishedRun, run: Started, split: str):
    return member_probabilities(member, run.data.splits[split], run.device)


def _evaluate(
    run: Started,
    method: Method,
    probabilities: dict[str, list[np.ndarray]],
    stacker: Stacker | None,
) -> tuple[dict[str, Any], Predicted]:
    metrics: dict[str, Any] = {}
    predicted: Predicted = {}
    for name, members in probabilities.items():
        split = run.data.splits[name]
        combined = combine(method, members, stacker)
        loss = cross_entropy(combined, split.labels)  # as `cnnlab evaluate` computes it
        top_k = run.cfg.evaluate.top_k
        metrics[name] = split_metrics(split.labels, combined, run.data.classes, loss, top_k)
        predicted[name] = (split, combined)
    return metrics, predicted


def summary_text(members: Sequence[FinishedRun], method: str) -> str:
    """summary.txt: what the ensemble is made of, each member with its own numbers."""
    lines = [f"Ensemble ({method}) of {len(members)} finished runs; no network of its own."]
    for k, member in enumerate(members, start=1):
        scores = "  ".join(
            f"{split} accuracy {member.metrics[split]['accuracy']:.4f}"
            for split in ("val", "test")
            if isinstance(member.metrics.get(split), dict) and "accuracy" in member.metrics[split]
        )
        lines.append(f"  {k}. {member.folder}  ({member.model_name})  {scores}".rstrip())
    lines.append(f"Probabilities: {PROBABILITIES[method]}.")
    return "\n".join(lines) + "\n"


# --- a finished ensemble, predicting again ------------------------------------------------------


def predict_again(run: FinishedRun, split: str, device: torch.device) -> np.ndarray:
    """The split's probabilities, every member's recomputed (FinishedRun.predict_split), in
    the ensemble's order, combined as the ensemble combined them."""
    images = load_data(run.data_config(), run.config.seed).splits[split]
    found = [member_probabilities(m, images, device, read=False)[0] for m in run.members]
    return combine(_method(run), found, _stacker(run))


def classify(
    run: FinishedRun, images: np.ndarray, device: torch.device, tta: bool = False
) -> np.ndarray:
    """(N, classes) probabilities of uint8 (N, C, H, W) images at the members' input size:
    each member's own classification, combined."""
    found = [KINDS.get(m.kind).classify(m, images, device, tta) for m in run.members]
    return combine(_method(run), found, _stacker(run))


def _method(run: FinishedRun) -> Method:
    assert run.config.ensemble is not None  # the kind is chosen by it
    return run.config.ensemble.method


def _stacker(run: FinishedRun) -> Stacker | None:
    return load_classifier(run.folder) if _method(run) == "stack" else None


KINDS.register("ensemble")(RunKind(run_ensemble, predict_again, classify))
