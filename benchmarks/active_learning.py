"""Active learning on MNIST: labels to reach 90% / 95% test accuracy per method and acquisition.

Pool: the embedded 5000-image MNIST training subset minus the initial and validation sets;
test: the 10000 MNIST test images. Every run keeps its own state folder under --runs-dir, so an
interrupted benchmark continues where it stopped when started again with the same arguments.

    python benchmarks/active_learning.py            # the issue's full grid (CNN: days on 2 CPUs)
    python benchmarks/active_learning.py --arch mlp --hidden 128 --workers 2  # ~46 min on 2 CPUs
    python benchmarks/active_learning.py --quick    # smoke test, well under a minute
    python benchmarks/active_learning.py --device cuda --workers 8 --deadline-minutes 50
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import enum
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    AL_RUN_FILE,
    MNIST_TEST_SIZE,
    RESULTS,
    RESULTS_VERSION,
    check_flags,
    check_results_version,
    command_line,
    divergence_phrase,
    fail,
    flag_errors,
    in_results,
    markdown_table,
    mean_std,
    parse_args,
    quick_out,
    quick_settings,
    refuse_unused,
    seed_everything,
    stop_with_parent,
    write_csv,
)

from safety_bhn._io import atomic_write_json, atomic_write_text  # noqa: E402
from safety_bhn.active import (  # noqa: E402
    ActiveConfig,
    ActiveLearner,
    check_resume,
    curve_auc,
    labels_to_reach,
    mnist_pool,
    read_curve,
)
from safety_bhn.active.plots import learning_curves  # noqa: E402
from safety_bhn.runs import environment  # noqa: E402


@dataclass
class Args:
    """Active-learning benchmark: methods x acquisitions x seeds on the MNIST-5000 pool."""

    methods: list[str] = field(default_factory=lambda: ["bhn", "mc_dropout", "factorial_vi"])
    """posterior methods to compare"""
    acquisitions: list[str] = field(
        default_factory=lambda: ["bald", "max_entropy", "variation_ratios", "random"]
    )
    """acquisition functions to compare"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """one run per seed (initial set, validation set, weights, training)"""
    initial: int = 20
    """balanced initial labelled set"""
    val_size: int = 100
    """validation set for early stopping"""
    acquire: int = 10
    """points acquired per step"""
    max_labels: int = 520
    """labelled points at the last step (initial + acquire * steps)"""
    arch: str = "cnn"
    """primary network: cnn (Gal et al. 2017's conv-conv-pool-dense, as the anchors) or mlp"""
    hidden: list[int] = field(default_factory=lambda: [800])
    """MLP hidden units (arch mlp only)"""
    coupling_layers: int = 4
    """BHN coupling layers"""
    bhn_prior_mean: str = "init"
    """centre of the BHN prior on the scales: init (data-dependent initial scales) or zero;
    with zero the CNN BHN stays at chance with 20-60 labels (see safety_bhn.core.bhn.BHN)"""
    bhn_local_draws: bool = False
    """train the BHN with a draw of the scales per image rather than one per minibatch"""
    train_steps: int = 500
    """gradient steps per retrain (from scratch at every step)"""
    lr_schedule: str = "cosine"
    """learning rate over each retrain: cosine (decays to 0) or constant"""
    lr_warmup: float = 0.05
    """fraction of each retrain's steps with a linear learning-rate warmup"""
    select: str = "nll"
    """weights each retrain keeps: nll (best validation NLL), accuracy, or last (final epoch)"""
    pool_subset: int = 2000
    """pool points scored per step"""
    acq_samples: int = 20
    """posterior samples for acquisition scores"""
    eval_samples: int = 20
    """posterior samples for test metrics"""
    test_size: int = 0
    """test images used (0: all 10000)"""
    quick: bool = False
    """smoke-test settings: tiny network, 2 steps, bald and random, one seed"""
    runs_dir: str = "runs/al-benchmark"
    """one resumable state folder per run"""
    out_dir: str = str(RESULTS)
    """where active_learning.{md,csv,png} go"""
    threads: int = 1
    """torch CPU threads per run (one is much faster for these small models on a busy CPU)"""
    device: str = "cpu"
    """torch device for training and scoring: cpu, or cuda on a machine with a GPU"""
    workers: int = 1
    """runs in parallel processes (a multi-core CPU, or several runs sharing one GPU)"""
    deadline_minutes: float = 0.0
    """take no new step after this many minutes (0: no deadline); every finished step is
    saved under --runs-dir, so the same command started again continues the runs"""
    finished_csv: str = ""
    """an earlier report's active_learning.csv: its finished runs that have no state folder
    under --runs-dir are taken from it instead of being run, so a report can be rebuilt or
    extended on a machine that lacks those runs' states"""


FULL = Args()

#: The flags only the BHN's runs use.
BHN_FLAGS = {name: ["bhn"] for name in ("coupling_layers", "bhn_prior_mean", "bhn_local_draws")}


def quick_args(args: Args) -> Args:
    """Smoke-test settings: tiny network, 2 steps, bald and random, one seed; the settings the
    user named on the command line are kept."""
    # never under the committed results, even where --runs-dir names a folder inside them
    runs_dir = quick_out(str(Path(args.runs_dir) / "quick"))
    if in_results(args.out_dir):  # never overwrite the real results with a smoke test
        args = dataclasses.replace(args, out_dir=runs_dir)
    args = quick_settings(args, acquisitions=["bald", "random"], seeds=[0], hidden=[32],
                          arch="mlp",  # the CNN path is tested in test_active.py
                          coupling_layers=2, train_steps=20, pool_subset=200, acq_samples=5,
                          eval_samples=3, test_size=1000)  # fmt: skip
    args = quick_settings(args, max_labels=args.initial + 2 * args.acquire)
    args.runs_dir = runs_dir
    return args


def deviations(args: Args) -> list[str]:
    """How these settings differ from the issue's full benchmark (empty: the full run).

    The issue fixes the grid (methods, acquisitions, at least 3 seeds, at least 500 labels)
    and the loop (initial and validation sets, labels per step, pool subset, all 10000 test
    images), not the network: see :func:`network_choice`.
    """
    out = []
    for name in (
        "methods",
        "acquisitions",
        "acquire",
        "initial",
        "val_size",
        "pool_subset",
        "test_size",
    ):
        if getattr(args, name) != getattr(FULL, name):
            out.append(f"{name}={getattr(args, name)} (full: {getattr(FULL, name)})")
    if len(args.seeds) < 3:
        out.append(f"seeds={args.seeds} (full: 3 seeds)")
    if args.max_labels < 500:
        out.append(f"max_labels={args.max_labels} (full: >= 500)")
    return out


def network_choice(args: Args) -> str:
    """The primary network, and how it differs from this script's default (Gal et al.'s CNN)."""
    if args.arch == FULL.arch:
        return f"{args.arch.upper()} (the default)"
    hidden = f" with hidden layers {args.hidden}" if args.arch == "mlp" else ""
    return f"{args.arch.upper()}{hidden}, not the default {FULL.arch.upper()}"


class Verdict(str, enum.Enum):
    """Outcome of a target check; UNDECIDED when the label budget was too small to tell."""

    MET = "MET"
    MISSED = "MISSED"
    UNDECIDED = "UNDECIDED"


def _mean_bounds(labels: Sequence[int | None], censored: int) -> tuple[float, float]:
    """Bounds on the mean over seeds of labels to reach a target (None: not reached).

    A seed that never reached the target within the budget needs at least ``censored``
    labels (one step past the last) and possibly any number more, so its mean is only
    bounded below unless every seed reached the target.
    """
    if not labels:
        raise ValueError("no seeds to compare: pass one labels-to-reach value per seed")
    low = float(np.mean([censored if v is None else v for v in labels]))
    high = low if all(v is not None for v in labels) else math.inf
    return low, high


def fewer_labels_verdict(
    a: Sequence[int | None], b: Sequence[int | None], censored: int, strict: bool = True
) -> Verdict:
    """Does A need fewer labels than B (``strict``), or no more (not strict), to reach a target?

    ``a`` and ``b`` hold labels to reach the target per seed, None for a seed that did not
    reach it within the budget; ``censored`` is the label count after one more step. The
    means over seeds are compared through their bounds (:func:`_mean_bounds`): MET when
    every possible mean of A beats every possible mean of B, MISSED when none can, and
    UNDECIDED otherwise, in particular when neither A nor B reached the target.
    """
    low_a, high_a = _mean_bounds(a, censored)
    low_b, high_b = _mean_bounds(b, censored)
    if high_a < low_b or (not strict and high_a == low_b):
        return Verdict.MET
    if low_a > high_b or (strict and low_a == high_b):
        return Verdict.MISSED
    return Verdict.UNDECIDED


def combine_verdicts(verdicts: Sequence[Verdict]) -> Verdict:
    """A target made of several checks: MISSED if any is, MET if all are, else UNDECIDED."""
    if not verdicts:
        raise ValueError("no verdicts to combine")
    if Verdict.MISSED in verdicts:
        return Verdict.MISSED
    return Verdict.MET if all(v is Verdict.MET for v in verdicts) else Verdict.UNDECIDED


def _reach_text(labels: Sequence[int | None], censored: int) -> str:
    """Mean labels to reach over seeds: exact, or a lower bound when some seed never did."""
    low, high = _mean_bounds(labels, censored)
    if high == low:
        return f"{low:.0f}"
    reached = sum(v is not None for v in labels)
    return f">= {low:.0f} ({reached}/{len(labels)} seeds reached)"


BELOW_TARGETS = (0.80, 0.85)
"""Lower accuracies at which a check that 90% / 95% leave UNDECIDED is repeated (not targets)."""


def _compare(
    a: dict[float, list[int | None]],
    b: dict[float, list[int | None]],
    censored: int,
    strict: bool,
) -> tuple[Verdict, str]:
    """Verdict over every accuracy in ``a``, and the labels to reach each, A vs B."""
    verdict = combine_verdicts([fewer_labels_verdict(a[t], b[t], censored, strict) for t in a])
    detail = "; ".join(
        f"{t:.0%}: {_reach_text(a[t], censored)} vs {_reach_text(b[t], censored)}" for t in a
    )
    return verdict, detail


def target_check(
    claim: str,
    a: dict[float, list[int | None]],
    b: dict[float, list[int | None]],
    censored: int,
    strict: bool,
    below: tuple[dict[float, list[int | None]], dict[float, list[int | None]]] | None = None,
) -> str:
    """One line of the Targets section: A needs fewer (no more) labels than B at every accuracy.

    ``a`` and ``b`` map each target accuracy to labels to reach it per seed (None: never).
    ``below``, the same maps for lower accuracies: when the targets leave the check
    UNDECIDED, the line adds the check at those accuracies, marked as not a target (the
    verdict at the start of the line stays the targets').
    """
    verdict, detail = _compare(a, b, censored, strict)
    line = f"{verdict.value}: {claim} ({detail})"
    if verdict is Verdict.UNDECIDED and below is not None:
        low_verdict, low_detail = _compare(*below, censored, strict)
        line += f"; below the targets (not a target): {low_verdict.value} ({low_detail})"
    return line


def acquisition_checks(
    stats: dict[tuple[str, str], dict[float, list[int | None]]],
    acq: str,
    censored: int,
    below: dict[tuple[str, str], dict[float, list[int | None]]] | None = None,
) -> list[str]:
    """Target lines for one acquisition: per method, does it need fewer labels than random;
    and after the BHN's line, does the BHN need no more labels than MC-dropout BALD.

    ``stats`` maps (method, acquisition) to labels to reach each target accuracy per seed, in
    the table's order; pairs missing from it are skipped. ``below``, the same at
    :data:`BELOW_TARGETS`, is added to checks that the targets leave UNDECIDED.
    """
    name = "BALD" if acq == "bald" else acq
    checks = []
    for method, a in stats:
        if a != acq:
            continue
        versus = [(f"{method} {name} needs fewer labels than random", (method, "random"), True)]
        if method == "bhn":
            claim = f"BHN-{name} needs no more labels than MC-dropout-BALD"
            versus.append((claim, ("mc_dropout", "bald"), False))
        for claim, other, strict in versus:
            if other in stats:
                low = None if below is None else (below[(method, acq)], below[other])
                checks.append(
                    target_check(claim, stats[(method, acq)], stats[other], censored, strict, low)
                )
    return checks


def _reach_per_seed(curves: list[list[dict]], accuracy: float) -> list[int | None]:
    """Labels at which each curve (one per seed) first reaches ``accuracy``; None: never."""
    return [
        labels_to_reach([r["n_labels"] for r in c], [r["test_acc"] for r in c], accuracy)
        for c in curves
    ]


def summarise(rows: list[dict], args: Args) -> tuple[str, list[str], list[str]]:
    """Markdown table of labels to 90% / 95%, AUC and step time; the issue's target checks;
    and the same checks for the other acquisitions (each against random, and the BHN's
    against MC-dropout BALD), which are not targets."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for method in args.methods:
        for acq in args.acquisitions:
            for seed in args.seeds:
                curve = [
                    r
                    for r in rows
                    if (r["method"], r["acquisition"], r["seed"]) == (method, acq, seed)
                ]
                if curve:
                    runs.setdefault((method, acq), []).append(curve)
    censored = args.max_labels + args.acquire  # "not reached": at least one step past the end
    table, stats, below = [], {}, {}
    for (method, acq), curves in runs.items():
        below[(method, acq)] = {level: _reach_per_seed(curves, level) for level in BELOW_TARGETS}
        reach = {}
        for target in (0.90, 0.95):
            vals = _reach_per_seed(curves, target)
            reached = [v for v in vals if v is not None]
            text = mean_std(reached, "{:.0f}") if reached else "not reached"
            if len(reached) < len(vals):
                text += f" ({len(reached)}/{len(vals)} seeds reached)"
            reach[target] = (text, vals)
        aucs = [curve_auc([r["n_labels"] for r in c], [r["test_acc"] for r in c]) for c in curves]
        final = [c[-1]["test_acc"] for c in curves]
        step_s = [r["step_seconds"] for c in curves for r in c]
        stats[(method, acq)] = {target: vals for target, (_, vals) in reach.items()}
        table.append(
            [
                method,
                acq,
                len(curves),
                reach[0.90][0],
                reach[0.95][0],
                mean_std(aucs),
                mean_std(final),
                f"{np.mean(step_s):.1f}",
            ]
        )
    md = markdown_table(
        [
            "method",
            "acquisition",
            "seeds",
            "labels to 90%",
            "labels to 95%",
            "AUC (mean acc)",
            "final acc",
            "s / step",
        ],
        table,
    )

    checks = acquisition_checks(stats, "bald", censored, below)
    checks.append(
        f"(labels to reach are means over seeds; a seed that never reached the target within "
        f"{args.max_labels} labels needs at least {censored}, so such a mean is only a lower "
        "bound; UNDECIDED: these bounds cannot settle the comparison, e.g. neither run reached "
        "the target within the budget; then the check is repeated at "
        f"{' and '.join(f'{t:.0%}' for t in BELOW_TARGETS)} accuracy, which is not a target)"
    )
    others = [
        check
        for acq in args.acquisitions
        if acq not in ("bald", "random")
        for check in acquisition_checks(stats, acq, censored, below)
    ]
    return md, checks, others


def step_times(rows: list[dict]) -> str:
    """Markdown table of step times by device and method (runs may move between machines).

    Steps saved before the loop recorded its device (2026-11-28) count as "not recorded".
    """
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        device = r.get("device") or "not recorded"
        groups.setdefault((device, r["method"]), []).append(r["step_seconds"])
    table = [
        [device, method, len(secs), f"{np.median(secs):.1f}", f"{np.mean(secs):.1f}"]
        for (device, method), secs in sorted(groups.items())
    ]
    return markdown_table(["device", "method", "steps", "median s / step", "mean s / step"], table)


def class_balance(rows: list[dict], at: Sequence[int] | None = None) -> str:
    """Markdown table: labels of the least-labelled class after ``at`` labels, mean over seeds
    (default: the label counts of the 5th, 10th and 20th acquisition, where the runs have
    them: 70, 120 and 220 with 20 initial labels and 10 a step).

    A low count means the acquisitions passed a class by (the initial set has two a class).
    """
    if at is None:  # fixed counts missed a grid of --acquire 40 (20, 60, 100, ...) entirely
        grid = sorted({int(r["n_labels"]) for r in rows})
        at = [grid[k] for k in (5, 10, 20) if k < len(grid)]

    def key(r: dict) -> tuple[str, str, int]:
        return r["method"], r["acquisition"], r["n_labels"]

    table = []
    for method, acq in sorted({(r["method"], r["acquisition"]) for r in rows}):
        cells = []
        for n in at:
            counts = [r["rarest_class"] for r in rows if key(r) == (method, acq, n)]
            cells.append(f"{np.mean(counts):.1f} (n={len(counts)})" if counts else "–")
        table.append([method, acq, *cells])
    return markdown_table(["method", "acquisition", *(f"at {n} labels" for n in at)], table)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    command = command_line("active_learning.py", argv)
    if args.quick:
        args = quick_args(args)
    script = "active_learning.py"
    check_flags(script, args, positive=["workers", "acquire", "threads"],
                nonnegative=["test_size", "deadline_minutes"],
                distinct=["methods", "acquisitions"])  # fmt: skip
    if args.test_size > MNIST_TEST_SIZE:  # the run scored all 10000; the report said more
        fail(script, f"--test-size must be at most {MNIST_TEST_SIZE}, the MNIST test images "
                     f"(0: all of them), got {args.test_size}")  # fmt: skip
    args.test_size %= MNIST_TEST_SIZE  # 10000 is all of them, as 0 is: the same runs
    refuse_unused(script, args, BHN_FLAGS, "methods", args.methods)
    refuse_unused(script, args, {"hidden": ["mlp"]}, "arch", [args.arch])
    steps = (args.max_labels - args.initial) // args.acquire
    if steps < 1 or args.initial + steps * args.acquire != args.max_labels:
        fail(script, f"--max-labels {args.max_labels} must be initial ({args.initial}) + "
                     f"acquire ({args.acquire}) * steps with steps >= 1")  # fmt: skip
    for method in args.methods:  # every name and setting checked before any run trains
        for acq in args.acquisitions:
            with flag_errors(script, f"--methods {method} --acquisitions {acq}: "):
                make_config(args, args.seeds[0], method, acq).validate()
    run_name = f"active_learning__{'-'.join(map(str, args.seeds))}__{int(time.time())}"
    out_dir = Path(args.out_dir)
    jobs = [  # seeds outermost, so a benchmark stopped early has every method and acquisition
        (seed, method, acq)
        for seed in args.seeds
        for method in args.methods
        for acq in args.acquisitions
    ]
    for job in jobs:  # a run started with other settings is refused before any run trains
        folder = run_folder(args, *job)
        with flag_errors(script):  # another test set: not continued on this one
            check_test_size(folder, args.test_size)
            if (folder / "state.json").is_file():
                check_resume(folder, make_config(args, *job))
    deadline = time.time() + 60 * args.deadline_minutes if args.deadline_minutes else None
    curves: dict[tuple[int, str, str], list[dict]] = {}
    if args.finished_csv:  # runs finished elsewhere, whose states are not here
        try:
            earlier = read_finished_csv(args.finished_csv, steps, args.initial, args.acquire)
            check_finished_settings(args.finished_csv, args)
        except (OSError, ValueError, KeyError, SyntaxError) as err:  # missing, other settings
            fail(script, f"--finished-csv: {err}")
        here = {job for job in jobs if (run_folder(args, *job) / "state.json").is_file()}
        curves = {job: earlier[job] for job in jobs if job in earlier and job not in here}
    start = time.time()

    def finished(job: tuple[int, str, str], curve: list[dict] | None) -> None:
        if curve is None:  # stopped at the deadline; its finished steps are saved
            return
        curves[job] = curve
        rows = [r for j in jobs if j in curves for r in curves[j]]
        write_results(rows, args, out_dir, run_name, command, time.time() - start)

    todo = [job for job in jobs if job not in curves]
    if curves:  # report the runs taken from the CSV even if no other run finishes
        finished(*next(iter(curves.items())))
    if args.workers == 1:
        for job in todo:
            finished(job, run_one(args, *job, deadline=deadline, progress=True))
    else:
        # spawn: CUDA cannot be used in a forked child
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            args.workers, mp_context=context, initializer=stop_with_parent
        ) as executor:
            futures = {executor.submit(run_one, args, *job, deadline=deadline): job for job in todo}
            for future in tqdm(as_completed(futures), total=len(futures), desc="runs"):
                finished(futures[future], future.result())
    partial: list[list[dict]] = []
    if len(curves) < len(jobs):
        started = [run_folder(args, *job) for job in jobs if job not in curves]
        partial = [read_curve(f) for f in started if (f / "state.json").is_file()]
        partial = [c for c in partial if c]
        if partial:  # the report lists them apart, with how far each has come
            rows = [r for j in jobs if j in curves for r in curves[j]]
            write_results(rows, args, out_dir, run_name, command, time.time() - start, partial)
        print(f"deadline: {len(jobs) - len(curves)} of {len(jobs)} runs unfinished; the same "
              "command continues them")  # fmt: skip
    if curves or partial:
        print(f"report: {out_dir / 'active_learning.md'} (with active_learning.csv and .png); "
              f"run states: {args.runs_dir}")  # fmt: skip


def _optional_int(text: str) -> int | None:
    """An int cell that may be empty: a column recorded since 2026-12-08 (empty in older
    rows), or a step with nothing to record (``diverged_epoch`` of a run that never stopped).
    A missing cell (``None``: a row cut short) is still an error."""
    return None if text == "" else int(text)


#: Column types of the tidy CSV (the rest are strings; an empty device is None).
CSV_TYPES = {"seed": int, "step": int, "n_labels": int, "rarest_class": int, "test_acc": float,
             "test_nll": float, "train_seconds": float, "acquire_seconds": float,
             "step_seconds": float, "best_epoch": _optional_int,
             "retried_epochs": _optional_int, "diverged_epoch": _optional_int}  # fmt: skip


def divergences(rows: list[dict]) -> list[str]:
    """The report's lines on retrains whose training diverged (safety_bhn.fit retried the
    epoch, or stopped there keeping the best validated epoch before it); none if none did."""
    hit = [r for r in rows if r.get("retried_epochs") or r.get("diverged_epoch") is not None]
    if not hit:
        return []
    steps = "; ".join(
        f"{r['method']}-{r['acquisition']} seed {r['seed']} step {r['step']}: "
        + divergence_phrase(r.get("retried_epochs"), r.get("diverged_epoch"))
        for r in hit
    )
    return ["", f"**Diverged retrains** (their training loss blew up; safety_bhn.fit): {steps}"]


def read_finished_csv(
    path: str | Path, steps: int, initial: int | None = None, acquire: int | None = None
) -> dict[tuple[int, str, str], list[dict]]:
    """The finished runs of an earlier report's tidy CSV: ``{(seed, method, acq): curve}``.

    Each curve must have ``steps + 1`` rows (the CSV holds finished runs only); a run with
    another length was made with other settings, and is an error.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    runs: dict[tuple[int, str, str], list[dict]] = {}
    for line, row in enumerate(rows, start=2):
        try:  # a truncated file leaves None (or cut numbers) in its last row
            typed = {k: CSV_TYPES[k](v) if k in CSV_TYPES else v for k, v in row.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{path}: line {line} is damaged (cut short or edited): "
                             f"{dict(row)}") from None  # fmt: skip
        typed["device"] = typed.get("device") or None
        runs.setdefault((typed["seed"], typed["method"], typed["acquisition"]), []).append(typed)
    for (seed, method, acq), curve in runs.items():
        if len(curve) != steps + 1:
            raise ValueError(
                f"{path}: run {method}-{acq}-seed{seed} has {len(curve)} steps, but these "
                f"settings make {steps + 1}; pass the settings of the run that wrote it"
            )
        if initial is not None and acquire is not None:
            labels = [r["n_labels"] for r in curve]
            wanted = [initial + acquire * step for step in range(steps + 1)]
            if labels != wanted:
                raise ValueError(
                    f"{path}: run {method}-{acq}-seed{seed} has label counts {labels[:3]}..., "
                    f"but these settings make {wanted[:3]}...; pass the --initial, --acquire "
                    "and --max-labels of the run that wrote it"
                )
    return runs


