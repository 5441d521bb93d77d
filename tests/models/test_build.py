"""Layer lists as YAML gives them: accepted forms, heads, and messages with dotted paths."""

import pytest
import torch
import yaml

from cnnlab.errors import ConfigError
from cnnlab.models import build_layers, build_model, count_params

YAML_LAYERS = """
- Conv2D: {filters: 8, kernel_size: 3, activation: relu}
- {type: MaxPooling2D, pool_size: 2}
- MaxPool2D
- Flatten:
- Dense: 16
- Dropout: 0.5
- Dense: {units: 3, activation: softmax}
"""


def errors_for(layers, input_shape=(16, 16, 3), num_classes=None) -> str:
    with pytest.raises(ConfigError) as err:
        build_layers(layers, input_shape, num_classes=num_classes)
    return str(err.value)


def test_yaml_layer_list_in_every_accepted_form_builds():
    model = build_model(yaml.safe_load(YAML_LAYERS), (16, 16, 3), 3)
    assert [name for name, _ in model.named_children()] == [
        "conv2d",
        "max_pooling2d",
        "max_pooling2d_1",
        "flatten",
        "dense",
        "dropout",
        "dense_1",
    ]
    assert model.layer_shapes[:3] == [(14, 14, 8), (7, 7, 8), (3, 3, 8)]
    assert model.model_name == "sequential"
    assert count_params(model) == (224 + 72 * 16 + 16 + 16 * 3 + 3, 0)


def test_final_softmax_is_recorded_and_not_applied_in_forward():
    torch.manual_seed(0)
    model = build_model(yaml.safe_load(YAML_LAYERS), (16, 16, 3), 3).eval()
    logits = model(torch.rand(4, 3, 16, 16) * 10)
    assert model.head_activation == "softmax"
    assert not torch.allclose(logits.sum(dim=1), torch.ones(4))
    assert torch.allclose(model.probabilities(logits), logits.softmax(dim=1))


def test_final_sigmoid_is_recorded_and_not_applied_in_forward():
    model = build_layers([{"Dense": {"units": 1, "activation": "sigmoid"}}], (4,), num_classes=2)
    with torch.no_grad():
        model.dense.bias.fill_(-5.0)
    logits = model(torch.zeros(2, 4))
    assert model.head_activation == "sigmoid"
    assert logits.tolist() == [[-5.0], [-5.0]]
    assert torch.allclose(model.probabilities(logits), torch.sigmoid(logits))


def test_final_activation_layer_is_a_head_too():
    model = build_layers([{"Dense": 3}, {"Activation": "softmax"}], (4,), num_classes=3)
    assert model.head_activation == "softmax"
    assert torch.equal(model(torch.ones(1, 4)), model.dense(torch.ones(1, 4)))


def test_softmax_before_the_last_layer_stays_in_forward():
    model = build_layers([{"Dense": {"units": 3, "activation": "softmax"}}, {"Dense": 2}], (4,))
    assert model.head_activation is None
    hidden = model.dense(torch.rand(2, 4))
    assert torch.allclose(hidden.sum(dim=1), torch.ones(2))
    assert torch.equal(model.probabilities(hidden), hidden)


def test_unknown_argument_names_the_dotted_path_and_suggests():
    layers = ["Flatten", "Flatten", "Flatten", {"Conv2D": {"filtres": 32, "kernel_size": 3}}]
    message = errors_for(layers)
    assert message.startswith(
        "model.layers[3].Conv2D.filtres: unknown argument; did you mean 'filters'?"
    )
    assert "Conv2D takes filters, kernel_size" in message


def test_unknown_argument_in_the_type_form_names_its_path():
    message = errors_for([{"type": "Dense", "unit": 3}], (4,))
    assert message.startswith("model.layers[0].unit: unknown argument; did you mean 'units'?")


def test_unknown_layer_suggests_the_keras_name():
    message = errors_for([{"Conv2d": {"filters": 8, "kernel_size": 3}}])
    assert message.startswith("model.layers[0]: unknown layer 'Conv2d'; did you mean 'Conv2D'?")


