"""How the prior on the BHN scales sets the noise (and pruning) of q, measured on a tuning set.

Trains the MNIST-5000 MLP as a BHN for each prior standard deviation (and MC dropout as a
reference) and evaluates on the 5000 *extra* MNIST training images (``mnist-extra5k``), never
on the test set, so the choice of prior it informs is not tuned on the test images. For each
run it also counts the hidden units that ``q`` keeps "active": ``|E[g]| / std[g] > 2``; the
others have a scale that is mostly noise, i.e. the ELBO has pruned them.
Writes benchmarks/results/bhn_prior.{csv,md}. Run from the project root:

    python benchmarks/bhn_prior.py            # priors 0.7, 1, 1.5, 3; 100 epochs; ~25 min
    python benchmarks/bhn_prior.py --quick    # a smoke test
    python benchmarks/bhn_prior.py --prior-mean init --prior-stds 1.0 0.5 \
        --out benchmarks/results/bhn_prior_init   # the prior centred on the initial scales

Each run's training state is saved under ``--state`` as it trains, and each finished run is
cached there (one file per run and settings; other settings get files of their own), so an
interrupted benchmark, run again with the same command, continues the run it stopped in and
retrains none it had finished.
"""

from __future__ import annotations

import sys
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
    checkpoint_file,
    command_line,
    flag_errors,
    markdown_table,
    parse_args,
    quick_out,
    quick_settings,
    run_settings,
    save_run,
    seed_everything,
    write_csv,
)

import safety_bhn  # noqa: E402
from safety_bhn._choices import parse_choice  # noqa: E402
from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.core.bhn import PriorMean  # noqa: E402
from safety_bhn.core.metrics import classification_metrics, predictive  # noqa: E402
from safety_bhn.data import load_dataset  # noqa: E402
from safety_bhn.runs import TrainConfig, environment, mnist_splits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN_IGNORE = ("prior_stds", "data_dir", "out", "state", "quick")
"""Fields of Args that do not change one cached run's result (which runs, where files go)."""
BHN_ONLY = ("prior_mean", "coupling_layers")
"""Fields that shape only the BHN runs (MC dropout's cached run is shared across them)."""


@dataclass
class Args:
    """BHN prior standard deviation vs tuning-set accuracy and the number of active units."""

    prior_stds: list[float] = field(default_factory=lambda: [0.7, 1.0, 1.5, 3.0])
    """standard deviations of the N(0, s^2) prior on every scale (1.0 is the default)"""
    prior_mean: str = "zero"
    """centre of the prior: zero (N(0, s^2), the default) or init (N(g0, s^2) around the
    data-dependent initial scales g0); see safety_bhn.core.bhn.PriorMean"""
    coupling_layers: int = 12
    """BHN coupling layers"""
    hidden: int = 800
    """MLP width (one hidden layer)"""
    epochs: int = 100
    """training epochs (the best validation-NLL epoch is kept)"""
    lr_schedule: str = "constant"
    """learning rate over the epochs: constant or cosine (decays to 0)"""
    lr_warmup: float = 0.0
    """fraction of all steps with a linear learning-rate warmup"""
    seed: int = 0
    """seed for the train/validation split, the weights and training"""
    samples: int = 100
    """posterior samples for the tuning-set predictive"""
    data_dir: str = DATA_DIR
    """folder with mnist/ and mnist-extra5k/"""
    out: str = str(RESULTS)
    """folder for bhn_prior.{csv,md}"""
    state: str = str(ROOT / "runs" / "bench-bhn-prior")
    """folder for training checkpoints and finished runs, so a rerun of an interrupted
    benchmark continues where it stopped (not used by --quick)"""
    quick: bool = False
    """smoke test: tiny net, 1 epoch, 2 priors, 500 tuning images, written to runs/bench-quick"""


def active_units_per_layer(model: safety_bhn.UncertaintyModel, n_draws: int = 2000) -> list[int]:
    """A BHN's active units per hidden layer: those whose scale has ``|mean| / std > 2`` under
    ``q`` (over ``n_draws`` draws from a generator of its own, so no other draw moves)."""
    with torch.no_grad():
        g, _ = model.draw(n_draws, torch.Generator(device=model.device).manual_seed(0))
    layers = g.split(model.sizes, dim=-1)[:-1]  # the last layer's scales are the outputs'
    return [int((x.mean(0).abs() / x.std(0) > 2).sum()) for x in layers]


def active_units(model: safety_bhn.UncertaintyModel, n_draws: int = 2000) -> tuple[int, int]:
    """The first hidden layer's active units (see :func:`active_units_per_layer`), and all."""
    return active_units_per_layer(model, n_draws)[0], model.sizes[0]


