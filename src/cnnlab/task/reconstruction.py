"""Reconstruction (image to image, S4's second half): the target is an image, the loss and the
statistics compare the network's output image with it pixel by pixel.

Targets arrive as the uint8 images (N, C, H, W) the data holds and are compared on 0..1, as
S4's `y / 255`. Statistics, per image and then averaged over images:

- accuracy: Keras's `accuracy` with a binary cross-entropy loss, i.e. binary_accuracy,
  `y_true == (y_pred > threshold)`. A target pixel strictly between 0 and 1 never counts as
  right, so the data sets a ceiling below 1: `accuracy_ceiling`, the share of target pixels
  that are exactly 0 or 1 (split_metrics reports it beside the score).
- threshold_accuracy: target and output both binarised at the threshold, then compared.
- psnr: torchmetrics' peak signal-to-noise ratio on 0..1 (an exact copy, infinite there, is
  counted as PERFECT_PSNR dB so that means stay finite).
- ssim (evaluation only; too slow per step): torchmetrics' structural similarity, its default
  11x11 Gaussian window of sigma 1.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

PERFECT_PSNR = 100.0  # dB counted for an exact reconstruction (mse 0)
EPSILON = 1e-7  # Keras's clip of probabilities in binary cross-entropy
CHUNK = 1024  # images per pass of the split metrics


def scaled(targets: torch.Tensor) -> torch.Tensor:
    return targets.float() / 255


def per_image_psnr(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    values = peak_signal_noise_ratio(
        outputs.float(), targets, data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return values.nan_to_num(posinf=PERFECT_PSNR).clamp(max=PERFECT_PSNR)


def per_image_ssim(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    # the default 11x11 window, smaller for images smaller than it (torchmetrics needs it odd
    # and no larger than the image)
    side = min(11, *targets.shape[-2:])
    side -= 1 - side % 2
    values = structural_similarity_index_measure(
        outputs.float(), targets, data_range=1.0, reduction="none", kernel_size=side
    )
    assert isinstance(values, torch.Tensor)  # a tuple only with return_full_image
    return values


class Reconstruction:
    stat_names: tuple[str, ...] = ("accuracy", "threshold_accuracy", "psnr")
    num_targets = 0  # no soft class targets: nothing is mixed

    def __init__(self, loss: str, head_activation: str | None, threshold: float = 0.5):
        if loss == "binary_crossentropy" and head_activation != "sigmoid":
            raise ValueError("binary_crossentropy needs a final sigmoid")
        self.loss_name, self.sigmoid, self.threshold = loss, head_activation == "sigmoid", threshold

    # --- what the loop and inference call -------------------------------------------------------

    def loss(
        self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """Each image's mean over its pixels (Keras's loss of one sample), then the batch's
        mean ("mean"), sum ("sum") or each ("none")."""
        outputs, truth = outputs.float(), scaled(targets)
        if self.loss_name == "binary_crossentropy":
            pixels = F.binary_cross_entropy_with_logits(outputs, truth, reduction="none")
        else:
            predicted = self.predictions(outputs)
            distance = F.mse_loss if self.loss_name == "mse" else F.l1_loss
            pixels = distance(predicted, truth, reduction="none")
        return _reduced(pixels.flatten(1).mean(1), reduction)

    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.prediction_stats(self.predictions(outputs.detach()), targets)

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """The output image on 0..1 (the sigmoid of the logits), or as given without one."""
        return torch.sigmoid(outputs.float()) if self.sigmoid else outputs.float()

    def prediction_loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.image_losses(predictions, targets).sum()

    def prediction_stats(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        truth = scaled(targets)
        return torch.stack(
            [
                self.keras_accuracy(predictions, truth).sum(),
                self.threshold_accuracy(predictions, truth).sum(),
                per_image_psnr(predictions, truth).sum(),
            ]
        ).double()

    # --- per image ------------------------------------------------------------------------------

    def image_losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) losses of output images on 0..1 (Keras clips them to [1e-7, 1 - 1e-7])."""
        truth = scaled(targets)
        if self.loss_name == "binary_crossentropy":
            p = predictions.float().clamp(EPSILON, 1 - EPSILON)
            pixels = -(truth * p.log() + (1 - truth) * (1 - p).log())
        elif self.loss_name == "mse":
            pixels = (predictions - truth) ** 2
        else:
            pixels = (predictions - truth).abs()
        return pixels.flatten(1).mean(1)

    def keras_accuracy(self, predictions: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        binary = (predictions > self.threshold).float()
        return (binary == truth).float().flatten(1).mean(1)

    def threshold_accuracy(self, predictions: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        same = (predictions > self.threshold) == (truth > self.threshold)
        return same.float().flatten(1).mean(1)

    def image_metrics(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, 5): loss, accuracy, threshold_accuracy, psnr, ssim of each image."""
        truth = scaled(targets)
        return torch.stack(
            [
                self.image_losses(predictions, targets),
                self.keras_accuracy(predictions, truth),
                self.threshold_accuracy(predictions, truth),
                per_image_psnr(predictions, truth),
                per_image_ssim(predictions, truth),
            ],
            dim=1,
        )


IMAGE_METRICS = ("loss", "accuracy", "threshold_accuracy", "psnr", "ssim")


def _reduced(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def image_metrics(task: Reconstruction, predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N, 5) IMAGE_METRICS of each image of a split, in chunks."""
    rows = [
        task.image_metrics(
            torch.from_numpy(predictions[start : start + CHUNK]),
            torch.from_numpy(np.ascontiguousarray(targets[start : start + CHUNK])),
        )
        for start in range(0, len(targets), CHUNK)
    ]
    return torch.cat(rows).numpy() if rows else np.zeros((0, len(IMAGE_METRICS)))


def accuracy_ceiling(targets: np.ndarray) -> float:
    """The best Keras binary accuracy the data allows: the share of target pixels that are
    exactly 0 or 1 (uint8 0 or 255), as every other pixel is wrong whatever the output."""
    extreme = 0
    for start in range(0, len(targets), CHUNK):
        chunk = np.asarray(targets[start : start + CHUNK])
        extreme += int(np.count_nonzero((chunk == 0) | (chunk == 255)))
    return extreme / max(int(np.prod(targets.shape)), 1)


def split_metrics(per_image: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """metrics.json's entry for one split: the means of IMAGE_METRICS and the ceiling."""
    means = per_image.mean(0) if len(per_image) else np.full(len(IMAGE_METRICS), np.nan)
    entry: dict[str, Any] = {name: float(v) for name, v in zip(IMAGE_METRICS, means, strict=True)}
    entry["accuracy_ceiling"] = accuracy_ceiling(targets)
    entry["count"] = len(per_image)
    return entry
