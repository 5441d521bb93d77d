"""What cnnlab's files become in MLflow: the experiment as dotted params, the final split
metrics as scalars. MLflow's limits are met here: a key holds letters, digits and `_ - . /`
and a space (no colon: Windows stores refuse it) in at most 250 characters; a value at most
the installed MLflow's param length (6,000 characters in 3.x, 500 before); config.yaml, logged
as an artifact, keeps any value cut short in full."""

from __future__ import annotations

import json
import math
import posixpath
import re
from typing import Any

KEY_LENGTH = 250
OLD_VALUE_LENGTH = 500  # MLflow 1.x's, where the installed one does not say
CUT = "..."


def params_of(config: dict[str, Any]) -> dict[str, str]:
    """A resolved experiment (model_dump(mode="json")) as {dotted key: text}: sections by dot,
    lists of sections by index (model.layers.0.Conv2D.filters), lists of plain values as JSON
    ([8, 8]); None as null, as config.yaml spells it."""
    flat: dict[str, str] = {}
    _flatten(config, "", flat)
    return flat


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json's numbers of each split, as `SPLIT_NAME` (test_accuracy, train_loss); the
    per-class tables and curves stay in the artifact. The val split's are `final_val_NAME`:
    val_loss and val_accuracy are the epochs' curve (Keras's names), and the kept weights'
    values would otherwise become one more point of it."""
    found: dict[str, float] = {}
    for split, values in metrics.items():
        if not isinstance(values, dict):
            continue
        prefix = "final_val" if split == "val" else split
        for name, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                found[metric_key(f"{prefix}_{name}")] = float(value)
    return found


def epoch_metrics(logs: dict[str, float]) -> dict[str, float]:
    """An epoch's logged values (history.csv's columns) but the epoch, which is the step."""
    return {
        metric_key(key): float(value)
        for key, value in logs.items()
        if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def metric_key(key: str) -> str:
    """`key` as MLflow takes it: other characters become `_`; never a path that normalises
    to another (a/../b, /a, a/), which MLflow refuses."""
    key = re.sub(r"[^\w\-. /]", "_", key)[:KEY_LENGTH] or "_"
    if posixpath.normpath(key) != key or key.startswith(("/", ".")):
        key = "_" + key.replace("/", "_")
    return key[:KEY_LENGTH]


def value_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    limit = _value_length()
    return text if len(text) <= limit else text[: limit - len(CUT)] + CUT


def _flatten(value: Any, prefix: str, flat: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(inner, f"{prefix}{key}.", flat)
        return
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for index, inner in enumerate(value):
            _flatten(inner, f"{prefix}{index}.", flat)
        return
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # json.dumps writes NaN, which is no JSON
    key = metric_key(prefix.rstrip("."))
    flat.setdefault(key, value_text(value))  # two keys cleaned alike: the first stands


def _value_length() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return OLD_VALUE_LENGTH
    return int(MAX_PARAM_VAL_LENGTH)