#: The settings that shape a run's curve (those :func:`make_config` reads, and the test set);
#: a run taken from ``--finished-csv`` must have been made with the same.
CURVE_SETTINGS = ("initial", "val_size", "acquire", "max_labels", "arch", "hidden",
                  "coupling_layers", "bhn_prior_mean", "bhn_local_draws", "train_steps",
                  "lr_schedule", "lr_warmup", "select", "pool_subset", "acq_samples",
                  "eval_samples", "test_size")  # fmt: skip


def check_finished_settings(path: str | Path, args: Args) -> None:
    """Refuse the runs of an earlier report's CSV (``--finished-csv``) made with other
    settings than ``args``, or by code of another results version: their settings are those
    on the ``- settings:`` line of the ``active_learning.md`` written beside it (settings the
    report predates are not checked), their version that on its ``- results version:`` line
    (version 1 for a report from before the line)."""
    report = Path(path).with_name("active_learning.md")
    if not report.is_file():
        raise ValueError(f"{report} is missing: the settings of the runs in {path} are "
                         "read from the report written beside it; pass a CSV that has its "
                         "report")  # fmt: skip
    text = report.read_text().splitlines()
    version = [line[len(VERSION_PREFIX) :].split()[:1] for line in text
               if line.startswith(VERSION_PREFIX)]  # fmt: skip
    found = (version[0] or [""])[0] if version else None  # "": a damaged line
    check_results_version(found, f"{path} (its report {report.name})",
                          "leave out --finished-csv to rerun its runs")  # fmt: skip
    prefix = "- settings: "
    lines = [line for line in text if line.startswith(prefix)]
    if not lines:
        raise ValueError(f"{report} has no '{prefix}...' line, so the settings of the runs in "
                         f"{path} are unknown; pass a CSV written with its report")  # fmt: skip
    saved = ast.literal_eval(lines[0][len(prefix) :])
    if "test_size" in saved:
        saved["test_size"] %= MNIST_TEST_SIZE
    differ = [f"--{name.replace('_', '-')}: {saved[name]!r} there, {getattr(args, name)!r} here"
              for name in CURVE_SETTINGS if name in saved and saved[name] != getattr(args, name)
              and (name != "hidden" or args.arch == "mlp")]  # fmt: skip
    if differ:
        raise ValueError(f"its runs were made with other settings ({'; '.join(differ)}); pass "
                         "the settings of the run that wrote it")  # fmt: skip


