"""Acquisition functions over posterior samples ``probs[n_samples, batch, classes]``, and BatchBALD.

Every score is built on :mod:`safety_bhn.core.scores` (one definition shared with OOD
detection); higher means "label this point first".

Example:
    >>> import torch
    >>> probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two samples that disagree
    >>> round(bald(probs).item(), 4)  # log 2
    0.6931
    >>> select("bald", torch.rand(5, 30, 3).softmax(-1), k=4).indices.shape
    torch.Size([4])
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import check_generator, check_int
from .._choices import parse_choice
from ..core import scores


class Acquisition(str, enum.Enum):
    """How the loop picks the next points to label."""

    BALD = "bald"
    MAX_ENTROPY = "max_entropy"
    VARIATION_RATIOS = "variation_ratios"
    MEAN_STD = "mean_std"
    RANDOM = "random"
    BATCH_BALD = "batch_bald"
    POWER_BALD = "power_bald"


def bald(probs: Tensor) -> Tensor:
    """Mutual information ``H[E_s p_s] - E_s H[p_s]`` between label and weights; ``(batch,)``."""
    return scores.mutual_information(probs)


def max_entropy(probs: Tensor) -> Tensor:
    """Entropy of the posterior predictive ``H[E_s p_s]``; ``(batch,)``."""
    return scores.predictive_entropy(probs)


def variation_ratios(probs: Tensor) -> Tensor:
    """``1 - max_c E_s p_s(c)``; ``(batch,)``."""
    return scores.variation_ratio(probs)


def mean_std(probs: Tensor) -> Tensor:
    """Mean over classes of the standard deviation of ``p_s(c)`` over samples; ``(batch,)``."""
    return scores.mean_std(probs)


def random(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform random scores in ``[0, 1)``, one per input (``probs`` gives only the batch size).

    ``generator`` is required so that random acquisition is reproducible.
    """
    if check_generator(generator) is None:
        raise ValueError("random acquisition needs a torch.Generator (generator=...)")
    scores.check_probs(probs)
    return torch.rand(probs.shape[1], generator=generator, device=generator.device).to(probs.device)


