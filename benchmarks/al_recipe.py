"""The retraining recipe of the active-learning loop, compared on fixed labelled sets.

Each active-learning step retrains a CNN from scratch on a few hundred labels with a fixed
budget of gradient steps. This script isolates that retrain: for each method, learning-rate
schedule and seed it trains on one random labelled set of MNIST-5000 images (100 more for
validation, as in the loop) and scores the *tuning* images of ``mnist-extra5k``, never the
test set, so the recipe chosen from it is not tuned on the images the benchmark reports.
Writes benchmarks/results/al_recipe.{csv,md}. Run from the project root:

    python benchmarks/al_recipe.py            # 2 methods x 3 recipes x 5 seeds; ~15 min
    python benchmarks/al_recipe.py --quick    # a smoke test

Each finished run is cached under ``--state`` (one JSON file per method, recipe, seed and
settings; runs of other settings get files of their own), so an interrupted benchmark, run
again with the same command, trains only the runs it had not finished.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATA_DIR,
    RESULTS,
    cache_file,
    cached_run,
    check_flags,
    command_line,
    fail,
    flag_errors,
    markdown_table,
    mean_std,
    parse_args,
    quick_out,
    quick_settings,
    run_settings,
    save_run,
    seed_everything,
    write_csv,
)

import safety_bhn  # noqa: E402
from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.active import ActiveConfig, retrain  # noqa: E402
from safety_bhn.core.metrics import classification_metrics, predictive  # noqa: E402
from safety_bhn.data import load_dataset  # noqa: E402
from safety_bhn.runs import environment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN_IGNORE = ("methods", "recipes", "seeds", "data_dir", "out", "state", "quick")
"""Fields of Args that do not change one cached run's result (which runs, where files go)."""


