"""Plots saved to files (seaborn style): reliability diagrams and bars."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns
from torch import Tensor

from .core.metrics import expected_calibration_error, reliability_bins


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Lay out ``fig``, write it to ``path`` (creating its folder), close it; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reliability_diagram(
    predictions: dict[str, tuple[Tensor, Tensor]], path: str | os.PathLike, n_bins: int = 15
) -> Path:
    """Accuracy against confidence per bin for each named ``(probs, labels)``; saved to ``path``."""
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, len(predictions), figsize=(4 * len(predictions), 4), squeeze=False)
    for ax, (name, (probs, y)) in zip(axes[0], predictions.items(), strict=True):
        conf, acc, count = reliability_bins(probs, y, n_bins)
        centers = (0.5 + Tensor(range(n_bins))) / n_bins
        used = count > 0
        ax.bar(
            centers[used],
            acc[used],
            width=1 / n_bins,
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
            title=f"{name} (ECE {expected_calibration_error(probs, y, n_bins):.3f})",
        )
        ax.legend(loc="upper left")
    return save_figure(fig, path)
