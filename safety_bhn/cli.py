"""The `safety-bhn` command line: train, evaluate, quickstart, and the applications' commands."""

from __future__ import annotations

import argparse
import enum
import importlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._argtypes import folder, non_negative_int, positive_float, positive_int, seed_int
from ._choices import parse_choice
from ._io import FolderInUseError
from .core.build import Arch, Method

# Modules that add a sub-command: each defines add_parser(subparsers) -> None, whose parser
# sets ``func`` (called with the parsed arguments, returns an exit status).
APPLICATIONS: tuple[str, ...] = (
    "safety_bhn.ood.cli",
    "safety_bhn.active.cli",
    "safety_bhn.explore.cli",
)


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="bhn", help=f"one of {[m.value for m in Method]}")
    p.add_argument("--arch", default="mlp", help="mlp or cnn")
    p.add_argument(  # None: not given, so a flag that does not apply can be refused
        "--hidden",
        type=positive_int,
        nargs="+",
        default=None,
        help="MLP hidden units per layer (default: 800)",
    )
    p.add_argument(
        "--coupling-layers",
        type=non_negative_int,
        default=None,
        help="BHN coupling layers (0: diagonal Gaussian over the scales; default: 12)",
    )
    p.add_argument(
        "--local-draws",
        action="store_true",
        help="BHN: draw the scales per training image, not per minibatch (better OOD "
        "detection with the CNN: see benchmarks/results/README.md)",
    )
    p.add_argument(
        "--classes",
        type=non_negative_int,
        nargs="+",
        default=None,
        help="train on these digits only, e.g. 0 1 2 3 4 (then 'safety-bhn ood RUN --suite "
        "mnist_held_out' scores 5-9 as novel classes); default: all ten",
    )
    p.add_argument("--epochs", type=positive_int, default=100)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument(
        "--lr-schedule", default="constant", help="constant or cosine (decays to 0 by the end)"
    )
    p.add_argument(
        "--lr-warmup", type=float, default=0.0, help="fraction of steps with a linear lr warmup"
    )
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--val-size", type=non_negative_int, default=500)
    p.add_argument(
        "--patience",
        type=positive_int,
        default=None,
        help="early-stopping patience in epochs (default: none)",
    )
    p.add_argument("--kl-anneal", type=float, default=0.0)
    p.add_argument(
        "--select",
        default="nll",
        help="which epoch is kept: nll (lowest validation NLL; default), accuracy (first most "
        "accurate) or last (the final epoch)",
    )
    p.add_argument("--eval-samples", type=positive_int, default=100)
    p.add_argument(
        "--data-dir",
        type=folder,
        default=None,
        help="folder with mnist/*.gz (default: the embedded MNIST-5000 copy)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _print_table(rows: dict[str, dict[str, float]]) -> None:
    print(f"{'model':<14}{'accuracy':>10}{'NLL':>8}{'ECE':>8}{'Brier':>8}")
    for name, m in rows.items():
        print(f"{name:<14}{m['accuracy']:>10.4f}{m['nll']:>8.4f}{m['ece']:>8.4f}{m['brier']:>8.4f}")


def _train(args: argparse.Namespace) -> int:
    from .runs import TrainConfig, train_and_evaluate

    method, arch = _canonical(args.method, Method), _canonical(args.arch, Arch)
    misplaced = [
        flag
        for flag, given, applies in (
            ("--hidden", args.hidden is not None, arch == "mlp"),
            ("--coupling-layers", args.coupling_layers is not None, method == "bhn"),
            ("--local-draws", args.local_draws, method == "bhn"),
        )
        if given and not applies
    ]
    if misplaced and method is not None and arch is not None:  # else TrainConfig names it
        raise ValueError(
            f"{' and '.join(misplaced)} {'does' if len(misplaced) == 1 else 'do'} not apply "
            f"to --method {method} --arch {arch}: "
            "--hidden sizes the MLP only, --coupling-layers and --local-draws are BHN options; "
            "drop them"
        )
    config = TrainConfig(
        method=args.method,
        arch=args.arch,
        hidden=args.hidden or [800],
        coupling_layers=12 if args.coupling_layers is None else args.coupling_layers,
        epochs=args.epochs,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        lr_warmup=args.lr_warmup,
        batch_size=args.batch_size,
        seed=args.seed,
        val_size=args.val_size,
        patience=args.patience,
        kl_anneal=args.kl_anneal,
        select=args.select,
        eval_samples=args.eval_samples,
        data_dir=args.data_dir,  # absolute (type=folder), for evaluate from another folder
        device=args.device,
        options={"local_draws": True} if args.local_draws else {},
        classes=args.classes,
    )  # train_and_evaluate validates it before loading any data
    run = train_and_evaluate(
        config, args.out, progress=not args.no_progress, overwrite=args.overwrite
    )
    metrics = run.metrics
    _print_table({config.method: metrics["test"]})  # the canonical name, as validated
    print(f"saved {Path(args.out) / 'model.pt'} and {Path(args.out) / 'metrics.json'}")
    return 0


def _canonical(name: str, choices: type[enum.Enum]) -> str | None:
    """``name`` in canonical spelling (``"MC-Dropout"``: ``"mc_dropout"``), None if unknown."""
    try:
        return parse_choice(name, choices, "name").value
    except ValueError:
        return None


def _evaluate(args: argparse.Namespace) -> int:
    from .runs import evaluate_run

    metrics = evaluate_run(args.run, args.samples, args.data_dir, args.device)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_table({Path(args.run).name: metrics})
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from .quickstart import quickstart

    quickstart(args.out, epochs=args.epochs, device=args.device, progress=not args.no_progress)
    return 0


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless the help text already speaks of it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = not (default is None or default is False or default == argparse.SUPPRESS)
        shown = shown and bool(action.option_strings)
        if shown and "default" not in text and "%(default)" not in text:
            text += (" " if text else "") + "(default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Every sub-command's parser shows defaults in its help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        default = kwargs.get("default")
        if kwargs.get("help") is None and not (default is None or default is False):
            kwargs["help"] = "(default: %(default)s)"  # argparse lists no help-less default
        return super().add_argument(*args, **kwargs)


def _version() -> str:
    try:
        return importlib.metadata.version("safety-bhn")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safety-bhn", description="Calibrated uncertainty with Bayesian hypernetworks."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model on MNIST and save it with its test metrics")
    _add_train_flags(p)
    p.add_argument("--out", required=True, help="run folder, e.g. runs/bhn")
    p.add_argument("--overwrite", action="store_true", help="replace a run already saved in --out")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="test-set accuracy, NLL, ECE and Brier of a saved run")
    p.add_argument("run", help="run folder written by 'safety-bhn train' (or its checkpoint)")
    p.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help="posterior samples (default: the run's own, with its seed: training's figures)",
    )
    p.add_argument(
        "--data-dir",
        type=folder,
        default=None,
        help="folder with mnist/t10k-*.gz (default: the run's own, as its metrics.json says)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("quickstart", help="train BHN and MC dropout on the embedded MNIST-5000")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs per model (default 60: about 2 minutes on 2 idle cores)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_quickstart)

    for module in APPLICATIONS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``safety-bhn`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("safety-bhn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `safety-bhn ... | head`: the reader left early; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, FloatingPointError, FolderInUseError) as err:
        print(f"safety-bhn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
