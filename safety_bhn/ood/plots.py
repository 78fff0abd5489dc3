"""OOD plots saved to files: ROC curves, score histograms, shift curves, adversarial curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .._choices import did_you_mean
from ..plots import save_figure
from .metrics import auroc, roc

if TYPE_CHECKING:
    from .report import OODReport


def roc_curves(report: OODReport, path: str | os.PathLike) -> Path:
    """One panel per OOD set, one ROC curve per score (OOD as positive)."""
    sns.set_theme(style="whitegrid")
    sets = report.set_names
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 4), squeeze=False)
    colors = sns.color_palette(n_colors=len(report.score_names))
    for ax, ood_set in zip(axes[0], sets, strict=True):
        for color, score in zip(colors, report.score_names, strict=True):
            s_in, s_out = report.scores_in[score], report.scores_out[ood_set][score]
            fpr, tpr = roc(s_in, s_out)
            ax.plot(fpr, tpr, color=color, label=f"{score} ({auroc(s_in, s_out):.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate",
               title=f"{report.model} vs {ood_set}", xlim=(0, 1), ylim=(0, 1.01))  # fmt: skip
        ax.legend(loc="lower right", fontsize=8, title="score (AUROC)", title_fontsize=8)
    return save_figure(fig, path)


def score_histograms(
    report: OODReport, path: str | os.PathLike, scores: str | Sequence[str] | None = None
) -> Path:
    """Grid of histograms: rows are scores, columns OOD sets; in-distribution vs OOD.

    ``scores`` picks some of the report's scores (a list, or names joined by commas); by
    default all of them.
    """
    scores = _report_scores(report, scores)
    sns.set_theme(style="whitegrid")
    sets = report.set_names
    fig, axes = plt.subplots(len(scores), len(sets), figsize=(3.6 * len(sets), 2.8 * len(scores)),
                             squeeze=False)  # fmt: skip
    for i, score in enumerate(scores):
        for j, ood_set in enumerate(sets):
            ax = axes[i, j]
            s_in, s_out = report.scores_in[score], report.scores_out[ood_set][score]
            frame = pd.DataFrame({
                "score": np.concatenate([s_in, s_out]),
                "set": ["in-distribution"] * len(s_in) + [ood_set] * len(s_out),
            })  # fmt: skip
            bins = np.linspace(frame["score"].min(), frame["score"].max() + 1e-9, 31)
            sns.histplot(frame, x="score", hue="set", bins=bins, stat="density",
                         common_norm=False, element="step", ax=ax, legend=i == 0)  # fmt: skip
            ax.set(xlabel=score, ylabel="density" if j == 0 else "",
                   title=f"{ood_set} (AUROC {auroc(s_in, s_out):.3f})")  # fmt: skip
    fig.suptitle(f"{report.model}: anomaly scores", y=1.0)
    return save_figure(fig, path)


def _report_scores(report: OODReport, scores: str | Sequence[str] | None) -> list[str]:
    """The report's scores that ``scores`` names (all when None or empty), or a ValueError."""
    if isinstance(scores, str):
        scores = [s.strip() for s in scores.split(",") if s.strip()]
    if not scores:
        return report.score_names

    def key(name: object) -> str:
        return str(getattr(name, "value", name)).strip().lower().replace("-", "_")

    names = []
    for score in scores:
        found = next((s for s in report.score_names if key(s) == key(score)), None)
        if found is None:
            raise ValueError(
                f"the report has no score {score!r}; it has {', '.join(report.score_names)}: "
                "pass some of those, or scores=None for all"
                + did_you_mean(score, report.score_names)
            )
        names.append(found)
    return list(dict.fromkeys(names))


def shift_plot(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    metrics: Sequence[str] = ("accuracy", "nll", "entropy"),
    level: str = "level",
    hue: str = "model",
    title: str = "",
) -> Path:
    """Ovadia et al. (2019) style: each metric against the shift level, one line per model.

    ``rows`` are tidy dicts with the ``level`` column, the ``hue`` column and each metric
    (several rows per (model, level), e.g. seeds, are averaged with a standard-deviation band).
    """
    sns.set_theme(style="whitegrid")
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("no shift rows to plot")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sns.lineplot(frame, x=level, y=metric, hue=hue, marker="o", ax=ax, errorbar="sd")
        ax.set(xlabel=level, ylabel=metric)
    if title:
        fig.suptitle(title, y=1.0)
    return save_figure(fig, path)


def auroc_bars(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, metric: str = "auroc"
) -> Path:
    """Bar chart of ``metric`` per OOD set (panels) by score (bars) and model (hue)."""
    sns.set_theme(style="whitegrid")
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("no rows to plot")
    grid = sns.catplot(frame, kind="bar", x="score", y=metric, hue="model", col="ood_set",
                       col_wrap=min(3, frame["ood_set"].nunique()), errorbar="sd",
                       height=3.4, aspect=1.3)  # fmt: skip
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylim(0, 1)
    grid.figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.figure.savefig(path, dpi=100)
    plt.close(grid.figure)
    return path
