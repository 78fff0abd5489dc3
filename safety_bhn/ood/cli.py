"""The `safety-bhn ood` command: OOD detection tables, ROC curves and histograms for saved runs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from .._argtypes import positive_int, seed_int
from .._io import atomic_write_text, folder_lock
from ..core.base import UncertaintyModel
from ..data import embedded_mnist, load_dataset
from ..runs import check_run_folder, load_run, run_names
from .report import OODReport, evaluate_ood, rows_to_csv, rows_to_markdown
from .scores import parse_scores
from .suite import (
    HELD_OUT_KNOWN,
    OODSetName,
    available_sets,
    build_suite,
    needs_class_split,
    set_names,
)

# built-in sets made from the test images alone, which never read --data-dir
NO_DATA_DIR_SETS = {s.value for s in OODSetName} - {OODSetName.FASHION_MNIST.value}


def add_parser(subparsers: Any) -> None:
    """Add ``ood`` to the ``safety-bhn`` sub-commands."""
    p = subparsers.add_parser(
        "ood",
        help="out-of-distribution detection: AUROC/AUPR/FPR@95 per OOD set and score",
        description="Score a saved run on an OOD suite and write a markdown + CSV table, ROC "
        "curves and score histograms. With --compare, one table across several runs.",
    )
    p.add_argument("runs", nargs="+", help="run folder(s) written by 'safety-bhn train'")
    p.add_argument("--compare", action="store_true", help="compare several runs in one table")
    p.add_argument(
        "--suite",
        default="mnist",
        help="suite (mnist, mnist_held_out), 'all', or comma-separated set names from "
        f"{', '.join(available_sets())} (default: mnist)",
    )
    p.add_argument("--scores", default="all", help="'all' or comma-separated score names")
    p.add_argument("--out", default=None, help="report folder (default: reports/<run name>)")
    p.add_argument("--samples", type=positive_int, default=None, help="posterior samples")
    p.add_argument(
        "--n", type=positive_int, default=2000, help="in-distribution test images (default 2000)"
    )
    p.add_argument("--seed", type=seed_int, default=0, help="seeds the subsets, noise and draws")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with mnist/ and fashion-mnist/ (default: the run's data_dir; without "
        "either, fashion-mnist/ comes from $SAFETY_BHN_DATA or the cache). The MNIST test "
        "images come from its mnist/ when it has one, else from the embedded copy",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-plots", action="store_true", help="write only the tables")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the report already in --out (its files are removed first, so no plot "
        "of the old report stays beside the new tables)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_ood)


def _mnist_test(model: UncertaintyModel, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if math.prod(model.in_shape) != 28 * 28:
        raise ValueError(
            f"the ood command evaluates MNIST models (inputs of 784 pixels) but this model takes "
            f"inputs of shape {model.in_shape}; use safety_bhn.ood.build_suite in Python instead"
        )
    if data_dir is not None and (Path(data_dir).expanduser() / "mnist").is_dir():
        x, y = load_dataset("mnist", "test", data_dir)
    else:
        x, y = embedded_mnist("test")
    return x.reshape(x.shape[0], *model.in_shape), y


def _prepare(run: str, args: argparse.Namespace) -> dict[str, Any]:
    """Load one run and build its suite (checking the model, its test images, the digits it
    learned and its data folder), before anything is scored or written."""
    model, config = load_run(run, args.device)
    data_dir = args.data_dir if args.data_dir is not None else config.get("data_dir")
    x, y = _mnist_test(model, data_dir)
    known = config.get("classes")  # the digits a 'safety-bhn train --classes' run learned
    if known is not None and len(known) != model.n_classes:
        raise ValueError(f"{run}'s metrics.json names classes {known}, but its model has "
                         f"{model.n_classes} outputs")  # fmt: skip
    split = needs_class_split(args.suite)
    if known is None and model.n_classes == 10 and split:
        raise ValueError(
            f"the held-out-classes set treats digits {len(HELD_OUT_KNOWN)}-9 as novel, but "
            f"{run} has {model.n_classes} classes, so it was trained on them; train with "
            f"'safety-bhn train --classes {' '.join(map(str, HELD_OUT_KNOWN))}', or use "
            "--suite mnist"
        )
    # without metrics.json, a model of fewer than ten digits is taken for one of digits 0-4
    # where the held-out split asks for it (its default); any other's digits are unknown
    if (
        known is None
        and model.n_classes != 10
        and not (split and model.n_classes == len(HELD_OUT_KNOWN))
    ):
        raise ValueError(
            f"{run}'s model has {model.n_classes} classes, but no metrics.json beside it names "
            "the digits it learned; keep the run's metrics.json (written by 'safety-bhn "
            "train') beside model.pt"
        )
    if known is not None and split and not set(range(10)) - set(known):
        raise ValueError(
            f"the held-out-classes set scores the digits a model never learned as novel, but "
            f"{run} was trained on all ten (--classes {' '.join(map(str, known))}); use "
            "--suite mnist, or a run trained with fewer --classes"
        )
    suite = build_suite(x, y, args.suite, known_classes=known, n=args.n, seed=args.seed,
                        data_dir=data_dir)  # fmt: skip
    return {"model": model, "suite": suite}


def _report_for(run: dict[str, Any], name: str, args: argparse.Namespace) -> OODReport:
    """Score one run prepared by :func:`_prepare` on its suite."""
    model = run["model"]
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    return evaluate_ood(model, run["suite"], args.scores, args.samples, gen, name=name,
                        progress=not args.no_progress)  # fmt: skip


def _pivot(rows: list[dict[str, Any]], names: list[str]) -> str:
    """AUROC with sets and scores as rows and models as columns."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        table.setdefault((row["ood_set"], row["score"]), {})[row["model"]] = row["auroc"]
    header = ["OOD set", "score", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (ood_set, score), by_model in table.items():
        cells = [f"{by_model[m]:.4f}" if m in by_model else "" for m in names]
        lines.append("| " + " | ".join([ood_set, score, *cells]) + " |")
    return "\n".join(lines) + "\n"


def run_ood(args: argparse.Namespace) -> int:
    """Run the ``ood`` sub-command; returns the exit status.

    Every input (scores, suite, runs, the report folder) is checked before the report folder
    is created, so a mistyped command leaves nothing behind; the folder is created before any
    scoring, so an unwritable place fails at once rather than after it.
    """
    parse_scores(args.scores)
    sets = set_names(args.suite)
    reads_data_dir = [s for s in sets if s not in NO_DATA_DIR_SETS]  # e.g. fashion_mnist
    if args.data_dir is not None:  # "~/data" as load_dataset reads it
        args.data_dir = str(Path(args.data_dir).expanduser())
    mnist_folder = args.data_dir is not None and (Path(args.data_dir) / "mnist").is_dir()
    if args.data_dir is not None and not reads_data_dir and not mnist_folder:
        raise ValueError(
            f"--data-dir {args.data_dir} is not read: it has no mnist/ folder (the test images "
            f"come from the embedded copy) and suite {args.suite!r} has no fashion_mnist set; "
            "drop --data-dir, point it at a folder holding mnist/, or add fashion_mnist to "
            "--suite"
        )
    if len(args.runs) > 1 and not args.compare:
        raise ValueError(f"{len(args.runs)} runs given; pass --compare to compare several runs")
    if args.compare and len(args.runs) < 2:
        raise ValueError("--compare needs at least two run folders")
    names = run_names(args.runs)
    default = Path("reports") / (names[0] if not args.compare else "compare")
    out = Path(args.out or default)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a report folder; choose another --out")
    old = _report_files(out, names)
    if old and not args.overwrite:  # they were replaced, or mixed with the new report's
        raise ValueError(
            f"{out} holds a report already ({old[0]}); choose another --out, or pass "
            "--overwrite to replace it"
        )
    prepared = [_prepare(run, args) for run in args.runs]  # every run checked before scoring
    out = check_run_folder(out, overwrite=True)  # created only now, but before any scoring
    with folder_lock(out):  # a second ood writing here stops at once
        for path in _report_files(out, names):
            path.unlink()
        return _write_reports(out, prepared, names, args)


#: The files an ``ood`` report writes in its folder (a comparison: also in one folder per run).
REPORT_FILES = ("ood.csv", "ood.md", "roc.png", "histograms.png", "compare.csv", "compare.md",
                "compare_auroc.png")  # fmt: skip


def _report_files(out: Path, names: list[str]) -> list[Path]:
    """The files of an earlier report in ``out`` (and in its per-run folders ``names``)."""
    folders = [out, *(out / name for name in names)]
    return [f / n for f in folders for n in REPORT_FILES if (f / n).is_file()]


def _write_reports(
    out: Path, prepared: list[Any], names: list[str], args: argparse.Namespace
) -> int:
    """Score every run and write the report (one run) or the comparison into ``out``."""
    if not args.compare:
        report = _report_for(prepared[0], names[0], args)
        paths = report.save(out, plots=not args.no_plots)
        if report.accuracy is not None:
            print(f"{names[0]}: in-distribution accuracy {report.accuracy:.4f}")
        print(report.to_markdown(), end="")
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        return 0

    rows: list[dict[str, Any]] = []
    for run, name in zip(prepared, names, strict=True):
        report = _report_for(run, name, args)
        report.save(out / name, plots=not args.no_plots)
        rows += report.rows()
    text = "# OOD detection: AUROC by model\n\n" + _pivot(rows, names)
    text += "\n## All metrics\n\n" + rows_to_markdown(rows)
    written = [atomic_write_text(out / "compare.csv", rows_to_csv(rows)),
               atomic_write_text(out / "compare.md", text)]  # fmt: skip
    if not args.no_plots:
        from .plots import auroc_bars

        written.append(auroc_bars(rows, out / "compare_auroc.png"))
    print(_pivot(rows, names), end="")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
