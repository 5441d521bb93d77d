"""Read a Keras-style layer list (as YAML gives it) into checked layers with defaults filled in.

Each entry is one of
    {Conv2D: {filters: 32, kernel_size: 3, activation: relu}}   Keras name -> arguments
    {type: Conv2D, filters: 32, kernel_size: 3}                 the same, flat
    {Dense: 128}   {Dropout: 0.5}   Flatten                     a bare value is the first argument
Argument names, defaults and meanings are Keras's. Every mistake is reported with its dotted
path and the likely fix: `model.layers[3].Conv2D.filtres: unknown argument; did you mean
'filters'? (Conv2D takes filters, kernel_size, ...)`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cnnlab.errors import ConfigError
from cnnlab.models.layers import ACTIVATIONS

REQUIRED = object()  # marks an argument Keras has no default for

# Keras's arguments for each layer, in Keras's positional order (the first is the one a bare
# value sets), with Keras's defaults.
LAYER_ARGS: dict[str, dict[str, Any]] = {
    "Conv2D": {
        "filters": REQUIRED,
        "kernel_size": REQUIRED,
        "strides": 1,
        "padding": "valid",
        "activation": None,
        "use_bias": True,
        "dilation_rate": 1,
        # Keras's default; dirac: airbench's partial identity (models/layers.py's dirac_init)
        "kernel_initializer": "glorot_uniform",
    },
    "MaxPooling2D": {"pool_size": 2, "strides": None, "padding": "valid"},  # strides: pool_size
    "AveragePooling2D": {"pool_size": 2, "strides": None, "padding": "valid"},
    "GlobalAveragePooling2D": {},
    "Flatten": {},
    "Dense": {"units": REQUIRED, "activation": None, "use_bias": True},
    "Dropout": {"rate": REQUIRED},
    "BatchNormalization": {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True},
    "Activation": {"activation": REQUIRED},
    "UpSampling2D": {"size": 2, "interpolation": "nearest"},
    "Rescaling": {"scale": REQUIRED, "offset": 0.0},
}
COMMON_ARGS = {"name": None, "input_shape": None}  # accepted by every Keras layer
ALIASES = {  # other spellings Keras itself accepts
    "Convolution2D": "Conv2D",
    "MaxPool2D": "MaxPooling2D",
    "AvgPool2D": "AveragePooling2D",
    "GlobalAvgPool2D": "GlobalAveragePooling2D",
}
EXAMPLE = "{Conv2D: {filters: 32, kernel_size: 3, activation: relu}}"


@dataclass(frozen=True)
class LayerSpec:
    kind: str  # canonical Keras class name, e.g. "MaxPooling2D"
    args: dict[str, Any]  # every argument, checked, defaults filled in
    where: str  # dotted path for messages, e.g. "model.layers[3].Conv2D"


def parse_layers(entries: Sequence[Any], where: str = "model.layers") -> list[LayerSpec]:
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise ConfigError(f"{where}: expected a list of layers such as {EXAMPLE}")
    if not entries:
        raise ConfigError(f"{where}: the list is empty; give at least one layer, e.g. {EXAMPLE}")
    layers = [parse_layer(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]
    seen: dict[str, str] = {}
    for layer in layers:
        name = layer.args["name"]
        if name is not None and name in seen:
            raise ConfigError(f"{layer.where}.name: {name!r} is already used by {seen[name]}")
        if name is not None:
            seen[name] = layer.where
    return layers


def parse_layer(entry: Any, where: str) -> LayerSpec:
    written, raw = _split_entry(entry, where)
    kind = _layer_kind(written, where)
    path = where if isinstance(entry, dict) and "type" in entry else f"{where}.{written}"
    known = LAYER_ARGS[kind]
    if raw is None:
        raw = {}
    elif not isinstance(raw, dict):
        if not known:
            raise ConfigError(f"{path}: takes no positional value, got {raw!r}")
        raw = {next(iter(known)): raw}
    return LayerSpec(kind, _check_args(kind, raw, path), path)


def _split_entry(entry: Any, where: str) -> tuple[str, Any]:
    """(layer name as written, its arguments) from any of the accepted entry forms."""
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, dict) and "type" in entry:
        if not isinstance(entry["type"], str):
            raise ConfigError(f"{where}.type: expected a layer name such as Conv2D")
        return entry["type"], {k: v for k, v in entry.items() if k != "type"}
    if isinstance(entry, dict) and len(entry) == 1:
        ((written, raw),) = entry.items()
        if isinstance(written, str):
            return written, raw
    raise ConfigError(
        f"{where}: expected one layer name mapping to its arguments, e.g. {EXAMPLE}, "
        f"or {{type: Conv2D, filters: 32, ...}}; got {entry!r}"
    )


def _layer_kind(written: str, where: str) -> str:
    kind = ALIASES.get(written, written)
    if kind in LAYER_ARGS:
        return kind
    names = sorted(LAYER_ARGS)
    raise ConfigError(
        f"{where}: unknown layer {written!r}{_suggest(written, names)} ({', '.join(names)})"
    )


def _check_args(kind: str, raw: dict[Any, Any], path: str) -> dict[str, Any]:
    allowed = {**LAYER_ARGS[kind], **COMMON_ARGS}
    for key in raw:
        if key not in allowed:
            hint = _suggest(str(key), list(allowed))
            raise ConfigError(
                f"{path}.{key}: unknown argument{hint} ({kind} takes {', '.join(allowed)})"
            )
    args: dict[str, Any] = {}
    for key, default in allowed.items():
        value = raw.get(key, default)
        if value is REQUIRED:
            needed = [name for name, d in allowed.items() if d is REQUIRED]
            raise ConfigError(f"{path}.{key}: missing; {kind} needs {', '.join(needed)}")
        if value is None and default is None:  # e.g. pooling strides: null -> pool_size
            args[key] = None
            continue
        try:  # defaults too: kernel_size 3 -> (3, 3)
            args[key] = KIND_CHECKS.get((kind, key), CHECKS[key])(value)
        except ValueError as err:
            raise ConfigError(f"{path}.{key}: {err}") from None
    return args


def _suggest(word: str, choices: list[str]) -> str:
    lowered = {c.casefold(): c for c in choices}
    close = difflib.get_close_matches(word.casefold(), list(lowered), n=1)
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""


# --- argument checks: return the normalised value or raise ValueError(what to write) ---------


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive whole number, got {value!r}")
    return value


def _pair(value: Any) -> tuple[int, int]:
    """Keras's int-or-tuple arguments (kernel_size: 3 or [3, 5])."""
    items = value if isinstance(value, (list, tuple)) else [value, value]
    try:
        if len(items) != 2:
            raise ValueError
        return (_positive_int(items[0]), _positive_int(items[1]))
    except ValueError:
        message = f"expected a positive whole number or two of them, got {value!r}"
        raise ValueError(message) from None


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        hint = _suggest(str(value), list(options))
        raise ValueError(f"expected one of {', '.join(options)}, got {value!r}{hint}")

    return check


