"""Predictive metrics: accuracy, NLL, expected calibration error, Brier score."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int
from .base import UncertaintyModel
from .scores import check_probs


def _check(probs: Tensor, y: Tensor) -> Tensor:
    """Check shapes, probabilities and labels; return the labels as ``long`` on the device of
    ``probs`` (CPU labels, GPU model). Logits, or labels outside the classes, gave silent
    figures before (an accuracy that counts a label 5 of 3 classes as wrong, a Brier score
    of 100)."""
    if not isinstance(probs, Tensor) or not isinstance(y, Tensor):
        raise TypeError(
            f"probs and y must be torch tensors, got {type(probs).__name__} and {type(y).__name__}"
        )
    if probs.dim() != 2 or y.shape != probs.shape[:1]:
        raise ValueError(
            f"probs must be (batch, classes) and y (batch,), got {tuple(probs.shape)} and "
            f"{tuple(y.shape)}"
        )
    if len(y) == 0:
        raise ValueError("no inputs to score: probs and y are empty")
    if not torch.isfinite(probs).all():
        raise ValueError("probs contain NaN or infinite values; does the model hold NaN weights?")
    check_probs(probs.unsqueeze(0))  # negative, or rows not summing to one: logits?
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class labels, got {y.dtype}")
    low, high, n_classes = int(y.min()), int(y.max()), probs.shape[1]
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"y holds labels from {low} to {high}, outside 0..{n_classes - 1} for the "
            f"{n_classes} classes of probs"
        )
    return y.to(probs.device, torch.long)


def accuracy(probs: Tensor, y: Tensor) -> float:
    """Fraction of inputs whose most probable class is the label, exact (a count over the
    number of inputs in double precision, so 9500 of 10000 is 0.95, not float32's 0.94999999).
    """
    y = _check(probs, y)
    return int((probs.argmax(1) == y).sum().item()) / len(y)


def nll(probs: Tensor, y: Tensor) -> float:
    """Mean negative log predictive probability of the labels (nats); a probability of 0 is
    floored at 1e-12 (a finite 27.6 nats rather than infinity; scikit-learn's ``log_loss``
    clips at the dtype's epsilon instead, so its figure for such inputs is smaller). Half
    precision is read in float32, where that floor exists (float16 rounds it to 0)."""
    y = _check(probs, y)
    p = probs.gather(1, y[:, None])
    p = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
    return -p.clamp_min(1e-12).log().mean().item()


def brier_score(probs: Tensor, y: Tensor) -> float:
    """Mean squared distance between the predictive and the one-hot label (sum over classes)."""
    y = _check(probs, y)
    return (probs - F.one_hot(y, probs.shape[1]).to(probs)).pow(2).sum(1).mean().item()


def reliability_bins(probs: Tensor, y: Tensor, n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    """Per confidence bin: ``(mean confidence, accuracy, count)``, equal-width bins on [0, 1]."""
    y = _check(probs, y)
    n_bins = check_int("n_bins", n_bins)
    conf, pred = probs.max(1)
    correct = (pred == y).float()
    index = (conf * n_bins).long().clamp(max=n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).float()
    sum_conf = torch.bincount(index, weights=conf, minlength=n_bins)
    sum_acc = torch.bincount(index, weights=correct, minlength=n_bins)
    safe = count.clamp_min(1)
    return sum_conf / safe, sum_acc / safe, count


def expected_calibration_error(probs: Tensor, y: Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): ``sum_b |B_b|/n * |acc(B_b) - conf(B_b)|``, over equal-width
    confidence bins closed on the left, ``[k/n_bins, (k+1)/n_bins)`` (1.0 in the last), where
    Guo et al.'s code closes them on the right: the two differ only for a confidence exactly
    on a bin edge."""
    conf, acc, count = reliability_bins(probs, y, n_bins)
    return ((count / count.sum()) * (acc - conf).abs()).sum().item()


def auto_batch_size(model: UncertaintyModel, n_samples: int, budget: float = 5e7) -> int:
    """Inputs per chunk so that one layer's activations for all samples fit ``budget`` floats."""
    widest = max(math.prod(layer.in_shape) for layer in model.layers)
    return max(1, int(budget // (n_samples * widest)))


def classification_metrics(probs: Tensor, y: Tensor) -> dict[str, float]:
    """Accuracy, NLL, ECE and Brier score of predictive probabilities ``probs[batch, classes]``."""
    return {
        "accuracy": accuracy(probs, y),
        "nll": nll(probs, y),
        "ece": expected_calibration_error(probs, y),
        "brier": brier_score(probs, y),
    }


@torch.no_grad()
def predictive(
    model: UncertaintyModel,
    x: Tensor,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Posterior predictive ``(batch, classes)`` on the CPU, inputs chunked to bound memory."""
    n = model.default_samples if n_samples is None else model.check_samples(n_samples)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    try:
        batch_size = batch_size or auto_batch_size(model, n)
        probs = model.predict_proba(x, n, generator, batch_size=batch_size)
    finally:  # a bad input leaves the model in the mode it was in
        model.train(was_training)
    return probs.cpu()


def evaluate(
    model: UncertaintyModel,
    x: Tensor,
    y: Tensor,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Accuracy, NLL, ECE and Brier score of the posterior predictive on ``(x, y)``.

    Example:
        >>> import safety_bhn
        >>> model = safety_bhn.build_model("map", hidden=[8], in_shape=(4,), n_classes=3)
        >>> sorted(evaluate(model, torch.rand(10, 4), torch.zeros(10, dtype=torch.long)))
        ['accuracy', 'brier', 'ece', 'nll']
    """
    probs = predictive(model, x, n_samples, generator, batch_size)
    return classification_metrics(probs, model.check_targets(y, x.shape[0]).cpu())
