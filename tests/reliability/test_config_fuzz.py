"""M9: hypothesis fuzzing of the experiment loader over the schema. Documents are built from
the real key tree of `Experiment` (keys at their place and at random depths, wrong types, huge
numbers, odd unicode, lists for maps, YAML tags, anchors and aliases, merge keys, duplicate
keys) with random `--set` strings; each is loaded in this process, and the loader must give
a valid Experiment or a ConfigError with a message, never any other exception. A few invalid
documents go through `cnnlab run` too: exit 2, no traceback, no folder.

CI runs a bounded, derandomised number of examples; CNNLAB_FUZZ_EXAMPLES=N runs N (random)."""

from __future__ import annotations

import itertools
import os
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from tests.runs.test_trained import assert_user_error, run_cli

from cnnlab.config import Experiment
from cnnlab.config_io import load_experiment, validate
from cnnlab.errors import ConfigError

ASKED = os.environ.get("CNNLAB_FUZZ_EXAMPLES")
EXAMPLES = int(ASKED) if ASKED else 300
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not ASKED,  # CI: the same examples every run; asked for more: new ones
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---- the schema: every section's keys, and the values its Literal fields choose from -------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _words_in(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [w for arg in typing.get_args(annotation) for w in _words_in(arg)]


def _tree(model: type[BaseModel], seen: frozenset[type] = frozenset()) -> dict[str, Any]:
    """key -> the sub-tree of its section (a list of sections: [sub-tree]), or None."""
    tree: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        subs = [m for m in _models_in(field.annotation) if m not in seen]
        if not subs:
            tree[name] = None
            continue
        sub = _tree(subs[0], seen | {model})
        many = typing.get_origin(field.annotation) is list or any(
            typing.get_origin(arg) is list for arg in typing.get_args(field.annotation)
        )
        tree[name] = [sub] if many else sub
    return tree


def _all_models(model: type[BaseModel], found: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model not in found:
        found.add(model)
        for field in model.model_fields.values():
            for sub in _models_in(field.annotation):
                _all_models(sub, found)
    return found


TREE = _tree(Experiment)
MODELS = _all_models(Experiment, set())
KEYS = sorted({name for model in MODELS for name in model.model_fields})
WORDS = sorted(
    {
        str(word)
        for model in MODELS
        for field in model.model_fields.values()
        for word in _words_in(field.annotation)
    }
)
NAMES = ["digits", "carlosnet", "ivannet", "s1", "s0", "auto", "imagenet", "efficientnet_lite0"]
NAMES += ["1/6", "1e-3", "1/0", "-1e999", "0x10", ".nan", "~", "[1, 2]", "a/b/c", "../x", ""]


# ---- values -----------------------------------------------------------------------------

odd_text = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=["Cs"], include_characters="\u202e\ufeff\u0000\t\n"
    ),
    max_size=12,
)
numbers = st.one_of(
    st.integers(min_value=-5, max_value=300),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63, 10**400, 1e-300, 1e308, 0.5, 1.0]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.sampled_from(WORDS + NAMES + KEYS),
    odd_text,
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), odd_text, numbers), inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def section(draw: st.DrawFn, tree: dict[str, Any], level: int = 0) -> Any:
    """A mapping over `tree`'s keys, each value of the right shape or not; now and then a key
    from elsewhere in the schema, or no mapping at all."""
    # each rare event is a middle value: hypothesis shrinks towards 0, away from it
    if draw(st.integers(0, 15)) == 9:
        return draw(junk)  # a list, a number or text where a section belongs
    keys = draw(st.lists(st.sampled_from(sorted(tree)), max_size=6, unique=True))
    if draw(st.integers(0, 3)) == 2:
        keys.append(draw(st.sampled_from(KEYS)))  # a real key, at the wrong depth
    doc = {}
    for key in keys:
        sub = tree.get(key)
        if isinstance(sub, dict) and level < 6 and draw(st.integers(0, 4)) != 3:
            doc[key] = draw(section(sub, level + 1))
        elif isinstance(sub, list) and level < 6 and draw(st.integers(0, 4)) != 3:
            doc[key] = draw(st.lists(section(sub[0], level + 1), max_size=3))
        else:
            doc[key] = draw(junk)
    return doc


