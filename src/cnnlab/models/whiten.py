"""The first convolution as a patch-whitening layer, set from the training images (airbench).

airbench94 starts its network with a 2x2 convolution whose kernels are not learned: they are
the eigenvectors of the covariance of the 2x2 patches (C x 2 x 2 = 12 values) of training
images, each divided by sqrt(eigenvalue + eps), so the layer's outputs are uncorrelated with
unit variance, and, its 24 filters being twice 12, also their negatives (the GELU after it
then passes each direction's positive and negative half). Here `model.whiten_first_conv` does
that for the first Conv2D of any layer list: its filters must number C x kh x kw (the vectors)
or twice that (vectors and negatives); the bias, when the layer has one, is set so the outputs
have mean 0 and trains on. The covariance is centred (airbench's is not; its inputs are already
normalised to mean ~0, where the two agree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import WhitenConfig
from cnnlab.errors import ConfigError

KEY = "model.whiten_first_conv"
PATCH_VALUES_PER_CHUNK = 2**23  # patch values unfolded at once: 32 MB of float32


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first layer, which must be a plain Conv2D."""
    first = next(iter(model.children()), None)
    if not isinstance(first, nn.Conv2d) or first.groups != 1:
        kind = type(first).__name__ if first is not None else "nothing"
        raise ConfigError(
            f"{KEY}: whitens the first layer, which must be a Conv2D; this model starts with "
            f"{kind}: put a Conv2D first, or remove {KEY}"
        )
    return first


def patch_moments(
    conv: nn.Conv2d, inputs: Iterator[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and covariance (d, d) of every kh x kw patch (stride 1, the conv's dilation)
    of the model inputs, d = C x kh x kw values in the conv's own weight order."""
    total = 0
    sums: torch.Tensor | None = None
    products: torch.Tensor | None = None
    for x in inputs:
        # (B, d, L) -> (B * L, d): each row one patch, ordered as weight[o].flatten()
        patches = F.unfold(x.float(), conv.kernel_size, dilation=conv.dilation)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
        sums = rows.sum(0) if sums is None else sums + rows.sum(0)
        products = rows.T @ rows if products is None else products + rows.T @ rows
        total += rows.shape[0]
    if sums is None or products is None or total < 2:
        raise ConfigError(f"{KEY}: the training split has no patches to whiten with")
    mean = sums / total
    covariance = (products - total * torch.outer(mean, mean)) / (total - 1)
    return mean, covariance


def whitening_kernels(covariance: torch.Tensor, eps: float) -> torch.Tensor:
    """(d, d): row i is the i-th eigenvector (largest eigenvalue first) / sqrt(eigenvalue + eps),
    so K @ covariance @ K.T = diag(eigenvalue / (eigenvalue + eps)), nearly the identity."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp(min=0), eigenvectors.flip(1)
    return eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]


@torch.no_grad()
def whiten_first_conv(
    model: nn.Module,
    images: np.ndarray,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    cfg: WhitenConfig,
    seed: int,
    device: torch.device,
) -> nn.Conv2d:
    """Set the first Conv2D of `model` from up to `cfg.images` of `images` (uint8 N, C, H, W,
    drawn by `seed`), seen through `preprocess` (the run's normalisation), and freeze its
    kernels unless `cfg.trainable`."""
    conv = first_conv(model)
    d = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    if conv.out_channels not in (d, 2 * d):
        raise ConfigError(
            f"{KEY}: the first Conv2D has {conv.out_channels} filters; whitening its "
            f"{conv.in_channels} x {conv.kernel_size[0]} x {conv.kernel_size[1]} patches sets "
            f"{d} (the eigenvectors) or {2 * d} (and their negatives, as airbench's)"
        )
    count = min(cfg.images, len(images))
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))
    height, width = images.shape[2:]
    per_chunk = max(1, PATCH_VALUES_PER_CHUNK // (d * height * width))

    def inputs() -> Iterator[torch.Tensor]:
        for start in range(0, count, per_chunk):
            batch = torch.from_numpy(
                np.ascontiguousarray(images[chosen[start : start + per_chunk]])
            )
            yield preprocess(batch.to(device))

    mean, covariance = patch_moments(conv, inputs())
    kernels = whitening_kernels(covariance, cfg.eps)
    if conv.out_channels == 2 * d:
        kernels = torch.cat([kernels, -kernels])
    conv.weight.copy_(kernels.reshape(conv.weight.shape))
    if conv.bias is not None:  # outputs of mean 0 on the training images
        conv.bias.copy_(-(kernels @ mean.to(kernels.device)))
    conv.weight.requires_grad_(cfg.trainable)
    return conv
