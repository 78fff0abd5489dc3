"""MC dropout (Gal & Ghahramani 2016): dropout kept on at prediction time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import noise
from .map import MAPNet
from .primary import WeightLayer, run_layers, shared_layer


class MCDropoutNet(MAPNet):
    """A network with dropout on the input of each weight layer, also at prediction.

    Each posterior sample is one dropout mask per layer, shared by the whole batch, so
    samples are coherent functions (what BALD and Thompson sampling need). Training uses
    ordinary per-example dropout, whose marginal over each example is the same.
    Rates come from the architecture (``p_input``/``p_hidden`` for the MLP; after the pooling
    layer and before the output layer for the CNN, as in Gal et al. 2017).

    Args:
        weight_decay: L2 penalty on the weights, as for MAP (Gal's prior length-scale term;
            like MAP's, not divided by ``n_data``: see :class:`~safety_bhn.core.map.MAPNet`).
        prob_clip: clip the true class's probability in the training loss (0: off; see
            :meth:`UncertaintyModel.nll`).
    """

    method = "mc_dropout"
    default_samples = 100

    def __init__(
        self,
        layers: Sequence[WeightLayer],
        config: dict[str, Any],
        weight_decay: float = 1e-5,
        prob_clip: float = 0.0,
    ) -> None:
        super().__init__(layers, config, weight_decay, prob_clip)
        for layer in self.layers:
            if not 0.0 <= layer.dropout < 1.0:
                raise ValueError(f"dropout rates must lie in [0, 1), got {layer.dropout}")

    def draw(
        self, n_samples: int, generator: torch.Generator | None = None
    ) -> tuple[int, list[Tensor | None]]:
        """Return ``(n_samples, masks)``: one mask ``(n_samples, 1, *in_shape)`` per layer
        (``None`` for a layer without dropout), ``in_shape`` being that layer's input."""
        masks: list[Tensor | None] = []
        for layer in self.layers:
            if layer.dropout == 0.0:
                masks.append(None)
                continue
            keep = noise.bernoulli(1.0 - layer.dropout, (n_samples, 1, *layer.in_shape),
                                   generator, self.device)  # fmt: skip
            masks.append(keep / (1.0 - layer.dropout))
        return n_samples, masks

    def forward_draw(self, x: Tensor, draw: tuple[int, list[Tensor | None]]) -> Tensor:
        n, masks = draw

        def apply(i: int, layer: WeightLayer, h: Tensor) -> Tensor:
            if masks[i] is not None:
                h = h * masks[i]
            return shared_layer(layer, h, self.net[i].weight, self.net[i].bias)

        return run_layers(self.layers, x, apply).expand(n, -1, -1)

    def loss(self, x: Tensor, y: Tensor, n_data: int, kl_weight: float = 1.0) -> Tensor:
        def apply(i: int, layer: WeightLayer, h: Tensor) -> Tensor:
            h = F.dropout(h, layer.dropout, training=True)
            return shared_layer(layer, h, self.net[i].weight, self.net[i].bias)

        logits = run_layers(self.layers, x, apply)[0]
        return self.nll(logits, y) + self.weight_penalty()
