"""The ``safety-bhn active-learn`` sub-command: run or resume a loop, or compare finished runs."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from .._argtypes import non_negative_int, positive_int
from .loop import ActiveConfig, ActiveLearner, curve_auc, labels_to_reach, mnist_pool, read_curve
from .plots import learning_curves


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``active-learn`` to the ``safety-bhn`` command line."""
    defaults = {f.name: f.default for f in fields(ActiveConfig) if f.name != "options"}
    p = subparsers.add_parser(
        "active-learn",
        help="pool-based active learning on MNIST (BALD, max entropy, ...), or --compare runs",
        description="Run (or --resume) an active-learning loop on the MNIST-5000 pool, writing "
        "OUT/state.json after every step, OUT/curve.csv and OUT/curve.png; or --compare the "
        "curves of finished run folders.",
    )
    p.add_argument("--method", default=defaults["method"], help="bhn, mc_dropout, factorial_vi")
    p.add_argument(
        "--acquisition",
        default=defaults["acquisition"],
        help="bald, max_entropy, variation_ratios, mean_std, random or batch_bald",
    )
    p.add_argument("--arch", default=defaults["arch"], help="mlp or cnn")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[800])
    p.add_argument(
        "--coupling-layers",
        type=non_negative_int,
        default=None,
        help="BHN coupling layers (default: the core's)",
    )
    p.add_argument("--steps", type=non_negative_int, default=defaults["steps"])
    p.add_argument(
        "--acquire",
        type=positive_int,
        default=defaults["acquire"],
        help="points acquired per step",
    )
    p.add_argument("--initial", type=positive_int, default=defaults["initial"])
    p.add_argument("--val-size", type=non_negative_int, default=defaults["val_size"])
    p.add_argument(
        "--pool-subset",
        type=non_negative_int,
        default=defaults["pool_subset"],
        help="pool points scored per step (0: all)",
    )
    p.add_argument("--acq-samples", type=positive_int, default=defaults["acq_samples"])
    p.add_argument("--eval-samples", type=positive_int, default=defaults["eval_samples"])
    p.add_argument(
        "--train-steps",
        type=positive_int,
        default=defaults["train_steps"],
        help="gradient steps per retrain",
    )
    p.add_argument("--batch-size", type=positive_int, default=defaults["batch_size"])
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--warm-start", action="store_true", help="continue training between steps")
    p.add_argument("--seed", type=int, default=defaults["seed"])
    p.add_argument(
        "--extra",
        action="store_true",
        help="add the 5000 images of DATA_DIR/mnist-extra5k to the pool",
    )
    p.add_argument("--data-dir", default=None, help="data folder for --extra")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        default=None,
        help="run folders to plot and tabulate (writes OUT/compare.png)",
    )
    p.add_argument("--out", default=None, help="run folder (default runs/al-METHOD-ACQUISITION)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_active_learn)


def _active_learn(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args.compare, Path(args.out or "runs/al-compare"))
    options = {} if args.coupling_layers is None else {"coupling_layers": args.coupling_layers}
    config = ActiveConfig(
        method=args.method,
        acquisition=args.acquisition,
        arch=args.arch,
        hidden=args.hidden,
        options=options,
        initial=args.initial,
        val_size=args.val_size,
        acquire=args.acquire,
        steps=args.steps,
        pool_subset=args.pool_subset,
        acq_samples=args.acq_samples,
        eval_samples=args.eval_samples,
        train_steps=args.train_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warm_start=args.warm_start,
        seed=args.seed,
        device=args.device,
    ).validate()
    out = Path(args.out or f"runs/al-{config.method}-{config.acquisition}")
    pool, test = mnist_pool(args.data_dir, extra=args.extra)
    learner = ActiveLearner(config, pool, test=test, out=out, resume=args.resume)
    learner.run(progress=not args.no_progress)
    rows = learner.curve()
    learning_curves(rows, out / "curve.png", title=f"{config.method} / {config.acquisition}")
    last = rows[-1]
    print(
        f"{last['n_labels']} labels: test accuracy {last['test_acc']:.4f}, "
        f"NLL {last['test_nll']:.4f}"
    )
    print(f"saved {out / 'state.json'}, {out / 'curve.csv'} and {out / 'curve.png'}")
    return 0


def _compare(runs: list[str], out: Path) -> int:
    rows = []
    print(
        f"{'run':<28}{'method':<14}{'acquisition':<18}{'labels':>7}{'acc':>8}"
        f"{'to 90%':>8}{'to 95%':>8}{'AUC':>8}"
    )
    for run in runs:
        curve = read_curve(run)
        if not curve or curve[-1]["test_acc"] is None:
            raise ValueError(f"{run} has no test accuracy to compare")
        rows += curve
        n = [r["n_labels"] for r in curve]
        acc = [r["test_acc"] for r in curve]
        reach = [labels_to_reach(n, acc, t) for t in (0.90, 0.95)]
        reach_text = ["-" if v is None else str(v) for v in reach]
        first = curve[0]
        print(
            f"{first['run']:<28}{first['method']:<14}{first['acquisition']:<18}{n[-1]:>7}"
            f"{acc[-1]:>8.4f}{reach_text[0]:>8}{reach_text[1]:>8}{curve_auc(n, acc):>8.4f}"
        )
    path = learning_curves(rows, out / "compare.png", hue="run", title="active learning")
    print(f"saved {path}")
    return 0