def run_folder(args: Args, seed: int, method: str, acq: str) -> Path:
    """The state folder of one run."""
    return Path(args.runs_dir) / f"{method}-{acq}-seed{seed}"


TEST_SET_FILE = AL_RUN_FILE  # the test images and results version a run was started with
#: The report line that records the results version of the code that made its runs.
VERSION_PREFIX = "- results version: "


def check_test_size(folder: Path, test_size: int) -> None:
    """Refuse to continue (or report) the run in ``folder`` if it was started by code of
    another results version (runs started before it was saved count as version 1), or with
    another ``--test-size``: its saved steps were scored on those test images, and a curve
    with steps scored on two test sets is no curve (runs started before the test size was
    saved cannot be checked for it)."""
    path = folder / TEST_SET_FILE
    if not (folder / "state.json").is_file():
        return
    found: dict = {}
    if path.is_file():
        try:
            found = json.loads(path.read_text())
            saved = found["test_size"] % MNIST_TEST_SIZE  # 10000: all, as 0
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise ValueError(
                f'{path} is damaged; it should hold {{"test_size": N, "results_version": V}} '
                "as the run was started with (0: all 10000 test images); restore it"
            ) from None
    remedy = "delete that folder to rerun the run, or pass another --runs-dir"
    check_results_version(found.get("results_version"), str(folder), remedy)
    if not path.is_file():
        return
    if saved != test_size:
        raise ValueError(
            f"{folder} was started with --test-size {saved}, but this invocation asks for "
            f"--test-size {test_size}; pass --test-size {saved} to continue it, or another "
            "--runs-dir for these settings"
        )


