"""Krueger et al. (2017) Table 2: MLPs trained on 5000 MNIST images, BHN vs MC dropout vs VI.

Rows: BHN with 0, 8 and 12 coupling layers, MC dropout, factorial VI, MAP; widths 800 and 1200;
several seeds. Writes benchmarks/results/mnist5000.{csv,md,png}. Run from the project root:

    python benchmarks/mnist5000.py            # the full run (see the .md for its settings)
    python benchmarks/mnist5000.py --quick    # a smoke test in well under a minute
"""

from __future__ import annotations

import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    RESULTS,
    RESULTS_VERSION,
    check_flags,
    check_results_version,
    checkpoint_file,
    command_line,
    fail,
    markdown_table,
    mean_std,
    parse_args,
    quick_out,
    quick_settings,
    seed_everything,
    stop_with_parent,
    write_csv,
)  # noqa: E402

from safety_bhn.runs import TrainConfig, environment, train_and_evaluate  # noqa: E402

PAPER = {  # Krueger et al. 2017, Table 2 (MNIST 5000), test accuracy in %
    (800, "bhn-12"): 96.16, (1200, "bhn-12"): 96.51,
    (800, "mc_dropout"): 95.58, (1200, "mc_dropout"): 95.52,
}  # fmt: skip


@dataclass
class Args:
    """MNIST-5000 benchmark: every method on the same split, seeds and training budget."""

    rows: list[str] = field(
        default_factory=lambda: ["bhn-0", "bhn-8", "bhn-12", "mc_dropout", "factorial_vi", "map"]
    )
    """methods to run; "bhn-K" is a BHN with K coupling layers"""
    hidden: list[int] = field(default_factory=lambda: [800, 1200])
    """MLP widths (one hidden layer each)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds: each sets the validation split, the initial weights and training noise"""
    epochs: int = 60
    """training epochs (Adam, no early stopping: the best validation epoch is kept)"""
    lr: float = 1e-3
    """Adam learning rate"""
    lr_schedule: str = "constant"
    """constant or cosine (decays to 0 by the last epoch); use a separate --out per schedule"""
    lr_warmup: float = 0.0
    """fraction of all steps with a linear learning-rate warmup (separate --out, as above)"""
    batch_size: int = 100
    """minibatch size"""
    select: str = "nll"
    """validation metric that picks the kept epoch: nll or accuracy (separate --out)"""
    bhn_prior_std: float = 1.0
    """std of the N(0, s^2) prior on the BHN scales (separate --out)"""
    bhn_max_log_scale: float = 3.0
    """bound on each BHN coupling's log-scale, the coupling_max_log_scale option (separate --out)"""
    val_size: int = 500
    """images of the 5000 held out for validation (model selection)"""
    eval_samples: int = 100
    """posterior samples for the test predictive"""
    data_dir: str | None = None
    """folder with mnist/*.gz (default: the embedded copy, identical to ../shared/data/mnist)"""
    device: str | None = None
    """cpu or cuda (default: cuda when available)"""
    out: str = str(RESULTS)
    """folder for mnist5000.{csv,md,png}"""
    resume: bool = True
    """skip runs already in the output CSV (so an interrupted benchmark continues)"""
    workers: int = 1
    """runs trained in parallel, each on one CPU thread (use the number of cores on a CPU box)"""
    report_only: bool = False
    """train nothing: write the table and plot from the runs already in the output CSV"""
    quick: bool = False
    """smoke test: tiny widths, 1 epoch, 1 seed, written to runs/bench-quick"""


def config_for(row: str, hidden: int, seed: int, args: Args) -> TrainConfig:
    method, _, layers = row.partition("-")
    return TrainConfig(
        method=method, hidden=[hidden], coupling_layers=int(layers or 0), epochs=args.epochs,
        lr=args.lr, lr_schedule=args.lr_schedule, lr_warmup=args.lr_warmup,
        batch_size=args.batch_size, seed=seed, select=args.select,
        options=(
            {"prior_std": args.bhn_prior_std, "coupling_max_log_scale": args.bhn_max_log_scale}
            if method == "bhn" else {}
        ),
        val_size=args.val_size,
        eval_samples=args.eval_samples, data_dir=args.data_dir, device=args.device,
    )  # fmt: skip


TRAIN_DATA = "the 5000 MNIST training images embedded in the package"
RECIPE = ("epochs", "lr", "lr_schedule", "lr_warmup", "batch_size", "val_size", "eval_samples",
          "select", "bhn_prior_std", "bhn_max_log_scale", "data_dir")  # fmt: skip
#: what rows written before a recipe column existed were trained with
LEGACY = {"select": "nll", "bhn_prior_std": "1.0", "bhn_max_log_scale": "3.0"}