def _activation(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ACTIVATIONS:
        return None if value.lower() == "linear" else value.lower()
    names = sorted(ACTIVATIONS)
    raise ValueError(
        f"unknown activation {value!r}{_suggest(str(value), names)} ({', '.join(names)})"
    )


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _fraction(value: Any, *, upper: float, inclusive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if not (0.0 <= value < upper or (inclusive and value == upper)):
        end = "]" if inclusive else ")"
        raise ValueError(f"expected a number in [0, {upper:g}{end}, got {value!r}")
    return float(value)


def _positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return float(value)


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _layer_name(value: Any) -> str:
    # The name becomes the module's attribute and state_dict prefix: an identifier keeps it safe.
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"expected letters, digits and underscores, got {value!r}")
    return value


def _shape(value: Any) -> tuple[int | None, ...]:
    """Keras's input_shape without the batch axis; None allows any size on that axis."""
    if not isinstance(value, (list, tuple)) or len(value) not in (1, 3):
        raise ValueError(f"expected [height, width, channels], got {value!r}")
    return tuple(None if v is None else _positive_int(v) for v in value)


CHECKS: dict[str, Callable[[Any], Any]] = {
    "filters": _positive_int,
    "units": _positive_int,
    "kernel_size": _pair,
    "strides": _pair,
    "pool_size": _pair,
    "size": _pair,
    "dilation_rate": _pair,
    "padding": _choice("valid", "same"),
    "interpolation": _choice("nearest", "bilinear"),
    "activation": _activation,
    "use_bias": _bool,
    "center": _bool,
    "scale": _bool,  # BatchNormalization's; Rescaling's is a number (KIND_CHECKS)
    "offset": _finite,
    "kernel_initializer": _choice("glorot_uniform", "dirac"),
    "rate": lambda v: _fraction(v, upper=1.0, inclusive=False),  # 1.0 would drop everything
    "momentum": lambda v: _fraction(v, upper=1.0, inclusive=True),
    "epsilon": _positive_float,
    "name": _layer_name,
    "input_shape": _shape,
}
# Arguments whose meaning depends on the layer: Rescaling's scale is a factor, not a switch.
KIND_CHECKS: dict[tuple[str, str], Callable[[Any], Any]] = {("Rescaling", "scale"): _finite}
