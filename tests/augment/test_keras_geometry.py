"""Keras's affine transforms, flips and colour shifts on tiny images with known answers.

Directions follow Keras's matrices, which map OUTPUT (row, col) to INPUT (row, col) about the
centre (size / 2 + 0.5, as transform_matrix_offset_center); scipy.ndimage is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.augment.keras import KerasAugmenter, KerasParams, Sampled, apply, matrices, sample

SHIFTS = KerasParams(width_shift_range=0.1)  # any affine parameter: apply() then warps


def fixed(n: int = 1, **values: float | list) -> Sampled:
    """Chosen per-image parameters (defaults: no transform)."""
    neutral = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0}
    neutral |= {"brightness": 1.0, "channel_shift": 0.0}
    out = {k: torch.full((n,), float(v)) for k, v in neutral.items()}
    out |= {"flip_h": torch.zeros(n, dtype=torch.bool), "flip_v": torch.zeros(n, dtype=torch.bool)}
    for k, v in values.items():
        dtype = torch.bool if k.startswith("flip") else torch.float32
        out[k] = torch.as_tensor(v, dtype=dtype).expand(n).clone()
    return Sampled(**out)


def square(h: int, w: int, top: int, left: int, side: int = 3) -> torch.Tensor:
    x = torch.zeros(1, 1, h, w)
    x[..., top : top + side, left : left + side] = 255.0
    return x


def centroid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mass-weighted (row, col) of each image of a (N, 1, H, W) batch."""
    rows = torch.arange(x.shape[-2], dtype=torch.float64).view(-1, 1)
    cols = torch.arange(x.shape[-1], dtype=torch.float64).view(1, -1)
    mass = x.double().sum(dim=(1, 2, 3))
    return (x * rows).sum(dim=(1, 2, 3)) / mass, (x * cols).sum(dim=(1, 2, 3)) / mass


def test_identity_params_return_the_input_unchanged():
    images = torch.rand(2, 3, 5, 7) * 255
    augment, g = KerasAugmenter(KerasParams()), torch.Generator().manual_seed(0)
    assert augment(images, g) is images
    as_bytes = (images).to(torch.uint8)
    assert torch.equal(augment(as_bytes, g), as_bytes.float())
    assert KerasParams(zoom_range=(1.0, 1.0), brightness_range=(1.0, 1.0)).is_identity


def test_integer_pixel_shifts_move_the_square_by_whole_pixels():
    x = square(12, 16, top=4, left=6).expand(6, 1, 12, 16)
    params = KerasParams(width_shift_range=3, height_shift_range=2)  # ints: whole pixels
    s = sample(params, 6, 12, 16, torch.Generator().manual_seed(1))
    out = apply(x, s, params)
    for i in range(6):  # content moves by -shift: the output samples input at out + shift
        tx, ty = int(s.tx[i]), int(s.ty[i])
        expected = square(12, 16, top=4 - tx, left=6 - ty)
        torch.testing.assert_close(out[i], expected[0], atol=1e-3, rtol=0)


def test_fraction_shifts_scale_width_to_columns_and_height_to_rows():
    h, w = 24, 40
    x = square(h, w, top=10, left=18, side=4).expand(64, 1, h, w)
    params = KerasParams(width_shift_range=0.25, height_shift_range=0.125)
    s = sample(params, 64, h, w, torch.Generator().manual_seed(2))
    assert s.ty.abs().max() <= 0.25 * w and s.ty.abs().max() > 0.2 * w  # columns: width
    assert s.tx.abs().max() <= 0.125 * h and s.tx.abs().max() > 0.1 * h  # rows: height
    assert not torch.equal(s.ty, s.ty.round())  # fractions of the size: not whole pixels
    rows, cols = centroid(apply(x, s, params))
    torch.testing.assert_close(rows, 11.5 - s.tx.double(), atol=1e-3, rtol=0)
    torch.testing.assert_close(cols, 19.5 - s.ty.double(), atol=1e-3, rtol=0)


@pytest.mark.parametrize(("theta", "where"), [(90.0, (3, 8)), (-90.0, (7, 2))])
def test_rotation_by_90_degrees_follows_keras_matrix(theta, where):
    # Output (r, c) samples input o + R(theta) @ ((r, c) - o), R = [[cos, -sin], [sin, cos]],
    # o = (9 / 2 + 0.5,) * 2: a positive angle takes the top-left mark to the top right (as
    # displayed, row 0 on top), a negative one to the bottom left.
    x = torch.zeros(1, 1, 9, 9)
    x[..., 2, 3] = 255.0
    out = apply(x, fixed(theta=theta), KerasParams(rotation_range=90.0, fill_mode="constant"))
    assert out[0, 0, where[0], where[1]] == pytest.approx(255.0, abs=1e-3)
    assert out.sum() == pytest.approx(255.0, abs=1e-2)


