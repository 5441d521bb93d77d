"""Layer semantics against Keras: "same" padding, pooling, Flatten order, BatchNorm, init."""

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab.errors import ConfigError
from cnnlab.models import build_layers, count_params
from cnnlab.models.layers import ACTIVATIONS, pad_same

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def image(rows: list[list[float]]) -> torch.Tensor:
    """One single-channel image, N, C, H, W."""
    return torch.tensor(rows, dtype=torch.float32, device=DEVICE)[None, None]


def ones_conv(size: int, kernel: int, stride: int) -> torch.nn.Module:
    conv = {
        "Conv2D": {
            "filters": 1,
            "kernel_size": kernel,
            "strides": stride,
            "padding": "same",
            "use_bias": False,
        }
    }
    model = build_layers([conv], (size, size, 1)).to(DEVICE)
    torch.nn.init.ones_(model.conv2d.weight)
    return model


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [
        (5, 3, 2, "same", 3),
        (6, 3, 2, "same", 3),
        (7, 3, 2, "same", 4),
        (5, 3, 1, "same", 5),
        (6, 2, 1, "same", 6),
        (7, 3, 2, "valid", 3),
        (128, 3, 1, "valid", 126),
        (8, 5, 3, "valid", 2),
    ],
)
def test_conv_output_shape_matches_keras(size, kernel, stride, padding, expected):
    conv = {"Conv2D": {"filters": 4, "kernel_size": kernel, "strides": stride, "padding": padding}}
    model = build_layers([conv], (size, size, 2)).to(DEVICE)
    assert model.output_shape == (expected, expected, 4)
    assert model(torch.rand(1, 2, size, size, device=DEVICE)).shape == (1, 4, expected, expected)


def test_same_padding_stride_2_on_even_input_pads_only_bottom_right_as_keras():
    # 6x6, 3x3, stride 2: TF pads 0 on top/left and 1 on bottom/right, so the first window
    # covers 9 real pixels and the last row/column only 2 (PyTorch's symmetric padding: 2 first)
    out = ones_conv(6, 3, 2)(torch.ones(1, 1, 6, 6, device=DEVICE))
    assert out[0, 0].tolist() == [[9, 9, 6], [9, 9, 6], [6, 6, 4]]


def test_same_padding_stride_2_on_odd_input_is_symmetric():
    out = ones_conv(5, 3, 2)(torch.ones(1, 1, 5, 5, device=DEVICE))
    assert out[0, 0].tolist() == [[4, 6, 4], [6, 9, 6], [4, 6, 4]]


def test_same_padding_with_even_kernel_pads_bottom_right():
    out = ones_conv(3, 2, 1)(torch.ones(1, 1, 3, 3, device=DEVICE))
    assert out[0, 0].tolist() == [[4, 4, 2], [4, 4, 2], [2, 2, 1]]


def test_max_pooling_same_ignores_padding():
    # All values negative: a zero-padded pool would return 0 on the last row and column.
    x = -torch.arange(25.0, device=DEVICE).reshape(1, 1, 5, 5)
    model = build_layers([{"MaxPooling2D": {"pool_size": 2, "padding": "same"}}], (5, 5, 1))
    assert model.output_shape == (3, 3, 1)
    assert model(x)[0, 0].tolist() == [[0, -2, -4], [-10, -12, -14], [-20, -22, -24]]


def test_average_pooling_same_averages_real_pixels_only():
    model = build_layers([{"AveragePooling2D": {"pool_size": 2, "padding": "same"}}], (5, 5, 1))
    out = model(torch.ones(1, 1, 5, 5, device=DEVICE))
    assert out.shape == (1, 1, 3, 3)
    assert torch.equal(out, torch.ones_like(out))


def test_pooling_strides_default_to_pool_size():
    model = build_layers([{"MaxPooling2D": {"pool_size": 3}}], (126, 126, 4))
    assert model.output_shape == (42, 42, 4)
    strided = build_layers([{"MaxPooling2D": {"pool_size": 3, "strides": 1}}], (126, 126, 4))
    assert strided.output_shape == (124, 124, 4)