def unfinished_table(curves: list[list[dict]], steps: int) -> str:
    """Markdown table of runs stopped before their last step (left out of the summary above)."""

    def reach(curve: list[dict], target: float) -> str:
        n = labels_to_reach([r["n_labels"] for r in curve], [r["test_acc"] for r in curve], target)
        return f"not yet (by {curve[-1]['n_labels']})" if n is None else str(n)

    table = [
        [c[0]["method"], c[0]["acquisition"], c[0]["seed"], f"{len(c)} of {steps + 1}",
         c[-1]["n_labels"], f"{c[-1]['test_acc']:.4f}", reach(c, 0.90), reach(c, 0.95)]
        for c in curves
    ]  # fmt: skip
    header = ["method", "acquisition", "seed", "steps done", "labels", "test acc", "labels to 90%",
              "labels to 95%"]  # fmt: skip
    return markdown_table(header, table)


def make_config(args: Args, seed: int, method: str, acq: str) -> ActiveConfig:
    """The loop settings of one (seed, method, acquisition) run."""
    bhn_options = {"coupling_layers": args.coupling_layers, "prior_mean": args.bhn_prior_mean}
    if args.bhn_local_draws:
        bhn_options["local_draws"] = True
    return ActiveConfig(
        method=method,
        acquisition=acq,
        arch=args.arch,
        hidden=args.hidden,
        options=bhn_options if method == "bhn" else {},
        initial=args.initial,
        val_size=args.val_size,
        acquire=args.acquire,
        steps=(args.max_labels - args.initial) // args.acquire,
        pool_subset=args.pool_subset,
        acq_samples=args.acq_samples,
        eval_samples=args.eval_samples,
        train_steps=args.train_steps,
        lr_schedule=args.lr_schedule,
        lr_warmup=args.lr_warmup,
        select=args.select,
        seed=seed,
        device=args.device,
    )