def test_horizontal_and_vertical_flips_reverse_columns_and_rows():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    params = KerasParams(horizontal_flip=True, vertical_flip=True)
    out = apply(x, fixed(2, flip_h=[True, False], flip_v=[False, False]), params)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    out = apply(x, fixed(2, flip_h=[False, True], flip_v=[False, True]), params)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1).flip(-2))


def test_flips_come_after_the_affine_as_in_keras():
    x = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 6).expand(1, 1, 3, 6)
    params = KerasParams(width_shift_range=2, horizontal_flip=True)
    out = apply(x, fixed(ty=2.0, flip_h=True), params)
    shifted = apply(x, fixed(ty=2.0), params)
    # flipped first, the shift would give [3, 2, 1, 0, 0, 0]; the flip rides in the warp's
    # map, so the two differ only by grid_sample's [-1, 1] round trip
    torch.testing.assert_close(out, shifted.flip(-1), atol=1e-3, rtol=0)


@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect", "wrap"])
def test_flips_folded_into_the_warp_equal_flipping_the_warped_images(mode):
    g = torch.Generator().manual_seed(11)
    n, h, w = 16, 11, 14
    x = torch.rand(n, 2, h, w, generator=g) * 255
    affine = {"rotation_range": 40, "width_shift_range": 0.3, "zoom_range": (0.7, 1.3)}
    flipping = KerasParams(**affine, horizontal_flip=True, vertical_flip=True, fill_mode=mode)
    s = sample(flipping, n, h, w, g)
    assert s.flip_h.any() and s.flip_v.any() and not s.flip_h.all()
    warped = apply(x, s, KerasParams(**affine, fill_mode=mode))
    expected = torch.where(s.flip_h.view(-1, 1, 1, 1), warped.flip(-1), warped)
    expected = torch.where(s.flip_v.view(-1, 1, 1, 1), expected.flip(-2), expected)
    torch.testing.assert_close(apply(x, s, flipping), expected, atol=1e-3 * 255, rtol=0)


# Row [10 .. 60] shifted by ty columns: the two border columns the shift uncovers.
BORDERS = {
    ("constant", 2): [5, 5],  # cval
    ("nearest", 2): [60, 60],  # edge repeated
    ("reflect", 2): [60, 50],  # d c b a | a b c d | d c b a
    ("wrap", 2): [20, 30],  # scipy's 'wrap': period size - 1, the ends overlap
    ("constant", -2): [5, 5],
    ("nearest", -2): [10, 10],
    ("reflect", -2): [20, 10],
    ("wrap", -2): [40, 50],
}


@pytest.mark.parametrize(("mode", "ty"), list(BORDERS))
def test_fill_mode_values_at_the_border_after_a_shift(mode, ty):
    x = (10 * torch.arange(1, 7, dtype=torch.float32)).view(1, 1, 1, 6).expand(1, 1, 4, 6)
    params = KerasParams(width_shift_range=2, fill_mode=mode, cval=5.0)
    out = apply(x, fixed(ty=float(ty)), params)[0, 0]
    uncovered = out[:, 4:] if ty > 0 else out[:, :2]
    kept = out[:, :4] if ty > 0 else out[:, 2:]
    close = {"atol": 1e-3, "rtol": 0}  # grid_sample's [-1, 1] round trip: ~1e-6 pixel
    torch.testing.assert_close(kept, x[0, 0, :, 2:] if ty > 0 else x[0, 0, :, :4], **close)
    expected = torch.tensor([BORDERS[mode, ty]] * 4, dtype=torch.float32)
    torch.testing.assert_close(uncovered, expected, **close)


def keras_matrix(theta, tx, ty, shear, zx, zy, h, w) -> np.ndarray:
    """keras_preprocessing's apply_affine_transform matrix, transcribed in numpy."""
    theta, shear = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0]])
    shift = np.array([[1, 0, tx], [0, 1, ty]])
    shearing = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0]])
    m = np.eye(3)
    for part in (rotation, shift, shearing, zoom):
        m = m @ np.vstack([part, [0, 0, 1]])
    o_x, o_y = h / 2 + 0.5, w / 2 + 0.5  # transform_matrix_offset_center(matrix, h, w)
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return offset @ m @ reset


def test_matrices_compose_rotation_shift_shear_zoom_about_keras_centre():
    params = KerasParams(
        rotation_range=60, width_shift_range=0.4, height_shift_range=0.3, shear_range=30,
        zoom_range=(0.5, 1.6),
    )  # fmt: skip
    h, w = 13, 21
    s = sample(params, 16, h, w, torch.Generator().manual_seed(4))
    got = matrices(s, h, w).double().numpy()
    for i in range(16):
        values = [getattr(s, k)[i].item() for k in ("theta", "tx", "ty", "shear", "zx", "zy")]
        np.testing.assert_allclose(got[i], keras_matrix(*values, h, w), atol=1e-4)