# ---- YAML text: tags, anchors, aliases, merge keys, duplicate keys ------------------------

TAGS = ["!!str", "!!int", "!!float", "!!bool", "!!null", "!!binary", "!!timestamp", "!!set"]
TAGS += ["!!omap", "!!python/object:os.system", "!!python/name:os.system", "!custom", "!!map"]


@st.composite
def yaml_text(draw: st.DrawFn, node: Any) -> str:
    """`node` as flow-style YAML, each part now and then tagged, anchored or an alias of an
    earlier anchor; mappings now and then repeat a key or merge an alias (<<: *a)."""
    anchors: list[str] = []
    made = iter(range(10**6))  # anchor names, unique in the document

    def emit(item: Any) -> str:
        roll = draw(st.integers(0, 60))
        if roll == 13 and anchors:
            return "*" + draw(st.sampled_from(anchors))
        prefix, anchor = "", None
        if roll == 14:
            prefix = draw(st.sampled_from(TAGS)) + " "
        elif roll == 15:
            anchor = f"a{next(made)}"
            prefix = f"&{anchor} "
        if isinstance(item, dict):
            pairs = [f"{emit(k)}: {emit(v)}" for k, v in item.items()]
            if pairs and draw(st.integers(0, 60)) == 11:
                pairs.append(pairs[0])  # a duplicate key
            if anchors and draw(st.integers(0, 40)) == 12:
                pairs.append("<<: *" + draw(st.sampled_from(anchors)))
            text = "{" + ", ".join(pairs) + "}"
        elif isinstance(item, list):
            text = "[" + ", ".join(emit(v) for v in item) + "]"
        else:
            text = yaml.safe_dump(item, default_flow_style=True, width=10**9, allow_unicode=True)
            text = text.removesuffix("\n...\n").strip()
        if anchor:  # defined once its node is complete: an alias inside it would be a cycle
            anchors.append(anchor)
        return prefix + text

    return emit(node)


