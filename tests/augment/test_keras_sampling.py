"""Keras's sampling distributions, per-image draws, seeding, devices and the config mapping."""

from __future__ import annotations

import math

import pytest
import torch

from cnnlab.augment.keras import KerasAugmenter, KerasParams, Sampled, apply, sample
from cnnlab.config import AugmentConfig

DRAWS = 20_000
H, W = 50, 80

# (parameters, field of Sampled, Keras's uniform range for it)
UNIFORM = {
    "rotation": (KerasParams(rotation_range=30.0), "theta", (-30.0, 30.0)),
    "shear": (KerasParams(shear_range=20.0), "shear", (-20.0, 20.0)),
    "height_fraction": (KerasParams(height_shift_range=0.2), "tx", (-0.2 * H, 0.2 * H)),
    "width_fraction": (KerasParams(width_shift_range=0.1), "ty", (-0.1 * W, 0.1 * W)),
    "width_float_pixels": (KerasParams(width_shift_range=2.5), "ty", (-2.5, 2.5)),
    "zoom_x": (KerasParams(zoom_range=(0.8, 1.3)), "zx", (0.8, 1.3)),
    "zoom_y": (KerasParams(zoom_range=(0.8, 1.3)), "zy", (0.8, 1.3)),
    "brightness": (KerasParams(brightness_range=(0.5, 1.5)), "brightness", (0.5, 1.5)),
    "channel_shift": (KerasParams(channel_shift_range=40.0), "channel_shift", (-40.0, 40.0)),
}


def draws(params: KerasParams, seed: int = 0, n: int = DRAWS) -> Sampled:
    return sample(params, n, H, W, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", list(UNIFORM))
def test_uniform_parameters_follow_keras_distribution(case):
    stats = pytest.importorskip("scipy.stats")
    params, field, (lo, hi) = UNIFORM[case]
    x = getattr(draws(params), field).double()
    assert lo <= x.min() and x.max() <= hi
    assert x.min() < lo + 0.01 * (hi - lo) and x.max() > hi - 0.01 * (hi - lo)
    sd_of_mean = (hi - lo) / math.sqrt(12 * DRAWS)
    assert abs(x.mean().item() - (lo + hi) / 2) < 4 * sd_of_mean
    assert x.var().item() == pytest.approx((hi - lo) ** 2 / 12, rel=0.05)
    assert stats.kstest(x.numpy(), "uniform", args=(lo, hi - lo)).pvalue > 1e-3


def test_integer_pixel_shift_draws_keras_choice_times_sign():
    # Keras: choice(range(w)) * choice([-1, 1]): integers in [-(w - 1), w - 1], 0 twice as
    # often as each other value (documented: w = 2 gives -1, 0, +1).
    stats = pytest.importorskip("scipy.stats")
    s = draws(KerasParams(width_shift_range=3, height_shift_range=2))
    assert torch.equal(s.ty, s.ty.round()) and torch.equal(s.tx, s.tx.round())
    assert set(s.tx.tolist()) == {-1.0, 0.0, 1.0}
    values = [-2.0, -1.0, 0.0, 1.0, 2.0]
    counts = [(s.ty == v).sum().item() for v in values]
    assert sum(counts) == DRAWS
    expected = [DRAWS * p for p in (1 / 6, 1 / 6, 1 / 3, 1 / 6, 1 / 6)]
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # a float, even a whole one, is U(-w, w) pixels: np.random.choice(2.0) raises ValueError
    continuous = draws(KerasParams(width_shift_range=2.0)).ty
    assert not torch.equal(continuous, continuous.round()) and continuous.abs().max() <= 2.0


def test_zoom_x_and_y_are_drawn_independently():
    s = draws(KerasParams(zoom_range=(0.5, 1.5)))
    correlation = torch.corrcoef(torch.stack([s.zx, s.zy]))[0, 1].item()
    assert abs(correlation) < 0.03


def test_flips_are_fair_coins_and_off_when_disabled():
    s = draws(KerasParams(horizontal_flip=True))
    assert s.flip_h.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert not s.flip_v.any()
    assert s.flip_v.dtype == torch.bool


def test_disabled_parameters_are_neutral():
    s = draws(KerasParams(horizontal_flip=True), n=10)
    for field in ("theta", "tx", "ty", "shear", "channel_shift"):
        assert torch.equal(getattr(s, field), torch.zeros(10))
    for field in ("zx", "zy", "brightness"):
        assert torch.equal(getattr(s, field), torch.ones(10))


def full_params() -> KerasParams:
    return KerasParams(
        rotation_range=20, width_shift_range=0.2, height_shift_range=0.2, shear_range=10,
        zoom_range=(0.8, 1.2), horizontal_flip=True, vertical_flip=True, fill_mode="reflect",
        brightness_range=(0.7, 1.3), channel_shift_range=20.0,
    )  # fmt: skip


def batch(device: torch.device | str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    one = (torch.rand(1, 3, 24, 32, generator=g) * 255).to(torch.uint8)
    return one.expand(8, 3, 24, 32).to(device)


def test_parameters_differ_between_images_of_one_batch():
    s = draws(full_params(), n=8)
    for field in ("theta", "tx", "ty", "shear", "zx", "zy", "brightness", "channel_shift"):
        assert getattr(s, field).unique().numel() == 8, field
    out = KerasAugmenter(full_params())(batch(), torch.Generator().manual_seed(0))
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 8))


