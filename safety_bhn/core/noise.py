"""Noise for posterior draws, made by a ``torch.Generator`` on any device."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

from .._checks import MAX_SEED, check_generator, check_seed


def stream_seed(seed: int, stream: str) -> int:
    """The seed of the random stream named ``stream`` in a run seeded with ``seed``.

    Two generators seeded with the same integer draw the same numbers, so roles that must be
    independent (an agent's decisions and its posterior's training draws, say) each take a
    seed of their own: NumPy's ``SeedSequence``, made for this, hashes the run's seed and
    the stream's name into one, and different names give unrelated streams.

    >>> stream_seed(0, "decisions") == stream_seed(0, "decisions") != stream_seed(0, "training")
    True
    """
    name = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    words = np.random.SeedSequence([check_seed("seed", seed), name]).generate_state(1, np.uint64)
    return int(words[0]) & MAX_SEED


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
