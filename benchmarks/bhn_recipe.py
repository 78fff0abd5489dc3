"""Training recipes for the MNIST-5000 MLP (BHN and MC dropout), scored on a tuning set.

Each row ``METHOD:RECIPE`` trains the 784-800-10 MLP with one recipe (epochs, learning-rate
schedule, batch, ELBO samples, KL annealing, gradient clipping, where the validation images
come from) and scores it on a fixed random half of the 5000 extra MNIST training images
(``mnist-extra5k``), never on the test set. The recipe a method does best with here is the
one to run on the test set with ``benchmarks/mnist5000.py``, so the choice is not tuned on
the test images. Writes benchmarks/results/bhn_recipe.{csv,md} (the CSV after every run).
Run from the project root:

    python benchmarks/bhn_recipe.py --workers 2        # every row (many CPU-hours)
    python benchmarks/bhn_recipe.py --quick            # a smoke test

A 500-epoch BHN-12 run takes about 26 minutes on one CPU core here; the committed results
(benchmarks/results/bhn_recipe/) ran the rows their command names, two at a time. On an
H200, sixteen such processes sharing the GPU finished no 200-epoch run in 8.5 minutes (small
kernels, time-sliced), so a GPU is no shortcut for this sweep without batching runs together.
"""

from __future__ import annotations

import csv
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bhn_prior import active_units  # noqa: E402
from common import (  # noqa: E402
    DATA_DIR,
    RESULTS,
    RESULTS_VERSION,
    check_flags,
    check_results_version,
    checkpoint_file,
    command_line,
    fail,
    flag_errors,
    markdown_table,
    parse_args,
    quick_out,
    quick_settings,
    seed_everything,
    stop_with_parent,
    write_csv,
)

import safety_bhn  # noqa: E402
from safety_bhn.core.build import resolve_device  # noqa: E402
from safety_bhn.core.metrics import classification_metrics, predictive  # noqa: E402
from safety_bhn.core.training import check_kl_anneal  # noqa: E402
from safety_bhn.data import load_dataset  # noqa: E402
from safety_bhn.runs import environment, mnist_splits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COS = {"lr_schedule": "cosine", "lr_warmup": 0.02}
RECIPES: dict[str, dict[str, Any]] = {
    # the committed MNIST-5000 recipe: Adam 1e-3, batch 100, constant rate
    "const-200": {"epochs": 200},
    "cos-200": {"epochs": 200, **COS},
    "const-500": {"epochs": 500},
    "cos-500": {"epochs": 500, **COS},
    "cos-1000": {"epochs": 1000, "lr_schedule": "cosine", "lr_warmup": 0.01},
    "cos-500-lr3e-4": {"epochs": 500, "lr": 3e-4, **COS},
    # the defaults of the authors' MNIST script (lr0 1e-4, batch 32)
    "authors-200": {"epochs": 200, "lr": 1e-4, "batch_size": 32},
    # the batch of the authors' MNIST-5000 launcher (batch 32, lr0 1e-3 of their grid, 200
    # epochs, constant rate): 3.1 times the steps of const-200, each on a noisier gradient
    "bs32-200": {"epochs": 200, "batch_size": 32},
    "bs32-cos-500": {"epochs": 500, "batch_size": 32, **COS},
    "cos-200-samples4": {"epochs": 200, "train_samples": 4, **COS},
    "cos-200-anneal": {"epochs": 200, "lr_schedule": "cosine", "kl_anneal": 0.25},
    "cos-200-clip10": {"epochs": 200, "grad_clip": 10.0, **COS},
    # the authors' protocol: train on all 5000 images, select on separate validation images
    "cos-200-extra-val": {"epochs": 200, "extra_val": True, **COS},
    "cos-500-extra-val": {"epochs": 500, "extra_val": True, **COS},
    # keep the most accurate validation epoch (the authors' protocol), not the lowest NLL:
    # broader priors keep more units but grow overconfident, so NLL stopped them early
    "cos-200-acc": {"epochs": 200, "select": "accuracy", **COS},
    "cos-200-acc-prior1.5": {"epochs": 200, "select": "accuracy", "prior_std": 1.5, **COS},
    "cos-200-acc-prior3": {"epochs": 200, "select": "accuracy", "prior_std": 3.0, **COS},
    # a prior centred on the data-dependent initial scales rather than on 0: the zero-centred
    # prior prunes all but a few dozen of the 800 hidden units (bhn_prior.md), this one none
    "cos-200-acc-init": {"epochs": 200, "select": "accuracy", "prior_mean": "init", **COS},
    # the authors' likelihood: the true class's probability clipped to [0.001, 0.999]
    "cos-200-pclip": {"epochs": 200, "prob_clip": 0.001, **COS},
    # a draw of the scales per image rather than per minibatch (the same ELBO, less variance)
    "cos-200-local": {"epochs": 200, "local_draws": True, **COS},
}
DEFAULT_ROWS = (
    [f"bhn-12:{r}" for r in RECIPES]
    + [f"mc_dropout:{r}" for r in ("const-200", "cos-200", "const-500", "cos-500", "cos-1000",
                                    "cos-500-lr3e-4", "authors-200", "cos-200-extra-val",
                                    "cos-500-extra-val", "cos-200-pclip")]
    + ["bhn-0:cos-200", "bhn-0:cos-500"]
)  # fmt: skip
FIT_KEYS = ("epochs", "lr", "batch_size", "lr_schedule", "lr_warmup", "kl_anneal", "grad_clip",
            "select")  # fmt: skip


