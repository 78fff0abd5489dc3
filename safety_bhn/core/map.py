"""MAP: a plain network trained with weight decay, the deterministic reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_real
from .base import UncertaintyModel
from .primary import WeightLayer, run_layers, shared_layer


def make_module(layer: WeightLayer) -> nn.Module:
    """The ``nn.Linear`` / ``nn.Conv2d`` for a layer spec (PyTorch's default initialisation)."""
    if layer.kind == "linear":
        return nn.Linear(layer.in_features, layer.out_features)
    return nn.Conv2d(layer.in_features, layer.out_features, layer.kernel_size)


class MAPNet(UncertaintyModel):
    """A plain network; every "posterior sample" is the same network.

    Args:
        weight_decay: L2 penalty ``weight_decay * sum ||w||^2`` added to the mean NLL
            (a Gaussian prior on the weights, so this is a MAP estimate). It is not divided
            by the data size ``n_data``, so the prior it stands for tightens as the data
            grow (variance ``1 / (2 * weight_decay * n_data)``); Gal et al.'s active-learning
            code instead scaled it as ``c / n_data``. The BHN and factorial VI divide their KL
            term by ``n_data``.
        prob_clip: clip the true class's probability to ``[prob_clip, 1 - prob_clip]`` in
            the training loss (0: off; see :meth:`UncertaintyModel.nll`).
    """

    method = "map"
    default_samples = 1

    def __init__(
        self,
        layers: Sequence[WeightLayer],
        config: dict[str, Any],
        weight_decay: float = 1e-5,
        prob_clip: float = 0.0,
    ) -> None:
        super().__init__(layers, config, prob_clip)
        weight_decay = check_real("weight_decay", weight_decay, 0.0)
        self.weight_decay = weight_decay
        self.net = nn.ModuleList(make_module(layer) for layer in self.layers)

    def draw(self, n_samples: int, generator: torch.Generator | None = None) -> int:
        return n_samples

    def forward_draw(self, x: Tensor, draw: int) -> Tensor:
        def apply(i: int, layer: WeightLayer, h: Tensor) -> Tensor:
            return shared_layer(layer, h, self.net[i].weight, self.net[i].bias)

        return run_layers(self.layers, x, apply).expand(draw, -1, -1)

    def weight_penalty(self) -> Tensor:
        return self.weight_decay * sum(m.weight.pow(2).sum() for m in self.net)

    def loss(self, x: Tensor, y: Tensor, n_data: int, kl_weight: float = 1.0) -> Tensor:
        logits = self.forward_draw(x, 1)[0]
        return self.nll(logits, y) + self.weight_penalty()
