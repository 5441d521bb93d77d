"""Whether a dotted key (`train.optimizer.lr`, `model.stages.0.epochs`) names a setting of the
Experiment schema, checked on the pydantic classes themselves so no experiment has to be
built: a sweep refuses a misspelt key before its first trial, not after its twentieth."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel

from cnnlab.config import Experiment


def key_problem(key: str, model: type[BaseModel] = Experiment) -> str | None:
    """None when `key` names a setting of `model`; else what is wrong, with a suggestion."""
    parts = key.split(".")
    kinds: list[Any] = [model]
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        if any(kind is Any for kind in kinds):  # free-form below (a layer's arguments)
            return None
        sections = [k for k in kinds if _is_model(k)]
        sequences = [k for k in kinds if typing.get_origin(k) in (list, tuple)]
        mappings = [k for k in kinds if typing.get_origin(k) is dict]
        if sections and part in _fields(sections):
            kinds = _expand(_fields(sections)[part])
        elif sequences and part.isdigit():
            kinds = [arg for k in sequences for arg in _expand_all(typing.get_args(k))]
        elif mappings:
            kinds = [arg for k in mappings for arg in _expand(typing.get_args(k)[-1])]
        elif sections:
            known = sorted(_fields(sections))
            close = difflib.get_close_matches(part, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return f"{where}: not a setting of the experiment{hint} (known: {', '.join(known)})"
        elif sequences:
            return f"{where}: {'.'.join(parts[:depth])} is a list; number its items from 0"
        else:
            return f"{where}: {'.'.join(parts[:depth])} is a value, not a section"
    return None


def _fields(sections: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for section in sections:
        for name, field in section.model_fields.items():
            found.setdefault(name, field.annotation)
    return found


def _expand(annotation: Any) -> list[Any]:
    """An annotation as the plain kinds a value may take: Optional, unions and Annotated
    unwrapped (`LookaheadConfig | bool | None` -> [LookaheadConfig, bool, NoneType])."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _expand(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return _expand_all(typing.get_args(annotation))
    return [annotation]


def _expand_all(annotations: tuple[Any, ...]) -> list[Any]:
    return [
        kind for annotation in annotations if annotation is not ... for kind in _expand(annotation)
    ]


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)
