import torch

from cnnlab.models import build_layers, build_model, format_summary, summary_rows


def test_ivannet_summary_ends_with_keras_totals():
    text = format_summary(build_model("ivannet", (128, 128, 1), 6), (128, 128, 1))
    lines = text.splitlines()
    assert lines[0] == 'Model: "ivannet"'
    assert "Total params: 6,167,166" in lines
    assert "Trainable params: 6,167,166" in lines
    assert "Non-trainable params: 0" in lines


def test_summary_names_layers_and_shapes_as_keras():
    rows = summary_rows(build_model("carlosnet", (128, 128, 1), 6), (128, 128, 1))
    assert [(r.name, r.kind, r.output_shape, r.params) for r in rows] == [
        ("conv2d", "Conv2D", (None, 126, 126, 4), 40),
        ("max_pooling2d", "MaxPooling2D", (None, 42, 42, 4), 0),
        ("conv2d_1", "Conv2D", (None, 38, 38, 8), 808),
        ("max_pooling2d_1", "MaxPooling2D", (None, 12, 12, 8), 0),
        ("conv2d_2", "Conv2D", (None, 6, 6, 16), 6_288),
        ("max_pooling2d_2", "MaxPooling2D", (None, 3, 3, 16), 0),
        ("flatten", "Flatten", (None, 144), 0),
        ("dense", "Dense", (None, 6), 870),
    ]
    text = format_summary(build_model("carlosnet", (128, 128, 1), 6), (128, 128, 1))
    assert " conv2d (Conv2D)" in text
    assert "(None, 126, 126, 4)" in text


def test_batch_normalization_moving_statistics_are_non_trainable():
    model = build_layers(
        [
            {"Conv2D": {"filters": 8, "kernel_size": 3}},
            "BatchNormalization",
            "Flatten",
            {"Dense": 2},
        ],
        (5, 5, 1),
    )
    bn_row = summary_rows(model, (5, 5, 1))[1]
    assert (bn_row.name, bn_row.trainable, bn_row.non_trainable) == ("batch_normalization", 16, 16)
    lines = format_summary(model, (5, 5, 1)).splitlines()
    assert "Total params: 258" in lines  # 80 + 32 + (72 * 2 + 2)
    assert "Trainable params: 242" in lines
    assert "Non-trainable params: 16" in lines


def test_frozen_weights_count_as_non_trainable():
    model = build_layers([{"Dense": 4}], (3,))
    model.dense.weight.requires_grad_(False)
    assert summary_rows(model, (3,))[0].non_trainable == 12


def test_summary_leaves_training_mode_and_statistics_untouched():
    model = build_layers(["BatchNormalization", "Flatten", {"Dense": 2}], (4, 4, 3))
    model.train()
    model.batch_normalization.eval()  # e.g. a frozen BatchNorm kept in eval on purpose
    format_summary(model, (4, 4, 3))
    assert model.training
    assert model.dense.training
    assert not model.batch_normalization.training
    assert torch.equal(model.batch_normalization.running_mean, torch.zeros(3))


def test_flops_of_conv2d_and_dense_equal_the_hand_count_without_bias_adds():
    model = build_layers(
        [{"Conv2D": {"filters": 8, "kernel_size": 3}}, "Flatten", {"Dense": 4}], (10, 10, 3)
    )
    conv = 2 * 3 * 3 * 3 * 8 * 8 * 8  # 2 k k Cin Cout Hout Wout = 27,648 (valid: 10 -> 8)
    dense = 2 * (8 * 8 * 8) * 4  # 2 in out = 4,096
    rows = summary_rows(model, (10, 10, 3))
    assert [row.flops for row in rows] == [conv, 0, dense]
    lines = format_summary(model, (10, 10, 3)).splitlines()
    assert "FLOPs (one image, forward): 31,744 (31.74 K)" in lines
    assert "MACs (multiply-accumulates = FLOPs / 2): 15,872 (15.87 K)" in lines
    assert any(line.startswith(" conv2d (Conv2D)") and line.endswith("27,648") for line in lines)
    assert "Total params: 2,276" in lines  # the Keras lines stay: 224 + 2,052


def test_ivannet_total_flops_are_the_sum_of_its_layers():
    model = build_model("ivannet", (128, 128, 1), 6)
    rows = summary_rows(model, (128, 128, 1))
    assert rows[0].flops == 2 * 5 * 5 * 1 * 20 * 124 * 124  # conv2d: 5x5, 1 -> 20 channels
    assert sum(row.flops for row in rows) == 615_163_600
    lines = format_summary(model, (128, 128, 1)).splitlines()
    assert "FLOPs (one image, forward): 615,163,600 (615.16 M)" in lines