def model_options(args: Args, method: str, prior: float | None) -> dict:
    """``build_model``'s options of one run (``prior``: the BHN's prior std)."""
    opts: dict = {"hidden": [args.hidden]}
    if method == "bhn":
        opts.update(
            coupling_layers=args.coupling_layers, prior_std=prior, prior_mean=args.prior_mean
        )
    return opts


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    try:
        args.prior_mean = parse_choice(args.prior_mean, PriorMean, "prior_mean").value
    except ValueError as err:
        raise SystemExit(f"bhn_prior.py: error: {err}") from None
    if args.quick:
        args = quick_settings(args, prior_stds=[1.0, 3.0], coupling_layers=2,
                              hidden=32, epochs=1, samples=5, out=quick_out(args.out))  # fmt: skip
    check_flags("bhn_prior.py", args, positive=["prior_stds", "samples"], distinct=["prior_stds"])
    configs = [("bhn", s) for s in args.prior_stds] + [("mc_dropout", None)]
    for method, prior in configs:  # every run's settings checked before any data is read
        with flag_errors("bhn_prior.py", f"{method} run: "):
            TrainConfig(method=method, hidden=[args.hidden], coupling_layers=args.coupling_layers,
                        epochs=args.epochs, lr_schedule=args.lr_schedule,
                        lr_warmup=args.lr_warmup, seed=args.seed,
                        eval_samples=args.samples).validate()  # fmt: skip
            safety_bhn.build_model(method, seed=args.seed, device="cpu",
                                   **model_options(args, method, prior))  # fmt: skip
    torch.set_num_threads(1)
    splits = mnist_splits(args.data_dir, 500, args.seed)
    x_tune, y_tune = load_dataset("mnist", "extra", args.data_dir)
    if args.quick:
        pick = torch.randperm(len(y_tune), generator=torch.Generator().manual_seed(0))[:500]
        x_tune, y_tune = x_tune[pick], y_tune[pick]  # the file is sorted by class
    rows = []
    for method, prior in tqdm(configs, desc="runs"):
        if method == "bhn":
            settings = run_settings(args, RUN_IGNORE)
            name = f"bhn{args.coupling_layers}-{args.prior_mean}-prior{prior}-seed{args.seed}"
        else:
            settings = run_settings(args, RUN_IGNORE + BHN_ONLY)
            name = f"{method}-seed{args.seed}"
        path = cache_file(args.state, name, settings)
        cached = cached_run("bhn_prior.py", path, settings, args.quick)
        if cached is not None:
            rows.append(cached)
            continue
        seed_everything(args.seed)
        opts = model_options(args, method, prior)
        model = safety_bhn.build_model(method, seed=args.seed, device="cpu", **opts)
        checkpoint = None if args.quick else checkpoint_file(path.parent, path.stem, settings)
        history = safety_bhn.fit(model, splits["train"], splits["val"], epochs=args.epochs,
                                 seed=args.seed, lr_schedule=args.lr_schedule,
                                 lr_warmup=args.lr_warmup, checkpoint=checkpoint,
                                 progress=False)  # fmt: skip
        seconds = history.seconds  # the whole training time, resumed parts included
        gen = torch.Generator().manual_seed(args.seed)
        tune = classification_metrics(predictive(model, x_tune, args.samples, gen), y_tune)
        active, units = active_units(model) if method == "bhn" else ("", args.hidden)
        rows.append({"method": method, "prior_std": prior if prior is not None else "",
                     "prior_mean": args.prior_mean if method == "bhn" else "",
                     "coupling_layers": args.coupling_layers if method == "bhn" else 0,
                     "hidden": args.hidden, "seed": args.seed, "epochs": args.epochs,
                     "best_epoch": history.best_epoch, "tune_acc": tune["accuracy"],
                     "tune_nll": tune["nll"], "active_units": active, "units": units,
                     "train_seconds": round(seconds, 1)})  # fmt: skip
        if not args.quick:
            save_run(path, rows[-1], settings)
    out = Path(args.out)
    write_csv(rows, out / "bhn_prior.csv")
    env = environment()
    table = markdown_table(
        ["method", "prior std", "best epoch", "tuning accuracy (%)", "tuning NLL",
         "active hidden units"],
        [[r["method"], r["prior_std"], r["best_epoch"], f"{100 * r['tune_acc']:.2f}",
          f"{r['tune_nll']:.3f}", f"{r['active_units']} / {r['units']}"
          if r["method"] == "bhn" else "all (no q)"] for r in rows],
    )  # fmt: skip
    command = command_line("bhn_prior.py", argv)
    centre = "N(0, s^2)" if args.prior_mean == "zero" else "N(g0, s^2) (g0: data-dependent init)"
    text = f"""# BHN prior scale: tuning-set accuracy and pruning

Command: `{command}`
Machine: {env["machine"]}; torch {env["torch"]}; date {env["date"]}; seed {args.seed}; one thread.
Setup: MLP 784-{args.hidden}-10 trained on MNIST-5000 (500 held out for validation), Adam lr
0.001 ({args.lr_schedule} schedule, warmup over {args.lr_warmup:.0%} of the steps), batch 100,
{args.epochs} epochs, best validation-NLL epoch kept; BHN with
{args.coupling_layers} couplings and a {centre} prior on every scale. Evaluated on
{len(y_tune)} extra MNIST training images (`mnist-extra5k`, a tuning set; not the test set)
with {args.samples} posterior samples. "Active" hidden units: |E[g]| / std[g] > 2 under q.

{table}
"""
    atomic_write_text(out / "bhn_prior.md", text)
    print(text)


if __name__ == "__main__":
    main()
