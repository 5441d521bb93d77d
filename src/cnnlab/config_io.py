"""Read an experiment file, apply `--set key=value` overrides, and explain what is wrong.

Every message names the dotted key and says how to fix it, e.g.
`train.optimizer.lr: expected a number, got 'fast'` or
`train.optimiser: unknown key; did you mean 'optimizer'?`.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cnnlab.config import Experiment
from cnnlab.errors import ConfigError


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    """The validated experiment in `path`, with each `key=value` override applied in order."""
    raw = read_yaml(Path(path))
    _check_relative_paths(raw, Path(path))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return validate(raw, Experiment, source=str(path))


# The keys that name files or folders, which (like every cnnlab path) are read from the current
# folder, as Keras scripts and shells read them, and as `--set` values typed at a shell mean.
PATH_KEYS = (
    ("data", "source"),
    ("data", "targets"),
    ("data", "labels_csv"),
    ("model", "weights"),
    ("reconstruction", "reference_run"),
)
NAMES_NOT_PATHS = {"digits", "imagenet", "none"}  # data.source's and model.weights' own names


def _check_relative_paths(raw: dict[str, Any], config: Path) -> None:
    """A relative path that is missing from the current folder but sits next to the config
    file: the user meant that one, so say where it was looked for and what to write."""
    beside = config.parent
    if not beside.is_dir() or beside.resolve() == Path.cwd():
        return
    for section, key in PATH_KEYS:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if not isinstance(value, str) or not value or value in NAMES_NOT_PATHS:
            continue
        if Path(value).is_absolute() or Path(value).exists() or not (beside / value).exists():
            continue
        found = (beside / value).resolve()
        raise ConfigError(
            f"{config}: {section}.{key}: {value!r} is not in the current folder {Path.cwd()}: "
            f"relative paths are read from there, not from the config file's folder. It is "
            f"next to the config file: write {str(found)!r}, or run cnnlab from {beside.resolve()}"
        )


# No experiment nests deeper than about 8 (model.stages.0.groups...); far deeper is not a config
MAX_DEPTH = 64


def read_yaml(path: Path, what: str = "experiment file") -> dict[str, Any]:
    """`what`: the file's kind, as the errors name it (an experiment, study or sweep file)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    text = read_text(path, what)
    try:
        raw = yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no tag runs code
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
    except RecursionError:  # PyYAML recurses once per level of nesting
        raw = None
        too_deep = True
    else:
        too_deep = depth(raw) > MAX_DEPTH
    if too_deep:
        raise ConfigError(
            f"{path}: nested more than {MAX_DEPTH} levels deep; an experiment is a few sections "
            "of key: value lines"
        )
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, ...)")
    return raw


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter on two points: a key given twice in one mapping is an
    error naming both lines (PyYAML keeps the last silently, so `epochs: 5` above a forgotten
    `epochs: 50` trains 50), and a tag whose constructor fails on the text (`!!int null`,
    `!!timestamp x`) is a YAML error at its line, not a ValueError from inside PyYAML."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, LookupError, OverflowError):
            tag, text = node.tag.replace("tag:yaml.org,2002:", "!!"), str(node.value)
            text = text if len(text) <= 40 else text[:40] + "..."  # 5,000 digits: too long
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{text!r} cannot be read as {tag}; fix the value (or its tag)",
                node.start_mark,
            ) from None

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # before PyYAML merges `<<: *alias` keys into node.value, where an explicit key may
        # override a merged one: only the keys written in the mapping itself must be unique
        if id(node) not in self._checked:
            self._checked.add(id(node))
            _refuse_repeated_keys(self, node)
        super().flatten_mapping(node)


class RepeatedKey(yaml.constructor.ConstructorError):
    """A key given twice in one mapping."""


def _refuse_repeated_keys(loader: StrictLoader, node: yaml.MappingNode) -> None:
    first: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue  # a list or map as a key: PyYAML refuses it itself
        key = loader.construct_object(key_node)
        try:
            repeated = key in first
        except TypeError:  # `!!set` on a key: PyYAML refuses the unhashable key itself
            continue
        if repeated:
            lines = first[key].start_mark.line + 1, key_node.start_mark.line + 1
            where = f"lines {lines[0]} and {lines[1]}" if lines[0] != lines[1] else "one line"
            raise RepeatedKey(
                None,
                None,
                f"the key {key_node.value!r} is given twice in one section (on {where}); keep one",
                key_node.start_mark,
            )
        first[key] = key_node


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def read_text(path: Path, what: str = "experiment file") -> str:
    """The file as UTF-8 text (a UTF-8 byte-order mark allowed); anything else is refused."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(
            f"{path}: the file is UTF-16 text (as some Windows editors and PowerShell's > "
            "write); save it as UTF-8"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a text file in UTF-8 (byte 0x{data[err.start]:02x} at offset "
            f"{err.start}); {_article(what)} {what} is YAML text, saved as UTF-8"
        ) from None
    if "\x00" in text:  # UTF-16 without its mark, or a binary file that happens to decode
        raise ConfigError(f"{path}: holds NUL bytes, so it is not YAML text; save it as UTF-8")
    return text


def depth(node: Any) -> int:
    """How deeply lists and mappings nest in `node` (up to MAX_DEPTH + 1), without recursion;
    YAML aliases may share a node or make a cycle, so each (node, level) is visited once."""
    deepest, todo, seen = 0, [(node, 1)], set()
    while todo:
        item, level = todo.pop()
        if not isinstance(item, dict | list) or (id(item), level) in seen:
            continue
        seen.add((id(item), level))
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:  # one level deeper is enough to refuse it
            children = item.values() if isinstance(item, dict) else item
            todo.extend((child, level + 1) for child in children)
    return deepest


def parse_override(item: str) -> tuple[str, Any]:
    """`train.optimizer.lr=0.01` -> ("train.optimizer.lr", 0.01); values are YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
    try:
        value = yaml.load(text, Loader=StrictLoader) if text.strip() else None
    except RepeatedKey as err:
        raise ConfigError(f"--set {key}: {err.problem}") from None
    except yaml.YAMLError:
        value = text  # an unquoted string YAML cannot read is taken as it is
    except RecursionError:  # PyYAML recurses once per level of nesting
        raise ConfigError(f"--set {key}: the value is nested too deeply to be a setting") from None
    if depth(value) > MAX_DEPTH:
        raise ConfigError(f"--set {key}: the value is nested too deeply to be a setting")
    return key, value


