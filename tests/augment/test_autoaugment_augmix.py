"""augment.autoaugment and augment.augmix: per image on the batch's device, seeded by torch, in
the 0..1 range; the config's checks; the preview and a run use them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cnnlab.augment import policies
from cnnlab.augment.modern import ModernAugmenter, ModernParams
from cnnlab.augment.pipeline import modern_params
from cnnlab.cli import app
from cnnlab.config import AugmentConfig, Experiment
from cnnlab.config_io import validate
from cnnlab.errors import ConfigError

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
POLICIES = {
    "autoaugment imagenet": ModernParams(autoaugment="imagenet"),
    "autoaugment cifar10": ModernParams(autoaugment="cifar10"),
    "autoaugment svhn": ModernParams(autoaugment="svhn"),
    "augmix": ModernParams(augmix=policies.AugMix()),
    "augmix depth 2, no colour ops": ModernParams(augmix=policies.AugMix(5, 2, 2, 0.5, False)),
}


def textured(n: int, channels: int, size: int = 24) -> torch.Tensor:
    """n copies of one image with structure and noise, on 8-bit levels in 0..1."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, size)
    base = 0.3 * (ramp.view(1, -1) + ramp.view(-1, 1)) + 0.4 * torch.rand(size, size, generator=g)
    tint = torch.linspace(0.6, 1.0, channels).view(channels, 1, 1)
    image = ((base * tint).clamp(0, 1) * 255).round() / 255
    return image.expand(n, channels, size, size).contiguous().to(DEVICE)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(POLICIES))
def test_policy_changes_images_and_keeps_shape_dtype_device_and_range(name, channels):
    torch.manual_seed(0)
    images = textured(16, channels)
    out = ModernAugmenter(POLICIES[name])(images)
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    changed = [not torch.equal(out[i], images[i]) for i in range(16)]
    assert sum(changed) >= 8  # AutoAugment's ops apply with their probabilities only


@pytest.mark.parametrize("name", list(POLICIES))
def test_images_of_one_batch_get_their_own_draws(name):
    torch.manual_seed(1)
    out = ModernAugmenter(POLICIES[name])(textured(16, 3))
    distinct = {tuple(image.flatten().tolist()) for image in out.cpu()}
    assert len(distinct) >= 6  # of 16 copies; one draw per batch would give 1 (some ops coincide)


@pytest.mark.parametrize("name", list(POLICIES))
def test_the_same_seed_repeats_a_policy_and_another_seed_does_not(name):
    augment, images = ModernAugmenter(POLICIES[name]), textured(8, 3)
    torch.manual_seed(7)
    first = augment(images)
    torch.manual_seed(7)
    again = augment(images)
    torch.manual_seed(8)
    other = augment(images)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_autoaugment_tables_are_torchvisions():
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    for policy in ("imagenet", "cifar10", "svhn"):
        table = policies._policy_table(policy, DEVICE).cpu()
        expected = AutoAugment(AutoAugmentPolicy(policy)).policies
        assert table.shape == (len(expected), 2, 3)
        for row, pair in zip(table, expected, strict=True):
            for (op, p, magnitude), (name, p_tv, bin_tv) in zip(row, pair, strict=True):
                assert int(op) == policies._TORCHVISION_NAMES[name]
                assert float(p) == pytest.approx(p_tv) and int(magnitude) == (bin_tv or 0)


def test_invert_and_augmix_posterize_match_torchvision():
    tv = pytest.importorskip("torchvision.transforms.v2.functional")
    u8 = (torch.rand(4, 3, 9, 11, generator=torch.Generator().manual_seed(0)) * 255).byte()
    images = u8.float() / 255
    inverted = policies._apply_ops(
        images, torch.full((4,), policies.INVERT), torch.zeros(4), policies._RANDAUGMENT
    )
    torch.testing.assert_close(inverted, tv.invert(u8).float() / 255)
    # AugMix's posterize keeps 4 - round(bin * 4 / 9) bits: bin 5 of severity 6 -> 2 bits
    posterized = policies._apply_ops(
        images, torch.full((4,), policies.POSTERIZE), torch.full((4,), 5 / 9), policies._AUGMIX
    )
    torch.testing.assert_close(posterized, tv.posterize(u8, 2).float() / 255)


