"""Why mutual information trails max-softmax on noise: each OOD set's uncertainty, split.

Retrains the OOD benchmark's models exactly as ``benchmarks/ood.py`` does (same splits, seeds,
recipe and posterior draws; with the same thread count on the same machine they are the same
models, which ``--reference`` checks against a committed ``ood.csv``). It scores the
in-distribution test images and each OOD set, and splits every input's predictive entropy
``H[E p]`` into its aleatoric part ``E H[p]`` (each posterior sample is unsure) and its
epistemic part, the mutual information ``H[E p] - E H[p]`` (the samples disagree). It reports
each score's AUROC and mean per set, the AUROC against the correctly classified test images
only, and the AUROCs again from more posterior samples (fresh draws).

    python benchmarks/ood_noise_scores.py           # BHN-12 (local draws) and MC dropout CNNs
    python benchmarks/ood_noise_scores.py --quick   # a smoke test in well under a minute
"""

from __future__ import annotations

import csv
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ood  # noqa: E402
from bhn_prior import active_units_per_layer  # noqa: E402
from common import (  # noqa: E402
    DATA_DIR,
    RESULTS,
    cached_run,
    check_flags,
    command_line,
    fail,
    markdown_table,
    mean_std,
    parse_args,
    project_path,
    quick_out,
    save_run,
    seed_everything,
    write_csv,
)

from safety_bhn._choices import parse_choice  # noqa: E402
from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.core.bhn import BHN  # noqa: E402
from safety_bhn.core.build import Arch  # noqa: E402
from safety_bhn.core.metrics import auto_batch_size  # noqa: E402
from safety_bhn.core.training import Selection  # noqa: E402
from safety_bhn.ood import build_suite, held_out_split  # noqa: E402
from safety_bhn.ood.metrics import auroc  # noqa: E402
from safety_bhn.ood.scores import SCORE_FUNCTIONS, Score, sample_probs  # noqa: E402
from safety_bhn.runs import environment, mnist_splits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Higher = more anomalous. Predictive entropy = expected entropy + mutual information.
SPLIT = (Score.MAX_SOFTMAX, Score.ENTROPY, Score.EXPECTED_ENTROPY, Score.MUTUAL_INFORMATION)
SCORES = {s.value: SCORE_FUNCTIONS[s] for s in SPLIT}
NOISE_SETS = ("uniform_noise", "gaussian_noise")
# AUROCs this close come from the same scores (the CSVs round-trip floats with 1e-16 error).
SAME = 1e-9
# An AUROC over n_in x n_out >= 1000 x 1000 pairs moves by at most 1e-6 when one pair's
# order flips: a larger gap means other models, not a tie broken by float rounding.
TIE = 1e-6


@dataclass
class Args:
    """Aleatoric and epistemic parts of the OOD benchmark's scores, per OOD set and method."""

    rows: list[str] = field(default_factory=lambda: ["bhn-12-local", "mc_dropout"])
    """methods, named as in benchmarks/ood.py's --rows"""
    arch: str = "cnn"
    """mlp or cnn, as in benchmarks/ood.py"""
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """MLP hidden layers (ignored with --arch cnn)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    """seeds, as in benchmarks/ood.py (each sets the split, the weights and the OOD sets)"""
    epochs: int = 50
    """training epochs"""
    lr: float = 1e-3
    """Adam learning rate"""
    lr_schedule: str = "cosine"
    """constant or cosine"""
    lr_warmup: float = 0.02
    """fraction of all steps over which the learning rate first rises linearly"""
    batch_size: int = 100
    """minibatch size"""
    select: str = "last"
    """which epoch's weights to keep: nll, accuracy or last"""
    val_size: int = 500
    """images of the 5000 held out for validation"""
    n_test: int = 2000
    """in-distribution test images (and images per generated OOD set)"""
    samples: list[int] = field(default_factory=lambda: [30, 100])
    """posterior sample counts; the first is scored under benchmarks/ood.py's own draw, the
    others under fresh draws from the same generator"""
    data_dir: str = DATA_DIR
    """folder with fashion-mnist/"""
    held_out: bool = False
    """split the held-out-classes set instead: each method trained on digits 0-4 as
    benchmarks/ood.py does (its second model per run), digits 5-9 of the test set as OOD;
    the ten-class models are not trained"""
    reference: str = str(RESULTS / "ood-cnn-last-10seeds" / "ood.csv")
    """an ood.csv from benchmarks/ood.py with these settings; its AUROCs are set beside this
    script's at the first sample count (empty: none)"""
    threads: int = 1
    """torch CPU threads (the thread count changes the trained model; see ood.py)"""
    state: str = str(ROOT / "runs" / "ood-noise-scores")
    """folder for per-(method, seed) results, so an interrupted run resumes"""
    out: str = str(RESULTS / "ood_noise_scores")
    """folder for ood_noise_scores.{csv,md}"""
    quick: bool = False
    """smoke test: benchmarks/ood.py --quick's models (tiny MLP, 1 epoch, the rate and --select
    given), scored with 4 and 8 samples"""