@dataclass
class Args:
    """Active-learning retrain recipe: tuning-set accuracy per method, lr schedule and seed."""

    methods: list[str] = field(default_factory=lambda: ["bhn", "mc_dropout"])
    """posterior methods"""
    recipes: list[str] = field(default_factory=lambda: ["constant", "cosine", "cosine+warmup"])
    """retrain recipes: a schedule of fit (constant or cosine); "+warmup" adds --warmup, "+last"
    keeps the final weights instead of the best-validation-NLL epoch's"""
    warmup: float = 0.05
    """fraction of the steps with a linear warmup, for the "+warmup" recipes"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    """each seed draws its own labelled and validation sets and initial weights"""
    labels: int = 180
    """labelled training images (random, from the MNIST-5000 training subset)"""
    val_size: int = 100
    """validation images for best-epoch selection (as in the loop)"""
    train_steps: int = 500
    """gradient steps per training run (the loop's default)"""
    batch_size: int = 64
    """minibatch size (the loop's default)"""
    lr: float = 1e-3
    """Adam learning rate (the loop's default)"""
    coupling_layers: int = 4
    """BHN coupling layers (as in benchmarks/active_learning.py)"""
    bhn_prior_mean: str = "init"
    """centre of the BHN prior (as in benchmarks/active_learning.py)"""
    tune_size: int = 3000
    """mnist-extra5k images scored (a fixed random subset; the file is sorted by class)"""
    samples: int = 10
    """posterior samples for the tuning-set predictive"""
    data_dir: str = DATA_DIR
    """folder with mnist/ and mnist-extra5k/"""
    out: str = str(RESULTS)
    """folder for al_recipe.{csv,md}"""
    state: str = str(ROOT / "runs" / "bench-al-recipe")
    """folder caching each finished run, so a rerun of an interrupted benchmark trains only
    the runs it had not finished (not used by --quick)"""
    quick: bool = False
    """smoke test: 1 seed, 60 labels, 20 steps, 300 tuning images, written to runs/bench-quick"""


def run_config(args: Args, method: str, schedule: str, warmup: float, select: str) -> ActiveConfig:
    """The loop settings of one retrain (checked: a ValueError names a bad one)."""
    opts = {"coupling_layers": args.coupling_layers, "prior_mean": args.bhn_prior_mean}
    return ActiveConfig(method=method, arch="cnn", options=opts if method == "bhn" else {},
                        train_steps=args.train_steps, batch_size=args.batch_size,
                        lr=args.lr, lr_schedule=schedule, lr_warmup=warmup, select=select,
                        eval_samples=args.samples, device="cpu").validate()  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    if args.quick:
        args = quick_settings(args, seeds=[0], labels=60, train_steps=20,
                              tune_size=300, samples=3, out=quick_out(args.out))  # fmt: skip
    recipes = {}  # checked before any data is read: name -> (schedule, warmup, select)
    for recipe in args.recipes:
        schedule, *extras = recipe.split("+")
        if schedule not in ("constant", "cosine") or not set(extras) <= {"warmup", "last"} \
                or len(set(extras)) < len(extras):  # fmt: skip
            raise SystemExit(f"al_recipe.py: error: unknown recipe {recipe!r}; expected "
                             "'constant' or 'cosine', optionally with '+warmup' and/or '+last', "
                             "e.g. 'cosine+warmup+last'")  # fmt: skip
        warmup = args.warmup if "warmup" in extras else 0.0
        recipes[recipe] = (schedule, warmup, "last" if "last" in extras else "nll")
    check_flags("al_recipe.py", args, positive=["labels", "val_size", "tune_size", "samples"],
                distinct=["methods", "recipes"])  # fmt: skip
    for method in args.methods:  # every run's settings checked before any data is read
        for recipe in args.recipes:
            with flag_errors("al_recipe.py", f"--methods {method} --recipes {recipe}: "):
                config = run_config(args, method, *recipes[recipe])
                opts = config.model_options()  # seeded: a check that draws from no global RNG
                safety_bhn.build_model(method, "cnn", seed=0, device="cpu", **opts)
    torch.set_num_threads(1)
    x, y = load_dataset("mnist", "train", args.data_dir)
    x_tune, y_tune = load_dataset("mnist", "extra", args.data_dir)
    if args.val_size + args.labels > len(y) or args.tune_size > len(y_tune):
        fail("al_recipe.py", f"--val-size {args.val_size} + --labels {args.labels} must fit in "
             f"the {len(y)} training images, and --tune-size {args.tune_size} in the "
             f"{len(y_tune)} tuning images")  # fmt: skip
    # mnist-extra5k is sorted by class: score a fixed random subset, not the first images.
    pick = torch.randperm(len(y_tune), generator=torch.Generator().manual_seed(12345))
    x_tune, y_tune = x_tune[pick[: args.tune_size]], y_tune[pick[: args.tune_size]]
    runs = [(s, m, r) for s in args.seeds for m in args.methods for r in args.recipes]
    rows = []
    for seed, method, recipe in tqdm(runs, desc="runs"):
        unused = () if "warmup" in recipe else ("warmup",)  # a recipe without one ignores it
        settings = run_settings(args, RUN_IGNORE + unused)
        path = cache_file(args.state, f"{method}-{recipe}-seed{seed}", settings)
        cached = cached_run("al_recipe.py", path, settings, args.quick)
        if cached is not None:
            rows.append(cached)
            continue
        schedule, warmup, select = recipes[recipe]
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        val = perm[: args.val_size]
        lab = perm[args.val_size : args.val_size + args.labels]
        seed_everything(seed)
        config = run_config(args, method, schedule, warmup, select)
        model = safety_bhn.build_model(method, "cnn", seed=seed, device="cpu",
                                       **config.model_options())  # fmt: skip
        start = time.perf_counter()
        history = retrain(model, (x[lab], y[lab]), (x[val], y[val]), config, seed)
        seconds = time.perf_counter() - start
        gen = torch.Generator().manual_seed(seed)
        tune = classification_metrics(predictive(model, x_tune, args.samples, gen), y_tune)
        rows.append({"method": method, "recipe": recipe, "lr_schedule": schedule,
                     "lr_warmup": warmup, "select": select, "seed": seed,
                     "labels": args.labels, "epochs": history.epochs_run,
                     "best_epoch": history.best_epoch,
                     "tune_acc": tune["accuracy"], "tune_nll": tune["nll"],
                     "train_seconds": round(seconds, 1)})  # fmt: skip
        if not args.quick:
            save_run(path, rows[-1], settings)
    out = Path(args.out)
    write_csv(rows, out / "al_recipe.csv")
    table = []
    for method in args.methods:
        for recipe in args.recipes:
            runs_ = [r for r in rows if r["method"] == method and r["recipe"] == recipe]
            accs = [100 * r["tune_acc"] for r in runs_]
            table.append([method, recipe, mean_std(accs, "{:.1f}"),
                          mean_std([r["tune_nll"] for r in runs_], "{:.3f}"),
                          " ".join(f"{a:.1f}" for a in accs)])  # fmt: skip
    header = ["method", "lr recipe", "tuning accuracy (%)", "tuning NLL", "per seed (%)"]
    env = environment()
    command = command_line("al_recipe.py", argv)
    text = f"""# Active-learning retrain recipe on fixed labelled sets

Command: `{command}`
Machine: {env["machine"]}; torch {env["torch"]}; date {env["date"]}; seeds {args.seeds}; one thread.
Setup: CNN (conv-conv-pool-dense) trained from scratch on {args.labels} random MNIST-5000
images with {args.train_steps} Adam steps (lr {args.lr}, batch {args.batch_size}), the
best-validation-NLL epoch kept ({args.val_size} validation images; "+last" recipes keep the
final epoch instead), as one step of
`benchmarks/active_learning.py` does; BHN with {args.coupling_layers} couplings and the
`{args.bhn_prior_mean}` prior. Scored on {len(y_tune)} random `mnist-extra5k` images (a tuning set,
not the test set) with {args.samples} posterior samples; mean ± std over seeds.

{markdown_table(header, table)}
"""
    atomic_write_text(out / "al_recipe.md", text)
    print(text)


if __name__ == "__main__":
    main()
