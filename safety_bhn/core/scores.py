"""Uncertainty scores from posterior samples ``probs[n_samples, batch, classes]``.

One definition for every application: active learning ranks pool points by them and
out-of-distribution detection thresholds them. Higher always means more uncertain.
Entropies are computed in float64 and returned in the input's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_TOL = 1e-3
"""How far from one the class sums of float32 and float64 probabilities may be."""


def check_probs(probs: Tensor) -> Tensor:
    """Validate posterior-sample probabilities ``(n_samples, batch, classes)``.

    Raises a ValueError naming the problem: wrong number of dimensions, an empty sample,
    batch or class axis, NaN or infinite entries, negative entries, or rows that do not
    sum to one (pass ``softmax(logits)``, not logits).
    """
    if not isinstance(probs, Tensor):
        raise TypeError(f"probs must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dim() != 3:
        raise ValueError(
            f"probs must have shape (n_samples, batch, classes), got {tuple(probs.shape)}"
        )
    if 0 in probs.shape:
        raise ValueError(f"probs has an empty axis: shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be floating point, got {probs.dtype}")
    if not torch.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinite values")
    if (probs < 0).any():
        raise ValueError("probs contains negative values; pass probabilities, not logits")
    err = (probs.sum(-1, dtype=torch.float64) - 1).abs().max().item()
    tol = _sum_tolerance(probs)
    if err > tol:
        raise ValueError(
            f"probs do not sum to one over classes (max error {err:.3g}, more than the "
            f"{tol:.3g} that {probs.dtype} rounding allows); apply softmax first"
        )
    return probs


def _sum_tolerance(probs: Tensor) -> float:
    """The largest error allowed in the class sums: :data:`_TOL` for float32 and float64.

    With fewer bits (bfloat16, float16) rounding alone can cost more: each entry's rounding
    (at most ``eps / 2`` of the sum) and a normaliser summed pairwise in that dtype (at most
    ``eps / 2`` per level, ``ceil(log2(classes))`` levels), so ``eps * (1 + ceil(log2 C))``,
    twice that first-order bound. It grows with the classes only as their logarithm, so
    unnormalised rows are still refused with a thousand classes (``eps * C`` would pass any
    non-negative bfloat16 rows summing to less than 9 there).
    """
    if probs.dtype in (torch.float32, torch.float64):
        return _TOL
    levels = math.ceil(math.log2(probs.shape[-1])) if probs.shape[-1] > 1 else 0
    return max(_TOL, torch.finfo(probs.dtype).eps * (1 + levels))


def _entropy(p: Tensor) -> Tensor:
    """Entropy over the last axis, with ``0 log 0 = 0``, in ``p``'s dtype."""
    return -torch.special.xlogy(p, p).sum(-1)


def predictive_entropy(probs: Tensor) -> Tensor:
    """``H[E_s p_s]``, the total uncertainty (max-entropy acquisition). Shape ``(batch,)``."""
    return _entropy(check_probs(probs).double().mean(0)).to(probs.dtype)


def expected_entropy(probs: Tensor) -> Tensor:
    """``E_s H[p_s]``, the aleatoric part. Shape ``(batch,)``."""
    return _entropy(check_probs(probs).double()).mean(0).to(probs.dtype)


def mutual_information(probs: Tensor) -> Tensor:
    """BALD: ``I[y; theta] = H[E p] - E H[p]``, the epistemic part. Shape ``(batch,)``.

    The two entropies nearly cancel when the samples agree, so in float32 their difference
    is noise of order ``1e-7 * H`` (of either sign). Both are computed in float64 instead and
    the result is returned in ``probs``' dtype. Their float64 rounding error is at most
    ``(2 S + 2 C + 8) * eps * (1 + H[E p])`` for ``S`` samples and ``C`` classes (a
    first-order bound that holds for any summation order); a difference within that bound
    of 0 cannot be told from 0 and is returned as exactly 0, so identical samples give 0.
    Nothing else is clamped: by Jensen's inequality the exact value is never negative.
    """
    p = check_probs(probs).double()
    total = _entropy(p.mean(0))
    mi = total - _entropy(p).mean(0)
    n_samples, _, n_classes = p.shape
    rounding = (2 * (n_samples + n_classes) + 8) * torch.finfo(p.dtype).eps * (1 + total)
    return torch.where(mi.abs() <= rounding, 0.0, mi).to(probs.dtype)


def variation_ratio(probs: Tensor) -> Tensor:
    """``1 - max_c p(c)`` of the predictive (Freeman 1965, as in Gal et al. 2017)."""
    return 1.0 - check_probs(probs).mean(0).max(-1).values


def max_softmax(probs: Tensor) -> Tensor:
    """Hendrycks & Gimpel (2017) baseline, as an anomaly score: ``1 - max softmax``.

    Same value as :func:`variation_ratio`; kept under its own name because the OOD
    literature calls it so.
    """
    return variation_ratio(probs)


def mean_std(probs: Tensor) -> Tensor:
    """Mean over classes of the standard deviation over samples (Kampffmeyer et al. 2016)."""
    check_probs(probs)
    return probs.std(0, unbiased=False).mean(-1)


def sample_vote_ratio(probs: Tensor) -> Tensor:
    """``1 - (votes for the modal class) / n_samples``: variation ratio counted over samples."""
    check_probs(probs)
    votes = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)
    return 1.0 - votes.max(-1).values.to(probs.dtype) / probs.shape[0]
