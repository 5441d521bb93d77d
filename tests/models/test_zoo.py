import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models import MODELS, build_model, count_params, summary_rows

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# The reports' inputs (H, W, C), class counts and trainable parameter counts.
REPORTED = {
    "basenet": ((32, 32, 3), 25, 24_197),
    "carlosnet": ((128, 128, 1), 6, 8_006),
    "ivannet": ((128, 128, 1), 6, 6_167_166),
    "s2_cnn": ((150, 150, 3), 4, 606_596),
    "catsdogs_cnn": ((150, 150, 3), 2, 4_828_481),
    "airbench": ((32, 32, 3), 10, 1_971_640),  # counted by hand below
    # S4's reconstruction networks, "Modelo 1-3": a 7x7 digit in, 28x28 out
    "s4_upsample_1": ((7, 7, 1), 10, 240_993),
    "s4_upsample_2": ((7, 7, 1), 10, 480_961),
    "s4_upsample_3": ((7, 7, 1), 10, 185_793),
}
# BatchNorm's moving mean and variance, which Keras counts as non-trainable
NON_TRAINABLE = {"airbench": 2 * (2 * 64 + 4 * 256)}


def test_airbench_count_by_hand():
    """airbench94's widths: whitening conv 2x2 3->24 with bias; blocks of two bias-free 3x3
    convs (24->64->64, 64->256->256, 256->256->256) each followed by a BatchNorm with only an
    offset (no scale); a bias-free Dense 256->10."""
    whiten = 2 * 2 * 3 * 24 + 24
    convs = 9 * (24 * 64 + 64 * 64 + 64 * 256 + 256 * 256 + 256 * 256 + 256 * 256)
    offsets = 2 * 64 + 4 * 256
    dense = 256 * 10
    assert whiten + convs + offsets + dense == REPORTED["airbench"][2]
    model = build_model("airbench", (32, 32, 3), 10)
    assert count_params(model) == (REPORTED["airbench"][2], NON_TRAINABLE["airbench"])


def test_every_registered_model_has_a_reported_count():
    assert sorted(REPORTED) == MODELS.names()


@pytest.mark.parametrize("name", MODELS.names())
def test_registered_model_runs_forward_backward_with_the_reported_param_count(name):
    torch.manual_seed(0)
    input_shape, num_classes, params = REPORTED[name]
    model = build_model(name, input_shape, num_classes).to(DEVICE)
    assert count_params(model) == (params, NON_TRAINABLE.get(name, 0))

    h, w, c = input_shape
    images = torch.rand(2, c, h, w, device=DEVICE)
    logits = model(images)
    if name.startswith("s4_upsample"):  # an image out: the input's channels at 4x its size
        assert logits.shape == (2, c, 4 * h, 4 * w)
        assert model.output_shape == (4 * h, 4 * w, c)
    else:
        outputs = 1 if model.head_activation == "sigmoid" else num_classes
        assert logits.shape == (2, outputs)
        assert model.output_shape == (outputs,)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_s2_cnn_layer_param_counts_match_the_report():
    model = build_model("s2_cnn", (150, 150, 3), 4)
    counts = [row.params for row in summary_rows(model, (150, 150, 3)) if row.params]
    assert counts == [896, 18_496, 36_928, 73_856, 147_584, 262_656, 65_664, 516]


@pytest.mark.parametrize(
    ("name", "input_shape", "flat"),
    [
        ("basenet", (32, 32, 3), 400),
        ("carlosnet", (128, 128, 1), 144),
        ("ivannet", (128, 128, 1), 9_680),
        ("s2_cnn", (150, 150, 3), 512),
        ("catsdogs_cnn", (150, 150, 3), 36_992),
    ],
)
def test_flatten_width_matches_the_report(name, input_shape, flat):
    rows = summary_rows(build_model(name, input_shape, 6), input_shape)
    assert [row.output_shape for row in rows if row.kind == "Flatten"] == [(None, flat)]


def test_catsdogs_uses_one_sigmoid_unit_for_two_classes_and_softmax_otherwise():
    binary = build_model("catsdogs_cnn", (150, 150, 3), 2)
    assert (binary.head_activation, binary.output_shape) == ("sigmoid", (1,))
    multi = build_model("catsdogs_cnn", (150, 150, 3), 5)
    assert (multi.head_activation, multi.output_shape) == ("softmax", (5,))


def test_named_models_record_softmax_head_and_follow_the_class_count():
    model = build_model("carlosnet", (128, 128, 1), 10)
    assert model.head_activation == "softmax"
    assert model.output_shape == (10,)
    assert model.model_name == "carlosnet"


def test_named_models_accept_other_input_shapes():
    model = build_model("basenet", (64, 48, 1), 3)
    assert model(torch.rand(2, 1, 64, 48)).shape == (2, 3)


def test_name_is_case_insensitive_as_the_reports_write_it():
    assert build_model("CarlosNet", (128, 128, 1), 6).model_name == "carlosnet"


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        build_model("carlosnett", (128, 128, 1), 6)
    assert str(err.value).startswith("unknown model 'carlosnett'; did you mean 'carlosnet'? (")


def test_input_too_small_for_a_named_model_names_the_layer_and_shape():
    with pytest.raises(ConfigError) as err:
        build_model("carlosnet", (32, 32, 1), 6)
    # 32 -> conv3 30 -> pool3 10 -> conv5 6 -> pool3 2 -> conv7 cannot fit
    expected = "model carlosnet: layers[4].Conv2D: output shape (-4, -4, 16) has no pixels left"
    assert str(err.value).startswith(f"{expected} (input (2, 2, 8))")


def test_named_model_needs_two_classes():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model("basenet", (32, 32, 3), 1)


# S4's layer tables ("Modelo 1-3"): each layer's output shape and parameter count
S4_TABLES = {
    "s4_upsample_1": [
        ((7, 7, 64), 640),
        ((7, 7, 64), 36_928),
        ((14, 14, 64), 0),
        ((14, 14, 128), 73_856),
        ((14, 14, 32), 36_896),
        ((28, 28, 32), 0),
        ((28, 28, 128), 36_992),
        ((28, 28, 32), 36_896),
        ((28, 28, 32), 9_248),
        ((28, 28, 32), 9_248),
        ((28, 28, 1), 289),
    ],
    "s4_upsample_2": [
        ((7, 7, 64), 640),
        ((7, 7, 64), 36_928),
        ((14, 14, 64), 0),
        ((14, 14, 128), 73_856),
        ((14, 14, 128), 147_584),
        ((28, 28, 128), 0),
        ((28, 28, 128), 147_584),
        ((28, 28, 64), 73_792),
        ((28, 28, 1), 577),
    ],
    "s4_upsample_3": [
        ((7, 7, 64), 640),
        ((7, 7, 64), 36_928),
        ((14, 14, 64), 0),
        ((14, 14, 128), 73_856),
        ((28, 28, 128), 0),
        ((28, 28, 64), 73_792),
        ((28, 28, 1), 577),
    ],
}


@pytest.mark.parametrize("name", sorted(S4_TABLES))
def test_s4_reconstruction_models_match_the_report_layer_by_layer(name):
    model = build_model(name, (7, 7, 1), 10)
    rows = [(tuple(row.output_shape[1:]), row.params) for row in summary_rows(model, (7, 7, 1))]
    assert rows == S4_TABLES[name]
    assert model.head_activation == "sigmoid"  # S4's binary cross-entropy on 0..1 pixels