def run_one(
    args: Args,
    seed: int,
    method: str,
    acq: str,
    deadline: float | None = None,
    progress: bool = False,
) -> list[dict] | None:
    """One active-learning run, resumed from its state folder if it has one.

    Returns its learning curve, or None if the ``deadline`` (a ``time.time()`` value)
    passed first; each finished step is saved, so a later call continues the run.
    """
    torch.set_num_threads(args.threads)
    seed_everything(seed)
    pool, test = mnist_pool()
    if args.test_size:
        test = (test[0][: args.test_size], test[1][: args.test_size])
    config = make_config(args, seed, method, acq)
    folder = run_folder(args, seed, method, acq)
    resume = (folder / "state.json").is_file()
    check_test_size(folder, args.test_size)
    learner = ActiveLearner(config, pool, test=test, out=folder, resume=resume)
    if not resume:  # saved once the run's folder holds its state
        saved = {"test_size": args.test_size, "results_version": RESULTS_VERSION}
        atomic_write_json(folder / TEST_SET_FILE, saved)
    if deadline is None:
        learner.run(progress=progress)
    else:  # one step at a time, so that no step starts after the deadline
        while not learner.done and time.time() < deadline:
            learner.run(progress=progress, max_steps=1)
    return learner.curve() if learner.done else None


