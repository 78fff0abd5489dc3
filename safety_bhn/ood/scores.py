"""Anomaly scores for OOD detection: names for the shared definitions in safety_bhn.core.scores."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_int
from .._choices import parse_choice
from ..core import scores as core_scores
from ..core.base import UncertaintyModel
from ..core.metrics import auto_batch_size


class Score(str, enum.Enum):
    """Anomaly scores from posterior samples; higher means more anomalous.

    ``max_softmax`` and ``variation_ratio`` share one definition in
    :mod:`safety_bhn.core.scores` (``1 - max`` of the predictive), so they always agree;
    ``vote_ratio`` is the sample-counting variant (``1 -`` modal votes / samples).
    ``expected_entropy`` is the aleatoric part of ``entropy`` (``entropy =
    expected_entropy + mutual_information``); on noise, these nets' samples agree that an input
    is ambiguous, so it can detect noise better than either (benchmarks/ood_noise_scores.py).
    """

    MAX_SOFTMAX = "max_softmax"
    ENTROPY = "entropy"
    MUTUAL_INFORMATION = "mutual_information"
    VARIATION_RATIO = "variation_ratio"
    VOTE_RATIO = "vote_ratio"
    EXPECTED_ENTROPY = "expected_entropy"


RESOLUTION_DECIMALS = 10
SCORE_FUNCTIONS: dict[Score, Callable[[Tensor], Tensor]] = {
    Score.MAX_SOFTMAX: core_scores.max_softmax,
    Score.ENTROPY: core_scores.predictive_entropy,
    Score.MUTUAL_INFORMATION: core_scores.mutual_information,
    Score.VARIATION_RATIO: core_scores.variation_ratio,
    Score.VOTE_RATIO: core_scores.sample_vote_ratio,
    Score.EXPECTED_ENTROPY: core_scores.expected_entropy,
}


def parse_scores(scores: str | Score | Sequence[str | Score] = "all") -> list[Score]:
    """Turn ``"all"``, one name, a comma-separated string or a list of names into Scores.

    >>> [s.value for s in parse_scores("entropy,mutual_information")]
    ['entropy', 'mutual_information']
    """
    if isinstance(scores, str) and not isinstance(scores, Score):
        if scores.strip().lower() == "all":
            return list(Score)
        scores = [s for s in scores.split(",") if s.strip()]
    elif isinstance(scores, Score):
        scores = [scores]
    elif not isinstance(scores, Sequence):
        raise ValueError(
            f"scores must be 'all', a score name, comma-separated names or a list of them, got "
            f"{scores!r}; choose from {[s.value for s in Score]}"
        )
    parsed = [parse_choice(s, Score, "score") for s in scores]
    if not parsed:
        raise ValueError(f"no scores given; choose from {[s.value for s in Score]} or 'all'")
    return list(dict.fromkeys(parsed))


def compute_scores(
    probs: Tensor, scores: str | Sequence[str | Score] = "all"
) -> dict[Score, Tensor]:
    """Each requested score of ``probs[n_samples, batch, classes]``: ``{Score: (batch,)}``.

    Scores are computed in float64 and rounded to ``1e-10``, so rounding noise cannot rank
    inputs: e.g. the mutual information of identical samples (a MAP net) is exactly 0
    rather than float32 noise of order 1e-7, which would give a spurious AUROC. Probabilities
    stored with fewer bits (bfloat16, float16) are renormalised in float64 first, a change
    within their rounding error, so the float64 scores get rows that sum to one.

    >>> probs = torch.full((3, 2, 4), 0.25)
    >>> compute_scores(probs, "entropy")[Score.ENTROPY]
    tensor([1.3863, 1.3863], dtype=torch.float64)
    """
    core_scores.check_probs(probs)
    low_precision = probs.dtype not in (torch.float32, torch.float64)
    probs = probs.double()
    if low_precision:  # their class sums may be off by more than float64's check allows
        probs = probs / probs.sum(-1, keepdim=True)
    return {
        s: SCORE_FUNCTIONS[s](probs).round(decimals=RESOLUTION_DECIMALS)
        for s in parse_scores(scores)
    }


@torch.no_grad()
def sample_probs(
    model: UncertaintyModel,
    x: Tensor,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    *,
    draw: Any = None,
    progress: bool = False,
    desc: str = "scoring",
) -> Tensor:
    """Softmax of ``n_samples`` posterior draws on ``x``: ``(n_samples, batch, classes)`` on CPU.

    One draw of weights is shared by all of ``x`` (the inputs are only chunked for memory).
    Pass ``draw=model.draw(n, generator)`` to score several sets under the same draws (then
    no ``generator``, and ``n_samples``, if given, must be the draw's ``n``).

    >>> import safety_bhn
    >>> model = safety_bhn.build_model("mc_dropout", hidden=[8], in_shape=(3,), n_classes=2)
    >>> sample_probs(model, torch.rand(5, 3), n_samples=4).shape
    torch.Size([4, 5, 2])
    """
    x = model.check_input(x)
    if draw is None:
        n = model.default_samples if n_samples is None else n_samples
        draw = model.draw(model.check_samples(n), generator)
    elif generator is not None:
        raise ValueError(
            "generator is not used when draw is given (the draw already fixes the posterior "
            "samples); drop generator, or pass it to model.draw(n_samples, generator)"
        )
    else:
        n = n_samples or 1
    batch_size = (
        auto_batch_size(model, n) if batch_size is None else check_int("batch_size", batch_size)
    )
    was_training = model.training
    model.eval()
    try:
        chunks = x.split(batch_size)
        bar = tqdm(chunks, desc=desc, disable=not progress or len(chunks) < 2, leave=False)
        probs = []
        for c in bar:
            probs.append(F.softmax(model.forward_draw(c, draw), dim=-1).cpu())
            if n_samples is not None and probs[0].shape[0] != n_samples:
                raise ValueError(
                    f"n_samples={n_samples} but the draw given holds {probs[0].shape[0]} "
                    "samples, which decide the result; pass n_samples equal to the draw's "
                    "(model.draw(n_samples, ...)), or leave it out"
                )
    finally:
        model.train(was_training)
    return torch.cat(probs, dim=1)
