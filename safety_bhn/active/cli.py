"""The ``safety-bhn active-learn`` sub-command: run or resume a loop, or compare finished runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._argtypes import folder, non_negative_int, positive_int, seed_int
from .._choices import parse_choice
from ..core.bhn import PriorMean
from ..core.build import Arch, Method
from ..core.training import LRSchedule, Selection
from ..runs import check_run_name, run_names
from .acquisition import Acquisition
from .loop import (
    RESUMABLE,
    ActiveConfig,
    ActiveLearner,
    curve_auc,
    labels_to_reach,
    mnist_pool,
    read_curve,
    saved_state,
)
from .plots import learning_curves

# Flags that set the ActiveConfig field of the same name (with dashes for underscores).
CONFIG_FLAGS = ("method", "acquisition", "arch", "hidden", "initial", "val_size", "acquire",
                "steps", "pool_subset", "acq_samples", "eval_samples", "train_steps",
                "batch_size", "lr", "lr_schedule", "lr_warmup", "select", "warm_start", "seed",
                "device")  # fmt: skip
# Flags that become build_model options of the BHN (ActiveConfig.options).
BHN_FLAGS = ("coupling_layers", "prior_mean", "local_draws")
# What --resume lets a user change; every other setting comes from OUT/state.json.
CHANGEABLE_ON_RESUME = (*RESUMABLE, "data_dir")
# Flags that name a choice: compared in their canonical spelling ("MC-Dropout" is mc_dropout).
CHOICES = {"method": Method, "acquisition": Acquisition, "arch": Arch,
           "lr_schedule": LRSchedule, "select": Selection, "prior_mean": PriorMean}  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``active-learn`` to the ``safety-bhn`` command line.

    The run's settings have no argparse defaults (None), so that :func:`_given` can tell the
    flags a user gave (checked against the saved run on ``--resume``) from those left out;
    a new run takes :class:`ActiveConfig`'s defaults for the rest.
    """
    p = subparsers.add_parser(
        "active-learn",
        help="pool-based active learning on MNIST (BALD, max entropy, ...), or --compare runs",
        description="Run (or --resume) an active-learning loop on the MNIST-5000 pool, writing "
        "OUT/state.json after every step, OUT/curve.csv and OUT/curve.png; or --compare the "
        "curves of finished run folders.",
    )
    p.add_argument(
        "--method", help="bhn, mc_dropout, factorial_vi or map (map: max_entropy or random only)"
    )
    p.add_argument(
        "--acquisition",
        help="bald, max_entropy, variation_ratios, mean_std, random, batch_bald or power_bald",
    )
    p.add_argument("--arch", help="mlp or cnn")
    p.add_argument("--hidden", type=positive_int, nargs="+")
    p.add_argument(
        "--coupling-layers",
        type=non_negative_int,
        help="BHN coupling layers (default: the core's)",
    )
    p.add_argument(
        "--prior-mean",
        help="BHN prior centre: zero (default) or init (the data-dependent initial scales; "
        "use it with few labels, above all with --arch cnn)",
    )
    p.add_argument(
        "--local-draws",
        action="store_const",
        const=True,
        help="BHN: draw the scales per training image, not per minibatch",
    )
    p.add_argument("--steps", type=non_negative_int)
    p.add_argument(
        "--acquire",
        type=positive_int,
        help="points acquired per step",
    )
    p.add_argument("--initial", type=positive_int)
    p.add_argument("--val-size", type=non_negative_int)
    p.add_argument(
        "--pool-subset",
        type=non_negative_int,
        help="pool points scored per step (0: all)",
    )
    p.add_argument("--acq-samples", type=positive_int)
    p.add_argument("--eval-samples", type=positive_int)
    p.add_argument(
        "--train-steps",
        type=positive_int,
        help="gradient steps per retrain",
    )
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument(
        "--lr-schedule", help="constant or cosine (default: cosine, decaying over each retrain)"
    )
    p.add_argument(
        "--lr-warmup", type=float, help="fraction of each retrain with a linear lr warmup (0.05)"
    )
    p.add_argument(
        "--select",
        help="weights each retrain keeps: nll (lowest validation NLL; default), accuracy, or "
        "last (the final epoch's)",
    )
    p.add_argument(
        "--warm-start", action="store_true", default=None, help="continue training between steps"
    )
    p.add_argument("--seed", type=seed_int)
    p.add_argument(
        "--extra",
        action="store_true",
        default=None,
        help="add the 5000 images of DATA_DIR/mnist-extra5k to the pool",
    )
    p.add_argument("--data-dir", type=folder, default=None, help="data folder for --extra")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out with its saved settings; other flags may only "
        "repeat them, except --steps, --device and --data-dir",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        default=None,
        help="run folders to plot and tabulate (writes OUT/compare.png)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="run folder (default runs/al-METHOD-ACQUISITION; with --compare, runs/al-compare)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_active_learn)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings given on the command line, by name (flags left out are absent)."""
    names = (*CONFIG_FLAGS, *BHN_FLAGS, "extra")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def _settings(args: argparse.Namespace, out: Path) -> tuple[ActiveConfig, dict[str, Any]]:
    """The run's config and pool source.

    A new run takes the flags given and :class:`ActiveConfig`'s defaults. ``--resume`` takes
    the settings saved in ``out/state.json``; a flag that contradicts one of them raises a
    ValueError naming the setting, the saved and the given value, except ``--steps``,
    ``--device`` and ``--data-dir``, which may change.
    """
    given = _given(args)
    data_dir = args.data_dir  # absolute (type=folder): --resume from elsewhere finds it
    if not args.resume:
        options = {name: given.pop(name) for name in BHN_FLAGS if name in given}
        extra = given.pop("extra", False)
        config = ActiveConfig(**given, options=options).validate()
        if "hidden" in given and config.arch != "mlp":
            raise ValueError(f"--hidden sizes the MLP only; drop it with --arch {config.arch}")
        scoring = [_flag(name) for name in ("pool_subset", "acq_samples") if name in given]
        if scoring and config.acquisition == Acquisition.RANDOM.value:
            raise ValueError(
                f"{' and '.join(scoring)} set how the pool is scored, and --acquisition random "
                "scores nothing (it picks points at random); drop them, or pick a scoring "
                "acquisition (bald, max_entropy, ...)"
            )
        return config, {"extra": extra, "data_dir": data_dir}
    state = saved_state(out)
    saved = dict(state["config"])
    source = dict(state.get("pool_source", {}))
    saved_values = {**saved, **{name: saved["options"].get(name) for name in BHN_FLAGS},
                    "extra": source.get("extra", False)}  # fmt: skip
    for name, choice in CHOICES.items():  # as typed in states before 2026-12-06 (prior_mean)
        for values in (given, saved_values):
            if values.get(name) is not None:
                values[name] = parse_choice(values[name], choice, name).value
    conflicts = [
        f"{name} ({_flag(name)}): saved {saved_values[name]!r}, given {value!r}"
        for name, value in given.items()
        if name not in RESUMABLE and value != saved_values[name]
    ]
    if conflicts:
        raise ValueError(
            f"cannot resume {out}: flags contradict the saved run's settings: "
            f"{'; '.join(conflicts)}. Leave them out to use the saved settings (on resume only "
            f"{', '.join(map(_flag, CHANGEABLE_ON_RESUME))} may change)"
        )
    saved.update({name: given[name] for name in RESUMABLE if name in given})
    source["data_dir"] = data_dir or source.get("data_dir")
    return ActiveConfig(**saved).validate(), source


def _active_learn(args: argparse.Namespace) -> int:
    if args.compare:
        ignored = [_flag(name) for name in _given(args)] + ["--resume"] * bool(args.resume)
        ignored += ["--data-dir"] * (args.data_dir is not None)  # the runs' pools are not read
        if ignored:
            raise ValueError(
                f"--compare reads finished run folders and takes only --out; drop "
                f"{', '.join(ignored)}"
            )
        out = Path(args.out or "runs/al-compare")
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} is a file, not a folder for comparisons; give another --out")
        return _compare(args.compare, out)
    if args.out is not None:
        out = check_run_name(args.out)
    else:  # named in canonical spelling, so --method MC-Dropout resumes runs/al-mc_dropout-*
        method = parse_choice(args.method or ActiveConfig.method, Method, "method").value
        acquisition = parse_choice(
            args.acquisition or ActiveConfig.acquisition, Acquisition, "acquisition"
        ).value
        out = Path(f"runs/al-{method}-{acquisition}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a run folder; choose another --out")
    config, source = _settings(args, out)
    if args.data_dir is not None and not source.get("extra", False):  # it was ignored, silently
        raise ValueError(
            "--data-dir is read only with --extra: the pool and the test set are the MNIST copy "
            "embedded in the package; drop --data-dir, or add --extra (on a new run) to pool "
            "DATA_DIR/mnist-extra5k as well"
        )
    pool, test = mnist_pool(source["data_dir"], extra=source.get("extra", False))
    learner = ActiveLearner(
        config, pool, test=test, out=out, resume=args.resume, pool_source=source
    )
    if args.resume:
        print(
            f"resuming {out}: {config.method} / {config.acquisition}, "
            f"{len(learner.history)} of {config.steps + 1} steps done"
        )
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
    names = run_names(runs)  # distinct labels: two folders named "run" were drawn as one
    curves = [read_curve(run) for run in runs]  # every run is checked before anything prints
    unfinished = {}
    for run, name, curve in zip(runs, names, curves, strict=True):
        if not curve or curve[-1]["test_acc"] is None:
            raise ValueError(f"{run} has no test accuracy to compare")
        steps = saved_state(run)["config"]["steps"]
        if len(curve) < steps + 1:
            unfinished[name] = f"{len(curve)} of {steps + 1} steps"
        for row in curve:
            row["run"] = name
    out.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails before the table
    print(
        f"{'run':<28}{'method':<14}{'acquisition':<18}{'labels':>7}{'acc':>8}"
        f"{'to 90%':>8}{'to 95%':>8}{'AUC':>8}"
    )
    rows = []
    for curve in curves:
        rows += curve
        n = [r["n_labels"] for r in curve]
        acc = [r["test_acc"] for r in curve]
        reach = [labels_to_reach(n, acc, t) for t in (0.90, 0.95)]
        reach_text = ["-" if v is None else str(v) for v in reach]
        first = curve[0]
        star = "*" if first["run"] in unfinished else ""
        print(
            f"{first['run'] + star:<28}{first['method']:<14}{first['acquisition']:<18}{n[-1]:>7}"
            f"{acc[-1]:>8.4f}{reach_text[0]:>8}{reach_text[1]:>8}{curve_auc(n, acc):>8.4f}"
        )
    for name, done in unfinished.items():
        print(f"* {name} is unfinished ({done}): its figures cover fewer labels")
    path = learning_curves(rows, out / "compare.png", hue="run", title="active learning")
    print(f"saved {path}")
    return 0