def test_same_seed_gives_identical_output_and_different_seeds_differ():
    augment = KerasAugmenter(full_params())
    first = augment(batch(), torch.Generator().manual_seed(5))
    again = augment(batch(), torch.Generator().manual_seed(5))
    other = augment(batch(), torch.Generator().manual_seed(6))
    assert first.dtype == torch.float32 and first.shape == (8, 3, 24, 32)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_runs_on_the_images_device_without_host_sync_and_matches_cpu():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params, images = full_params(), batch(device)
    g = torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")  # any .item() / host copy would raise
    try:
        s = sample(params, 8, 24, 32, g)
        out = apply(images, s, params)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert out.device == images.device and s.theta.device == images.device
    on_cpu = apply(images.cpu(), s.to("cpu"), params)
    torch.testing.assert_close(out.cpu(), on_cpu, atol=1e-2, rtol=1e-4)


def test_from_config_keeps_keras_names_and_expands_a_zoom_float():
    cfg = AugmentConfig(
        rotation_range=20, width_shift_range=0.2, height_shift_range=0.1, shear_range=0.2,
        zoom_range=0.2, horizontal_flip=True, fill_mode="constant", cval=3.0,
        brightness_range=(0.8, 1.2), channel_shift_range=10,
    )  # fmt: skip
    p = KerasParams.from_config(cfg)
    assert p.zoom_range == pytest.approx((0.8, 1.2))
    assert (p.rotation_range, p.width_shift_range, p.height_shift_range) == (20, 0.2, 0.1)
    assert (p.shear_range, p.fill_mode, p.cval) == (0.2, "constant", 3.0)
    assert p.brightness_range == (0.8, 1.2)
    assert p.horizontal_flip and not p.vertical_flip and p.channel_shift_range == 10
    assert KerasParams.from_config(AugmentConfig(zoom_range=(0.5, 1.0))).zoom_range == (0.5, 1.0)
    assert KerasParams.from_config(AugmentConfig()).is_identity


def test_the_run_transforms_never_wait_for_the_host_and_standardise_as_fitted():
    """Training and evaluation transforms of a feature-wise normalised run, on the device (CUDA
    under sync-debug 'error': a host copy per batch would raise) and on the CPU."""
    import numpy as np

    from cnnlab.augment.pipeline import build_transforms

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = AugmentConfig(
        rotation_range=10, horizontal_flip=True, featurewise_center=True,
        featurewise_std_normalization=True,
    )  # fmt: skip
    images = (np.random.default_rng(0).random((16, 3, 12, 12)) * 255).astype(np.uint8)
    train, evaluate = build_transforms(cfg, images, seed=0, device=device)
    batch = torch.from_numpy(images).to(device)
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    try:
        augmented, standardised = train(batch), evaluate(batch)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert augmented.device.type == standardised.device.type == device.type
    per_channel = standardised.double().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(
        per_channel.mean(1), torch.zeros(3, dtype=torch.float64).to(device), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        per_channel.std(1, correction=0),
        torch.ones(3, dtype=torch.float64).to(device),
        atol=1e-4,
        rtol=0,
    )
