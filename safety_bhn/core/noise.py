"""Noise for posterior draws, made by a ``torch.Generator`` on any device."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_generator


def _where(generator: torch.Generator | None, device: torch.device) -> torch.device:
    """Draw on the generator's device (the global RNG of ``device`` when there is none)."""
    return check_generator(generator).device if generator is not None else device


def randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Standard normal noise of ``shape`` on ``device``, drawn by ``generator``.

    A CPU generator works for a model on the GPU, and gives the same draws on every device,
    so ``torch.Generator().manual_seed(0)`` is enough to make any model's samples reproducible.
    """
    return torch.randn(shape, generator=generator, device=_where(generator, device)).to(device)


def bernoulli(
    p: float, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """0/1 noise of ``shape`` on ``device`` with ``P(1) = p``, drawn by ``generator``."""
    probs = torch.full(shape, p, device=_where(generator, device))
    return torch.bernoulli(probs, generator=generator).to(device)
