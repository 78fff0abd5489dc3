"""Out-of-distribution detection: uncertainty scores, metrics and benchmark suites."""

from .adversarial import adversarial_curve, fgsm
from .metrics import (
    METRICS,
    aupr_in,
    aupr_out,
    auroc,
    detection_error,
    detection_metrics,
    fpr_at_tpr,
    roc,
)
from .report import OODReport, evaluate_ood
from .scores import Score, compute_scores, parse_scores, sample_probs
from .shift import ShiftKind, add_noise, rotate, shift_curve
from .suite import (
    OODSetName,
    OODSuite,
    SetContext,
    SuiteName,
    available_sets,
    build_suite,
    held_out_split,
    needs_class_split,
    register_ood_set,
    unregister_ood_set,
)

__all__ = [
    "METRICS",
    "OODReport",
    "OODSetName",
    "OODSuite",
    "Score",
    "SetContext",
    "ShiftKind",
    "SuiteName",
    "add_noise",
    "adversarial_curve",
    "aupr_in",
    "aupr_out",
    "auroc",
    "available_sets",
    "build_suite",
    "compute_scores",
    "detection_error",
    "detection_metrics",
    "evaluate_ood",
    "fgsm",
    "fpr_at_tpr",
    "held_out_split",
    "needs_class_split",
    "parse_scores",
    "register_ood_set",
    "roc",
    "rotate",
    "sample_probs",
    "shift_curve",
    "unregister_ood_set",
]