def test_missing_required_argument_is_named():
    assert errors_for([{"Conv2D": {"filters": 8}}]).startswith(
        "model.layers[0].Conv2D.kernel_size: missing"
    )


def test_bad_values_say_what_is_expected():
    assert "expected a positive whole number" in errors_for(
        [{"Conv2D": {"filters": 0, "kernel_size": 3}}]
    )
    assert errors_for([{"Conv2D": {"filters": 8, "kernel_size": 3, "padding": "sam"}}]).startswith(
        "model.layers[0].Conv2D.padding: expected one of valid, same"
    )
    message = errors_for([{"Dense": {"units": 2, "activation": "rellu"}}], (4,))
    assert message.startswith(
        "model.layers[0].Dense.activation: unknown activation 'rellu'; did you mean 'relu'?"
    )
    assert errors_for([{"Dropout": 1.0}], (4,)).startswith("model.layers[0].Dropout.rate:")


def test_malformed_entry_shows_the_accepted_forms():
    assert "expected one layer name mapping to its arguments" in errors_for(
        [{"Conv2D": {"filters": 8, "kernel_size": 3}, "Flatten": None}]
    )


def test_shape_that_vanishes_names_the_layer_index_and_shape():
    layers = [
        {"Conv2D": {"filters": 4, "kernel_size": 3}},
        "MaxPooling2D",
        "MaxPooling2D",
        {"Conv2D": {"filters": 4, "kernel_size": 5}},
    ]
    assert errors_for(layers, (12, 12, 1)).startswith(
        "model.layers[3].Conv2D: output shape (-2, -2, 4) has no pixels left (input (2, 2, 4))"
    )


def test_image_layer_after_flatten_is_refused():
    message = errors_for(["Flatten", {"Conv2D": {"filters": 4, "kernel_size": 3}}])
    assert message.startswith("model.layers[1].Conv2D: needs an image input")


def test_last_dense_must_match_the_class_count():
    message = errors_for(
        ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}], num_classes=6
    )
    assert message.startswith(
        "model.layers[1].Dense.units: the model gives 10 outputs but the data has 6 classes"
    )


def test_input_shape_argument_is_checked_against_the_data():
    layers = [{"Conv2D": {"filters": 4, "kernel_size": 3, "input_shape": [150, 150, 3]}}]
    assert errors_for(layers, (128, 128, 1)).startswith("model.layers[0].Conv2D.input_shape:")
    build_layers(layers, (150, 150, 3))


def test_user_layer_names_are_kept_and_auto_names_avoid_them():
    model = build_layers([{"Dense": {"units": 4, "name": "dense"}}, {"Dense": 2}], (3,))
    assert [name for name, _ in model.named_children()] == ["dense", "dense_1"]


def test_duplicate_or_reserved_layer_names_are_refused():
    assert "already used" in errors_for(
        [{"Dense": {"units": 4, "name": "a"}}, {"Dense": {"units": 2, "name": "a"}}], (3,)
    )
    assert "reserved" in errors_for([{"Dense": {"units": 4, "name": "forward"}}], (3,))


def test_empty_layer_list_is_refused():
    assert errors_for([]).startswith("model.layers: the list is empty")


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([{"Flatten": {}}, {"Dense": {"units": 10**12}}], r"Dense: 784,000,000,000,000 weights"),
        ([{"Flatten": {}}, {"Dense": {"units": 2**70}}], r"layers\[1\]\.Dense: .* weights"),
        ([{"Conv2D": {"filters": 10**9, "kernel_size": 3}}], r"layers\[0\]\.Conv2D: .* weights"),
        ([{"UpSampling2D": {"size": 10**6}}], r"UpSampling2D: output shape .* values per image"),
    ],
)  # fmt: skip
def test_a_layer_too_large_to_allocate_is_refused_before_any_tensor(layers, message):
    with pytest.raises(ConfigError, match=message):
        build_layers(layers, (28, 28, 1))
