"""What every section shares: `Section` (frozen, no unknown keys, no true for a number) and
the checks' helpers, whose refusals config_io renders as `dotted.key: VALUE: problem`."""

from __future__ import annotations

import math
import typing
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError


def fraction(value: Any) -> Any:
    """Accept "1/6" as well as 0.1667: S1 splits its data into sixths."""
    if isinstance(value, str) and "/" in value:
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            return value  # pydantic then reports "expected a number"
    return value


SplitFraction = Annotated[float, BeforeValidator(fraction), Field(ge=0.0, lt=1.0)]


def refused(problem: str, value: Any = None) -> PydanticCustomError:
    """A check's complaint, rendered by config_io as `dotted.key: VALUE: problem` (the value as
    the file spells it), or `dotted.key: problem` without one."""
    message = problem if value is None else f"{shown(value)}: {problem}"
    return PydanticCustomError("refused", "{message}", {"message": message})


def shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(shown, value)) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class Section(BaseModel):
    # allow_inf_nan: no option means nan or inf (rescale: .nan would make every image nan)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_switch_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1 and false as 0, so `epochs: true` trained one
        # epoch; a number field takes no true or false (a switch, bool or e.g. augmix, does)
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _holds_a_switch(value) and _wants_a_number(field.annotation):
            return _refuse_switch(value)
        return value


def _holds_a_switch(value: Any) -> bool:
    if isinstance(value, list | tuple):  # target_size: [true, 64]
        return any(isinstance(item, bool) for item in value)
    return isinstance(value, bool)


def _wants_a_number(annotation: Any) -> bool:
    """Whether a field's type is made of numbers (through unions, Annotated, tuples) and has no
    place for true or false (bool, a Literal of them, or Any, e.g. a layer's arguments)."""
    leaves = _leaves(annotation)
    if any(leaf is bool or leaf is Any or leaf is True or leaf is False for leaf in leaves):
        return False
    return any(leaf is int or leaf is float for leaf in leaves)


def _leaves(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if origin is Annotated:
        return _leaves(typing.get_args(annotation)[0])
    if origin is None:
        return [annotation]  # a plain type, or a section, which checks its own fields
    return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]


def _refuse_switch(value: Any) -> Any:
    expected = "numbers" if isinstance(value, list | tuple) else "a number"
    raise refused(f"expected {expected}, got {shown(value)}")


def positive_or_auto(value: Any, whole: bool, auto_means: str) -> Any:
    """`auto`, or a finite number above 0 (a whole one when `whole`); the refusal says what the
    plain number field said, and what auto would do instead."""
    if value is None or value == "auto":
        return value
    expected, or_auto = ("a whole number" if whole else "a number"), f" (or auto: {auto_means})"
    try:  # float(): YAML reads 1e-3 as text; true is no number
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or (whole and math.isfinite(number) and not number.is_integer()):
        raise refused(f"expected {expected}, got {shown(value)}{or_auto}")
    if not (0 < number < math.inf):
        finite = " and finite" if number == math.inf else ""
        raise refused(f"must be greater than 0{finite}, got {shown(value)}{or_auto}")
    return int(number) if whole else number


def file_name_text(text: str) -> int:
    """The length in bytes of `text` as a file name; refused when no file system takes it."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" in a quoted YAML string
        raise refused("holds a character no file name can hold (not UTF-8)", text) from None
    if "\0" in text:
        raise refused("holds a NUL character, which no file name can hold", text)
    return size