def ood_args(args: Args) -> ood.Args:
    """The benchmarks/ood.py arguments that train the same models (``samples`` is a list here,
    one count there, and only scoring uses it)."""
    shared = {f.name for f in dataclasses.fields(ood.Args)} & {
        f.name for f in dataclasses.fields(Args)
    } - {"samples"}
    return dataclasses.replace(ood.Args(), **{k: getattr(args, k) for k in shared})


def split_rows(
    probs_in: torch.Tensor, y_in: torch.Tensor, probs_out: dict[str, torch.Tensor]
) -> list[dict[str, Any]]:
    """One row per (OOD set, score) from posterior-sample probabilities ``(samples, batch,
    classes)``: AUROC against every test input and against the correctly classified ones, and
    the score's mean on each side.

    Example:
        >>> agree = torch.tensor([[[0.9, 0.1]], [[0.9, 0.1]]]).repeat(1, 2, 1)
        >>> split = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]).repeat(1, 2, 1)
        >>> rows = split_rows(agree, torch.tensor([0, 0]), {"odd": split})
        >>> [(r["score"], r["auroc"], round(r["mean_out"], 3)) for r in rows][2:]
        [('expected_entropy', 0.0, 0.0), ('mutual_information', 1.0, 0.693)]
    """
    correct = (probs_in.mean(0).argmax(-1) == y_in).numpy()
    values_in = {s: f(probs_in.double()).numpy() for s, f in SCORES.items()}
    rows = []
    for name, probs in probs_out.items():
        for score, f in SCORES.items():
            s_in, s_out = values_in[score], f(probs.double()).numpy()
            rows.append({
                "ood_set": name, "score": score, "auroc": auroc(s_in, s_out),
                "auroc_correct_in": auroc(s_in[correct], s_out) if correct.any() else np.nan,
                "mean_in": float(s_in.mean()), "mean_out": float(s_out.mean()),
            })  # fmt: skip
    return rows


def run_one(row: str, seed: int, args: Args) -> list[dict[str, Any]]:
    """Train ``row`` as benchmarks/ood.py does and score it at every sample count."""
    oargs = ood_args(args)
    splits = mnist_splits(None, args.val_size, seed)
    xt, yt = splits["test"]
    gen = torch.Generator().manual_seed(seed)  # as ood.run_one: its first use is the draw
    if args.held_out:
        # ood.run_one draws the ten-class model's samples from ``gen`` before this model's;
        # replay that draw on an untrained copy (its random numbers depend only on shapes)
        ten = ood.build(row, 10, seed, oargs)
        with torch.no_grad():
            ten.draw(ten.check_samples(args.samples[0]), gen)
        known = (*held_out_split(*splits["train"])[:2],)
        known_val = (*held_out_split(*splits["val"])[:2],)
        model, history = ood.train(row, known, known_val, 5, seed, oargs)
        suite = build_suite(xt, yt, "held_out_classes", n=args.n_test, seed=seed)
    else:
        model, history = ood.train(row, splits["train"], splits["val"], 10, seed, oargs)
        suite = build_suite(xt, yt, "mnist", n=args.n_test, seed=seed, data_dir=args.data_dir)
    units = "/".join(map(str, active_units_per_layer(model))) if isinstance(model, BHN) else ""
    rows = []
    for n in args.samples:
        draw = model.draw(model.check_samples(n), gen)  # as ood.evaluate_ood
        batch = auto_batch_size(model, n)
        probs_in = sample_probs(model, suite.x_in, n, batch_size=batch, draw=draw)
        probs_out = {name: sample_probs(model, x, n, batch_size=batch, draw=draw)
                     for name, x in suite}  # fmt: skip
        accuracy = float((probs_in.mean(0).argmax(-1) == suite.y_in).double().mean())
        rows += [{"method": row, "seed": seed, "samples": n, **r, "in_accuracy": accuracy,
                  "best_epoch": history.best_epoch, **ood.divergence(history),
                  "threads": torch.get_num_threads(), "active_units": units}
                 for r in split_rows(probs_in, suite.y_in, probs_out)]  # fmt: skip
    return rows


