"""Active-learning plots saved to files: learning curves and a grid of acquired images."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from torch import Tensor

from ..plots import save_figure


def learning_curves(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    hue: str = "acquisition",
    col: str | None = None,
    title: str | None = None,
) -> Path:
    """Test accuracy against labels, one line per ``hue`` value (mean and spread over seeds).

    ``rows`` are tidy: one dict per run and step with at least ``n_labels`` and ``test_acc``
    (and the ``hue`` / ``col`` keys). ``col`` makes one panel per value, e.g. ``"method"``.
    """
    frame = pd.DataFrame([r for r in rows if r.get("test_acc") is not None])
    if frame.empty:
        raise ValueError("no test accuracy to plot (was the run given a test set?)")
    sns.set_theme(style="whitegrid")
    cols = [None] if col is None else sorted(frame[col].unique())
    fig, axes = plt.subplots(1, len(cols), figsize=(5 * len(cols), 4), squeeze=False, sharey=True)
    for ax, value in zip(axes[0], cols, strict=True):
        part = frame if value is None else frame[frame[col] == value]
        sns.lineplot(data=part, x="n_labels", y="test_acc", hue=hue, errorbar="sd", ax=ax)
        ax.set(xlabel="labelled examples", ylabel="test accuracy", title=value or title or "")
    return save_figure(fig, path)


def image_grid(
    images: Tensor, path: str | os.PathLike, titles: Sequence[str] | None = None, ncols: int = 10
) -> Path:
    """Show images ``(n, 1, h, w)`` or ``(n, h, w)`` in a grid (e.g. the first acquisitions)."""
    images = images.detach().cpu()
    if images.dim() == 4:
        images = images[:, 0]
    if images.dim() != 3 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (n, 1, h, w) or (n, h, w), got {images.shape}")
    n = images.shape[0]
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.4 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray_r")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    return save_figure(fig, path)