def score(
    acquisition: str | Acquisition, probs: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """The per-point score of ``acquisition`` (``batch_bald`` and ``power_bald`` give plain
    BALD per point)."""
    acquisition = parse_choice(acquisition, Acquisition, "acquisition")
    if acquisition is Acquisition.RANDOM:
        return random(probs, generator)
    fn = {
        Acquisition.BALD: bald,
        Acquisition.BATCH_BALD: bald,
        Acquisition.POWER_BALD: bald,
        Acquisition.MAX_ENTROPY: max_entropy,
        Acquisition.VARIATION_RATIOS: variation_ratios,
        Acquisition.MEAN_STD: mean_std,
    }[acquisition]
    return fn(probs)


class Selection(NamedTuple):
    """The chosen positions (into the scored batch), in order, and the score of each choice."""

    indices: Tensor
    scores: Tensor


def _check_k(k: int, available: int) -> int:
    k = check_int("k (points to acquire)", k)
    if k > available:
        raise ValueError(f"cannot acquire k={k} points from a pool of {available}")
    return k


def select(
    acquisition: str | Acquisition,
    probs: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    num_configs: int | None = None,
) -> Selection:
    """Pick ``k`` of the ``batch`` points of ``probs[n_samples, batch, classes]``.

    Top-``k`` of the score, except ``batch_bald``, which selects greedily (see
    :func:`batch_bald`; ``num_configs``, for it only, defaults to 2000), and ``power_bald``,
    which samples (see :func:`power_bald`). Ties break towards the lower index.
    """
    acquisition = parse_choice(acquisition, Acquisition, "acquisition")
    scores.check_probs(probs)
    _check_k(k, probs.shape[1])
    check_generator(generator)
    if num_configs is not None and acquisition is not Acquisition.BATCH_BALD:
        raise ValueError(
            f"num_configs={num_configs} sets the label configurations of batch_bald only, so "
            f"acquisition {acquisition.value!r} would ignore it; drop num_configs, or use "
            "'batch_bald'"
        )
    if acquisition is Acquisition.BATCH_BALD:
        configs = 2000 if num_configs is None else num_configs
        return batch_bald(probs, k, num_configs=configs, generator=generator)
    if acquisition is Acquisition.POWER_BALD:
        return power_bald(probs, k, generator=generator)
    values = score(acquisition, probs, generator)
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    return Selection(order, values[order])


def power_sample(
    values: Tensor, k: int, beta: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """``k`` distinct positions drawn without replacement with probability ``∝ values ** beta``.

    The Gumbel-top-k trick: the top ``k`` of ``beta * log(values) + Gumbel noise``. Points with
    a zero value come last (chosen only when fewer than ``k`` values are positive). ``beta``
    large tends to plain top-``k``; ``beta = 0`` is uniform sampling.
    """
    if check_generator(generator) is None:
        raise ValueError("power sampling needs a torch.Generator (generator=...)")
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if values.ndim != 1 or not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError("values must be a 1-d tensor of finite, non-negative scores")
    _check_k(k, values.numel())
    u = torch.rand(values.numel(), generator=generator, device=generator.device).double()
    gumbel = -torch.log(-torch.log(u.clamp(1e-30, 1.0 - 1e-7))).to(values.device)
    logs = values.double().clamp_min(1e-300).log()  # finite; zero values are masked below
    keys = torch.where(values > 0, beta * logs + gumbel, -math.inf)
    return torch.sort(keys, descending=True, stable=True).indices[:k]


def power_bald(
    probs: Tensor, k: int, beta: float = 1.0, generator: torch.Generator | None = None
) -> Selection:
    """PowerBALD (Kirsch et al. 2023, "Stochastic Batch Acquisition"): ``k`` points sampled
    without replacement with probability ``∝ bald ** beta`` instead of the top ``k``.

    Top-``k`` BALD can pass a whole class by when a few ambiguous images outscore many
    moderately uncertain ones; sampling spreads the batch over them at no extra cost.
    Returns the positions and their BALD scores. ``generator`` is required (reproducibility).
    """
    scores.check_probs(probs)
    values = bald(probs)
    order = power_sample(values, k, beta, generator)
    return Selection(order, values[order])


def _entropy_of_joint(joint: Tensor, weights: Tensor | None) -> Tensor:
    """Entropy estimate from joint probabilities ``(candidates, configs, classes)``.

    ``weights`` (``configs``) are ``1 / P(config)`` for sampled configurations (the importance
    weights of Kirsch et al. 2019, appendix), None for the exact sum over all configurations.
    """
    terms = -torch.special.xlogy(joint, joint)
    if weights is None:
        return terms.sum((1, 2))
    return (terms * weights[None, :, None]).sum((1, 2)) / weights.numel()


def batch_bald(
    probs: Tensor,
    k: int,
    num_configs: int = 2000,
    generator: torch.Generator | None = None,
    chunk: int = 256,
) -> Selection:
    """Greedy BatchBALD (Kirsch, van Amersfoort & Gal 2019): ``k`` jointly informative points.

    The n-th choice maximises ``I[y_1, ..., y_n; theta] = H[y_1..y_n] - sum_i E_s H[p_s(y_i)]``
    given the first ``n - 1``. The joint entropy is exact while ``classes ** n`` is at most
    ``num_configs``; beyond that ``num_configs`` label configurations of the chosen points are
    sampled from the predictive (draw a sample ``s``, then each label from ``p_s``) and the
    entropy is an importance-weighted estimate. Because a duplicate of a chosen point adds
    (almost) no information about the weights, the batch spreads over different points.

    Returns the positions in the order chosen and the joint mutual information after each
    choice (the first equals :func:`bald` of the first point; with sampled configurations the
    later values are estimates).
    """
    scores.check_probs(probs)
    _check_k(k, probs.shape[1])
    num_configs, chunk = check_int("num_configs", num_configs), check_int("chunk", chunk)
    p = probs.double()
    n_samples, n_points, n_classes = p.shape
    if check_generator(generator) is None and n_classes**k > num_configs:
        raise ValueError(
            f"batch_bald samples label configurations once classes**k ({n_classes}**{k}) "
            f"exceeds num_configs ({num_configs}), so it needs a torch.Generator to be "
            "reproducible: pass generator=torch.Generator().manual_seed(0)"
        )
    cond_entropy = scores.expected_entropy(p)  # E_s H[p_s(y_i)] per point
    prev = torch.ones(n_samples, 1, dtype=p.dtype, device=p.device)  # p_s(config) per config
    weights: Tensor | None = None  # 1 / P(config) when configs are sampled
    chosen: list[int] = []
    gains: list[float] = []
    available = torch.ones(n_points, dtype=torch.bool, device=p.device)
    cond_sum = 0.0
    for _ in range(k):
        joint_entropy = torch.empty(n_points, dtype=p.dtype, device=p.device)
        for start in range(0, n_points, chunk):
            part = p[:, start : start + chunk]  # (S, chunk, C)
            joint = torch.einsum("sm,snc->nmc", prev, part) / n_samples
            joint_entropy[start : start + chunk] = _entropy_of_joint(joint, weights)
        mi = joint_entropy - cond_sum - cond_entropy
        mi[~available] = -math.inf
        best = int(torch.argmax(mi))
        chosen.append(best)
        gains.append(float(mi[best]))
        available[best] = False
        cond_sum += float(cond_entropy[best])
        prev, weights = _extend_configs(prev, weights, p, chosen, num_configs, generator)
    return Selection(
        torch.tensor(chosen, device=probs.device),
        torch.tensor(gains, dtype=probs.dtype, device=probs.device),
    )


def _extend_configs(
    prev: Tensor,
    weights: Tensor | None,
    p: Tensor,
    chosen: list[int],
    num_configs: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor | None]:
    """``p_s(config)`` over configurations of the chosen points, after adding the last one."""
    n_samples, _, n_classes = p.shape
    if weights is None and prev.shape[1] * n_classes <= num_configs:
        new = (prev[:, :, None] * p[:, chosen[-1], None, :]).reshape(n_samples, -1)
        return new, None
    # Sample configurations y ~ P(y_chosen) = mean_s prod_i p_s(y_i): a sample, then labels.
    gen = _cpu(generator)
    s = torch.randint(n_samples, (num_configs,), generator=gen)
    sel = p[:, chosen]  # (S, n, C)
    labels = torch.multinomial(
        sel.cpu()[s].reshape(-1, n_classes), 1, replacement=True, generator=gen
    ).reshape(num_configs, len(chosen))
    labels = labels.to(p.device)
    idx = labels.T[None].expand(n_samples, -1, -1)  # (S, n, M)
    new = torch.gather(sel, 2, idx).prod(1)  # (S, M): p_s(config_m)
    return new, 1.0 / new.mean(0).clamp_min(torch.finfo(p.dtype).tiny)


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """A CPU generator for the configuration sampling (seeded from ``generator`` if on GPU)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = torch.randint(2**62, (1,), generator=generator, device=generator.device)
    return torch.Generator().manual_seed(int(seed))