def recipe_of(args: Args) -> dict[str, str]:
    """The training settings a CSV row records, as CSV text (so rows compare as read back)."""
    return {k: str(getattr(args, k)) for k in RECIPE}


def checkpoint_of(out: Path, row: str, hidden: int, seed: int, args: Args) -> Path:
    """Where one run's training state is kept: named by the recipe too (and the results
    version), so a run of another recipe, or one begun by older code, keeps its own."""
    return checkpoint_file(out, f"{row}-{hidden}-seed{seed}", recipe_of(args))


def check_resume(rows: list[dict], args: Args, csv_path: Path) -> None:
    """Refuse to mix runs of another recipe, or (unless ``--report-only``, which may report
    older code's rows as they are) runs made by code of another results version, into one
    table (rows from before the recipe columns existed carry no recipe and cannot be checked;
    rows from before the version column count as version 1)."""
    want = recipe_of(args)
    for r in rows:
        where = f"{csv_path} (row {r['row']}, hidden {r.get('hidden')}, seed {r.get('seed')})"
        remedy = "delete its line to rerun that run, or --out another folder"
        try:
            if not args.report_only:
                check_results_version(r.get("results_version"), where, remedy)
        except ValueError as err:
            fail("mnist5000.py", str(err))
        have = {k: r.get(k) or LEGACY.get(k, "") for k in RECIPE}
        diff = [f"{k}={have[k]} (asked: {want[k]})" for k in RECIPE
                if have[k] not in ("", want[k])]  # fmt: skip
        if diff:
            raise SystemExit(
                f"mnist5000.py: error: {csv_path} holds runs trained with {', '.join(diff)}; "
                "pass the same settings to resume, or --out another folder"
            )


def _start_worker(one_thread: bool) -> None:
    stop_with_parent()
    if one_thread:
        torch.set_num_threads(1)


def run_one(
    row: str, hidden: int, seed: int, config: TrainConfig, recipe: dict, checkpoint: Path
) -> dict:
    """Train and test one model; one tidy CSV row. Its training state is saved to
    ``checkpoint`` as it trains, so a benchmark stopped mid-run continues that run."""
    # the finished state stays until the parent has written the run's row (a worker's
    # result is lost if the parent is stopped first): a rerun then only scores
    m = train_and_evaluate(config, progress=False, checkpoint=checkpoint,
                           keep_checkpoint=True).metrics  # fmt: skip
    return {**recipe,
        "row": row, "method": config.method,
        "coupling_layers": config.coupling_layers if config.method == "bhn" else 0,
        "hidden": hidden, "seed": seed, "test_acc": m["test"]["accuracy"],
        "test_nll": m["test"]["nll"], "ece": m["test"]["ece"], "brier": m["test"]["brier"],
        "train_seconds": m["train_seconds"], "epochs_run": m["history"]["epochs_run"],
        "best_epoch": m["history"]["best_epoch"],
        "retried_epochs": len(m["history"]["retried_epochs"]),
        "results_version": RESULTS_VERSION,
    }  # fmt: skip