@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect", "wrap"])
def test_fill_modes_match_scipy_affine_transform_on_random_matrices(mode):
    ndimage = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(3)
    n, c, h, w = 8, 2, 13, 17
    x = torch.rand(n, c, h, w, generator=g) * 255
    params = KerasParams(
        rotation_range=60, width_shift_range=0.4, height_shift_range=0.4, shear_range=30,
        zoom_range=(0.5, 1.6), fill_mode=mode, cval=31.0,
    )  # fmt: skip
    s = sample(params, n, h, w, g)
    m, out = matrices(s, h, w).double().numpy(), apply(x, s, params).numpy()
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), np.ones(1), indexing="ij"), -1)
    for i in range(n):
        channels = x[i].double().numpy()
        kw = {"order": 1, "mode": mode, "cval": 31.0}
        ref = [ndimage.affine_transform(ch, m[i, :2, :2], m[i, :2, 2], **kw) for ch in channels]
        src = (grid[..., 0, :] @ m[i, :2].T).reshape(h, w, 2)
        tie = np.zeros((h, w), dtype=bool)
        if mode in ("constant", "wrap"):  # the fill switches at the edges: skip exact ties
            for axis, size in ((0, h), (1, w)):
                u = src[..., axis]
                tie |= (np.abs(u) < 1e-3) | (np.abs(u - (size - 1)) < 1e-3)
                if mode == "wrap":
                    tie |= np.abs(u / (size - 1) - np.round(u / (size - 1))) < 1e-3
        diff = np.abs(out[i] - np.stack(ref))[:, ~tie]
        assert diff.max() < 1e-3 * 255, (i, diff.max())


def test_zoom_below_one_enlarges_the_centre():
    # Keras's zoom matrix maps output to input: zx = zy = 0.5 samples the central half.
    x = square(16, 16, top=7, left=7, side=4)
    out = apply(x, fixed(zx=0.5, zy=0.5), KerasParams(zoom_range=(0.5, 1.5)))
    assert out.sum() / x.sum() == pytest.approx(4.0, rel=0.1)
    torch.testing.assert_close(out[..., 6:12, 6:12], torch.full((1, 1, 6, 6), 255.0))


def test_zoom_above_one_shrinks_and_fills_the_border():
    x = torch.full((1, 1, 16, 16), 100.0)
    params = KerasParams(zoom_range=(0.5, 2.0), fill_mode="constant", cval=7.0)
    out = apply(x, fixed(zx=2.0, zy=2.0), params)[0, 0]
    assert out[8, 8].item() == pytest.approx(100.0) and out[0, 0] == 7.0 and out[15, 15] == 7.0
    assert ((out - 100).abs() < 1e-3).sum() == pytest.approx(16 * 16 / 4, rel=0.3)


def test_zx_zooms_rows_and_zy_zooms_columns():
    x = square(16, 16, top=7, left=7, side=4)
    rows = apply(x, fixed(zx=0.5), KerasParams(zoom_range=(0.5, 1.5)))[0, 0]
    assert (rows[:, 8] > 1).sum() > 6 and (rows[8, :] > 1).sum() == 4


def test_positive_shear_slopes_a_horizontal_line_down_to_the_right():
    # Keras: output (r, c) samples row r - sin(shear) * (c - o_c), column cos(shear) * ...
    x = torch.zeros(1, 1, 21, 21)
    x[..., 10, :] = 255.0
    out = apply(x, fixed(shear=30.0), KerasParams(shear_range=30.0))[0, 0]
    for col, row in ((11, 10), (19, 14), (3, 6)):  # o_c = 21 / 2 + 0.5 = 11, sin 30 = 1/2
        assert out[row, col] == pytest.approx(255.0, abs=1e-2)
        assert out[:, col].sum() == pytest.approx(255.0, abs=1e-2)


def test_channel_shift_adds_one_intensity_and_clips_to_the_image_range():
    x = torch.tensor([[10.0, 50.0], [90.0, 200.0]]).view(1, 1, 2, 2).repeat(2, 3, 1, 1)
    x[:, 1] += 5.0  # channel 1 holds the image's maximum, 205
    params = KerasParams(channel_shift_range=100.0)
    out = apply(x, fixed(2, channel_shift=[30.0, -60.0]), params)
    torch.testing.assert_close(out[0], (x[0] + 30).clamp(10, 205))
    torch.testing.assert_close(out[1], (x[1] - 60).clamp(10, 205))


def test_brightness_multiplies_and_clips_to_0_255():
    x = torch.tensor([0.0, 100.0, 200.0, 250.0]).view(1, 1, 2, 2).repeat(2, 3, 1, 1)
    params = KerasParams(brightness_range=(0.5, 1.5))
    out = apply(x, fixed(2, brightness=[0.5, 1.5]), params)
    torch.testing.assert_close(out[0], x[0] * 0.5)
    torch.testing.assert_close(out[1], (x[1] * 1.5).clamp(0, 255))