def add_reference(rows: list[dict[str, Any]], path: str, first: int) -> int:
    """Set the reference ood.csv's AUROC beside each row at sample count ``first``
    (``benchmark_auroc``); returns how many rows found one."""
    if not path:
        return 0
    with open(path) as f:
        ref = {(r["method"], int(r["seed"]), r["ood_set"], r["score"]): float(r["auroc"])
               for r in csv.DictReader(f)}  # fmt: skip
    found = 0
    for r in rows:
        key = (r["method"], r["seed"], r["ood_set"], r["score"])
        r["benchmark_auroc"] = ref.get(key, np.nan) if r["samples"] == first else np.nan
        found += not np.isnan(r["benchmark_auroc"])
    return found


def pick(rows: list[dict], **match: Any) -> list[dict]:
    """The rows whose fields equal ``match``."""
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def mean_of(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def auroc_table(rows: list[dict], args: Args, sets: list[str]) -> str:
    """Per method and set, each score's AUROC at the first sample count (mean ± std)."""
    correct = ("max_softmax", "mutual_information")
    table = []
    for method in args.rows:
        for s in sets:
            at = {sc: pick(rows, method=method, ood_set=s, score=sc, samples=args.samples[0])
                  for sc in SCORES}  # fmt: skip
            cells = [mean_std([r["auroc"] for r in at[sc]], "{:.3f}") for sc in SCORES]
            cells += [mean_std([r["auroc_correct_in"] for r in at[sc]], "{:.3f}") for sc in correct]
            table.append([method, s, *cells])
    header = ["method", "OOD set", *SCORES, *(f"{sc}, correct in" for sc in correct)]
    return markdown_table(header, table)


def parts_table(rows: list[dict], args: Args, sets: list[str]) -> str:
    """Per method, the mean entropy and its two parts on the test images and on each set."""
    parts = ("entropy", "expected_entropy", "mutual_information")
    table = []
    for method in args.rows:
        at = {sc: pick(rows, method=method, score=sc, samples=args.samples[0]) for sc in parts}
        means = [mean_of(pick(at[sc], ood_set=sets[0]), "mean_in") for sc in parts]
        table.append([method, "in-distribution test", *means])
        for s in sets:
            table.append(
                [method, s, *(mean_of(pick(at[sc], ood_set=s), "mean_out") for sc in parts)]
            )
    cells = [[m, s, *(f"{v:.3f}" for v in vals), f"{vals[2] / vals[0]:.2f}"]
             for m, s, *vals in table]  # fmt: skip
    return markdown_table(["method", "inputs", *parts, "MI / entropy"], cells)


def count_table(rows: list[dict], args: Args, sets: list[str]) -> str:
    """Per method and noise set (or the held-out digits), max-softmax's and MI's AUROC at
    every sample count."""
    scores = ("max_softmax", "mutual_information")
    table = []
    for method in args.rows:
        for s in [s for s in sets if s in (*NOISE_SETS, "held_out_classes")]:
            cells = [pick(rows, method=method, ood_set=s, score=sc, samples=n)
                     for n in args.samples for sc in scores]  # fmt: skip
            table.append([method, s, *(mean_std([r["auroc"] for r in c], "{:.3f}") for c in cells)])
    header = ["method", "OOD set", *(f"{sc} ({n})" for n in args.samples for sc in scores)]
    return markdown_table(header, table)


def units_table(rows: list[dict], args: Args, sets: list[str]) -> str:
    """Per BHN run: its active hidden units per layer and each set's entropy AUROC ("" when
    no row records active units, as in runs cached before they were counted)."""
    runs = {(r["method"], r["seed"]): r["active_units"] for r in rows if r.get("active_units")}
    if not runs:
        return ""
    table = []
    for (method, seed), units in runs.items():
        at = pick(rows, method=method, seed=seed, score="entropy", samples=args.samples[0])
        cells = [f"{r['auroc']:.3f} / {r['mean_out']:.2f}"
                 for r in (pick(at, ood_set=s)[0] for s in sets)]  # fmt: skip
        table.append([method, seed, units, f"{at[0]['in_accuracy']:.4f}",
                      f"{at[0]['mean_in']:.3f}", *cells])  # fmt: skip
    return (
        f"\n## BHN runs: active hidden units per layer (|mean| / std of the scale > 2 under q), "
        f"test accuracy, and the entropy at {args.samples[0]} samples: its mean on the test "
        "digits, then per set its AUROC / its mean (nats)\n\n"
        + markdown_table(
            ["method", "seed", "active units", "test accuracy", "entropy on test digits", *sets],
            table,
        )  # fmt: skip
    )


def parts_plot(rows: list[dict], args: Args, sets: list[str], path: Path) -> Path:
    """Stacked bars per method: each set's mean entropy as expected entropy + MI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.rows), figsize=(4.5 * len(args.rows), 3.6), sharey=True)
    for ax, method in zip(np.atleast_1d(axes), args.rows, strict=True):
        at = {sc: pick(rows, method=method, score=sc, samples=args.samples[0])
              for sc in ("expected_entropy", "mutual_information")}  # fmt: skip
        labels = ["test digits", *sets]
        parts = {sc: [mean_of(pick(at[sc], ood_set=sets[0]), "mean_in")]
                 + [mean_of(pick(at[sc], ood_set=s), "mean_out") for s in sets]
                 for sc in at}  # fmt: skip
        ax.bar(labels, parts["expected_entropy"], label="expected entropy (aleatoric)")
        ax.bar(labels, parts["mutual_information"], bottom=parts["expected_entropy"],
               label="mutual information (epistemic)")  # fmt: skip
        ax.set_title(method)
        ax.tick_params(axis="x", rotation=30)
    np.atleast_1d(axes)[0].set_ylabel(f"mean entropy (nats), {args.samples[0]} samples")
    handles, names = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summarise(rows: list[dict], args: Args, command: str, found: int) -> str:
    env = environment()
    first = args.samples[0]
    sets = list(dict.fromkeys(r["ood_set"] for r in rows))
    compared = [r for r in rows if not np.isnan(r.get("benchmark_auroc", np.nan))]
    ref_name = project_path(args.reference)
    if compared:
        gap = max(abs(r["auroc"] - r["benchmark_auroc"]) for r in compared)
        apart = sum(abs(r["auroc"] - r["benchmark_auroc"]) > SAME for r in compared)
        if gap <= SAME:
            reference = (
                f"All {found} AUROCs at {first} samples that `{ref_name}` also holds agree "
                f"with it (largest difference {gap:.2g}, within float rounding): these are the "
                "benchmark's models and draws."
            )
        elif gap <= TIE:
            reference = (
                f"Of the {found} AUROCs at {first} samples that `{ref_name}` also holds, "
                f"{found - apart} agree with it to float rounding and {apart} "
                f"differ{'s' if apart == 1 else ''} by up to "
                f"{gap:.2g}, a few of the million-odd (in, out) pairs whose scores tie to "
                "float rounding ordered the other way: these are the benchmark's models and "
                "draws."
            )
        else:
            reference = (
                f"The {found} AUROCs at {first} samples that `{ref_name}` also holds differ "
                f"from it by up to {gap:.2g}: these models are not the benchmark's (another "
                "machine or thread count trains different ones)."
            )
    else:
        reference = "No reference ood.csv rows matched: the models were not checked against one."
    return (
        "# Aleatoric and epistemic parts of the OOD scores\n\n"
        f"Command: `{command}`  \n"
        f"Models: benchmarks/ood.py's `--arch {args.arch} --epochs {args.epochs} --lr-schedule "
        f"{args.lr_schedule} --lr-warmup {args.lr_warmup:g} --select {args.select}`; seeds "
        f"{args.seeds}; {args.n_test} test images and as many per OOD set.  \n"
        f"Machine: {env['machine']}, torch {env['torch']}; {ood.threads_words(rows)} (as the "
        "runs recorded, not this invocation's --threads); "
        f"{env['date']}.\n\n{reference}\n\n"
        f"## AUROC of each score at {first} samples (mean ± std over seeds)\n\n"
        "Entropy = expected entropy (aleatoric) + mutual information (epistemic). The last two "
        "columns compare each OOD set with the correctly classified test images only.\n\n"
        + auroc_table(rows, args, sets)
        + f"\n## Mean of each part (nats) at {first} samples\n\n"
        + parts_table(rows, args, sets)
        + f"\n## {'Held-out-digit' if args.held_out else 'Noise-set'} AUROC by posterior "
        "sample count (later counts: fresh draws)\n\n"
        + count_table(rows, args, sets)
        + units_table(rows, args, sets)
        + "\nPer-run rows: ood_noise_scores.csv. Plot of the parts: ood_noise_scores.png.\n"
    )


def quick_args(args: Args) -> Args:
    """A ``--quick`` run's settings: benchmarks/ood.py --quick's models, written to
    runs/bench-quick, or to ``--out`` if given, but never into the committed results, however
    ``--out`` spells them."""
    out = "runs/bench-quick" if args.out == Args.out else quick_out(args.out)
    return dataclasses.replace(
        args, rows=["bhn-2", "mc_dropout"], arch="mlp", hidden=[16], seeds=[0], epochs=1,
        n_test=100, samples=[4, 8], out=out, state=str(Path(out) / "state"),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    command = command_line("ood_noise_scores.py", argv)
    try:  # canonical names: ood.build tests arch == "mlp" ("MLP" built another network)
        arch = parse_choice(args.arch, Arch, "architecture").value
        select = parse_choice(args.select, Selection, "select").value
        args = dataclasses.replace(args, arch=arch, select=select)
    except ValueError as err:
        fail("ood_noise_scores.py", str(err))
    try:  # a misspelt row fails here, not after an hour of training
        for row in args.rows:
            ood.parse_row(row)
    except ValueError as err:
        fail("ood_noise_scores.py", f"--rows: {err}")
    if args.quick:
        args = quick_args(args)
    check_flags("ood_noise_scores.py", args, positive=["threads"], distinct=["samples"])
    ood.check_settings("ood_noise_scores.py", args, sizes=("samples",))
    if args.reference and not Path(args.reference).is_file():
        fail("ood_noise_scores.py", f"--reference {args.reference}: no such file; pass an "
             "ood.csv from benchmarks/ood.py, or --reference '' for none")  # fmt: skip
    torch.set_num_threads(args.threads)
    key_args = ood_args(args)
    settings = ood.cache_settings(args, (*ood.RUN_IGNORE, "reference"))
    rows: list[dict[str, Any]] = []
    start, loaded = time.perf_counter(), 0
    todo = [(s, r) for s in args.seeds for r in args.rows]
    for seed, row in tqdm(todo, desc="runs"):
        counts = "-".join(map(str, args.samples))
        kind = "heldout__" if args.held_out else ""
        path = Path(args.state) / f"s{counts}__{kind}{ood.state_key(row, seed, key_args)}"
        part = cached_run("ood_noise_scores.py", path, settings, False)
        if part is not None:
            loaded += 1
        else:
            seed_everything(seed)
            part = run_one(row, seed, args)
            save_run(path, part, settings)
        rows += part
    found = add_reference(rows, args.reference, args.samples[0])
    out = Path(args.out)
    write_csv(rows, out / "ood_noise_scores.csv")
    parts_plot(rows, args, list(dict.fromkeys(r["ood_set"] for r in rows)),
               out / "ood_noise_scores.png")  # fmt: skip
    text = summarise(rows, args, command, found)
    text += (f"Wall time of this invocation: {time.perf_counter() - start:.0f} s; {loaded} of "
             f"{len(todo)} (method, seed) runs loaded from {project_path(args.state)}, "
             "computed earlier by this script with the same settings.\n")  # fmt: skip
    atomic_write_text(out / "ood_noise_scores.md", text)
    print(text)


if __name__ == "__main__":
    main()
