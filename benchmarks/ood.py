"""OOD detection on MNIST-5000: every method x every OOD set x every score, shift and FGSM.

Trains BHN (12 and 0 coupling layers), MC dropout, factorial VI and MAP on MNIST-5000 (and a
second copy of each on digits 0-4 for the held-out-classes set), then scores the suite
(Fashion-MNIST, uniform and Gaussian noise, inverted digits, held-out digits 5-9), rotation
and noise shift curves, and FGSM examples. Writes benchmarks/results/ood.{csv,md} and plots.
Run from the project root:

    python benchmarks/ood.py            # the full run (settings in ood.md)
    python benchmarks/ood.py --quick    # a smoke test in well under a minute
    python benchmarks/ood.py --arch cnn # the suite with Gal et al.'s CNN instead of the MLP
    python benchmarks/ood.py --report-only --out DIR  # DIR/ood.md's tables from its CSVs
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATA_DIR,
    MNIST_TEST_SIZE,
    RESULTS,
    cached_run,
    check_flags,
    checkpoint_file,
    command_line,
    divergence_phrase,
    fail,
    flag_errors,
    in_results,
    markdown_table,
    mean_std,
    parse_args,
    project_path,
    quick_settings,
    read_csv,
    run_settings,
    save_run,
    seed_everything,
    write_csv,
)

from safety_bhn import UncertaintyModel, build_model, fit  # noqa: E402
from safety_bhn._choices import parse_choice  # noqa: E402
from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.core.build import Arch  # noqa: E402
from safety_bhn.core.training import History, Selection  # noqa: E402
from safety_bhn.ood import (  # noqa: E402
    adversarial_curve,
    build_suite,
    evaluate_ood,
    held_out_split,
    shift_curve,
)
from safety_bhn.ood.plots import auroc_bars, shift_plot  # noqa: E402
from safety_bhn.ood.scores import parse_scores  # noqa: E402
from safety_bhn.runs import TrainConfig, environment, mnist_splits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETS = ["fashion_mnist", "uniform_noise", "gaussian_noise", "inverted", "held_out_classes"]
# The issue's reference numbers (AUROC), measured with a 784-256-256-256-10 MLP on MNIST-5000.
ISSUE_MEASURED = {
    ("mc_dropout", "fashion_mnist"): 0.91, ("mc_dropout", "uniform_noise"): 0.91,
    ("mc_dropout", "gaussian_noise"): 0.91, ("map", "fashion_mnist"): 0.71,
    ("map", "uniform_noise"): 0.49, ("map", "gaussian_noise"): 0.55,
}  # fmt: skip
# Hendrycks & Gimpel (2017), max-softmax AUROC, same network trained on all of MNIST.
HENDRYCKS_GIMPEL = {"uniform_noise": 0.979, "gaussian_noise": 0.883}
# Arguments that do not change a (method, seed) run's results (which runs, where files go,
# threads, the report's label); every other one is stored with the cached run and checked.
RUN_IGNORE = ("rows", "seeds", "data_dir", "threads", "out", "state", "cached_only", "label",
              "quick", "report_only")  # fmt: skip
# The scores every committed run was scored with, the default of --scores. Later scores
# (expected_entropy) are opt-in, so that the committed commands still give their tables.
BENCHMARK_SCORES = ["max_softmax", "entropy", "mutual_information", "variation_ratio", "vote_ratio"]


@dataclass
class Args:
    """OOD benchmark: methods x OOD sets x scores on MNIST-5000, with shift and FGSM curves."""

    rows: list[str] = field(
        default_factory=lambda: ["bhn-12", "bhn-0", "mc_dropout", "factorial_vi", "map"]
    )
    """methods to run; "bhn-K" is a BHN with K coupling layers, "bhn-K-init" one whose prior is
    centred on the initial scales (prior_mean="init"), "bhn-K-local" one trained with a draw of
    the scales per image (local_draws=True)"""
    arch: str = "mlp"
    """mlp, or cnn (Gal et al. 2017's conv-conv-pool-dense net, as in active learning)"""
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """MLP hidden layers (784-256-256-256-10: Hendrycks & Gimpel's and the BHN paper's net);
    ignored with --arch cnn"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds: each sets the validation split, the weights, training noise and the OOD sets"""
    epochs: int = 50
    """training epochs (the epoch that --select picks is kept)"""
    lr: float = 1e-3
    """Adam learning rate"""
    lr_schedule: str = "constant"
    """constant or cosine (decays to 0 by the last epoch)"""
    lr_warmup: float = 0.0
    """fraction of all steps over which the learning rate first rises linearly"""
    batch_size: int = 100
    """minibatch size"""
    select: str = "nll"
    """which epoch's weights to keep: nll (lowest validation NLL), accuracy (first highest
    validation accuracy) or last (the final epoch; see safety_bhn.fit)"""
    val_size: int = 500
    """images of the 5000 held out for validation (model selection)"""
    n_test: int = 2000
    """in-distribution test images per suite (and images per generated OOD set)"""
    samples: int = 100
    """posterior samples for scoring"""
    scores: list[str] = field(default_factory=lambda: list(BENCHMARK_SCORES))
    """anomaly scores to compute (see safety_bhn.ood.Score); must include entropy and
    mutual_information, which the shift and FGSM curves plot; the default leaves out
    expected_entropy, which committed runs predate"""
    held_out: bool = True
    """also train each method on digits 0-4 and detect digits 5-9"""
    rotations: list[float] = field(default_factory=lambda: [0, 30, 60, 90, 120, 150, 180])
    """rotation angles (degrees) of the shift curve"""
    noise_stds: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    """Gaussian pixel-noise standard deviations of the shift curve"""
    shift_n: int = 1000
    """test images for the shift and FGSM curves"""
    epsilons: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    """FGSM step sizes"""
    attack_samples: int = 10
    """posterior samples in the FGSM gradient"""
    data_dir: str = DATA_DIR
    """folder with fashion-mnist/ (MNIST itself comes from the embedded MNIST-5000 copy)"""
    threads: int = 2
    """torch CPU threads"""
    out: str = str(RESULTS)
    """folder for ood.{csv,md} and the plots"""
    state: str = str(ROOT / "runs" / "bench-ood")
    """folder for per-(method, seed) results, so an interrupted run resumes; each file keeps the
    settings it was run with, and a later invocation with other settings is refused"""
    cached_only: bool = False
    """train nothing: summarise only the (method, seed) runs already in the state folder"""
    label: str = ""
    """note printed at the top of ood.md (e.g. that this is a reduced run)"""
    report_only: bool = False
    """train and score nothing: rebuild --out's ood.md from the CSVs there with this script's
    tables, keeping that report's header (its command, machine and timing) and reading its
    settings from its command; takes no other flag"""
    quick: bool = False
    """smoke test: tiny nets, 1 epoch, 1 seed, few samples; written to runs/bench-ood-quick"""


# What each --select keeps, in words for ood.md.
SELECTION_WORDS = {
    "nll": "the best validation-NLL epoch",
    "accuracy": "the first most accurate validation epoch",
    "last": "the final epoch (no selection)",
}

# Flags a BHN row name may carry after its coupling layers, and the options they set.
ROW_FLAGS = {"init": {"prior_mean": "init"}, "local": {"local_draws": True}}
NON_BHN_ROWS = ("mc_dropout", "factorial_vi", "map")


def parse_row(row: str) -> tuple[str, dict[str, Any]]:
    """``"bhn-12-init"`` -> ``("bhn", {"coupling_layers": 12, "prior_mean": "init"})``.

    A BHN row is ``bhn-K`` followed by any of the flags in ``ROW_FLAGS``, each after a dash.
    """
    if row in NON_BHN_ROWS:
        return row, {}
    method, _, rest = row.partition("-")
    if method != "bhn":
        close = difflib.get_close_matches(row, [*NON_BHN_ROWS, "bhn-12"], n=1)
        raise ValueError(
            f"row {row!r}: expected 'bhn-K' (K coupling layers, then optional flags: "
            f"{sorted(ROW_FLAGS)}) or one of {list(NON_BHN_ROWS)}; flags apply to BHN rows only"
            + (f". Did you mean {close[0]!r}?" if close else "")
        )
    layers, *flags = rest.split("-")
    if not layers.isdigit():
        raise ValueError(f"row {row!r}: expected 'bhn-K' with K coupling layers, e.g. 'bhn-12'")
    options: dict[str, Any] = {"coupling_layers": int(layers)}
    for flag in flags:
        if flag not in ROW_FLAGS:
            raise ValueError(f"row {row!r}: unknown flag {flag!r}; expected one of "
                             f"{sorted(ROW_FLAGS)}, as in 'bhn-12-local'")  # fmt: skip
        options.update(ROW_FLAGS[flag])
    return method, options


def build(row: str, n_classes: int, seed: int, args: Args) -> UncertaintyModel:
    """The untrained model that ``row`` names, on the network ``args`` choose."""
    method, options = parse_row(row)
    net = {"hidden": list(args.hidden)} if args.arch == "mlp" else {}
    return build_model(method, args.arch, n_classes=n_classes, seed=seed, device="cpu",
                       **net, **options)  # fmt: skip


def cache_settings(args: Any, ignore: tuple[str, ...] = RUN_IGNORE) -> dict[str, Any]:
    """The settings stored with (and checked against) each cached run: every argument but
    those in ``ignore``, and the MLP's layers only on an MLP."""
    settings = run_settings(args, ignore)
    if args.arch != "mlp":  # the MLP's layers do not shape a CNN run
        del settings["hidden"]
    return settings


def train(
    row: str,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    val_xy: tuple[torch.Tensor, torch.Tensor],
    n_classes: int,
    seed: int,
    args: Args,
) -> tuple[UncertaintyModel, History]:
    """Build the model that ``row`` names and fit it (returns it and its training history).

    Training state is saved under ``--state``/checkpoints as it trains and kept when training
    ends, until the run's results are saved (:func:`drop_checkpoints`), so a benchmark
    stopped inside a long run, or while it scores a trained one, continues where it was."""
    model = build(row, n_classes, seed, args)
    history = fit(model, train_xy, val_xy, epochs=args.epochs, lr=args.lr,
                  lr_schedule=args.lr_schedule, lr_warmup=args.lr_warmup,
                  batch_size=args.batch_size, seed=seed, select=args.select,
                  progress=False, checkpoint=checkpoint_path(row, n_classes, seed, args),
                  keep_checkpoint=True)  # fmt: skip
    return model, history


def divergence(history: History) -> dict[str, int | None]:
    """What a results row records of a training run's divergences (safety_bhn.fit): how many
    epochs it retried, and the epoch it stopped at (None: it never stopped early). With
    ``--select last`` a run that stopped keeps the last good epoch, not the final one."""
    return {"retried_epochs": len(history.retried_epochs), "diverged_epoch": history.diverged_epoch}


def divergence_words(rows: list[dict]) -> str:
    """The report's paragraph on runs whose training diverged; empty if none did (or the
    rows predate the record, 2026-12-08)."""
    hit = sorted({(r["method"], r["seed"], r["ood_set"] == "held_out_classes",
                   r.get("retried_epochs") or 0, r.get("diverged_epoch")) for r in rows
                  if r.get("retried_epochs") or r.get("diverged_epoch") is not None},
                 key=str)  # fmt: skip
    if not hit:
        return ""
    runs = [f"{method} seed {seed}{' (digits 0-4 model)' if held else ''}: "
            + divergence_phrase(n, stop) for method, seed, held, n, stop in hit]  # fmt: skip
    return ("**Diverged training** (an epoch's training loss blew up; safety_bhn.fit trained it "
            "again from its start, or stopped keeping the last good epoch): "
            + "; ".join(runs) + ".\n\n")  # fmt: skip


def checkpoint_path(row: str, n_classes: int, seed: int, args: Args) -> Path:
    """Where the training state of one model of a run is kept: named by the run and a hash of
    its settings and the code's results version, so runs of other settings sharing a
    ``--state`` folder keep theirs apart (one name for all made the second refuse the first's
    checkpoint), and a run begun by older code is not continued."""
    name = f"{Path(state_key(row, seed, args)).stem}-{n_classes}classes"
    return checkpoint_file(args.state, name, cache_settings(args))


def drop_checkpoints(row: str, seed: int, args: Args) -> None:
    """Delete a run's training states once its results are saved (both its models')."""
    for n_classes in (10, 5):  # all digits; the held-out split's known 0-4
        checkpoint_path(row, n_classes, seed, args).unlink(missing_ok=True)


def run_one(row: str, seed: int, args: Args) -> dict[str, list[dict[str, Any]]]:
    """Train and score one (method, seed): detection, shift and adversarial rows."""
    splits = mnist_splits(None, args.val_size, seed)
    xt, yt = splits["test"]
    gen = torch.Generator().manual_seed(seed)
    tag = {"method": row, "seed": seed}
    # The thread count changes floating-point summation order, and so the whole training run.
    threads = torch.get_num_threads()

    model, history = train(row, splits["train"], splits["val"], 10, seed, args)
    suite = build_suite(xt, yt, "mnist", n=args.n_test, seed=seed, data_dir=args.data_dir)
    report = evaluate_ood(model, suite, args.scores, args.samples, gen, name=row, progress=False)
    info = {"in_accuracy": report.accuracy, "train_seconds": history.seconds,
            "best_epoch": history.best_epoch, "threads": threads,
            **divergence(history)}  # fmt: skip
    detection = [{**tag, **{k: v for k, v in r.items() if k != "model"}, **info}
                 for r in report.rows()]  # fmt: skip

    if args.held_out:
        known = (*held_out_split(*splits["train"])[:2],)
        known_val = (*held_out_split(*splits["val"])[:2],)
        model5, history5 = train(row, known, known_val, 5, seed, args)
        suite5 = build_suite(xt, yt, "held_out_classes", n=args.n_test, seed=seed)
        report5 = evaluate_ood(
            model5, suite5, args.scores, args.samples, gen, name=row, progress=False
        )
        info5 = {"in_accuracy": report5.accuracy, "train_seconds": history5.seconds,
                 "best_epoch": history5.best_epoch, "threads": threads,
                 **divergence(history5)}  # fmt: skip
        detection += [{**tag, **{k: v for k, v in r.items() if k != "model"}, **info5}
                      for r in report5.rows()]  # fmt: skip

    x_s, y_s = xt[: args.shift_n], yt[: args.shift_n]
    shift = []
    for kind, levels in (("rotation", args.rotations), ("noise", args.noise_stds)):
        rows = shift_curve(
            model, x_s, y_s, kind, levels, args.samples, gen, args.scores, progress=False
        )
        shift += [{**tag, **r} for r in rows]
    adversarial = adversarial_curve(model, x_s, y_s, args.epsilons, args.samples,
                                    args.attack_samples, gen, args.scores,
                                    progress=False)  # fmt: skip
    return {"detection": detection, "shift": shift,
            "adversarial": [{**tag, **r} for r in adversarial]}  # fmt: skip


def net_tag(args: Args) -> str:
    """The network in run names and state keys: ``h256-256-256`` or ``cnn``."""
    return "h" + "-".join(map(str, args.hidden)) if args.arch == "mlp" else args.arch


def state_key(row: str, seed: int, args: Args) -> str:
    """File name of one (method, seed) run in the state folder; it names every setting that
    changes the trained model, so a resumed run never mixes recipes.

    Settings added later appear only when they differ from what earlier runs used, so that
    those runs' files keep their names.
    """
    recipe = "" if args.lr_schedule == "constant" and not args.lr_warmup else (
        f"__{args.lr_schedule}-w{args.lr_warmup:g}")  # fmt: skip
    if args.select != "nll":  # runs from before --select existed kept the best-NLL epoch
        recipe += f"__select-{args.select}"
    if args.scores != BENCHMARK_SCORES:  # a cached run holds the scores it was run with
        recipe += f"__scores-{'-'.join(args.scores)}"
    return f"{row}__{net_tag(args)}__e{args.epochs}{recipe}__seed{seed}.json"


def net_words(args: Args) -> str:
    """The network in words, for ood.md."""
    if args.arch == "mlp":
        return f"MLP 784-{'-'.join(map(str, args.hidden))}-10"
    return "CNN conv(32, 4x4)-conv(32, 4x4)-maxpool(2)-dense(128)-10 (Gal et al. 2017)"


def schedule(args: Args) -> str:
    """The learning-rate schedule in words, for ood.md."""
    warmup = (
        f", linear warmup over the first {args.lr_warmup:.0%} of steps" if args.lr_warmup else ""
    )
    return f"{args.lr_schedule} rate{warmup}"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# A MAP net is one network: its mutual information and vote ratio are identically 0 (AUROC
# exactly 0.5), so they are not candidates for its "best score".
DEGENERATE = {"map": {"mutual_information", "vote_ratio"}}


def best_auroc(rows: list[dict], method: str, ood_set: str) -> tuple[str, list[float]]:
    """The score with the highest mean AUROC over seeds, and its per-seed AUROCs."""
    by_score: dict[str, list[float]] = {}
    skip = DEGENERATE.get(method, set())
    for r in rows:
        if r["method"] == method and r["ood_set"] == ood_set and r["score"] not in skip:
            by_score.setdefault(r["score"], []).append(r["auroc"])
    if not by_score:
        return "", []
    score = max(by_score, key=lambda s: _mean(by_score[s]))
    return score, by_score[score]


def auroc_of(rows: list[dict], method: str, ood_set: str, score: str) -> list[float]:
    return [r["auroc"] for r in rows
            if (r["method"], r["ood_set"], r["score"]) == (method, ood_set, score)]  # fmt: skip


def targets(rows: list[dict], args: Args) -> list[str]:
    """The issue's targets, each marked met or missed from the measured rows."""
    sets = [s for s in SETS if any(r["ood_set"] == s for r in rows)]
    bhn = [r for r in args.rows if r.startswith("bhn")]
    lines = []
    if "mc_dropout" in args.rows:
        for b in bhn:
            for s in sets:
                bs, bv = best_auroc(rows, b, s)
                ms, mv = best_auroc(rows, "mc_dropout", s)
                if not (bv and mv):  # a row not measured on this set: no verdict either way
                    continue
                ok = _mean(bv) >= _mean(mv)
                lines.append(f"- {b} best AUROC ≥ MC dropout's on {s}: {_mean(bv):.4f} ({bs}) vs "
                             f"{_mean(mv):.4f} ({ms}) — {'met' if ok else 'MISSED'}")  # fmt: skip
    for method in args.rows:
        s, v = best_auroc(rows, method, "fashion_mnist")
        if v:
            ok = _mean(v) >= 0.98
            lines.append(f"- {method}: MNIST vs Fashion-MNIST best AUROC ≥ 0.98: {_mean(v):.4f} "
                         f"({s}) — {'met' if ok else 'MISSED'}")  # fmt: skip
    for method in [r for r in args.rows if r != "map"]:
        for s in ("uniform_noise", "gaussian_noise"):
            mi = auroc_of(rows, method, s, "mutual_information")
            ms = auroc_of(rows, method, s, "max_softmax")
            if mi and ms:
                ok = _mean(mi) > _mean(ms)
                lines.append(f"- {method}: mutual information beats max-softmax on {s}: "
                             f"{_mean(mi):.4f} vs {_mean(ms):.4f} — "
                             f"{'met' if ok else 'MISSED'}")  # fmt: skip
    return lines


def threads_words(rows: list[dict]) -> str:
    """How many runs trained with each torch thread count, as recorded in their rows.

    Runs that differ only in thread count do not give identical models (summation order
    differs), so ood.md says which counts its runs used rather than this invocation's.
    """
    runs = {(r["method"], r["seed"]): r.get("threads") for r in rows}
    counts = Counter(t for t in runs.values() if t is not None)
    unknown = sum(t is None for t in runs.values())
    parts = [f"{n} run{'s' if n > 1 else ''} trained with {t} torch thread{'s' if t > 1 else ''}"
             for t, n in sorted(counts.items())]  # fmt: skip
    if unknown:
        parts.append(f"{unknown} run{'s' if unknown > 1 else ''} computed before the thread count "
                     "was recorded (not known)")  # fmt: skip
    return "; ".join(parts)


def summarise(rows: list[dict], shift: list[dict], adv: list[dict], args: Args, command: str,
              seconds: float, loaded: int) -> str:  # fmt: skip
    env = environment()
    train_minutes = sum({(r["method"], r["seed"], r["ood_set"] == "held_out_classes"):
                         r["train_seconds"] for r in rows}.values()) / 60  # fmt: skip
    sets = [s for s in SETS if any(r["ood_set"] == s for r in rows)]
    scores = list(dict.fromkeys(r["score"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})

    best_table = []
    for method in args.rows:
        cells = []
        for s in sets:
            score, values = best_auroc(rows, method, s)
            cells.append(f"{mean_std(values, '{:.3f}')} ({score})" if values else "")
        # one accuracy per seed: each (set, score) row repeats its run's, and counting a seed
        # once per set understated the spread over seeds
        acc = list({r["seed"]: r["in_accuracy"] for r in rows if r["method"] == method
                    and r["ood_set"] != "held_out_classes"}.values())  # fmt: skip
        n_seeds = len({r["seed"] for r in rows if r["method"] == method})
        best_table.append([method, n_seeds, mean_std(acc, "{:.4f}") if acc else "", *cells])

    full = []
    for s in sets:
        for score in scores:
            cells = []
            for method in args.rows:
                v = auroc_of(rows, method, s, score)
                cells.append(mean_std(v, "{:.3f}") if v else "")
            full.append([s, score, *cells])

    fpr = []
    for method in args.rows:
        cells = []
        for s in sets:
            score, _ = best_auroc(rows, method, s)
            v = [r["fpr95"] for r in rows if (r["method"], r["ood_set"], r["score"])
                 == (method, s, score)]  # fmt: skip
            cells.append(f"{mean_std(v, '{:.3f}')}" if v else "")
        fpr.append([method, *cells])

    anchors = []
    for (method, s), value in ISSUE_MEASURED.items():
        score = "max_softmax" if method == "map" else best_auroc(rows, method, s)[0]
        v = auroc_of(rows, method, s, score) if score else []
        if v:
            anchors.append([method, s, score, f"{value:.2f}", mean_std(v, "{:.3f}")])
    for s, value in HENDRYCKS_GIMPEL.items():
        v = auroc_of(rows, "map", s, "max_softmax")
        if v:
            anchors.append(["map (H&G 2017, all of MNIST)", s, "max_softmax", f"{value:.3f}",
                            mean_std(v, "{:.3f}")])  # fmt: skip

    def curve_table(kind: str, level_key: str, source: list[dict], metrics: list[str]) -> str:
        levels = sorted({r[level_key] for r in source if r.get("shift", kind) == kind})
        header = ["method", "metric", *[f"{level:g}" for level in levels]]
        lines = []
        for method in args.rows:
            for metric in metrics:
                cells = []
                for level in levels:
                    v = [r[metric] for r in source if r["method"] == method
                         and r[level_key] == level and r.get("shift", kind) == kind]  # fmt: skip
                    cells.append(f"{_mean(v):.3f}")
                lines.append([method, metric, *cells])
        return markdown_table(header, lines)

    adv_rows = []
    for r in adv:
        if r["score"] == "entropy":
            mi = [a for a in adv if (a["method"], a["seed"], a["eps"], a["score"])
                  == (r["method"], r["seed"], r["eps"], "mutual_information")]  # fmt: skip
            adv_rows.append(
                {
                    **r,
                    "auroc_entropy": r["auroc"],
                    "auroc_mutual_information": mi[0]["auroc"] if mi else float("nan"),
                }
            )
    adv_table = curve_table("adversarial", "eps", adv_rows,
                            ["accuracy", "auroc_entropy", "auroc_mutual_information"])  # fmt: skip

    label = f"**{args.label}**\n\n" if args.label else ""
    have = {(r["method"], r["seed"]) for r in rows}
    missing = [f"{row} seed {seed}" for seed in args.seeds for row in args.rows
               if (row, seed) not in have]  # fmt: skip
    if missing:  # --cached-only without every run: say so, as the verdicts see fewer seeds
        label += (f"**Incomplete:** {len(missing)} of {len(args.seeds) * len(args.rows)} "
                  f"requested (method, seed) runs are not in {project_path(args.state)}: "
                  f"{'; '.join(missing)}. Each table and target averages the seeds its method "
                  "has (the seeds column).\n\n")  # fmt: skip
    label += divergence_words(rows)
    return (
        "# OOD detection on MNIST-5000\n\n" + label + f"Command: `{command}`  \n"
        f"Machine: {env['machine']}; torch {env['torch']}; date {env['date']}; "
        f"{threads_words(rows)}, CPU shared with other jobs; training time "
        f"{train_minutes:.0f} min in all; this invocation {seconds / 60:.1f} min "
        f"({loaded} of {len({(r['method'], r['seed']) for r in rows})} (method, seed) runs loaded "
        f"from {project_path(args.state)}, "
        "computed earlier by this script with the same settings).  \n"
        f"Models: {net_words(args)} trained on the embedded "
        f"MNIST-5000 ({args.val_size} held out for validation; a different split per seed), "
        f"Adam lr {args.lr} ({schedule(args)}), batch {args.batch_size}, {args.epochs} epochs, "
        f"weights of {SELECTION_WORDS[args.select]} kept. Held-out classes: the same recipe on "
        "digits 0-4 only "
        f"(5 outputs), digits 5-9 of the test set as OOD. Seeds {seeds}.  \n"
        f"Scoring: {args.samples} posterior samples shared by the in-distribution and OOD sets; "
        f"{args.n_test} random MNIST test images vs {args.n_test} OOD images per set (Fashion-MNIST"
        f" test images; uniform noise; Gaussian noise N(0.5, 1) clipped to [0, 1]; inverted "
        f"digits 1 - x). AUROC with OOD as positive; values are mean ± std over seeds.\n\n"
        "## Best score per method and OOD set (AUROC)\n\n"
        + markdown_table(["method", "seeds", "MNIST accuracy", *sets], best_table)
        + "\n## FPR at 95% TPR of that best score (lower is better)\n\n"
        + markdown_table(["method", *sets], fpr)
        + "\n## Targets (issue 4)\n\n"
        + "\n".join(targets(rows, args))
        + "\n\n## Anchors\n\n"
        + (
            "The issue's numbers (same data and net)"
            if args.arch == "mlp"
            else "The issue's numbers (same data, but the MLP 784-256-256-256-10, not this CNN)"
        )
        + " and Hendrycks & Gimpel (2017), whose net was trained on all 60000 MNIST images:\n\n"
        + markdown_table(["method", "OOD set", "score", "reference AUROC", "measured"], anchors)
        + "\n## AUROC of every score\n\n"
        + markdown_table(["OOD set", "score", *args.rows], full)
        + "\n## Dataset shift: rotation (degrees)\n\n"
        + curve_table("rotation", "level", shift, ["accuracy", "nll", "entropy"])
        + "\n## Dataset shift: Gaussian pixel noise (std)\n\n"
        + curve_table("noise", "level", shift, ["accuracy", "nll", "entropy"])
        + "\n## FGSM: accuracy and detection AUROC (clean vs adversarial) by eps\n\n"
        + adv_table
        + "\nPlots: ood_auroc.png, ood_shift_rotation.png, ood_shift_noise.png, "
        "ood_adversarial.png. Per-run rows: ood.csv, ood_shift.csv, ood_adversarial.csv.\n"
    )


TABLES = "## Best score per method and OOD set (AUROC)\n"
REBUILT = re.compile(r"^Tables rebuilt on .*?\n\n", re.M | re.S)


def rebuild_report(out: Path, command: str) -> str:
    """``out``/ood.md rebuilt from the CSVs beside it (ood.csv, ood_shift.csv,
    ood_adversarial.csv), for a report written before one of its tables changed: the header
    down to the first table is kept as it was (the run's command, machine and timing), a line
    says when and by which ``command`` the tables were rebuilt, and the tables come from
    :func:`summarise` with the settings of the run's command."""
    old_path = out / "ood.md"
    if not old_path.is_file():
        fail("ood.py", f"--report-only rebuilds {old_path}, which does not exist; run the "
                       "benchmark into --out first")  # fmt: skip
    old = old_path.read_text()
    found = re.search(r"^Command: `(.*)`", old, re.M)
    if found is None or TABLES not in old:
        fail("ood.py", f"{old_path} has no 'Command:' line or no tables; it was not written "
                       "by this script")  # fmt: skip
    argv = shlex.split(found.group(1))
    if argv[:2] != ["python", "benchmarks/ood.py"]:
        fail("ood.py", f"{old_path}'s command is not benchmarks/ood.py's: {found.group(1)}")
    with flag_errors("ood.py", f"the command in {old_path}: "):
        args = normalise(parse_args(Args, argv[2:]))
    missing = [n for n in ("ood.csv", "ood_shift.csv", "ood_adversarial.csv")
               if not (out / n).is_file()]  # fmt: skip
    if missing:
        fail("ood.py", f"--report-only needs {', '.join(missing)} in {out}")
    rows, shift, adv = (read_csv(out / n) for n in
                        ("ood.csv", "ood_shift.csv", "ood_adversarial.csv"))  # fmt: skip
    tables = summarise(rows, shift, adv, args, found.group(1), 0.0, 0).split(TABLES, 1)[1]
    head = REBUILT.sub("", old.split(TABLES, 1)[0])
    note = (f"Tables rebuilt on {environment()['date']} from this folder's CSVs by `{command}` "
            "(nothing retrained or rescored; the lines above are the run's own).\n\n")  # fmt: skip
    return head + note + TABLES + tables


def normalise(args: Args) -> Args:
    """``args`` with its choices in canonical form; a bad one ends the script."""
    with flag_errors("ood.py"):
        return dataclasses.replace(
            args,
            arch=parse_choice(args.arch, Arch, "architecture").value,
            select=parse_choice(args.select, Selection, "select").value,
            scores=[s.value for s in parse_scores(args.scores)],
        )


def check_settings(script: str, args: Any, sizes: Sequence[str] = ("samples",)) -> None:
    """Every setting that training and scoring use, checked before any run trains (a bad one
    failed after a run's training before, or in its held-out copy): the recipe as fit takes
    it, each row's model, and the sizes of the sets and curves (``sizes``: the fields of
    ``args`` with posterior sample counts)."""
    check_flags(script, args, positive=["n_test", *sizes], distinct=["rows"])
    if args.n_test > MNIST_TEST_SIZE:  # build_suite took all 10000; the report said n_test
        fail(script, f"--n-test must be at most {MNIST_TEST_SIZE}, the MNIST test images, "
                     f"got {args.n_test}")  # fmt: skip
    for row in args.rows:
        with flag_errors(script, f"row {row}: "):
            method, _ = parse_row(row)
            TrainConfig(method=method, arch=args.arch, hidden=list(args.hidden),
                        epochs=args.epochs, lr=args.lr, lr_schedule=args.lr_schedule,
                        lr_warmup=args.lr_warmup, batch_size=args.batch_size,
                        select=args.select, val_size=args.val_size).validate()  # fmt: skip
            build(row, 10, 0, args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    if args.report_only:
        given = sys.argv[1:] if argv is None else list(argv)
        other = sorted({a.split("=")[0] for a in given if a.startswith("--")}
                       - {"--report-only", "--out"})  # fmt: skip
        if other:
            fail("ood.py", f"--report-only reads every setting from --out's ood.md, so "
                           f"{', '.join(other)} would be ignored; drop them")  # fmt: skip
        text = rebuild_report(Path(args.out), command_line("ood.py", argv))
        atomic_write_text(Path(args.out) / "ood.md", text)
        print(text)
        return
    args = normalise(args)
    try:  # a misspelt row fails here, not after hours of training
        for row in args.rows:
            parse_row(row)
    except ValueError as err:
        fail("ood.py", f"--rows: {err}")
    if args.threads < 1:
        fail("ood.py", f"--threads must be at least 1, got {args.threads}")
    missing = [s for s in ("entropy", "mutual_information") if s not in args.scores]
    if missing:
        fail("ood.py", f"--scores {' '.join(args.scores)} lacks {', '.join(missing)}, which "
                       "the shift and FGSM curves plot; add them to --scores")  # fmt: skip
    command = command_line("ood.py", argv)
    if args.quick:
        quick_out = ROOT / "runs" / "bench-ood-quick"
        args = quick_settings(
            args, rows=["bhn-2", "mc_dropout", "map"], hidden=[16], seeds=[0], epochs=1,
            n_test=100, samples=4, rotations=[0, 90], noise_stds=[0.0, 0.5], shift_n=50,
            epsilons=[0.0, 0.1], attack_samples=2,
            out=str(quick_out) if in_results(args.out) else args.out,
            state=str(Path(quick_out if in_results(args.out) else args.out) / "state"),
        )  # fmt: skip
    check_settings("ood.py", args, sizes=("samples", "shift_n", "attack_samples"))
    check_flags("ood.py", args, nonnegative=["epsilons", "noise_stds"])
    torch.set_num_threads(args.threads)
    seed_everything(args.seeds[0])
    out, state = Path(args.out), Path(args.state)
    run_name = f"ood__{net_tag(args)}__e{args.epochs}__{int(time.time())}"
    start = time.perf_counter()
    results: dict[str, list[dict]] = {"detection": [], "shift": [], "adversarial": []}
    todo = [(seed, row) for seed in args.seeds for row in args.rows]
    settings = cache_settings(args)
    loaded = 0
    for seed, row in tqdm(todo, desc=run_name):
        path = state / state_key(row, seed, args)
        part = cached_run("ood.py", path, settings, args.quick)
        if part is not None:
            loaded += 1
        elif args.cached_only:
            continue
        else:
            seed_everything(seed)
            part = run_one(row, seed, args)
            save_run(path, part, settings)
            drop_checkpoints(row, seed, args)
        for k in results:
            results[k] += part[k]
    seconds = time.perf_counter() - start

    first = ["method", "ood_set", "score", "seed", "auroc", "aupr_in", "aupr_out", "fpr95"]
    results["detection"] = [{**{k: r[k] for k in first}, **r} for r in results["detection"]]
    write_csv(results["detection"], out / "ood.csv")
    write_csv(results["shift"], out / "ood_shift.csv")
    write_csv(results["adversarial"], out / "ood_adversarial.csv")
    rows = [{**r, "model": r["method"]} for r in results["detection"]]
    auroc_bars(rows, out / "ood_auroc.png")
    for kind in ("rotation", "noise"):
        axis = "rotation (degrees)" if kind == "rotation" else "pixel noise std"
        shift_rows = [{**r, "model": r["method"], axis: r["level"]}
                      for r in results["shift"] if r["shift"] == kind]  # fmt: skip
        shift_plot(shift_rows, out / f"ood_shift_{kind}.png",
                   ("accuracy", "nll", "entropy", "mutual_information"), level=axis,
                   title=f"MNIST under {kind} (mean ± sd over seeds)")  # fmt: skip
    adv = [{**r, "model": r["method"], "AUROC (entropy)": r["auroc"]}
           for r in results["adversarial"] if r["score"] == "entropy"]  # fmt: skip
    for r in adv:
        mi = [
            a["auroc"]
            for a in results["adversarial"]
            if a["score"] == "mutual_information"
            and (a["method"], a["seed"], a["eps"]) == (r["method"], r["seed"], r["eps"])
        ]
        r["AUROC (mutual information)"] = mi[0] if mi else float("nan")
    shift_plot(adv, out / "ood_adversarial.png",
               ("accuracy", "AUROC (entropy)", "AUROC (mutual information)"), level="eps",
               title="FGSM (AUROC: clean vs adversarial; undefined at eps 0)")  # fmt: skip
    text = summarise(results["detection"], results["shift"], results["adversarial"], args,
                     command, seconds, loaded)  # fmt: skip
    atomic_write_text(out / "ood.md", text)
    print(text)


if __name__ == "__main__":
    main()
