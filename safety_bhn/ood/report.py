"""Score a model on an OOD suite: per-set, per-score detection metrics, tables and files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._checks import check_int
from .._choices import did_you_mean
from .._io import atomic_write_text
from ..core.base import UncertaintyModel
from ..core.metrics import accuracy, auto_batch_size
from .metrics import METRICS, detection_metrics
from .scores import Score, compute_scores, parse_scores, sample_probs
from .suite import OODSuite


@dataclass
class OODReport:
    """Anomaly scores of one model on an in-distribution set and each OOD set.

    ``scores_in[score]`` has one value per in-distribution input; ``scores_out[set][score]``
    one per input of that OOD set. :meth:`rows` turns them into detection metrics.
    """

    model: str
    scores_in: dict[str, np.ndarray]
    scores_out: dict[str, dict[str, np.ndarray]]
    accuracy: float | None = None
    n_samples: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def score_names(self) -> list[str]:
        return list(self.scores_in)

    @property
    def set_names(self) -> list[str]:
        return list(self.scores_out)

    def rows(self) -> list[dict[str, Any]]:
        """One tidy row per (OOD set, score): the metrics of :data:`METRICS` and set sizes."""
        out = []
        for ood_set, by_score in self.scores_out.items():
            for score, s_out in by_score.items():
                s_in = self.scores_in[score]
                out.append({"model": self.model, "ood_set": ood_set, "score": score,
                            **detection_metrics(s_in, s_out),
                            "n_in": len(s_in), "n_out": len(s_out)})  # fmt: skip
        return out

    def best(self, metric: str = "auroc") -> dict[str, tuple[str, float]]:
        """Per OOD set, the score with the highest ``metric`` (lowest for fpr95 / errors)."""
        if metric not in METRICS:
            raise ValueError(
                f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}"
                + did_you_mean(metric, list(METRICS))
            )
        lower = metric in ("fpr95", "detection_error")
        best: dict[str, tuple[str, float]] = {}
        for row in self.rows():
            value, current = row[metric], best.get(row["ood_set"])
            if current is None or (value < current[1] if lower else value > current[1]):
                best[row["ood_set"]] = (row["score"], value)
        return best

    def to_markdown(self) -> str:
        """A markdown table: one line per OOD set and score."""
        return rows_to_markdown(self.rows(), with_model=False)

    def save(self, out: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
        """Write ``ood.csv``, ``ood.md`` and (with ``plots``) ``roc.png``, ``histograms.png``."""
        from .plots import roc_curves, score_histograms

        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file, not a report folder; save to a folder")
        rows = self.rows()
        title = f"# OOD detection: {self.model}\n\n"
        if self.accuracy is not None:
            title += f"In-distribution accuracy: {self.accuracy:.4f}. "
        title += f"Posterior samples: {self.n_samples}.\n\n"
        paths = {
            "csv": atomic_write_text(out / "ood.csv", rows_to_csv(rows)),
            "md": atomic_write_text(out / "ood.md", title + rows_to_markdown(rows, False)),
        }
        if plots:
            paths["roc"] = roc_curves(self, out / "roc.png")
            paths["histograms"] = score_histograms(self, out / "histograms.png")
        return paths


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Tidy rows as CSV text (floats with 6 significant digits)."""
    if not rows:
        raise ValueError("no rows to write")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def rows_to_markdown(rows: Sequence[dict[str, Any]], with_model: bool = True) -> str:
    """A markdown table of detection rows (AUROC, AUPR in/out, FPR@95, detection error)."""
    header = (["model"] if with_model else []) + ["OOD set", "score", *METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = ([row["model"]] if with_model else []) + [row["ood_set"], row["score"]]
        cells += [f"{row[m]:.4f}" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def evaluate_ood(
    model: UncertaintyModel,
    suite: OODSuite,
    scores: str | Sequence[str | Score] = "all",
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    *,
    name: str | None = None,
    progress: bool = True,
) -> OODReport:
    """Score the suite's in-distribution set and every OOD set under the same posterior draws.

    Example:
        >>> import safety_bhn
        >>> from safety_bhn.ood import build_suite
        >>> model = safety_bhn.build_model("mc_dropout", hidden=[16], seed=0)
        >>> suite = build_suite(torch.rand(20, 1, 28, 28), sets="uniform_noise")
        >>> report = evaluate_ood(model, suite, "entropy", n_samples=5, progress=False)
        >>> [(r["ood_set"], r["score"]) for r in report.rows()]
        [('uniform_noise', 'entropy')]
    """
    if not isinstance(suite, OODSuite):
        raise TypeError(f"suite must be an OODSuite (see build_suite), got {type(suite).__name__}")
    if len(suite) == 0:
        raise ValueError("the suite has no OOD sets; add one with suite.add(name, x)")
    known = suite.known_classes
    if known is not None and len(known) != model.n_classes:
        raise ValueError(
            f"the suite was built for a model of the {len(known)} classes {list(known)} "
            f"(known_classes), but the model has {model.n_classes} classes, so its outputs do "
            "not stand for the suite's labels; build the suite with known_classes set to the "
            "classes the model was trained on, in the order of its outputs (none, for a model "
            "of every class)"
        )
    if suite.y_in is not None and int(suite.y_in.max()) >= model.n_classes:
        raise ValueError(
            f"the suite's in-distribution labels go up to {int(suite.y_in.max())}, but the model "
            f"has {model.n_classes} classes, so inputs of classes it never saw would count as "
            "in-distribution; build the suite with known_classes (the classes it was trained on, "
            "e.g. build_suite(x, y, 'mnist_held_out', known_classes=range(5)))"
        )
    chosen = parse_scores(scores)
    n = model.default_samples if n_samples is None else n_samples
    draw = model.draw(model.check_samples(n), generator)
    batch_size = (
        auto_batch_size(model, n) if batch_size is None else check_int("batch_size", batch_size)
    )

    def score(x: torch.Tensor, desc: str) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        probs = sample_probs(model, x, n, batch_size=batch_size, draw=draw, desc=desc)
        values = compute_scores(probs, chosen)
        return probs, {s.value: v.double().numpy() for s, v in values.items()}

    sets = [("in-distribution", suite.x_in), *suite]
    bar = tqdm(sets, desc=f"OOD {name or model.method}", disable=not progress, leave=False)
    scores_in: dict[str, np.ndarray] = {}
    scores_out: dict[str, dict[str, np.ndarray]] = {}
    acc = None
    for i, (set_name, x) in enumerate(bar):
        bar.set_postfix(set=set_name)
        probs, values = score(x, set_name)
        if i == 0:
            scores_in = values
            if suite.y_in is not None:
                acc = accuracy(probs.mean(0), suite.y_in.cpu())
        else:
            scores_out[set_name] = values
    return OODReport(name or model.method, scores_in, scores_out, acc, n)
