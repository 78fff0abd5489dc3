"""Detection metrics for anomaly scores: AUROC, AUPR (in and out), FPR at 95% TPR, detection error.

Convention: scores are higher for more anomalous inputs. ``auroc`` and ``aupr_out`` treat the
out-of-distribution set as the positive class; ``aupr_in`` treats the in-distribution set as
positive (and ranks by the negated score); ``fpr95`` is the fraction of OOD inputs accepted as
in-distribution when the threshold accepts 95% of in-distribution inputs (Hendrycks & Gimpel
2017; Liang et al. 2018); ``detection_error`` is ``min_t 0.5 (1 - TPR) + 0.5 FPR``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import Tensor

from .._checks import check_real

ArrayLike = Tensor | np.ndarray | Sequence[float]
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95", "detection_error")


def _as_scores(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one score")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite scores")
    return arr


def _labelled(scores_in: ArrayLike, scores_out: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated scores and labels (1 = out-of-distribution)."""
    s_in = _as_scores(scores_in, "scores_in")
    s_out = _as_scores(scores_out, "scores_out")
    labels = np.concatenate([np.zeros(s_in.size), np.ones(s_out.size)])
    return np.concatenate([s_in, s_out]), labels


def auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the ROC curve: probability that an OOD input outscores an in-dist one.

    >>> auroc([0.1, 0.2], [0.8, 0.9])
    1.0
    """
    s, labels = _labelled(scores_in, scores_out)
    return float(roc_auc_score(labels, s))


def aupr_out(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the precision-recall curve with OOD as positive (average precision)."""
    s, labels = _labelled(scores_in, scores_out)
    return float(average_precision_score(labels, s))


def aupr_in(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the precision-recall curve with in-distribution as positive."""
    s, labels = _labelled(scores_in, scores_out)
    return float(average_precision_score(1 - labels, -s))


def roc(scores_in: ArrayLike, scores_out: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve with OOD as positive: ``(false positive rate, true positive rate)``."""
    s, labels = _labelled(scores_in, scores_out)
    fpr, tpr, _ = roc_curve(labels, s)
    return fpr, tpr


def fpr_at_tpr(scores_in: ArrayLike, scores_out: ArrayLike, tpr: float = 0.95) -> float:
    """Fraction of OOD inputs accepted when ``tpr`` of in-distribution inputs are accepted.

    Inputs scoring at most the threshold are accepted; the threshold is the smallest one
    that accepts at least ``tpr`` of the in-distribution set.

    >>> fpr_at_tpr([0.1, 0.2], [0.8, 0.9])
    0.0
    """
    tpr = check_real("tpr", tpr, 0.0, 1.0, low_open=True)
    s, labels = _labelled(scores_in, scores_out)
    # roc_curve with in-distribution positive and score -s: "positive" means score <= t.
    fpr_in, tpr_in, _ = roc_curve(1 - labels, -s, drop_intermediate=False)
    return float(fpr_in[np.searchsorted(tpr_in, tpr - 1e-12, side="left")])


def detection_error(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Lowest ``0.5 (1 - TPR) + 0.5 FPR`` over thresholds (equal priors), in [0, 0.5]."""
    s, labels = _labelled(scores_in, scores_out)
    fpr, tpr, _ = roc_curve(labels, s, drop_intermediate=False)
    return float(np.min(0.5 * (1 - tpr) + 0.5 * fpr))


def detection_metrics(scores_in: ArrayLike, scores_out: ArrayLike) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one in-distribution / OOD pair of score arrays.

    >>> m = detection_metrics([0.0, 0.1], [1.0, 2.0])
    >>> m["auroc"], m["fpr95"]
    (1.0, 0.0)
    """
    return {
        "auroc": auroc(scores_in, scores_out),
        "aupr_in": aupr_in(scores_in, scores_out),
        "aupr_out": aupr_out(scores_in, scores_out),
        "fpr95": fpr_at_tpr(scores_in, scores_out, 0.95),
        "detection_error": detection_error(scores_in, scores_out),
    }
