"""Plots for safe exploration: bandit regret curves and per-episode return and violations."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def _save(fig: plt.Figure, path: str | os.PathLike | None) -> plt.Figure:
    """Save ``fig`` to ``path`` and close it in pyplot, so that a process drawing many plots
    does not keep them all (it can still be saved or shown); without a path, leave it open."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return fig


def plot_regret(rows: Sequence[dict[str, Any]], path: str | os.PathLike | None = None,
                hue: str = "agent") -> plt.Figure:  # fmt: skip
    """Cumulative regret against decisions, one line per ``hue`` (mean and band over seeds).

    ``rows`` are per-episode rows from :func:`safety_bhn.explore.run_agent` with the extra
    key named by ``hue`` and, optionally, ``seed`` (default 0) and ``delta`` (one panel per
    value); decisions are summed from each episode's ``steps``.
    """
    df = pd.DataFrame(rows).sort_values("episode")
    if "seed" not in df:
        df["seed"] = 0
    group = [hue, "seed", "delta"] if "delta" in df else [hue, "seed"]
    df["decisions"] = df.groupby(group)["steps"].cumsum()
    df["cumulative_regret"] = df.groupby(group)["regret"].cumsum()
    sns.set_theme(style="whitegrid")
    cols = sorted(df["delta"].unique()) if "delta" in df else [None]
    order = list(dict.fromkeys(df[hue]))  # one colour per agent in every panel
    palette = dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.4), squeeze=False)
    for ax, delta in zip(axes[0], cols, strict=True):
        part = df if delta is None else df[df["delta"] == delta]
        sns.lineplot(data=part, x="decisions", y="cumulative_regret", hue=hue, ax=ax,
                     hue_order=order, palette=palette,
                     errorbar="sd", legend=ax is axes[0][-1])  # fmt: skip
        ax.set_title("wheel bandit" if delta is None else f"delta = {delta}")
        ax.set_ylabel("cumulative regret")
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return _save(fig, path)


def plot_training(rows: Sequence[dict[str, Any]], path: str | os.PathLike | None = None,
                  hue: str = "agent", window: int = 10) -> plt.Figure:  # fmt: skip
    """Episode return (rolling mean over ``window`` episodes) and cumulative violations.

    One column per ``env`` when the rows have that key; mean and band over ``seed``. An env
    whose rows have no costs (NaN) gets an empty violations panel that says so.
    """
    df = pd.DataFrame(rows)
    if "seed" not in df:
        df["seed"] = 0
    if "env" not in df:
        df["env"] = "env"
    group = ["env", hue, "seed"]
    df = df.sort_values("episode")
    df["return (rolling mean)"] = df.groupby(group)["episode_return"].transform(
        lambda s: s.rolling(window, min_periods=1).mean()
    )
    df["cumulative violations"] = df.groupby(group)["cost"].cumsum()
    df["episode in run"] = df.groupby(group).cumcount()
    envs = list(dict.fromkeys(df["env"]))
    order = list(dict.fromkeys(df[hue]))  # one colour per agent in every panel
    palette = dict(zip(order, sns.color_palette(n_colors=len(order)), strict=True))
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(2, len(envs), figsize=(4.5 * len(envs), 6.4), squeeze=False)
    for j, env in enumerate(envs):
        part = df[df["env"] == env]
        for i, y in enumerate(["return (rolling mean)", "cumulative violations"]):
            ax = axes[i][j]
            sns.lineplot(data=part, x="episode in run", y=y, hue=hue, ax=ax, errorbar="sd",
                         hue_order=[h for h in order if h in set(part[hue])], palette=palette,
                         legend=(i == 0 and j == len(envs) - 1))  # fmt: skip
            ax.set_title(env if i == 0 else "")
            if i == 1 and part["cost"].isna().all():  # CartPole-v1 and others without costs
                ax.text(0.5, 0.5, "not reported\n(the env gives no info['cost'])",
                        ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return _save(fig, path)
