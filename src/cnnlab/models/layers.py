"""PyTorch modules that compute what the Keras layer of the same name computes.

Tensors are N,C,H,W inside (what cuDNN wants); shapes users see are Keras's channels-last
(H, W, C). Three places where the two frameworks differ are handled here:
- "same" padding follows TensorFlow: output ceil(size / stride), and when the padding is odd the
  extra pixel goes to the bottom/right (PyTorch's symmetric padding cannot express that).
- Flatten orders features as H, W, C, so a Dense after it sees Keras's order.
- Kernels start glorot_uniform and biases at zero, Keras's defaults, so training from scratch
  behaves as in the reports (PyTorch's default kaiming_uniform(a=sqrt(5)) starts smaller).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

Pair = tuple[int, int]

# Keras activation names. leaky_relu's slope is Keras 3's activation default (0.2); the
# LeakyReLU *layer* uses 0.3, but only the string form is accepted here.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=1),  # dim 1 is channels: Keras's last axis
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,  # exact erf form, Keras's default (approximate=False)
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "linear": nn.Identity,
}


def make_activation(name: str | None) -> nn.Module:
    return ACTIVATIONS[name or "linear"]()


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> Pair:
    """TensorFlow's "same" padding of one axis as (before, after); after >= before."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def output_size(size: int, kernel: int, stride: int, padding: str, dilation: int = 1) -> int:
    """Keras's conv_output_length; zero or negative when the input is too small."""
    if padding == "same":
        return -(-size // stride)
    return (size - (kernel - 1) * dilation - 1) // stride + 1


def pad_same(
    x: torch.Tensor, kernel: Pair, stride: Pair, dilation: Pair = (1, 1), value: float = 0.0
) -> torch.Tensor:
    # Computed from the tensor, not fixed at build time: with stride > 1 the padding depends on
    # the input size, and Keras models accept other sizes than the one they were built for.
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1], dilation[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _symmetric_same(kernel: Pair, stride: Pair, dilation: Pair) -> Pair | None:
    """The padding PyTorch can do itself (stride 1, even total), else None."""
    totals = [(k - 1) * d for k, d in zip(kernel, dilation, strict=True)]
    if stride != (1, 1) or any(t % 2 for t in totals):
        return None
    return totals[0] // 2, totals[1] // 2


def glorot_init(layer: nn.Conv2d | nn.Linear) -> None:
    nn.init.xavier_uniform_(layer.weight)  # fans as Keras: in/out channels x kernel area
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def dirac_init(layer: nn.Conv2d) -> None:
    """glorot_uniform, then the first min(in, out) filters pass their own input channel
    through unchanged (torch's dirac_): airbench's "implicit residual", a deep stack of
    convolutions that starts close to the identity."""
    glorot_init(layer)
    with torch.no_grad():
        nn.init.dirac_(layer.weight[: layer.in_channels])


class Conv2D(nn.Conv2d):
    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: Pair,
        strides: Pair,
        padding: str,
        dilation_rate: Pair,
        use_bias: bool,
        activation: str | None,
        kernel_initializer: str = "glorot_uniform",
    ) -> None:
        # Symmetric "same" padding is left to cuDNN; only the asymmetric case pads by hand.
        builtin = None
        if padding == "same":
            builtin = _symmetric_same(kernel_size, strides, dilation_rate)
        super().__init__(
            in_channels,
            filters,
            kernel_size,
            stride=strides,
            padding=builtin or (0, 0),
            dilation=dilation_rate,
            bias=use_bias,
        )
        self.pad_same = padding == "same" and builtin is None
        self.activation = make_activation(activation)
        (dirac_init if kernel_initializer == "dirac" else glorot_init)(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_same:
            # nn.Conv2d keeps 2-tuples here; torch's stubs type them tuple[int, ...]
            x = pad_same(
                x, cast(Pair, self.kernel_size), cast(Pair, self.stride), cast(Pair, self.dilation)
            )
        return self.activation(super().forward(x))


class Dense(nn.Linear):
    def __init__(
        self, in_features: int, units: int, use_bias: bool, activation: str | None
    ) -> None:
        super().__init__(in_features, units, bias=use_bias)
        self.activation = make_activation(activation)
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:  # Keras applies Dense to the last axis, the channels of an image
            return self.activation(super().forward(x.movedim(1, -1)).movedim(-1, 1))
        return self.activation(super().forward(x))


class Pooling2D(nn.Module):
    def __init__(self, pool_size: Pair, strides: Pair, padding: str) -> None:
        super().__init__()
        self.pool_size, self.strides, self.padding = pool_size, strides, padding

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, strides={self.strides}, padding={self.padding!r}"


class MaxPooling2D(Pooling2D):
    def __init__(self, pool_size: Pair, strides: Pair, padding: str) -> None:
        super().__init__(pool_size, strides, padding)
        self.activation: nn.Module = nn.Identity()  # the ReLU of a Conv2D before it, moved here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":  # -inf never wins a max: padding is ignored, as in TF
            x = pad_same(x, self.pool_size, self.strides, value=float("-inf"))
        return self.activation(F.max_pool2d(x, self.pool_size, self.strides))


def relu_after_max_pooling(conv: nn.Module, pool: nn.Module) -> None:
    """Apply a Conv2D's ReLU after the MaxPooling2D that follows it instead of before.

    max(relu(x)) == relu(max(x)) and the gradients agree too (the same element wins each
    window, and ReLU passes nothing back where the winner is <= 0), so the model computes
    exactly what Keras's layers do, with the ReLU and its backward on a quarter of the pixels:
    1.1-1.2x faster training of the reports' models on the CPU, where those passes cost as
    much as a convolution's.
    """
    movable = isinstance(conv, Conv2D) and isinstance(conv.activation, nn.ReLU)
    if movable and isinstance(pool, MaxPooling2D) and isinstance(pool.activation, nn.Identity):
        conv.activation, pool.activation = nn.Identity(), conv.activation


class AveragePooling2D(Pooling2D):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding != "same":
            return F.avg_pool2d(x, self.pool_size, self.strides)
        # TF averages over the real pixels only; dividing by the pooled mask of ones gives
        # exactly that for the asymmetric padding, which avg_pool2d's own padding cannot.
        ones = x.new_ones((1, 1, *x.shape[-2:]))
        summed = F.avg_pool2d(
            pad_same(x, self.pool_size, self.strides), self.pool_size, self.strides
        )
        weight = F.avg_pool2d(
            pad_same(ones, self.pool_size, self.strides), self.pool_size, self.strides
        )
        return summed / weight


class GlobalAveragePooling2D(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x
        # H, W, C order, as Keras; free when the tensor is in channels_last memory format.
        return x.permute(0, 2, 3, 1).flatten(1)


class Dropout(nn.Dropout):
    """Keras's `rate` is the fraction dropped, as PyTorch's `p`."""


class BatchNormalization(nn.BatchNorm2d):
    """Normalises channels of an image or features of a vector (Keras's axis=-1).

    Keras's `scale: false` / `center: false` drop the learned scale (gamma) / offset (beta):
    the parameter is absent, as in Keras (its count too), and batch_norm treats it as 1 / 0.
    """

    def __init__(
        self,
        num_features: int,
        momentum: float,
        epsilon: float,
        center: bool = True,
        scale: bool = True,
    ) -> None:
        # Keras keeps `momentum` of the old moving average; PyTorch's momentum is the new share.
        super().__init__(num_features, eps=epsilon, momentum=1.0 - momentum)
        if not scale:
            self.register_parameter("weight", None)
        if not center:
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected a 2D or 4D input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training and input.numel() == input.shape[1]:  # one value per channel
            return self._one_value_per_channel(input)
        return super().forward(input)

    def _one_value_per_channel(self, input: torch.Tensor) -> torch.Tensor:
        """Keras's step on a batch of one sample after a Dense (a last partial batch), which
        PyTorch refuses: the batch's mean is that sample and its (biased) variance 0, so the
        output is beta and the moving variance decays towards 0. PyTorch's unbiased variance
        of one value would be nan and poison the running statistics."""
        share = self.momentum if self.momentum is not None else 1.0
        assert self.running_mean is not None and self.running_var is not None  # always tracked
        assert self.num_batches_tracked is not None
        with torch.no_grad():
            self.running_mean.lerp_(input.detach().flatten().to(self.running_mean), share)
            self.running_var.mul_(1.0 - share)
            self.num_batches_tracked.add_(1)
        centred = input - input.mean(dim=0, keepdim=True)  # zero, with its gradient path
        shape = (1, -1) + (1,) * (input.dim() - 2)
        out = centred * (1.0 / (self.eps**0.5))
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        return out


class Rescaling(nn.Module):
    """Keras's Rescaling: x * scale + offset; airbench scales its logits by 1/9."""

    def __init__(self, scale: float, offset: float) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset if self.offset else x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, offset={self.offset:g}"


class Activation(nn.Module):
    def __init__(self, activation: str | None) -> None:
        super().__init__()
        self.activation = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x)


class UpSampling2D(nn.Module):
    def __init__(self, size: Pair, interpolation: str) -> None:
        super().__init__()
        self.size, self.interpolation = size, interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # bilinear with align_corners=False is TF2's half-pixel resize, which Keras uses.
        return F.interpolate(
            x,
            scale_factor=self.size,
            mode=self.interpolation,
            align_corners=False if self.interpolation == "bilinear" else None,
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, interpolation={self.interpolation!r}"