def test_flatten_orders_features_channels_last_as_keras():
    # channel 0 holds 1, 2 and channel 1 holds 10, 20 along the width; Keras flattens the
    # H, W, C array, interleaving channels: 1, 10, 2, 20 (channels-first would give 1, 2, 10, 20)
    x = torch.tensor([[[[1.0, 2.0]], [[10.0, 20.0]]]], device=DEVICE)
    model = build_layers(["Flatten"], (1, 2, 2))
    assert model(x).tolist() == [[1.0, 10.0, 2.0, 20.0]]
    assert model(x.to(memory_format=torch.channels_last)).tolist() == [[1.0, 10.0, 2.0, 20.0]]


def test_dense_on_an_image_acts_on_channels_as_keras():
    model = build_layers([{"Dense": 3}], (4, 5, 2)).to(DEVICE)
    assert model.output_shape == (4, 5, 3)
    assert count_params(model) == (2 * 3 + 3, 0)
    assert model(torch.rand(2, 2, 4, 5, device=DEVICE)).shape == (2, 3, 4, 5)


@pytest.mark.parametrize("input_shape", [(6, 6, 8), (8,)])
def test_batch_normalization_counts_4c_params_with_2c_non_trainable(input_shape):
    model = build_layers(["BatchNormalization"], input_shape).to(DEVICE)
    assert count_params(model) == (2 * 8, 2 * 8)
    bn = model.batch_normalization
    assert bn.momentum == pytest.approx(0.01)  # Keras momentum 0.99
    assert bn.eps == pytest.approx(1e-3)
    size = (4, *input_shape[::-1]) if len(input_shape) == 1 else (4, 8, 6, 6)
    assert model(torch.rand(size, device=DEVICE)).shape == size


def test_kernels_start_glorot_uniform_and_biases_at_zero():
    torch.manual_seed(0)
    model = build_layers(
        [{"Conv2D": {"filters": 64, "kernel_size": 3}}, "Flatten", {"Dense": 10}], (8, 8, 16)
    )
    conv, dense = model.conv2d, model.dense
    conv_limit = math.sqrt(6 / (3 * 3 * 16 + 3 * 3 * 64))
    assert conv.weight.abs().max() <= conv_limit
    assert conv.weight.abs().max() > 0.9 * conv_limit  # uniform over the whole range
    assert dense.weight.abs().max() <= math.sqrt(6 / (6 * 6 * 64 + 10))
    assert not conv.bias.any()
    assert not dense.bias.any()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_builds_and_runs(activation):
    model = build_layers([{"Dense": {"units": 4, "activation": activation}}, {"Dense": 2}], (3,))
    assert model(torch.rand(5, 3)).shape == (5, 2)


