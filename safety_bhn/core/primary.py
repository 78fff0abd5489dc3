"""Primary-network architectures (MLP, LeNet-style CNN) as layer specs shared by every method.

Every method runs the same architecture; only how it obtains the weights of each layer
differs. Activations carry a leading *sample* dimension: ``h`` has shape
``(S, batch, *features)`` where ``S`` is 1 while all samples still share the same values
(for example before the first stochastic layer) and ``n_samples`` afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class WeightLayer:
    """One weight layer of a primary network.

    Attributes:
        kind: ``"linear"`` or ``"conv"``.
        in_features: input features (input channels for a convolution).
        out_features: output units (output channels); one weight-norm scale per unit.
        kernel_size: convolution kernel size (0 for linear layers).
        in_shape: shape of one example's input to this layer (for dropout masks).
        dropout: MC-dropout rate applied to this layer's input.
        after: operations applied to the output, in order: ``"relu"``, ``"pool"``, ``"flatten"``.
    """

    kind: str
    in_features: int
    out_features: int
    kernel_size: int
    in_shape: tuple[int, ...]
    dropout: float
    after: tuple[str, ...]


def mlp_layers(
    in_shape: Sequence[int],
    hidden: Sequence[int],
    n_classes: int,
    p_input: float = 0.2,
    p_hidden: float = 0.5,
) -> list[WeightLayer]:
    """Layers of an MLP ``prod(in_shape) -> hidden... -> n_classes`` with ReLU activations."""
    sizes = [math.prod(in_shape), *hidden, n_classes]
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        layers.append(
            WeightLayer(
                kind="linear",
                in_features=n_in,
                out_features=n_out,
                kernel_size=0,
                in_shape=(n_in,),
                dropout=p_input if i == 0 else p_hidden,
                after=() if last else ("relu",),
            )
        )
    return layers


def cnn_layers(
    in_shape: Sequence[int],
    n_classes: int,
    channels: int = 32,
    kernel_size: int = 4,
    dense: int = 128,
    p_conv: float = 0.25,
    p_hidden: float = 0.5,
) -> list[WeightLayer]:
    """Gal, Islam & Ghahramani (2017) LeNet-style net: conv-relu-conv-relu-pool-dense-relu-dense.

    Dropout (for MC dropout) sits where their Keras model had it: after the pooling layer
    (``p_conv``) and before the output layer (``p_hidden``).
    """
    c, h, w = in_shape
    h1, w1 = h - kernel_size + 1, w - kernel_size + 1
    h2, w2 = h1 - kernel_size + 1, w1 - kernel_size + 1
    hp, wp = h2 // 2, w2 // 2
    if hp < 1 or wp < 1:
        least = 2 * (kernel_size - 1) + 2  # two valid convolutions, then a 2x2 pool
        raise ValueError(
            f"in_shape {tuple(in_shape)} is too small for the CNN with kernel_size={kernel_size} "
            f"(needs at least {least}x{least}); pass larger inputs or a smaller kernel_size"
        )
    flat = channels * hp * wp
    return [
        WeightLayer("conv", c, channels, kernel_size, (c, h, w), 0.0, ("relu",)),
        WeightLayer("conv", channels, channels, kernel_size, (channels, h1, w1), 0.0,
                    ("relu", "pool", "flatten")),
        WeightLayer("linear", flat, dense, 0, (flat,), p_conv, ("relu",)),
        WeightLayer("linear", dense, n_classes, 0, (dense,), p_hidden, ()),
    ]  # fmt: skip


def per_sample(fn: Callable[[Tensor], Tensor], h: Tensor) -> Tensor:
    """Apply a batch-only op ``fn`` to ``h`` of shape ``(S, B, ...)`` by folding S into B."""
    s, b = h.shape[:2]
    out = fn(h.reshape(s * b, *h.shape[2:]))
    return out.reshape(s, b, *out.shape[1:])


def shared_layer(layer: WeightLayer, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Apply one weight tensor shared by every sample: ``h`` is ``(S, B, ...)``."""
    if layer.kind == "linear":
        return F.linear(h, weight, bias)
    return per_sample(lambda t: F.conv2d(t, weight, bias), h)


