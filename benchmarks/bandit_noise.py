"""Choose each wheel-bandit agent's reward-model likelihood (learned, fixed or per-context
noise std) on tuning seeds, with every agent at its tuned exploration setting.

The reward model learns one noise std per action, so at δ = 0.99 the outer ring's rare 50s,
which the small net cannot yet fit, can be absorbed as noise of the actions that paid them,
and a wide likelihood keeps a Thompson agent's posterior wide in the inner disc. This sweep
holds the std fixed instead, at each of ``--values`` (in units of the largest reward
seen), for all agents at once: `benchmarks/bandit.py --no-learn-noise --noise-std V` on the
tuning seeds of `bandit_tuning.py` (δ = 0.99 on seeds 10-19 in `OUT/fixed-V/`, δ = 0.9 and
0.95 on seeds 10-14 in `OUT/lower_deltas/fixed-V/`). With ``--heteroscedastic`` it also lets
the reward model predict its noise std per context (`bandit.py --heteroscedastic all`, in
`OUT/heteroscedastic/`), tight in the inner disc while the ring's 50s stay noisy. The
learned-noise rows are the runs of
`bandit_tuning.py` at each agent's chosen setting. `OUT/bandit_noise.md` gives each agent's
mean normalised regret per δ and likelihood; the lowest mean over the three δ chooses, as for
the exploration settings (a tie at the table's precision keeps the learned noise). Runs
whose `bandit.csv` exists are not repeated.

    python benchmarks/bandit_noise.py            # about 60 CPU-minutes
    python benchmarks/bandit_noise.py --quick    # smoke test: tiny runs, one value
"""

from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bandit  # noqa: E402
import bandit_tuning  # noqa: E402
from common import (  # noqa: E402
    RESULTS,
    check_flags,
    command_line,
    in_results,
    markdown_table,
    parse_args,
)

from safety_bhn._io import atomic_write_text  # noqa: E402


@dataclass
class Args:
    """Wheel bandit: choose each agent's reward-model likelihood on tuning seeds."""

    values: list[float] = field(default_factory=lambda: [0.01, 0.05])
    """fixed noise stds to try, in units of the largest reward seen"""
    heteroscedastic: bool = True
    """also try noise predicted per context (on top of the learned per-action std)"""
    high_seeds: list[int] = field(default_factory=lambda: list(range(10, 20)))
    """tuning seeds at delta = 0.99"""
    low_seeds: list[int] = field(default_factory=lambda: list(range(10, 15)))
    """tuning seeds at delta = 0.9 and 0.95"""
    tuning: str = str(RESULTS / "bandit_tuning")
    """the folder of bandit_tuning.py's sweep, whose runs at each agent's chosen setting give
    the learned-noise rows"""
    workers: int = 2
    """bandit.py runs at once (each uses one thread)"""
    quick: bool = False
    """smoke test: 200 decisions, one seed, one value, no learned-noise or heteroscedastic
    rows (written to
    runs/bench-quick/bandit_noise unless --out is given)"""
    out: str = str(RESULTS / "bandit_noise")
    """folder of the run folders and bandit_noise.md"""


def jobs(args: Args) -> list[bandit_tuning.Job]:
    """The runs of each likelihood tried: every agent at once, high and lower deltas."""
    extra = ["--steps", "200", "--train-steps", "5"] if args.quick else []
    likelihoods = [
        (f"fixed-{value}", f"fixed {value}", ["--no-learn-noise", "--noise-std", str(value)])
        for value in args.values
    ]
    if args.heteroscedastic:
        likelihoods.append(("heteroscedastic", "per context", ["--heteroscedastic", "all"]))
    out = []
    for name, label, flags in likelihoods:
        for sub, deltas, seeds in (
            (name, bandit_tuning.HIGH_DELTAS, args.high_seeds),
            (f"lower_deltas/{name}", bandit_tuning.LOW_DELTAS, args.low_seeds),
        ):
            folder = Path(args.out) / sub
            argv = ["--deltas", *deltas, "--seeds", *map(str, seeds), *flags,
                    "--out", str(folder), "--no-progress", *extra]  # fmt: skip
            out.append(bandit_tuning.Job("all", label, folder, argv))
    return out


def learned_folders(args: Args) -> dict[str, list[Path]]:
    """Each agent's bandit_tuning.py run folders at its chosen setting (bandit.py's default
    for the flag that bandit_tuning.py swept)."""
    defaults, tuning = bandit.Args(), Path(args.tuning)
    folders = {}
    for agent, (flag, _) in bandit_tuning.SWEEP.items():
        name = f"{agent}-{getattr(defaults, flag.removeprefix('--').replace('-', '_')):g}"
        folders[agent] = [tuning / name, tuning / "lower_deltas" / name]
    # each must hold the run the sweep makes with these seeds, not one with other settings
    sweep = bandit_tuning.Args(high_seeds=args.high_seeds, low_seeds=args.low_seeds,
                               quick=args.quick, out=str(tuning))  # fmt: skip
    wanted = {folder for paths in folders.values() for folder in paths}
    for job in bandit_tuning.jobs(sweep):
        if job.out in wanted:
            bandit_tuning.check_made_by(job)
    return folders


def summary(args: Args, todo: list[bandit_tuning.Job], command: str) -> str:
    tried: dict[str, list[Path]] = {}
    for job in todo:
        tried.setdefault(job.value, []).append(job.out)
    learned = {} if args.quick else learned_folders(args)
    options = [
        (agent, name, folders)
        for agent in bandit.AGENTS
        for name, folders in ([("learned", learned[agent])] if learned else [])
        + list(tried.items())
    ]
    rows, chosen = bandit_tuning.choose(options, precision=1)  # a tie keeps the learned noise
    picks = ", ".join(f"{agent} {name}" for agent, (name, _) in chosen.items())
    return (
        "# Wheel bandit: reward-model likelihood chosen on tuning seeds\n\n"
        f"Command: `{command}`. Fixed-noise runs: `fixed-V/` (δ = 0.99, seeds "
        f"{args.high_seeds}) and `lower_deltas/fixed-V/` (δ = 0.9 and 0.95, seeds "
        f"{args.low_seeds}), each with its own command, machine and date"
        + (
            '; noise std also predicted per context ("per context"): `heteroscedastic/` and '
            "`lower_deltas/heteroscedastic/`"
            if args.heteroscedastic
            else ""
        )
        + "; learned-noise rows: "
        f"`{Path(args.tuning).name}/AGENT-VALUE/` at each agent's chosen exploration setting.\n\n"
        "Mean normalised regret (% of the uniform agent's) over the tuning seeds:\n\n"
        + markdown_table(["agent", "noise std", "δ=0.9", "δ=0.95", "δ=0.99", "mean"], rows)
        + f"\nChosen (lowest mean; on a tie, the first row, the learned noise that "
        f"bandit.py uses by default): {picks}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    # each value is a bandit.py --noise-std, which must be positive; a repeat shares a folder
    check_flags("bandit_noise.py", args, positive=["values"], distinct=["values"])
    if args.quick:  # never over the committed sweep
        out = "runs/bench-quick/bandit_noise" if in_results(args.out) else args.out
        args = dataclasses.replace(args, values=args.values[:1], high_seeds=[10],
                                   low_seeds=[10], heteroscedastic=False, out=out)  # fmt: skip
    todo = jobs(args)
    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        list(pool.map(bandit_tuning.run, todo))
    text = summary(args, todo, command_line("bandit_noise.py", argv))
    atomic_write_text(Path(args.out) / "bandit_noise.md", text)
    print(text)


if __name__ == "__main__":
    main()
