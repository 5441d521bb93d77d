"""Modern augmentations: per-sample on the batch's device, seeded by torch; MixUp/CutMix targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.augment.modern import ModernAugmenter, ModernParams, mix

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

OPS = {
    "random_resized_crop": ModernParams(random_resized_crop=(0.08, 1.0)),
    "randaugment": ModernParams(randaugment=(2, 9)),
    "trivialaugment": ModernParams(trivialaugment=True),
    "color_jitter": ModernParams(color_jitter=(0.4, 0.4, 0.4, 0.1)),
    "random_erasing": ModernParams(random_erasing=1.0),
}
EVERYTHING = ModernParams(
    random_resized_crop=(0.25, 1.0),
    randaugment=(2, 9),
    color_jitter=(0.4, 0.4, 0.4, 0.1),
    random_erasing=0.5,
)


def textured(n: int, channels: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n copies of one image with smooth structure and noise, values in 0..1 on 8-bit levels."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    noise = torch.rand(size, size, generator=g)
    base = 0.3 * (ramp.view(1, -1) + ramp.view(-1, 1)) + 0.4 * noise
    tint = torch.linspace(0.6, 1.0, channels).view(channels, 1, 1)
    image = ((base * tint).clamp(0, 1) * 255).round() / 255
    return image.expand(n, channels, size, size).contiguous().to(DEVICE)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(OPS))
def test_each_op_changes_images_and_keeps_shape_dtype_device(name: str, channels: int) -> None:
    torch.manual_seed(0)
    images = textured(8, channels)
    out = ModernAugmenter(OPS[name])(images)
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert not torch.equal(out, images)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(OPS))
def test_parameters_differ_between_identical_images_of_a_batch(name: str, channels: int) -> None:
    torch.manual_seed(0)
    out = ModernAugmenter(OPS[name])(textured(16, channels))
    differs_from_first = [not torch.equal(out[0], out[i]) for i in range(1, 16)]
    assert sum(differs_from_first) >= 8


def test_manual_seed_repeats_every_op() -> None:
    augment = ModernAugmenter(EVERYTHING)
    images = textured(8, 3)
    torch.manual_seed(7)
    first = augment(images)
    torch.manual_seed(7)
    again = augment(images)
    torch.manual_seed(8)
    other = augment(images)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_trivialaugment_is_repeatable_under_manual_seed() -> None:
    augment = ModernAugmenter(OPS["trivialaugment"])
    images = textured(8, 3)
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    assert torch.equal(first, augment(images))


def test_random_erasing_p1_erases_a_rectangle_in_every_image_and_p0_none() -> None:
    images = torch.ones(16, 3, 24, 24, device=DEVICE)
    torch.manual_seed(0)
    erased = ModernAugmenter(ModernParams(random_erasing=1.0))(images)
    for image in erased:
        zero = (image == 0).all(0)  # every channel erased together
        assert zero.any()
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        box = zero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and int(zero.sum()) == box.numel()  # one filled rectangle
        assert (image[:, ~zero] == 1).all()  # and nothing else touched
    kept = ModernAugmenter(ModernParams(random_erasing=0.0))(images)
    assert torch.equal(kept, images)


def test_identity_params_change_nothing() -> None:
    params = ModernParams()
    assert params.is_identity
    images = textured(4, 3)
    assert torch.equal(ModernAugmenter(params)(images), images)
    assert not ModernParams(mixup_alpha=0.2).is_identity
    assert not ModernParams(randaugment=(2, 9)).is_identity


def constant_batch(n: int = 8, channels: int = 3, size: int = 16) -> tuple[torch.Tensor, ...]:
    """Image i is the constant i + 1 and has label i, so pixels reveal where they came from."""
    values = torch.arange(1, n + 1, dtype=torch.float32, device=DEVICE)
    images = values.view(n, 1, 1, 1).expand(n, channels, size, size).contiguous()
    return images, torch.arange(n, device=DEVICE), values


def test_mixup_targets_sum_to_one_and_equal_the_pixel_mixing_weight() -> None:
    images, labels, values = constant_batch()
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    mixed, targets = mix(images, labels, 8, ModernParams(mixup_alpha=1.0), generator)
    assert mixed.shape == images.shape and targets.shape == (8, 8)
    assert targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(8, device=DEVICE))
    expected_pixel = targets @ values  # each image is the target-weighted mix of the constants
    torch.testing.assert_close(mixed.mean((1, 2, 3)), expected_pixel)
    assert torch.equal(mixed.amin((1, 2, 3)), mixed.amax((1, 2, 3)))  # all pixels alike
    own = targets.diagonal()
    mixed_rows = own < 1
    assert mixed_rows.any()
    assert torch.allclose(own[mixed_rows], own[mixed_rows][0])  # one lambda per batch


def test_cutmix_target_weights_equal_the_pasted_area_fraction_exactly() -> None:
    images, labels, values = constant_batch(channels=3, size=20)
    pasted_somewhere = False
    for seed in range(5):
        generator = torch.Generator(device=DEVICE).manual_seed(seed)
        mixed, targets = mix(images, labels, 8, ModernParams(cutmix_alpha=1.0), generator)
        torch.testing.assert_close(targets.sum(1), torch.ones(8, device=DEVICE))
        fractions = (mixed.unsqueeze(1) == values.view(1, 8, 1, 1, 1)).flatten(2).float().mean(2)
        assert torch.equal(fractions.sum(1), torch.ones(8, device=DEVICE))  # only originals
        assert torch.equal(targets, fractions)
        pasted_somewhere |= bool((targets.diagonal() < 1).any())
    assert pasted_somewhere


def test_mixup_and_cutmix_together_pick_each_on_some_batches() -> None:
    images, labels, values = constant_batch()
    params = ModernParams(mixup_alpha=1.0, cutmix_alpha=1.0)
    kinds = set()
    for seed in range(12):
        generator = torch.Generator(device=DEVICE).manual_seed(seed)
        mixed, targets = mix(images, labels, 8, params, generator)
        torch.testing.assert_close(targets.sum(1), torch.ones(8, device=DEVICE))
        only_originals = bool(torch.isin(mixed, values).all())
        kinds.add("cutmix" if only_originals else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_mix_with_both_alphas_zero_returns_images_and_one_hot_targets() -> None:
    images, labels, _ = constant_batch()
    mixed, targets = mix(images, labels, 10, ModernParams())
    assert mixed is images
    assert torch.equal(targets, F.one_hot(labels, 10).float())


def test_mix_is_repeatable_with_a_seeded_generator() -> None:
    images, labels, _ = constant_batch()
    params = ModernParams(mixup_alpha=0.4, cutmix_alpha=1.0)
    first = mix(images, labels, 8, params, torch.Generator(device=DEVICE).manual_seed(5))
    again = mix(images, labels, 8, params, torch.Generator(device=DEVICE).manual_seed(5))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_mix_for_a_sigmoid_head_gives_two_columns_summing_to_one() -> None:
    images, _, _ = constant_batch()
    labels = torch.tensor([0, 1] * 4, device=DEVICE)
    generator = torch.Generator(device=DEVICE).manual_seed(1)
    _, targets = mix(images, labels, 2, ModernParams(mixup_alpha=0.4), generator)
    torch.testing.assert_close(targets.sum(1), torch.ones(8, device=DEVICE))
    assert ((targets[:, 1] >= 0) & (targets[:, 1] <= 1)).all()


def test_autoaugment_ops_match_torchvision_within_rounding() -> None:
    tv = pytest.importorskip("torchvision.transforms.v2.functional")
    from cnnlab.augment import policies

    u8 = (torch.rand(4, 3, 17, 23, generator=torch.Generator().manual_seed(0)) * 200 + 20).byte()
    images = u8.float() / 255
    cases = [  # (op, signed level, torchvision equivalent on uint8 at RandAugment's scale)
        (policies.BRIGHTNESS, 0.5, lambda t: tv.adjust_brightness(t, 1.45)),
        (policies.COLOR, -0.5, lambda t: tv.adjust_saturation(t, 0.55)),
        (policies.CONTRAST, 0.5, lambda t: tv.adjust_contrast(t, 1.45)),
        (policies.SHARPNESS, 0.5, lambda t: tv.adjust_sharpness(t, 1.45)),
        (policies.POSTERIZE, 0.5, lambda t: tv.posterize(t, 6)),
        (policies.SOLARIZE, 0.5, lambda t: tv.solarize(t, 127.5)),
        (policies.AUTOCONTRAST, 0.0, tv.autocontrast),
        (policies.EQUALIZE, 0.0, tv.equalize),
    ]
    for op, level, reference in cases:
        ours = policies._apply_ops(
            images, torch.full((4,), op), torch.full((4,), level), policies._RANDAUGMENT
        )
        expected = reference(u8).float() / 255
        assert (ours - expected).abs().max() <= 1.5 / 255, op  # torchvision rounds to uint8
    rotated = policies._apply_ops(
        images, torch.full((4,), policies.ROTATE), torch.full((4,), 0.5), policies._RANDAUGMENT
    )
    expected = tv.affine(
        images,
        angle=-15.0,
        translate=[0, 0],
        scale=1.0,
        shear=[0.0, 0.0],
        interpolation=tv.InterpolationMode.BILINEAR,
    )
    torch.testing.assert_close(rotated, expected, atol=1e-5, rtol=0)


def test_each_image_gets_its_own_op_within_one_batch() -> None:
    from cnnlab.augment import policies

    images = textured(14, 3, size=16)
    ops = torch.arange(14, device=DEVICE)  # a different op for every image
    level = torch.full((14,), 0.6, device=DEVICE)
    together = policies._apply_ops(images, ops, level, policies._RANDAUGMENT)
    for i in range(14):
        alone = policies._apply_ops(images, torch.full_like(ops, i), level, policies._RANDAUGMENT)
        torch.testing.assert_close(together[i], alone[i], atol=0, rtol=0)


def test_augment_and_mix_do_not_synchronise_with_the_host() -> None:
    """On CUDA, any host synchronisation after the first (warm-up) call raises; on the CPU there
    is no device to wait for, so this only runs the same calls."""
    everything = ModernParams(
        random_resized_crop=(0.08, 1.0),
        trivialaugment=True,
        color_jitter=(0.4, 0.4, 0.4, 0.1),
        random_erasing=0.5,
        mixup_alpha=0.2,
        cutmix_alpha=1.0,
    )
    augmenters = [ModernAugmenter(everything), ModernAugmenter(ModernParams(randaugment=(2, 9)))]
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    labels = torch.arange(8, device=DEVICE)

    def step(images: torch.Tensor) -> torch.Tensor:
        for augment in augmenters:
            images = augment(images)
        mixed, targets = mix(images, labels, 8, everything, generator)
        return F.cross_entropy(mixed.flatten(1)[:, :8], targets)  # probability targets

    for channels in (1, 3):
        images = textured(8, channels)
        step(images)  # warm-up: kornia builds its modules and samplers on the first call
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                loss = step(images)
        finally:
            if DEVICE.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(loss)