VALID_DATA = {"source": "digits", "color_mode": "grayscale", "validation_split": 0.2}
VALID_MODEL = {"layers": [{"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]}


def _paths(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of the schema, a list of sections as its item 0 (model.stages.0.lr)."""
    found = []
    for key, sub in tree.items():
        found.append(prefix + key)
        if isinstance(sub, dict):
            found += _paths(sub, f"{prefix}{key}.")
        elif isinstance(sub, list):
            found += _paths(sub[0], f"{prefix}{key}.0.")
    return found


PATHS = _paths(TREE)
plausible = st.one_of(  # what a user might write for any key: mostly right for some
    st.booleans(),
    st.integers(min_value=-2, max_value=64),
    st.floats(min_value=-1, max_value=2),
    st.sampled_from(WORDS + NAMES),
    st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=4),
    st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=4),
)


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    """doc at the dotted `path` = value, making sections (and a list's item 0) on the way."""
    node: Any = doc
    parts = path.split(".")
    for part, after in itertools.pairwise(parts):
        if isinstance(node, list):  # part is "0"
            if not isinstance(node[0], dict):
                node[0] = {}
            node = node[0]
            continue
        if not isinstance(node.get(part), dict | list):
            node[part] = [{}] if after == "0" else {}
        node = node[part]
    if isinstance(node, list):
        node[0] = value
    else:
        node[parts[-1]] = value


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid experiment with a few keys anywhere in the schema set to plausible values."""
    doc = {"data": dict(VALID_DATA), "model": dict(VALID_MODEL), "train": {"epochs": 1}}
    for path in draw(st.lists(st.sampled_from(PATHS), max_size=3)):
        _put(doc, path, draw(st.one_of(plausible, junk) if path.count(".") else plausible))
    return doc


@st.composite
def documents(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["near valid", "over the schema", "near valid", "text"]))
    if kind == "text":
        return draw(st.text(max_size=40))  # no structure at all
    doc = draw(near_valid() if kind == "near valid" else section(TREE))
    return draw(yaml_text(doc))


dotted_keys = st.builds(
    ".".join,
    st.lists(
        st.one_of(st.sampled_from(KEYS), st.sampled_from(["0", "1", "99", "-1", ""]), odd_text),
        min_size=1,
        max_size=4,
    ),
)
override_values = st.one_of(
    st.sampled_from(WORDS + NAMES),
    odd_text,
    st.builds(str, numbers),
    junk.flatmap(yaml_text),
)
overrides = st.one_of(
    st.just([]),
    st.lists(
        st.one_of(
            st.builds(lambda k, v: f"{k}={v}", st.sampled_from(PATHS), override_values),
            st.builds(lambda k, v: f"{k}={v}", dotted_keys, override_values),
            odd_text,  # no = at all, or a bare one
        ),
        max_size=3,
    ),
)


def loads_or_refuses(path: Path, text: str, sets: list[str]) -> Experiment | None:
    """The loader's answer: an Experiment, or None after a ConfigError with a message. Any
    other exception escapes, and fails the test with the example that raised it."""
    path.write_text(text, encoding="utf-8")
    try:
        experiment = load_experiment(path, sets)
    except ConfigError as err:
        assert str(err).strip(), "a ConfigError without a message"
        message = str(err)
        kind = "YAML" if "not valid YAML" in message else "--set" if "--set " in message else ""
        event(f"refused: {kind or 'the schema'}")
        return None
    assert isinstance(experiment, Experiment)
    event("a valid experiment")
    return experiment


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "experiment.yaml"


@FUZZ
@given(text=documents(), sets=overrides)
def test_the_loader_gives_an_experiment_or_a_config_error(scratch: Path, text: str, sets):
    experiment = loads_or_refuses(scratch, text, sets)
    if experiment is not None:  # what a run saves as config.yaml loads again, the same
        resolved = experiment.model_dump(mode="json")  # a layer's !!set argument: a list
        saved = yaml.safe_load(yaml.safe_dump(resolved))
        assert validate(saved, Experiment, "config.yaml").model_dump(mode="json") == resolved


@settings(FUZZ, max_examples=max(EXAMPLES // 30, 8))
@given(text=documents(), sets=overrides)
def test_an_invalid_document_through_the_cli_exits_2_without_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, text: str, sets: list[str]
):
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "fuzzed.yaml"
    assume(loads_or_refuses(config, text, sets) is None)
    result = run_cli("run", str(config), "--output", str(folder / "runs"), *_as_options(sets))
    assert_user_error(result, "error:")
    assert not (folder / "runs").exists() or not any((folder / "runs").iterdir())


def _as_options(sets: list[str]) -> list[str]:
    return [f"--set={item}" for item in sets]


def test_the_schema_walk_sees_the_real_keys():
    """The strategies are built over the real schema: a key added to cnnlab.config is fuzzed."""
    assert {"epochs", "target_size", "rotation_range", "backbone", "unfreeze"} <= set(KEYS)
    assert isinstance(TREE["train"]["optimizer"], dict)
    assert isinstance(TREE["model"]["stages"], list)
    assert "flip_translate" in WORDS
    assert types.NoneType not in MODELS


# ---- what the fuzzing found, and its neighbours, by hand ---------------------------------

DIGITS = """seed: 0
data: {source: digits, color_mode: grayscale, validation_split: 0.2}
model:
  layers:
    - Flatten: {}
    - Dense: {units: 10, activation: softmax}
train:
  epochs: 5
  batch_size: 8
"""


def _refusal(tmp_path: Path, text: str, sets: tuple[str, ...] = ()) -> str:
    path = tmp_path / "experiment.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_experiment(path, sets)
    return str(refused.value)


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path: Path):
    message = _refusal(tmp_path, DIGITS + "  epochs: 50\n")
    assert "experiment.yaml:10:3: not valid YAML" in message
    assert "the key 'epochs' is given twice in one section (on lines 8 and 10)" in message
    assert "given twice" in _refusal(tmp_path, DIGITS, ("train={epochs: 1, epochs: 2}",))


def test_a_merge_key_may_be_overridden(tmp_path: Path):
    """`<<: *base` then the same key: YAML's own way to override, not a repetition."""
    path = tmp_path / "experiment.yaml"
    path.write_text(DIGITS + "evaluate: &base {top_k: 3}\nreport: {<<: *base}\n", "utf-8")
    assert "report.top_k: unknown key" in _refusal(tmp_path, path.read_text("utf-8"))
    merged = DIGITS.replace("  epochs: 5\n", "  <<: {epochs: 7, batch_size: 4}\n  epochs: 5\n")
    path.write_text(merged, encoding="utf-8")
    assert load_experiment(path).train.epochs == 5


@pytest.mark.parametrize(
    "setting", ["train.epochs=true", "data.target_size=[true, 32]", "seed=false"]
)
def test_true_or_false_is_no_number(tmp_path: Path, setting: str):
    key, _, value = setting.partition("=")
    message = _refusal(tmp_path, DIGITS, (setting,))
    assert f"{key}: expected " in message and value.strip("[]").split(",")[0] in message


def test_numbers_and_switches_still_read_as_before(tmp_path: Path):
    path = tmp_path / "experiment.yaml"
    path.write_text(DIGITS, encoding="utf-8")
    sets = ["train.optimizer.lr=1e-3", "augment.horizontal_flip=true", "augment.augmix=true"]
    experiment = load_experiment(path, [*sets, "train.compile=true", "evaluate.tta=flip"])
    assert experiment.train.optimizer.lr == pytest.approx(1e-3)  # YAML reads 1e-3 as text
    assert experiment.augment.horizontal_flip and experiment.augment.augmix is not None
    assert experiment.train.compile == "default" and experiment.evaluate.tta is True


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("!!int null", "'null' cannot be read as !!int"),
        ("!!timestamp soon", "'soon' cannot be read as !!timestamp"),
        ("!!bool maybe", "'maybe' cannot be read as !!bool"),
        ("1" + "0" * 5000, "cannot be read as !!int"),
        (".nan", "must be a finite number, got nan"),
    ],
)
def test_a_value_its_tag_cannot_read_is_refused_at_its_line(tmp_path: Path, value, words):
    message = _refusal(tmp_path, DIGITS.replace("epochs: 5", f"epochs: {value}"))
    assert words in message and len(message) < 600


def test_non_finite_weights_are_refused_naming_the_file_and_tensor(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    from cnnlab.models.weights import read_state_dict

    state = {"conv.weight": torch.ones(2, 2), "fc.weight": torch.ones(3), "steps": torch.ones(1)}
    state["fc.weight"][1] = float("nan")
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt"):
        if path.suffix == ".pt":
            torch.save(state, path)
        else:
            save_file(state, str(path))
        with pytest.raises(ConfigError, match=rf"model\.weights: {path} .*fc\.weight has 1 of 3"):
            read_state_dict(path)


def test_a_run_with_nan_weights_exits_2_leaving_no_folder(tmp_path: Path, digits_yaml):
    import torch
    from safetensors.torch import save_file

    from cnnlab.models.backbones import create_backbone

    state = create_backbone("efficientnet_lite0").body.state_dict()
    first = next(name for name, tensor in state.items() if tensor.is_floating_point())
    state[first] = state[first].clone()
    state[first].view(-1)[0] = float("inf")
    weights = tmp_path / "diverged.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    config = digits_yaml(data={"color_mode": "rgb", "target_size": [32, 32]})
    model = f"model={{backbone: efficientnet_lite0, weights: {weights}}}"
    result = run_cli("run", str(config), "--set", model)
    assert_user_error(result, f"model.weights: {weights} holds non-finite", f"tensor {first}")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert torch.isinf(state[first]).any()  # the test's own file was what it meant