def batched_layer(layer: WeightLayer, h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Apply per-sample weights ``weight[S, out, ...]`` and ``bias[S, out]`` in one pass.

    ``h`` is ``(S, B, ...)`` or ``(1, B, ...)`` (broadcast to every sample). A convolution of
    a shared input is one convolution with every sample's kernels stacked as output channels;
    per-sample inputs take one convolution per sample, which on the CPU ran in half the time
    of a grouped convolution with one group per sample (Gal et al.'s CNN, 20 samples).
    """
    s = weight.shape[0]
    if layer.kind == "linear":
        return torch.baddbmm(bias.unsqueeze(1), h.expand(s, *h.shape[1:]), weight.transpose(1, 2))
    if h.shape[0] == 1:
        out = F.conv2d(h[0], weight.flatten(0, 1), bias.flatten())
        return out.unflatten(1, (s, -1)).transpose(0, 1)
    return torch.stack([F.conv2d(h[i], weight[i], bias[i]) for i in range(s)])


def _windows(h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four positions of every 2x2 window, in row-major order (odd last row/column off)."""
    h = h[..., : h.shape[-2] // 2 * 2, : h.shape[-1] // 2 * 2]
    return h[..., 0::2, 0::2], h[..., 0::2, 1::2], h[..., 1::2, 0::2], h[..., 1::2, 1::2]


def _window_max(h: Tensor) -> Tensor:
    """Maximum of every 2x2 window: two elementwise maxima of strided views."""
    a, b, c, d = _windows(h)
    return torch.maximum(torch.maximum(a, b), torch.maximum(c, d))


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max pooling whose backward sends each window's gradient to its first maximum.

    "First" is row-major order, the input that ``F.max_pool2d`` picks among equal values
    (its kernels keep the running maximum unless a later value is strictly larger), so the
    gradient is bit-identical to ``F.max_pool2d``'s for finite inputs (with a NaN in a window
    it goes to the window's last position, where ``F.max_pool2d`` picks a NaN).
    """

    @staticmethod
    def forward(ctx, h: Tensor) -> Tensor:  # type: ignore[override]
        out = _window_max(h)
        ctx.save_for_backward(h, out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        h, out = ctx.saved_tensors
        odd = h.shape[-2] % 2 or h.shape[-1] % 2  # a dropped row or column gets no gradient
        grad_in = torch.zeros_like(h) if odd else torch.empty_like(h)
        targets = _windows(grad_in)
        taken = torch.zeros_like(out, dtype=torch.bool)  # window whose maximum has its gradient
        for view, target in zip(_windows(h)[:3], targets[:3], strict=True):
            first = (view == out) & ~taken
            torch.mul(grad, first, out=target)
            taken |= first
        torch.mul(grad, ~taken, out=targets[3])
        return grad_in.add_(0.0)  # -0.0 (a negative gradient times False) becomes 0.0


def max_pool_2x2(h: Tensor) -> Tensor:
    """2x2 max pooling with stride 2 over the last two axes: ``F.max_pool2d(h, 2)``'s values.

    ``h`` is ``(S, B, C, H, W)``; an odd last row or column is dropped, as ``F.max_pool2d``
    does. Two elementwise maxima of strided views give the same values about ten times as
    fast as ``F.max_pool2d`` on CPU tensors in NCHW layout (torch 2.13, one thread); this is
    most of the time saved in sampled CNN prediction (``python benchmarks/speed.py --arch
    cnn``). Under autograd on a CPU, a custom backward gives the same gradients as
    ``F.max_pool2d`` (see :class:`_MaxPool2x2`); on other devices, where it has not been
    timed, ``F.max_pool2d`` stays under autograd.
    """
    if torch.is_grad_enabled() and h.requires_grad:
        if h.device.type == "cpu":
            return _MaxPool2x2.apply(h)
        return per_sample(lambda t: F.max_pool2d(t, 2), h)
    return _window_max(h)


def apply_after(layer: WeightLayer, h: Tensor) -> Tensor:
    """Apply the activation / pooling / flattening that follows a weight layer."""
    for op in layer.after:
        if op == "relu":
            h = F.relu(h, inplace=True)  # h is a fresh layer output that backward does not need
        elif op == "pool":
            h = max_pool_2x2(h)
        elif op == "flatten":
            h = h.flatten(2)
    return h


def run_layers(
    layers: Sequence[WeightLayer],
    x: Tensor,
    apply_layer: Callable[[int, WeightLayer, Tensor], Tensor],
) -> Tensor:
    """Run the network on ``x[B, *in_shape]``: returns ``(S, B, n_classes)``.

    ``apply_layer(i, layer, h)`` computes layer ``i``'s pre-activation; it may add the
    sample dimension (for example by scaling a shared product with per-sample scales).
    """
    h = x.unsqueeze(0)
    if layers[0].kind == "linear":
        h = h.flatten(2)
    for i, layer in enumerate(layers):
        h = apply_after(layer, apply_layer(i, layer, h))
    return h
