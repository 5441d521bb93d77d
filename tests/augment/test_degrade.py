"""reconstruction.degrade: each step's shape and statistics, scikit-image's resize matched, and
the seeding that makes training repeatable and evaluation fixed."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.transform import resize as skimage_resize

from cnnlab.augment import degrade
from cnnlab.augment.degrade import Degradation, DegradeTransform, degrade_once, seeded
from cnnlab.augment.normalize import Normalization
from cnnlab.config import DegradeStep, ResizeStep

SCALE = Normalization(rescale=1 / 255)


def steps(*entries: dict) -> Degradation:
    return Degradation([DegradeStep.model_validate(entry) for entry in entries])


def digits(n: int = 16, size: int = 28) -> np.ndarray:
    """Digit-like uint8 images: mostly 0, strokes of 255 with grey edges."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 1, size, size), dtype=np.uint8)
    for image in images:
        top, left = rng.integers(4, size // 2, size=2)
        image[0, top : top + 10, left : left + 4] = 255
        image[0, top - 1, left : left + 4] = rng.integers(1, 255)
    return images


@pytest.mark.parametrize("size", [(7, 7), (10, 9), (56, 40), (3, 50)])
def test_skimage_resize_matches_scikit_image(size):
    images = digits()
    ours = degrade.resize(torch.from_numpy(images).float() / 255, ResizeStep(size=size))
    theirs = np.stack([skimage_resize(image[0] / 255, size) for image in images])
    assert ours.shape == (len(images), 1, *size)
    assert np.abs(ours[:, 0].numpy() - theirs).max() < 1e-5


def test_blur_matches_scipy_with_mirrored_edges():
    images = torch.rand(4, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    ours = degrade.gaussian_blur(images, (1.3, 1.3)).numpy()
    theirs = np.stack(
        [
            [ndimage.gaussian_filter(c, 1.3, mode="mirror") for c in image]
            for image in images.numpy()
        ]
    )
    assert np.abs(ours - theirs).max() < 1e-5


def test_invert_flips_a_fraction_p_of_pixels_to_one_minus_themselves():
    images = torch.full((64, 1, 28, 28), 0.2)
    out = steps({"invert": {"p": 0.1}})(images, seeded("t", torch.device("cpu")))
    flipped = torch.isclose(out, torch.tensor(0.8))
    assert torch.isclose(out, torch.tensor(0.2)).logical_or(flipped).all()
    assert abs(flipped.float().mean().item() - 0.1) < 0.01  # 50,176 draws: std 0.0013


def test_invert_flips_every_channel_of_a_pixel_together():
    images = torch.zeros(8, 3, 16, 16)
    out = steps({"invert": {"p": 0.5}})(images, seeded("t", torch.device("cpu")))
    assert (out.amin(1) == out.amax(1)).all()


def test_gaussian_noise_has_the_std_and_stays_in_range():
    images = torch.full((32, 1, 32, 32), 0.5)
    out = steps({"gaussian_noise": {"std": 0.05}})(images, seeded("t", torch.device("cpu")))
    assert out.min() >= 0 and out.max() <= 1
    assert abs((out - 0.5).std().item() - 0.05) < 0.002
    assert abs((out - 0.5).mean().item()) < 0.002


def test_mask_covers_one_square_of_the_size_per_patch():
    images = torch.ones(20, 1, 28, 28)
    out = steps({"mask": {"patches": 1, "size": 6}})(images, seeded("t", torch.device("cpu")))
    assert ((out == 0).flatten(1).sum(1) == 36).all()
    rows = (out[:, 0] == 0).any(2).sum(1)
    assert (rows == 6).all()  # a 6x6 square, not scattered pixels


def test_steps_compose_in_order_and_give_the_network_input_shape():
    chain = steps({"resize": {"size": [7, 7]}}, {"invert": {"p": 0.1}}, {"blur": {"sigma": 0.5}})
    assert chain.output_shape((28, 28, 1)) == (7, 7, 1)
    out = chain(torch.rand(3, 1, 28, 28), seeded("t", torch.device("cpu")))
    assert out.shape == (3, 1, 7, 7)


def test_training_draws_repeat_per_epoch_and_differ_between_epochs():
    chain = steps({"invert": {"p": 0.3}}, {"gaussian_noise": {"std": 0.1}})
    images = torch.from_numpy(digits())
    transform = DegradeTransform(chain, SCALE, torch.contiguous_format, 5, torch.device("cpu"))
    transform.begin_epoch(3)
    first = transform(images)
    transform.begin_epoch(4)
    other = transform(images)
    transform.begin_epoch(3)  # a resumed run replays epoch 3
    assert torch.equal(transform(images), first)
    assert not torch.equal(other, first)


def test_a_split_is_degraded_the_same_whatever_the_chunking(monkeypatch):
    chain = steps({"resize": {"size": [7, 7]}}, {"invert": {"p": 0.1}})
    images = digits(40)
    once = degrade_once(images, chain, SCALE, "0:test", torch.device("cpu"))
    assert once.dtype == np.float32 and once.shape == (40, 1, 7, 7)
    assert np.array_equal(degrade_once(images, chain, SCALE, "0:test", torch.device("cpu")), once)
    assert not np.array_equal(
        degrade_once(images, chain, SCALE, "0:val", torch.device("cpu")), once
    )


def test_nothing_to_degrade_keeps_the_uint8_images():
    images = digits(4)
    assert degrade_once(images, Degradation([]), SCALE, "k", torch.device("cpu")) is images


def test_a_step_names_exactly_one_operation():
    with pytest.raises(ValueError, match="each step is one of"):
        DegradeStep.model_validate({"resize": {"size": [7, 7]}, "invert": {"p": 0.1}})