@dataclass
class Args:
    """MNIST-5000 training recipes for BHN and MC dropout, scored on a tuning set."""

    rows: list[str] = field(default_factory=lambda: list(DEFAULT_ROWS))
    """runs as METHOD:RECIPE; METHOD is bhn-K (K coupling layers), mc_dropout, ...; RECIPE a
    key of RECIPES in this file"""
    hidden: int = 800
    """MLP width (one hidden layer)"""
    seed: int = 0
    """seed for the validation split, the weights and training"""
    samples: int = 100
    """posterior samples for the tuning-set predictive"""
    data_dir: str = DATA_DIR
    """folder with mnist/ and mnist-extra5k/"""
    device: str | None = None
    """cpu or cuda (default: cuda when available)"""
    workers: int = 1
    """runs trained in parallel (processes; on a CPU box, one per core)"""
    deadline_minutes: float = 0.0
    """start no run after this many minutes (0: no deadline); finished runs are kept"""
    out: str = str(RESULTS)
    """folder for bhn_recipe.{csv,md}"""
    report_only: bool = False
    """train nothing: write the table from the rows already in the output CSV"""
    quick: bool = False
    """smoke test: tiny net, 1 epoch, 500 tuning images, two rows unless --rows names others,
    written to runs/bench-quick"""


def parse_row(row: str) -> tuple[str, int, str]:
    """``"bhn-12:cos-200"`` -> ``("bhn", 12, "cos-200")``, with a clear error for a bad row."""
    spec, _, recipe = row.partition(":")
    method, _, layers = spec.partition("-")
    if recipe not in RECIPES:
        raise ValueError(f"row {row!r}: unknown recipe {recipe!r}; expected one of "
                         f"{', '.join(RECIPES)}")  # fmt: skip
    if method not in {m.value for m in safety_bhn.Method} or (layers and not layers.isdigit()):
        raise ValueError(f"row {row!r}: expected METHOD[-K]:RECIPE with METHOD one of "
                         f"{', '.join(m.value for m in safety_bhn.Method)}")  # fmt: skip
    return method, int(layers or 0), recipe


def data(args: Args, extra_val: bool) -> tuple[tuple, tuple, tuple]:
    """Train, validation and tuning sets. The tuning set is the same for every recipe."""
    x_extra, y_extra = load_dataset("mnist", "extra", args.data_dir)
    perm = torch.randperm(len(y_extra), generator=torch.Generator().manual_seed(1234))
    half = len(perm) // 2  # the file is sorted by class: split it at random
    n_tune = 500 if args.quick else half
    tune = (x_extra[perm[:n_tune]], y_extra[perm[:n_tune]])
    if extra_val:  # all 5000 training images; validation from the other half of the extra set
        split = mnist_splits(args.data_dir, 0, args.seed)
        pick = perm[half:][torch.randperm(half, generator=torch.Generator().manual_seed(args.seed))]
        return split["train"], (x_extra[pick[:500]], y_extra[pick[:500]]), tune
    split = mnist_splits(args.data_dir, 500, args.seed)
    return split["train"], split["val"], tune


def recipe_of(name: str, quick: bool = False) -> dict[str, Any]:
    """Every setting of the recipe ``name`` (a key of RECIPES), defaults filled in."""
    recipe = {"lr": 1e-3, "batch_size": 100, "lr_schedule": "constant", "lr_warmup": 0.0,
              "kl_anneal": 0.0, "grad_clip": 100.0, "train_samples": 1, "extra_val": False,
              "select": "nll", "prior_std": 1.0, "prior_mean": "zero", "prob_clip": 0.0,
              "local_draws": False,
              **RECIPES[name]}  # fmt: skip
    if quick:
        recipe["epochs"] = 1
    return recipe


