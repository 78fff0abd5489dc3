"""Active learning on MNIST: labels to reach 90% / 95% test accuracy per method and acquisition.

Pool: the embedded 5000-image MNIST training subset minus the initial and validation sets;
test: the 10000 MNIST test images. Every run keeps its own state folder under --runs-dir, so an
interrupted benchmark continues where it stopped when started again with the same arguments.

    python benchmarks/active_learning.py            # the issue's full grid
    python benchmarks/active_learning.py --quick    # smoke test, well under a minute
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, markdown_table, mean_std, parse_args, seed_everything, write_csv  # noqa: E402

from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.active import (  # noqa: E402
    ActiveConfig,
    ActiveLearner,
    curve_auc,
    labels_to_reach,
    mnist_pool,
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
    hidden: list[int] = field(default_factory=lambda: [800])
    """MLP hidden units"""
    coupling_layers: int = 4
    """BHN coupling layers"""
    train_steps: int = 500
    """gradient steps per retrain (from scratch at every step)"""
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
    """torch CPU threads (one is much faster for these small models on a busy CPU)"""


FULL = Args()


def quick_args(args: Args) -> Args:
    args.acquisitions = ["bald", "random"]
    args.seeds = [0]
    args.max_labels = args.initial + 2 * args.acquire
    args.hidden = [32]
    args.coupling_layers = 2
    args.train_steps = 20
    args.pool_subset = 200
    args.acq_samples = 5
    args.eval_samples = 3
    args.test_size = 1000
    args.runs_dir = str(Path(args.runs_dir) / "quick")
    if args.out_dir == FULL.out_dir:  # never overwrite the real results with a smoke test
        args.out_dir = args.runs_dir
    return args


def deviations(args: Args) -> list[str]:
    """How these settings differ from the issue's full benchmark (empty: the full run)."""
    out = []
    for name in (
        "methods",
        "acquisitions",
        "acquire",
        "initial",
        "val_size",
        "hidden",
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


def summarise(rows: list[dict], args: Args) -> tuple[str, list[str]]:
    """Markdown table of labels to 90% / 95%, AUC and step time; and the target checks."""
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
    censored = args.max_labels + args.acquire  # "not reached" counts as one step past the end
    table, stats = [], {}
    for (method, acq), curves in runs.items():
        reach = {}
        for target in (0.90, 0.95):
            vals = [
                labels_to_reach([r["n_labels"] for r in c], [r["test_acc"] for r in c], target)
                for c in curves
            ]
            reached = [v for v in vals if v is not None]
            text = mean_std(reached, "{:.0f}") if reached else "not reached"
            if len(reached) < len(vals):
                text += f" ({len(reached)}/{len(vals)} seeds reached)"
            reach[target] = (text, float(np.mean([censored if v is None else v for v in vals])))
        aucs = [curve_auc([r["n_labels"] for r in c], [r["test_acc"] for r in c]) for c in curves]
        final = [c[-1]["test_acc"] for c in curves]
        step_s = [r["step_seconds"] for c in curves for r in c]
        stats[(method, acq)] = (reach[0.90][1], reach[0.95][1], float(np.mean(aucs)))
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
    checks = []
    for method in args.methods:
        if (method, "bald") in stats and (method, "random") in stats:
            b, r = stats[(method, "bald")], stats[(method, "random")]
            ok = b[0] < r[0] and b[1] < r[1]
            checks.append(
                f"{'MET' if ok else 'MISSED'}: {method} BALD needs fewer labels than "
                f"random (90%: {b[0]:.0f} vs {r[0]:.0f}; 95%: {b[1]:.0f} vs {r[1]:.0f})"
            )
    if ("bhn", "bald") in stats and ("mc_dropout", "bald") in stats:
        b, m = stats[("bhn", "bald")], stats[("mc_dropout", "bald")]
        ok = b[0] <= m[0] and b[1] <= m[1]
        checks.append(
            f"{'MET' if ok else 'MISSED'}: BHN-BALD needs no more labels than "
            f"MC-dropout-BALD (90%: {b[0]:.0f} vs {m[0]:.0f}; 95%: {b[1]:.0f} vs "
            f"{m[1]:.0f})"
        )
    checks.append(
        f"(labels to reach are means over seeds; a seed that never reaches the target "
        f"counts as {censored})"
    )
    return md, checks


def main(args: Args) -> None:
    if args.quick:
        args = quick_args(args)
    steps = (args.max_labels - args.initial) // args.acquire
    if steps < 1 or args.initial + steps * args.acquire != args.max_labels:
        raise ValueError("max_labels must be initial + acquire * steps with steps >= 1")
    run_name = f"active_learning__{'-'.join(map(str, args.seeds))}__{int(time.time())}"
    torch.set_num_threads(args.threads)
    pool, test = mnist_pool()
    if args.test_size:
        test = (test[0][: args.test_size], test[1][: args.test_size])
    out_dir = Path(args.out_dir)
    rows: list[dict] = []
    start = time.time()
    # Seeds outermost, so a benchmark stopped early still has every method and acquisition.
    for seed in args.seeds:
        for method in args.methods:
            for acq in args.acquisitions:
                seed_everything(seed)
                config = ActiveConfig(
                    method=method,
                    acquisition=acq,
                    hidden=args.hidden,
                    options={"coupling_layers": args.coupling_layers} if method == "bhn" else {},
                    initial=args.initial,
                    val_size=args.val_size,
                    acquire=args.acquire,
                    steps=steps,
                    pool_subset=args.pool_subset,
                    acq_samples=args.acq_samples,
                    eval_samples=args.eval_samples,
                    train_steps=args.train_steps,
                    seed=seed,
                    device="cpu",
                )
                folder = Path(args.runs_dir) / f"{method}-{acq}-seed{seed}"
                resume = (folder / "state.json").is_file()
                learner = ActiveLearner(config, pool, test=test, out=folder, resume=resume)
                learner.run(progress=True)
                rows += learner.curve()
                write_results(rows, args, out_dir, run_name, time.time() - start)


def write_results(rows: list[dict], args: Args, out_dir: Path, run_name: str, secs: float) -> None:
    """Write the tidy CSV, the markdown summary and the plot (after every finished run)."""
    write_csv(rows, out_dir / "active_learning.csv")
    learning_curves(rows, out_dir / "active_learning.png", hue="acquisition", col="method")
    md, checks = summarise(rows, args)
    env = environment()
    reduced = deviations(args)
    lines = [
        "# Active learning on MNIST",
        "",
        f"Run `{run_name}`: `{' '.join(['python benchmarks/active_learning.py', *sys.argv[1:]])}`",
        "",
        f"- machine: {env['machine']}; torch {env['torch']}; date {env['date']}; "
        f"wall time {secs / 60:.1f} min",
        f"- settings: {asdict(args)}",
        "- pool: embedded MNIST-5000 training subset minus initial and validation sets; "
        "MLP retrained from scratch at every step; curves in active_learning.png, tidy rows "
        "in active_learning.csv",
    ]
    if reduced:
        lines += ["", "**REDUCED RUN** (not the issue's full benchmark): " + "; ".join(reduced)]
    planned = len(args.methods) * len(args.acquisitions) * len(args.seeds)
    finished = len({(r["method"], r["acquisition"], r["seed"]) for r in rows})
    if finished < planned:
        lines += ["", f"**INCOMPLETE**: {finished} of {planned} runs finished so far."]
    lines += ["", md, "## Targets", ""] + [f"- {c}" for c in checks]
    lines += [
        "",
        "Anchor (Gal et al. 2017, MC-dropout CNN, pool ~60000): labels to 10% / 5% test error: "
        "BALD 145 / 335, variation ratios 120 / 295, max entropy 165 / 355, random 255 / 835.",
    ]
    atomic_write_text(out_dir / "active_learning.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(parse_args(Args))
