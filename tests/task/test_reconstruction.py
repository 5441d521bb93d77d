"""The reconstruction task's loss and statistics on known images, against Keras's definitions
and scikit-image's metrics."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cnnlab.task.reconstruction import (
    PERFECT_PSNR,
    Reconstruction,
    accuracy_ceiling,
    image_metrics,
    split_metrics,
)

TASK = Reconstruction("binary_crossentropy", "sigmoid")


def pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 targets (mostly 0 and 255, some grey) and noisy 0..1 outputs."""
    rng = np.random.default_rng(seed)
    targets = np.where(rng.random((6, 1, 28, 28)) > 0.7, 255, 0).astype(np.uint8)
    targets[:, :, 10, 3:9] = 128
    outputs = np.clip(targets / 255 + rng.normal(0, 0.2, targets.shape), 0, 1)
    return targets, outputs.astype(np.float32)


def test_keras_binary_accuracy_counts_only_pixels_whose_target_is_exactly_0_or_1():
    targets = torch.tensor([[[[0, 255, 128, 255]]]], dtype=torch.uint8)
    outputs = torch.tensor([[[[0.2, 0.7, 0.9, 0.4]]]])
    truth = targets.float() / 255
    # Keras: y_true == (y_pred > 0.5): right, right, never (0.502 is not 1), wrong
    assert TASK.keras_accuracy(outputs, truth).item() == pytest.approx(0.5)
    # binarised both at 0.5: the grey 128 (0.502) counts as 1, so the third pixel is right
    assert TASK.threshold_accuracy(outputs, truth).item() == pytest.approx(0.75)


def test_the_ceiling_is_the_share_of_target_pixels_at_0_or_255():
    targets, _ = pair()
    expected = np.mean((targets == 0) | (targets == 255))
    assert accuracy_ceiling(targets) == pytest.approx(expected)
    # a perfect copy reaches the ceiling and no more
    perfect = torch.from_numpy(targets.astype(np.float32) / 255)
    accuracy = TASK.keras_accuracy(perfect, perfect).mean().item()
    assert accuracy == pytest.approx(expected)
    assert expected < 1


def test_psnr_and_ssim_match_scikit_image():
    """PSNR equals scikit-image's. SSIM maps agree wherever the 11x11 window lies inside the
    image; scikit-image averages only there, torchmetrics (ours) over the whole image, its
    edges reflect-padded, so the borders make the means differ a little."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    targets, outputs = pair()
    per_image = image_metrics(TASK, outputs, targets)
    truth = torch.from_numpy(targets).float() / 255
    _, full = structural_similarity_index_measure(
        torch.from_numpy(outputs), truth, data_range=1.0, reduction="none", return_full_image=True
    )
    for k, (target, output) in enumerate(zip(targets, outputs, strict=True)):
        clean, noisy = target[0] / 255, output[0].astype(np.float64)
        psnr = peak_signal_noise_ratio(clean, noisy, data_range=1.0)
        assert per_image[k, 3] == pytest.approx(psnr, abs=1e-3)
        ssim = structural_similarity(
            clean,
            noisy,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert full[k, 0, 5:-5, 5:-5].mean().item() == pytest.approx(ssim, abs=1e-4)
        assert per_image[k, 4] == pytest.approx(full[k].mean().item(), abs=1e-6)
        assert abs(per_image[k, 4] - ssim) < 0.05


def test_an_exact_copy_has_ssim_one_and_a_finite_psnr():
    targets, _ = pair()
    copy = targets.astype(np.float32) / 255
    per_image = image_metrics(TASK, copy, targets)
    assert np.allclose(per_image[:, 4], 1.0, atol=1e-5)
    assert np.allclose(per_image[:, 3], PERFECT_PSNR)


def test_bce_is_kerass_mean_per_image_from_logits_and_from_probabilities():
    targets, outputs = pair()
    target_t = torch.from_numpy(targets)
    probabilities = torch.from_numpy(outputs).clamp(1e-4, 1 - 1e-4)
    logits = torch.logit(probabilities)
    truth = target_t.float() / 255
    keras = -(truth * probabilities.log() + (1 - truth) * (1 - probabilities).log())
    per_image = keras.flatten(1).mean(1)
    assert TASK.loss(logits, target_t).item() == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert TASK.loss(logits, target_t, "sum").item() == pytest.approx(
        per_image.sum().item(), rel=1e-5
    )
    assert TASK.prediction_loss(probabilities, target_t).item() == pytest.approx(
        per_image.sum().item(), rel=1e-4
    )


@pytest.mark.parametrize(("loss", "distance"), [("mse", np.square), ("l1", np.abs)])
def test_mse_and_l1_compare_the_sigmoid_outputs(loss, distance):
    targets, outputs = pair()
    task = Reconstruction(loss, "sigmoid")
    logits = torch.logit(torch.from_numpy(outputs).clamp(1e-4, 1 - 1e-4))
    expected = distance(torch.sigmoid(logits).numpy() - targets / 255).mean()
    assert task.loss(logits, torch.from_numpy(targets)).item() == pytest.approx(expected, rel=1e-5)


def test_binary_crossentropy_needs_a_sigmoid():
    with pytest.raises(ValueError, match="sigmoid"):
        Reconstruction("binary_crossentropy", None)


def test_batch_statistics_add_up_to_the_split_means():
    targets, outputs = pair()
    logits = torch.logit(torch.from_numpy(outputs).clamp(1e-4, 1 - 1e-4))
    sums = TASK.batch_stats(logits, torch.from_numpy(targets)).numpy()
    per_image = image_metrics(TASK, torch.sigmoid(logits).numpy(), targets)
    entry = split_metrics(per_image, targets)
    assert sums[0] / len(targets) == pytest.approx(entry["accuracy"], rel=1e-6)
    assert sums[1] / len(targets) == pytest.approx(entry["threshold_accuracy"], rel=1e-6)
    assert sums[2] / len(targets) == pytest.approx(entry["psnr"], rel=1e-5)
    assert entry["count"] == len(targets)