def write_results(
    rows: list[dict],
    args: Args,
    out_dir: Path,
    run_name: str,
    command: str,
    secs: float,
    partial: Sequence[list[dict]] = (),
) -> None:
    """Write the tidy CSV, the markdown summary and the plot (after every finished run).

    ``partial``: curves of runs stopped at the deadline; the report lists them in a table of
    their own, and neither the CSV nor the summary and targets count them.
    """
    write_csv(rows, out_dir / "active_learning.csv")
    if rows:
        learning_curves(rows, out_dir / "active_learning.png", hue="acquisition", col="method")
    md, checks, others = summarise(rows, args)
    env = environment()
    reduced = deviations(args)
    lines = [
        "# Active learning on MNIST",
        "",
        f"Run `{run_name}`: `{command}`",
        "",
        f"- machine: {env['machine']}; torch {env['torch']}; date {env['date']}; "
        f"loop time {sum(r['step_seconds'] for r in rows) / 60:.1f} min in all (recorded per "
        f"step, also for steps resumed from {args.runs_dir}); this invocation {secs / 60:.1f} min",
        f"- settings: {asdict(args)}",
        f"{VERSION_PREFIX}{RESULTS_VERSION} (of the code that made these runs)",
        "- pool: embedded MNIST-5000 training subset minus initial and validation sets; "
        f"network: {network_choice(args)}, retrained from scratch at every step; curves in "
        "active_learning.png, tidy rows in active_learning.csv",
    ]
    if args.finished_csv:
        runs = {(r["seed"], r["method"], r["acquisition"]) for r in rows}
        taken = [run for run in runs if not (run_folder(args, *run) / "state.json").is_file()]
        lines.append(
            f"- {len(taken)} of the {len(runs)} finished runs were taken from "
            f"{args.finished_csv} (their states are not under {args.runs_dir})"
        )
    if reduced:
        lines += ["", "**REDUCED RUN** (not the issue's full benchmark): " + "; ".join(reduced)]
    planned = len(args.methods) * len(args.acquisitions) * len(args.seeds)
    finished = len({(r["method"], r["acquisition"], r["seed"]) for r in rows})
    if finished < planned:
        lines += ["", f"**INCOMPLETE**: {finished} of {planned} runs finished so far."]
    lines += divergences(rows)
    lines += ["", md, "## Targets", ""] + [f"- {c}" for c in checks]
    if others:
        lines += ["", "## Other acquisitions (the same checks; not the issue's targets)", ""]
        lines += [f"- {c}" for c in others]
    if partial:
        lines += [
            "",
            "## Unfinished runs",
            "",
            "Stopped at the deadline; not in the table, CSV, plot or targets above. The same "
            "command continues them.",
            "",
            unfinished_table(list(partial), (args.max_labels - args.initial) // args.acquire),
        ]
    lines += [
        "",
        "Anchor (Gal et al. 2017, MC-dropout CNN, pool ~60000): labels to 10% / 5% test error: "
        "BALD 145 / 335, variation ratios 120 / 295, max entropy 165 / 355, random 255 / 835.",
    ]
    lines += [
        "",
        "## Labels of the rarest class",
        "",
        "Labels of the least-labelled class among all labels so far (initial set included), "
        "mean over seeds (n: seeds); 0 means some class was never acquired.",
        "",
        class_balance(rows),
        "",
        "## Step time by device",
        "",
        step_times(rows),
    ]
    atomic_write_text(out_dir / "active_learning.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