def summarise(rows: list[dict], args: Args, command: str) -> str:
    env = environment()
    rows = [r for r in rows if int(r["seed"]) in args.seeds]  # the seeds the command names
    header = ["hidden", "method", "coupling layers", "test accuracy (%)", "test NLL", "ECE",
              "train time / MC dropout", "paper accuracy (%)", "seeds"]  # fmt: skip
    table = []
    for hidden in args.hidden:
        dropout = [r["train_seconds"] for r in rows if r["hidden"] == hidden
                   and r["method"] == "mc_dropout"]  # fmt: skip
        base = sum(dropout) / len(dropout) if dropout else float("nan")
        for name in args.rows:
            runs = [r for r in rows if r["hidden"] == hidden and r["row"] == name]
            if not runs:
                continue
            secs = sum(r["train_seconds"] for r in runs) / len(runs)
            table.append([
                hidden, runs[0]["method"], runs[0]["coupling_layers"],
                mean_std([100 * r["test_acc"] for r in runs], "{:.2f}"),
                mean_std([r["test_nll"] for r in runs], "{:.3f}"),
                mean_std([r["ece"] for r in runs], "{:.3f}"),
                f"{secs / base:.2f}", PAPER.get((hidden, name), ""), len(runs),
            ])  # fmt: skip
    checks = []
    for hidden, target in ((800, 96.2), (1200, 96.5)):
        if hidden not in args.hidden or not {"bhn-12", "mc_dropout"} <= set(args.rows):
            continue  # runs the command did not ask for are not its verdict
        bhn = [100 * r["test_acc"] for r in rows if r["hidden"] == hidden and r["row"] == "bhn-12"]
        mcd = [100 * r["test_acc"] for r in rows if r["hidden"] == hidden
               and r["row"] == "mc_dropout"]  # fmt: skip
        if bhn and mcd:
            b, m = sum(bhn) / len(bhn), sum(mcd) / len(mcd)
            checks.append(f"- {hidden} units: BHN-12 {b:.2f}% vs target ≥ {target}% "
                          f"({'met' if b >= target else 'missed'}); vs MC dropout {m:.2f}% "
                          f"({'above' if b > m else 'not above'})")  # fmt: skip
    stopped = [
        f"{r['row']} {int(r['hidden'])} units seed {int(r['seed'])} after "
        f"{int(r['epochs_run'])} of {args.epochs} epochs"
        for r in rows
        if r["hidden"] in args.hidden
        and r["row"] in args.rows
        and int(r.get("epochs_run") or args.epochs) < args.epochs  # absent in the oldest rows
    ]
    retried = [
        f"{r['row']} {int(r['hidden'])} units seed {int(r['seed'])}: {r['retried_epochs']}"
        for r in rows
        if r["hidden"] in args.hidden
        and r["row"] in args.rows
        and str(r.get("retried_epochs") or "0") != "0"  # empty in rows from before 2026-12-08
    ]
    if retried:
        checks.append("- Retries of epochs whose training loss diverged, each trained again "
                      "from its start (safety_bhn.fit): " + "; ".join(retried))  # fmt: skip
    if stopped:
        checks.append("- Stopped early, an epoch's training loss diverging again after every "
                      "retry (safety_bhn.fit; the best validated epoch before it is kept): "
                      + "; ".join(stopped))  # fmt: skip
    done = {(r["row"], r["hidden"], r["seed"]) for r in rows}
    missing = [f"{row} {hidden} units seed {seed}" for hidden in args.hidden for seed in args.seeds
               for row in args.rows if (row, hidden, seed) not in done]  # fmt: skip
    status = ""
    if missing:
        status = (f"**Incomplete:** {len(missing)} requested run(s) not done: "
                  f"{'; '.join(missing)}. Resume with the same command.\n\n")  # fmt: skip
    where = f"Machine: {env['machine']}; torch {env['torch']}; date {env['date']}.  \n"
    parallel = (f" ({args.workers} run(s) in parallel"
                f"{', one CPU thread each' if args.workers > 1 else ''})")  # fmt: skip
    if args.report_only:  # this invocation trained nothing: its machine and workers say nothing
        where = (f"Tables rebuilt on {env['date']} from the CSV (`--report-only`); the CSV does "
                 "not record the machine, date or parallel runs of the training.  \n")  # fmt: skip
        parallel = ""
    return (
        "# MNIST-5000 (Krueger et al. 2017, Table 2)\n\n"
        + status
        + f"Command: `{command}`  \n"
        + where
        + f"Data: {TRAIN_DATA if args.data_dir is None else 'the MNIST files in ' + args.data_dir} "
        f"({args.val_size} held out for validation, a different random split per seed), tested "
        "on the 10000 test images.  \n"
        f"Recipe: one-hidden-layer MLP, Adam lr {args.lr} ({args.lr_schedule} schedule, "
        f"warmup over {args.lr_warmup:.0%} of the steps), "
        f"batch {args.batch_size}, "
        f"{args.epochs} epochs, weights of the epoch with the best validation "
        f"{'NLL' if args.select == 'nll' else 'accuracy (the first such epoch)'} "
        f"(10 posterior samples) kept; {args.eval_samples} posterior samples at test time; "
        f"N(0, {args.bhn_prior_std:g}²) prior on the BHN scales, "
        f"coupling log-scales bounded by {args.bhn_max_log_scale:g}. "
        "Accuracies are mean ± std over seeds. Train time is wall-clock, as a ratio to MC "
        f"dropout's in the same run{parallel}.\n\n"
        + markdown_table(header, table)
        + "\nTargets (paper: BHN-12 96.16% / 96.51%, dropout 95.58% / 95.52%):\n\n"
        + "\n".join(checks)
        + "\n"
    )


def asked_rows(rows: list[dict], args: Args) -> list[dict]:
    """The rows of the seeds, widths and methods the command names (the CSV may hold more)."""
    return [r for r in rows if int(r["seed"]) in args.seeds and r["hidden"] in args.hidden
            and r["row"] in args.rows]  # fmt: skip


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    data = {"hidden": [], "row": [], "test accuracy (%)": []}
    for r in rows:
        data["hidden"].append(r["hidden"])
        data["row"].append(r["row"])
        data["test accuracy (%)"].append(100 * r["test_acc"])
    ax = sns.barplot(data, x="row", y="test accuracy (%)", hue="hidden", errorbar="sd")
    low = min(data["test accuracy (%)"])
    ax.set(ylim=(max(0, low - 2), 100), xlabel="", title="MNIST-5000: test accuracy")
    plt.xticks(rotation=20)
    plt.tight_layout()
    plt.savefig(path, dpi=100)
    plt.close()


