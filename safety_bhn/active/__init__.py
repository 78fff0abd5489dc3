"""Active learning: acquisition functions and pool-based loops over posterior samples."""

from .acquisition import (
    Acquisition,
    Selection,
    bald,
    batch_bald,
    max_entropy,
    mean_std,
    random,
    score,
    select,
    variation_ratios,
)
from .loop import (
    ActiveConfig,
    ActiveLearner,
    curve_auc,
    labels_to_reach,
    mnist_pool,
    read_curve,
    retrain,
    run_active_learning,
    saved_config,
    saved_state,
)

__all__ = [
    "Acquisition",
    "ActiveConfig",
    "ActiveLearner",
    "Selection",
    "bald",
    "batch_bald",
    "curve_auc",
    "labels_to_reach",
    "max_entropy",
    "mean_std",
    "mnist_pool",
    "random",
    "read_curve",
    "retrain",
    "run_active_learning",
    "saved_config",
    "saved_state",
    "score",
    "select",
    "variation_ratios",
]