def base_experiment(path: Path, experiment: str | dict[str, Any], what: str) -> dict[str, Any]:
    """The experiment a study or sweep file builds on: given inline, or a file beside `path`
    (first) or in the current folder."""
    if isinstance(experiment, dict):
        return copy.deepcopy(experiment)
    beside, given = path.parent / experiment, Path(experiment)
    found = beside if beside.is_file() else given
    if not found.is_file():
        raise ConfigError(
            f"{path}: experiment: {experiment}: no such file (looked beside the {what} file "
            "and in the current folder)"
        )
    return read_yaml(found)


def set_dotted_at(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    """set_dotted with a copy of `value` (a study's or sweep's value serves many runs), its
    errors prefixed by `where` (the file and the cell, or --set)."""
    try:
        set_dotted(raw, key, copy.deepcopy(value))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c`; a number picks a list item (`model.stages.1.epochs`)."""
    node: Any = raw
    parts = key.split(".")
    part: str | int  # a list position becomes its int
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {key}: {where} is not an item of the list ({len(node)} items, "
                    f"numbered from 0)"
                )
            part = int(part)
        elif not isinstance(node, dict):
            parent = ".".join(parts[:depth])
            raise ConfigError(f"--set {key}: {parent} is a value ({node!r}), not a section")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                # a section left empty (`mlflow:`) or switched off (`early_stopping: null`)
                # takes the key as its first setting
                node[part] = {}
            node = node[part]


def validate(raw: dict[str, Any], model: type[BaseModel], source: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = [describe(e, model) for e in err.errors()]
        raise ConfigError(f"{source}: invalid configuration\n  " + "\n  ".join(lines)) from None


def describe(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    """One pydantic error as `dotted.key: what is wrong; how to fix it`."""
    # list positions stay in the path (model.stages.1.lr); field lookups skip them. An unknown
    # key is the file's own, whatever it holds ("rotation_range[0]"), never pydantic's.
    loc, kind = list(error["loc"]), error["type"]
    own = loc[-1:] if kind == "extra_forbidden" else []
    kept = loc[: len(loc) - len(own)]
    parts = [p for p in kept if isinstance(p, int) or not _is_internal(p)] + own
    loc = [part for part in parts if isinstance(part, str)]
    path = ".".join(map(str, parts)) or "(top level)"
    value = error.get("input")
    if kind == "extra_forbidden":
        known = _field_names(model, loc[:-1])
        return f"{path}: unknown key{_suggest(loc[-1], known)} (known: {', '.join(known)})"
    if kind == "missing":
        return f"{path}: required; add it to the file or pass --set {path}=..."
    if kind == "literal_error":
        choices = [c.strip(" '") for c in error["ctx"]["expected"].replace(" or ", ", ").split(",")]
        hint = _suggest(str(value), choices)
        return f"{path}: {value!r} is not allowed{hint} ({', '.join(choices)})"
    expected = _EXPECTED.get(kind)
    if expected:
        return f"{path}: expected {expected}, got {value!r}"
    if kind == "refused":  # config.py's own checks: the message shows the value where it helps
        return f"{path}: {error['msg']}" if parts else error["msg"]
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if not parts:  # a whole-experiment check names its own keys
        return message
    return f"{path}: {message}" + ("" if isinstance(value, dict) else f", got {value!r}")


_EXPECTED = {
    "float_parsing": "a number",
    "float_type": "a number",
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a section (key: value lines)",
    "dict_type": "a section (key: value lines)",
    "list_type": "a list",
    "tuple_type": "a list",
}


def _is_internal(part: str) -> bool:
    # pydantic names union branches and constrained types in `loc`; they are not config keys.
    return (
        part.startswith(("function-", "constrained-"))
        or part in {"tuple[...]", "list[...]"}
        or ("[" in part and "]" in part)
    )


def _field_names(model: type[BaseModel], loc: list[str]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(part)
        sub = _model_of(field.annotation) if field else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):  # Optional[Section]
        found = _model_of(arg)
        if found:
            return found
    return None


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
