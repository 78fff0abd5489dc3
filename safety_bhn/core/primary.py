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
        raise ValueError(f"in_shape {tuple(in_shape)} is too small for the CNN (needs >= 8x8)")
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


def max_pool_2x2(h: Tensor) -> Tensor:
    """2x2 max pooling with stride 2 over the last two axes: ``F.max_pool2d(h, 2)``'s values.

    ``h`` is ``(S, B, C, H, W)``; an odd last row or column is dropped, as ``F.max_pool2d``
    does. Without autograd, two elementwise maxima of strided views give the same values
    about ten times as fast as ``F.max_pool2d`` on CPU tensors in NCHW layout (torch 2.13, one
    thread); this is most of the time saved in sampled CNN prediction (``python
    benchmarks/speed.py --arch cnn``). Under autograd ``F.max_pool2d`` stays, because the
    backward of ``torch.maximum`` costs more than the forward saves.
    """
    if torch.is_grad_enabled() and h.requires_grad:
        return per_sample(lambda t: F.max_pool2d(t, 2), h)
    h = h[..., : h.shape[-2] // 2 * 2, : h.shape[-1] // 2 * 2]
    rows = torch.maximum(h[..., 0::2, :], h[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


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
