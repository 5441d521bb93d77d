import pytest

from cnnlab.errors import ConfigError
from cnnlab.registry import Registry


def small_registry() -> Registry[int]:
    models: Registry[int] = Registry("model")
    for value, name in enumerate(["carlosnet", "basenet", "ivannet"]):
        models.register(name)(value)
    return models


def test_register_returns_the_object_and_get_finds_it():
    models: Registry[object] = Registry("model")

    @models.register("tiny")
    def tiny() -> str:
        return "built"

    assert models.get("tiny") is tiny
    assert tiny() == "built"
    assert "tiny" in models
    assert len(models) == 1


def test_duplicate_name_raises_value_error():
    models = small_registry()
    with pytest.raises(ValueError, match="model 'basenet' is already registered"):
        models.register("basenet")(99)


def test_empty_name_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        Registry("model").register("")


def test_names_are_sorted():
    assert small_registry().names() == ["basenet", "carlosnet", "ivannet"]
    assert list(small_registry()) == ["basenet", "carlosnet", "ivannet"]


def test_unknown_name_suggests_the_closest_and_lists_all():
    with pytest.raises(ConfigError) as err:
        small_registry().get("carlosnett")
    assert str(err.value) == (
        "unknown model 'carlosnett'; did you mean 'carlosnet'? (basenet, carlosnet, ivannet)"
    )


def test_unknown_name_without_close_match_lists_all():
    with pytest.raises(ConfigError) as err:
        small_registry().get("resnet999")
    assert str(err.value) == "unknown model 'resnet999' (basenet, carlosnet, ivannet)"


def test_get_forgives_case_as_the_reports_write_it():
    assert small_registry().get("CarlosNet") == 0


def test_empty_registry_says_nothing_is_registered():
    with pytest.raises(ConfigError, match=r"unknown preset 'x' \(no preset is registered\)"):
        Registry("preset").get("x")