def test_augmix_with_one_chain_of_identity_weights_mixes_the_image_with_its_chain(monkeypatch):
    """Every op an identity: whatever the Dirichlet and Beta weights, the mix is the image."""
    monkeypatch.setattr(policies, "_AUGMIX_ALL_OPS", (policies.IDENTITY,))
    images = textured(8, 3)
    out = policies.aug_mix(images, policies.AugMix(width=4))
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)


# --- the config -------------------------------------------------------------------------------


def experiment(augment: dict) -> Experiment:
    return validate({"data": {"source": "digits"}, "augment": augment}, Experiment, source="x")


def test_augmix_true_gives_torchvisions_defaults_and_false_none():
    on = experiment({"augmix": True}).augment.augmix
    assert on is not None and (on.severity, on.width, on.depth, on.alpha, on.all_ops) == (
        3,
        3,
        -1,
        1.0,
        True,
    )
    assert experiment({"augmix": False}).augment.augmix is None
    params = modern_params(AugmentConfig(augmix={"severity": 5, "depth": 2}))
    assert params.augmix == policies.AugMix(severity=5, depth=2) and not params.is_identity
    assert modern_params(AugmentConfig(autoaugment="svhn")).autoaugment == "svhn"


@pytest.mark.parametrize(
    ("augment", "message"),
    [
        ({"autoaugment": "cifar"}, "augment.autoaugment: 'cifar' is not allowed; did you mean"),
        ({"augmix": {"severity": 11}}, "augment.augmix.severity: must be less than or equal to 10"),
        ({"augmix": {"depth": 0}}, "augment.augmix.depth: 0: give -1"),
        ({"augmix": {"alpha": 0}}, "augment.augmix.alpha: must be greater than 0"),
        ({"augmix": {"chains": 2}}, "augment.augmix.chains"),
        (
            {"randaugment": [2, 9], "autoaugment": "imagenet"},
            "augment.autoaugment: randaugment is set too; they are alternatives",
        ),
        (
            {"trivialaugment": True, "augmix": True},
            "augment.augmix: trivialaugment is set too; they are alternatives",
        ),
        (
            {"autoaugment": "svhn", "augmix": {"width": 2}},
            "augment.augmix: autoaugment is set too; they are alternatives",
        ),
    ],
)
def test_bad_settings_and_two_policies_are_config_errors(augment, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        experiment(augment)


# --- where a user sees them -------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["autoaugment: cifar10", "augmix: true"])
def test_augment_preview_shows_the_policy(tmp_path, make_classes, setting):
    source = make_classes(tmp_path / "data", {"a": 4, "b": 4}, size=(16, 16))
    config = tmp_path / "aug.yaml"
    config.write_text(f"data: {{source: {source}}}\naugment: {{{setting}}}\n")
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        app, ["augment-preview", str(config), "--out", str(out), "--images", "2", "--versions", "6"]
    )
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(io.BytesIO(out.read_bytes())).convert("RGB"))
    tile = 96
    row = [grid[:tile, c * (tile + 4) : c * (tile + 4) + tile] for c in range(7)]
    assert sum(not np.array_equal(row[0], version) for version in row[1:]) >= 4


def test_a_run_trains_with_augmix_and_shows_its_grid(tmp_path, digits_config):
    config = digits_config(tmp_path / "augmix.yaml", augment={"augmix": {"width": 2}})
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "runs" / "augmix" / "report.html").read_text()
    assert "Augmentation" in html


def test_policies_do_not_synchronise_with_the_host():
    """On CUDA any host synchronisation after the warm-up call raises; on the CPU this only
    runs the same calls."""
    augmenters = [ModernAugmenter(params) for params in POLICIES.values()]
    images = textured(8, 3)
    for augment in augmenters:
        augment(images)  # warm-up: the tables reach the device once
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        for augment in augmenters:
            out = augment(images)
    finally:
        if DEVICE.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert out.shape == images.shape