def test_upsampling_repeats_pixels():
    model = build_layers([{"UpSampling2D": {"size": 2}}], (2, 2, 1))
    assert model.output_shape == (4, 4, 1)
    out = model(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    assert out[0, 0, 0].tolist() == [1, 1, 2, 2]


def test_global_average_pooling_gives_one_value_per_channel():
    model = build_layers(["GlobalAveragePooling2D"], (4, 4, 3))
    assert model.output_shape == (3,)
    assert model(torch.ones(2, 3, 4, 4)).tolist() == [[1.0] * 3] * 2


def test_dropout_rate_is_the_fraction_dropped():
    model = build_layers([{"Dropout": 0.9}], (4,))
    assert model.dropout.p == 0.9


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_relu_then_max_pool_equals_keras_order_in_values_and_gradients(padding):
    # cnnlab applies the ReLU after the pool (cheaper); Keras's order is ReLU, then max. Integer
    # pixels and weights make ties and all-negative windows common: where the two could differ.
    layers = [
        {"Conv2D": {"filters": 3, "kernel_size": 3, "activation": "relu"}},
        {"MaxPooling2D": {"pool_size": 3, "strides": 2, "padding": padding}},
        "Flatten",
        {"Dense": 2},
    ]
    model = build_layers(layers, (12, 11, 2)).to(DEVICE)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.conv2d.weight.copy_(torch.randint(-2, 3, model.conv2d.weight.shape, generator=gen))
        model.conv2d.bias.copy_(torch.tensor([-12.0, -6.0, 0.0]))
    x = torch.randint(-3, 4, (4, 2, 12, 11), generator=gen).float().to(DEVICE)

    h = torch.relu(F.conv2d(x, model.conv2d.weight, model.conv2d.bias))
    if padding == "same":
        h = pad_same(h, (3, 3), (2, 2), value=float("-inf"))
    pooled = F.max_pool2d(h, 3, 2)
    assert (pooled == 0).sum() > 10  # windows where no pixel is positive
    ours, reference = model(x), model.dense(model.flatten(pooled))
    assert torch.equal(ours, reference)
    weights = [model.conv2d.weight, model.conv2d.bias, model.dense.weight]
    grads = torch.autograd.grad(ours.square().sum(), weights)
    expected = torch.autograd.grad(reference.square().sum(), weights)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected, strict=True))


# --- the layers airbench's network needs: Rescaling, offset-only BatchNorm, dirac kernels -----


def test_rescaling_multiplies_and_offsets_as_keras():
    model = build_layers([{"Rescaling": {"scale": 0.5, "offset": -1.0}}], (2, 2, 1)).to(DEVICE)
    x = image([[2.0, 4.0], [6.0, 8.0]])
    assert torch.equal(model(x), x * 0.5 - 1.0)
    assert count_params(model) == (0, 0)


def test_rescaling_needs_a_numeric_scale():
    with pytest.raises(ConfigError, match=r"model.layers\[0\].Rescaling.scale: expected a number"):
        build_layers([{"Rescaling": {"scale": True}}], (2, 2, 1))
    with pytest.raises(ConfigError, match=r"Rescaling.scale: missing"):
        build_layers(["Rescaling"], (2, 2, 1))


def test_batch_normalization_without_scale_has_only_the_offset_as_keras():
    norm = {"BatchNormalization": {"scale": False}}
    model = build_layers([norm], (4, 4, 3)).to(DEVICE)
    assert count_params(model) == (3, 6)  # beta; moving mean and variance
    layer = model[0]
    assert layer.weight is None and layer.bias is not None
    x = torch.randn(8, 3, 4, 4, device=DEVICE) * 3 + 2
    with torch.no_grad():
        layer.bias.fill_(0.5)
    out = model(x)  # training mode: batch statistics, scale 1
    mean = out.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.full_like(mean, 0.5), atol=1e-5)
    centre_only = build_layers([{"BatchNormalization": {"center": False}}], (4, 4, 3))
    assert count_params(centre_only) == (3, 6) and centre_only[0].bias is None


def test_dirac_kernels_pass_each_input_channel_through_at_first():
    conv = {
        "Conv2D": {
            "filters": 6,
            "kernel_size": 3,
            "padding": "same",
            "use_bias": False,
            "kernel_initializer": "dirac",
        }
    }
    model = build_layers([conv], (5, 5, 4)).to(DEVICE)
    x = torch.randn(2, 4, 5, 5, device=DEVICE)
    out = model(x)
    assert torch.allclose(out[:, :4], x, atol=1e-6)  # the first 4 filters: the identity
    assert not torch.allclose(out[:, 4:], torch.zeros_like(out[:, 4:]))  # the rest: glorot


def test_unknown_kernel_initializer_names_the_choices():
    conv = {"Conv2D": {"filters": 2, "kernel_size": 3, "kernel_initializer": "identity"}}
    with pytest.raises(ConfigError, match="kernel_initializer: expected one of glorot_uniform"):
        build_layers([conv], (5, 5, 1))