#: MNIST-5000, the embedded training images (train_and_evaluate's default data)
EMBEDDED_TRAIN = 5000


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    bad = [r for r in args.rows if not re.fullmatch(r"bhn-\d+|mc_dropout|factorial_vi|map", r)]
    if bad:
        fail("mnist5000.py", f"--rows {bad}: expected bhn-K (K coupling layers, e.g. "
                             "bhn-12), mc_dropout, factorial_vi or map")  # fmt: skip
    if args.quick:  # tiny budgets; rows and seeds the user named are kept
        args = quick_settings(args, rows=["bhn-2", "mc_dropout", "factorial_vi",
                              "map"], seeds=[0], hidden=[64], epochs=1, eval_samples=10,
                              out=quick_out(args.out), resume=False)  # fmt: skip
    # a repeated row or width would train the same run twice, at once, into one checkpoint
    check_flags("mnist5000.py", args, distinct=["rows", "hidden"], positive=["workers"])
    # the embedded data's size, checked here without torch: torch work in this process before
    # the workers fork can deadlock them (OpenMP); a data folder's is checked in each run
    if args.data_dir is None and args.val_size >= EMBEDDED_TRAIN:  # worker tracebacks before
        fail("mnist5000.py", f"--val-size must be below {EMBEDDED_TRAIN}, the embedded MNIST "
                             f"training images, got {args.val_size}")  # fmt: skip
    seed_everything(args.seeds[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "mnist5000.csv"
    command = command_line("mnist5000.py", argv, drop=["--report-only"])
    rows: list[dict] = []
    if args.resume and csv_path.exists():
        import csv

        with open(csv_path) as f:
            for line, r in enumerate(csv.DictReader(f), start=2):
                try:  # a truncated file leaves None (or cut numbers) in its last row
                    # retried_epochs (a count): empty in rows written before it was recorded
                    text = ("row", "method", "results_version", "retried_epochs", *RECIPE)
                    rows.append({k: (float(v) if k not in text else v)
                                 for k, v in r.items()})  # fmt: skip
                    for k in ("hidden", "seed", "coupling_layers", "epochs_run", "best_epoch"):
                        rows[-1][k] = int(rows[-1][k])
                except (TypeError, ValueError):
                    fail("mnist5000.py", f"{csv_path}: line {line} is damaged (cut short or "
                                         "edited); restore it, or delete that line to rerun "
                                         "its run")  # fmt: skip
                for k in RECIPE:
                    rows[-1][k] = r.get(k, "")
        check_resume(rows, args, csv_path)
    done = {(r["row"], r["hidden"], r["seed"]) for r in rows}
    todo = [(h, s, r) for h in args.hidden for s in args.seeds for r in args.rows
            if (r, h, s) not in done and not args.report_only]  # fmt: skip
    # the costliest runs (wide BHNs with many couplings) start first, so parallel workers
    # finish together instead of one long run starting last
    todo.sort(key=lambda t: (int(t[2].partition("-")[2] or 0), t[0]), reverse=True)
    run_name = f"mnist5000__{int(time.time())}"
    jobs = [(row, hidden, seed, config_for(row, hidden, seed, args), recipe_of(args),
             checkpoint_of(out, row, hidden, seed, args))
            for hidden, seed, row in todo]  # fmt: skip
    for job in jobs:  # every setting checked here, not inside a worker after other runs
        try:
            job[3].validate()
        except ValueError as err:
            fail("mnist5000.py", f"row {job[0]}, hidden {job[1]}: {err}")
    with ProcessPoolExecutor(
        args.workers, initializer=_start_worker, initargs=(args.workers > 1,)
    ) as pool:
        futures = {pool.submit(run_one, *job): job for job in jobs}
        for future in tqdm(as_completed(futures), total=len(futures), desc=run_name):
            rows.append(future.result())
            rows.sort(key=lambda r: (r["hidden"], r["seed"], str(r["row"])))
            write_csv(rows, csv_path)  # after every run: an interrupted benchmark loses little
            futures[future][5].unlink(missing_ok=True)  # its row written: its state can go
    if not rows:
        fail("mnist5000.py", f"no runs in {csv_path} to report")
    (out / "mnist5000.md").write_text(summarise(rows, args, command))
    plot(asked_rows(rows, args), out / "mnist5000.png")  # as the table: what was asked for
    print((out / "mnist5000.md").read_text())


if __name__ == "__main__":
    main()