def model_options(args: Args, method: str, layers: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """``build_model``'s options for a row of ``method`` with ``layers`` couplings."""
    opts: dict[str, Any] = {"hidden": [args.hidden]}
    if recipe["prob_clip"]:
        opts["prob_clip"] = recipe["prob_clip"]
    if method == "bhn":
        opts.update(coupling_layers=layers, train_samples=recipe["train_samples"],
                    prior_std=recipe["prior_std"], prior_mean=recipe["prior_mean"],
                    local_draws=recipe["local_draws"])  # fmt: skip
    return opts


def run_one(row: str, args: Args) -> dict[str, Any]:
    """Train one row and score it on the tuning set; one tidy CSV row."""
    if args.device in (None, "cpu"):
        torch.set_num_threads(1)
    method, layers, name = parse_row(row)
    recipe = recipe_of(name, args.quick)
    train, val, (x_tune, y_tune) = data(args, recipe["extra_val"])
    seed_everything(args.seed)
    opts = model_options(args, method, layers, recipe)
    model = safety_bhn.build_model(method, seed=args.seed, device=args.device, **opts)
    # training state saved as it trains: a benchmark stopped inside a run continues it (not
    # one begun by code of an older results version)
    checkpoint = checkpoint_file(args.out, f"{row.replace(':', '_')}-seed{args.seed}", {})
    history = safety_bhn.fit(model, train, val, seed=args.seed, progress=False,
                             checkpoint=checkpoint,
                             **{k: recipe[k] for k in FIT_KEYS})  # fmt: skip
    seconds = history.seconds  # the whole training time, resumed parts included
    gen = torch.Generator(device=model.device).manual_seed(args.seed)
    probs = predictive(model, x_tune, args.samples, gen)
    tune = classification_metrics(probs, y_tune)
    active, units = active_units(model) if method == "bhn" else ("", opts["hidden"][0])
    return {"row": row, "method": method, "coupling_layers": layers, "recipe": name,
            "hidden": opts["hidden"][0], "seed": args.seed, "samples": args.samples,
            "epochs": recipe["epochs"],
            "best_epoch": history.best_epoch, "tune_acc": tune["accuracy"],
            "tune_nll": tune["nll"], "tune_ece": tune["ece"], "active_units": active,
            "units": units, "train_seconds": round(seconds, 1),
            "device": str(model.device), "results_version": RESULTS_VERSION}  # fmt: skip


def cost(row: str) -> float:
    """Rough relative cost of a row (steps), so the longest runs start first."""
    recipe = {"batch_size": 100, **RECIPES[parse_row(row)[2]]}
    return recipe["epochs"] * 5000 / recipe["batch_size"] * recipe.get("train_samples", 1) ** 0.5


def report(rows: list[dict[str, Any]], args: Args, command: str, pending: list[str]) -> str:
    env = environment()
    table = markdown_table(
        ["method", "recipe", "best epoch / epochs", "tuning accuracy (%)", "tuning NLL",
         "tuning ECE", "active hidden units", "train s"],
        [[r["row"].split(":")[0], r["recipe"], f"{r['best_epoch']} / {r['epochs']}",
          f"{100 * float(r['tune_acc']):.2f}", f"{float(r['tune_nll']):.3f}",
          f"{float(r['tune_ece']):.3f}",
          f"{r['active_units']} / {r['units']}" if r["method"] == "bhn" else "all (no q)",
          r["train_seconds"]] for r in rows],
    )  # fmt: skip
    recipes = "\n".join(f"- `{k}`: {v}" for k, v in RECIPES.items())
    missing = f"\n**Not run** (deadline): {', '.join(pending)}\n" if pending else ""
    return f"""# MNIST-5000 training recipes on a tuning set

Command: `{command}`
Machine: {env["machine"]}; torch {env["torch"]}; date {env["date"]}; seed {args.seed}.
Setup: MLP 784-{args.hidden}-10. Unless a recipe says otherwise: Adam lr 0.001, batch 100,
constant rate, gradient norm clipped at 100, one ELBO sample per step, trained on 4500 of the
5000 MNIST training images with the other 500 for validation (best validation-NLL epoch kept;
`acc` recipes keep the first most accurate one instead), N(0, 1) prior on the BHN scales,
plain softmax likelihood (`pclip` recipes clip the true class's probability to [0.001, 0.999]).
`extra-val` recipes train on all 5000 and validate on 500 extra MNIST images (the authors'
protocol used a separate validation set). Scored with {args.samples} posterior samples on
{2500 if not args.quick else 500} extra MNIST training images (`mnist-extra5k`, a random
half fixed across recipes, disjoint from any validation images): a tuning set, not the test set.
"Active" hidden units: |E[g]| / std[g] > 2 under q. One seed: over seeds, these models' test
accuracy varies by 0.17-0.30 points (std, `mnist5000-200epochs/`), so differences below about
0.3 points are within noise.
{missing}
{table}
Recipes:

{recipes}
"""


#: what rows written before the CSV had a samples column were scored with (the only default)
LEGACY = {"samples": "100"}


def check_resume(rows: list[dict[str, str]], args: Args, csv_path: Path) -> None:
    """Refuse to keep (or report) finished rows of another width, seed, tuning-set sample
    count or epoch count (a --quick row's single epoch) than these settings train: the table
    would mix two recipes under one header; nor, unless ``--report-only``, rows made by code of
    another results version (rows from before the version column count as version 1)."""
    want = {"hidden": str(args.hidden), "seed": str(args.seed), "samples": str(args.samples)}
    for r in rows:
        try:  # a --report-only rebuild may report older code's rows as they are
            remedy = "delete its line to rerun it, or --out another folder"
            if not args.report_only:
                check_results_version(
                    r.get("results_version"), f"{csv_path} (row {r['row']})", remedy
                )
        except ValueError as err:
            fail("bhn_recipe.py", str(err))
        have = {k: r.get(k) or LEGACY.get(k, "") for k in want}
        diff = [f"{k}={have[k]} (asked: {want[k]})" for k in want if have[k] != want[k]]
        epochs = str(recipe_of(parse_row(r["row"])[2])["epochs"])
        if r.get("epochs") != epochs:
            diff.append(f"epochs={r.get('epochs')} (recipe {r['recipe']}: {epochs})")
        if diff:
            fail("bhn_recipe.py", f"{csv_path} holds row {r['row']} run with "
                 f"{', '.join(diff)}; pass the same settings to resume or report it, or --out "
                 "another folder")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    if args.quick:
        rows = ["bhn-2:cos-200", "mc_dropout:const-200"]
        args = quick_settings(args, rows=rows, hidden=32, samples=5, out=quick_out(args.out))
    try:
        for row in args.rows:
            parse_row(row)
    except ValueError as err:
        raise SystemExit(f"bhn_recipe.py: error: {err}") from None
    check_flags("bhn_recipe.py", args, positive=["workers", "hidden", "samples"],
                nonnegative=["deadline_minutes"], distinct=["rows"])  # fmt: skip
    with flag_errors("bhn_recipe.py", "--device: "):
        resolve_device(args.device)
    for row in args.rows:  # every row's model settings checked before any run starts
        method, layers, name = parse_row(row)
        opts = model_options(args, method, layers, recipe_of(name))
        with flag_errors("bhn_recipe.py", f"row {row}: "):
            safety_bhn.build_model(method, seed=args.seed, device="cpu", **opts)
            check_kl_anneal(recipe_of(name)["kl_anneal"], method)  # fit's own check
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "bhn_recipe.csv"
    command = command_line("bhn_recipe.py", argv, drop=["--report-only"])
    rows: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []  # rows of recipes not asked for: kept in the CSV as they are
    if csv_path.exists() and not args.quick:  # resume: keep finished rows
        with open(csv_path) as f:
            found = list(csv.DictReader(f))
        rows = [r for r in found if r["row"] in args.rows]
        others = [r for r in found if r["row"] not in args.rows]
        check_resume(rows, args, csv_path)
    done = {r["row"] for r in rows}
    todo = sorted((r for r in args.rows if r not in done), key=cost, reverse=True)
    if args.report_only:
        todo = []
    deadline = time.monotonic() + 60 * args.deadline_minutes if args.deadline_minutes else None
    pending = [r for r in args.rows if r not in done]
    # spawn: CUDA cannot be used in a forked child
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        args.workers, mp_context=context, initializer=stop_with_parent
    ) as pool:
        futures = {}
        for row in todo:
            futures[pool.submit(_guarded, row, args, deadline)] = row
        for future in tqdm(as_completed(futures), total=len(futures), desc="recipes"):
            result = future.result()
            if result is None:
                continue
            pending.remove(result["row"])
            rows.append(result)
            rows.sort(key=lambda r: args.rows.index(r["row"]))
            write_csv([*rows, *others], csv_path)  # only --rows before: the others were lost
    if not rows:
        raise SystemExit("bhn_recipe.py: no run finished")
    text = report(rows, args, command, pending)
    (out / "bhn_recipe.md").write_text(text)
    print(text)


def _guarded(row: str, args: Args, deadline: float | None) -> dict[str, Any] | None:
    """Run ``row`` unless the deadline has passed (then None)."""
    if deadline is not None and time.monotonic() > deadline:
        return None
    return run_one(row, args)


if __name__ == "__main__":
    main()
