"""Choose each wheel-bandit agent's exploration setting on tuning seeds (not the reported ones).

Sweeps one setting per agent (BHN's initial q std, factorial VI's initial std, MC dropout's
rate, epsilon-greedy's epsilon) with `benchmarks/bandit.py`, one run folder per value: at
delta = 0.99 on seeds 10-19 (`OUT/NAME/`) and at delta = 0.9 and 0.95 on seeds 10-14
(`OUT/lower_deltas/NAME/`); δ = 0.99 gets more seeds because a run there either finds the
outer ring or not, so its regret varies most. Then writes `OUT/bandit_tuning.md`: per value,
the mean normalised regret at each delta and their mean, which chooses (lowest wins). Runs
whose `bandit.csv` already exists are not repeated. Run from the project root:

    python benchmarks/bandit_tuning.py            # the sweep (about an hour on 2 cores)
    python benchmarks/bandit_tuning.py --quick    # a smoke test: tiny runs, two values
"""

from __future__ import annotations

import csv
import dataclasses
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, command_line, fail, in_results, markdown_table, parse_args  # noqa: E402

from safety_bhn._io import atomic_write_text  # noqa: E402

#: agent -> (bandit.py flag, values swept; the first is the agents' library default)
SWEEP = {
    "bhn": ("--bhn-init-scale", [0.05, 0.2, 0.5, 1.0]),
    "mc_dropout": ("--mc-dropout-p", [0.1, 0.3, 0.5]),
    "factorial_vi": ("--fvi-init-std", [0.02, 0.1, 0.3]),
    "epsilon_greedy": ("--epsilon", [0.05, 0.1, 0.2]),
}


@dataclass
class Args:
    """Wheel bandit: choose each agent's exploration setting on tuning seeds."""

    high_seeds: list[int] = field(default_factory=lambda: list(range(10, 20)))
    """tuning seeds at delta = 0.99"""
    low_seeds: list[int] = field(default_factory=lambda: list(range(10, 15)))
    """tuning seeds at delta = 0.9 and 0.95"""
    workers: int = 2
    """bandit.py runs at once (each uses one thread)"""
    quick: bool = False
    """smoke test: 200 decisions, one seed, the first two values of BHN's sweep only (written
    to runs/bench-quick/bandit_tuning unless --out is given)"""
    out: str = str(RESULTS / "bandit_tuning")
    """folder of the run folders and bandit_tuning.md"""


#: the deltas of the high-seed runs and of the low-seed runs (the target's deltas)
HIGH_DELTAS, LOW_DELTAS = ["0.99"], ["0.9", "0.95"]


class Job(NamedTuple):
    """One bandit.py run of the sweep: an agent at one value, written to ``out``."""

    agent: str
    value: str
    out: Path
    argv: list[str]


def jobs(args: Args) -> list[Job]:
    """Every run of the sweep."""
    sweep = {"bhn": (SWEEP["bhn"][0], SWEEP["bhn"][1][:2])} if args.quick else SWEEP
    extra = ["--steps", "200", "--train-steps", "5"] if args.quick else []
    out = []
    for agent, (flag, values) in sweep.items():
        for value in map(str, values):
            name = f"{agent}-{value}"
            for sub, deltas, seeds in (
                (name, HIGH_DELTAS, args.high_seeds),
                (f"lower_deltas/{name}", LOW_DELTAS, args.low_seeds),
            ):
                folder = Path(args.out) / sub
                argv = ["--deltas", *deltas, "--seeds", *map(str, seeds), "--no-progress",
                        "--out", str(folder), "--agents", agent, flag, value, *extra]  # fmt: skip
                out.append(Job(agent, value, folder, argv))
    return out


def recorded_argv(folder: Path) -> list[str] | None:
    """The bandit.py flags of the run in ``folder``, read from the command its bandit.md
    records (None: no report there)."""
    report = folder / "bandit.md"
    match = re.search(r"Command: `([^`]*)`", report.read_text()) if report.is_file() else None
    return None if match is None else shlex.split(match.group(1))[2:]


def _without_out(argv: list[str]) -> list[str]:
    """``argv`` less ``--out PATH`` (one folder may be spelt several ways)."""
    i = argv.index("--out") if "--out" in argv else len(argv)
    return argv[:i] + argv[i + 2 :]


def check_made_by(job: Job) -> None:
    """Refuse to reuse a finished run in ``job.out`` that another command made (other seeds,
    deltas or settings), instead of mixing it into this sweep's table."""
    made = recorded_argv(job.out)
    if made is None or _without_out(made) != _without_out(job.argv):
        was = "an unrecorded command" if made is None else f"bandit.py {shlex.join(made)}"
        fail("bandit_tuning.py", f"{job.out} holds a run made by {was}, but this sweep asks "
                                 f"for bandit.py {shlex.join(job.argv)}; pass another --out, or "
                                 "delete that folder to rerun it")  # fmt: skip


def run(job: Job) -> None:
    if (job.out / "bandit.csv").exists():
        check_made_by(job)
        return
    script = Path(__file__).resolve().parent / "bandit.py"
    cmd = [sys.executable, str(script), *job.argv]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        fail("bandit_tuning.py", f"bandit.py {' '.join(job.argv)} failed:\n"
                                 f"{result.stderr[-2000:]}")  # fmt: skip


def regret(folders: list[Path], agent: str) -> dict[str, list[float]]:
    """Normalised regret (%) of ``agent`` per delta over the runs in ``folders``."""
    out: dict[str, list[float]] = {}
    for folder in folders:
        with open(folder / "bandit.csv") as f:
            for r in csv.DictReader(f):
                if r["method"] == agent:
                    out.setdefault(r["delta"], []).append(100 * float(r["normalized_regret"]))
    return out


def mean_row(agent: str, name: str, folders: list[Path]) -> tuple[list[str], float]:
    """A table row (agent, name, mean regret at delta = 0.9, 0.95, 0.99, and their mean) from
    ``agent``'s runs in ``folders``, and that last mean."""
    by_delta = regret(folders, agent)
    means = [float(np.mean(by_delta[d])) for d in LOW_DELTAS + HIGH_DELTAS]
    overall = float(np.mean(means))
    return [agent, name, *(f"{m:.1f}" for m in means), f"{overall:.1f}"], overall


def choose(
    options: list[tuple[str, str, list[Path]]], precision: int | None = None
) -> tuple[list[list[str]], dict[str, tuple[str, float]]]:
    """Table rows for ``(agent, name, folders)`` options, and each agent's choice: the
    option with the lowest mean regret (rounded to ``precision`` decimals when given, so that
    a tie at the printed precision keeps the agent's first option)."""
    rows, chosen = [], {}
    for agent, name, folders in options:
        row, overall = mean_row(agent, name, folders)
        overall = overall if precision is None else round(overall, precision)
        rows.append(row)
        if agent not in chosen or overall < chosen[agent][1]:
            chosen[agent] = (name, overall)
    return rows, chosen


def summary(args: Args, todo: list[Job], command: str) -> str:
    """The table of mean regret per agent, value and delta, and each agent's choice."""
    folders: dict[tuple[str, str], list[Path]] = {}
    for job in todo:
        folders.setdefault((job.agent, job.value), []).append(job.out)
    rows, chosen = choose([(agent, value, where) for (agent, value), where in folders.items()])
    picks = ", ".join(f"{a} {SWEEP[a][0]} {v}" for a, (v, _) in chosen.items())
    return (
        "# Wheel bandit: exploration settings chosen on tuning seeds\n\n"
        f"Command: `{command}`. Each row's runs are in the folders `AGENT-VALUE/` (δ = 0.99, "
        f"seeds {args.high_seeds}) and `lower_deltas/AGENT-VALUE/` (δ = 0.9 and 0.95, seeds "
        f"{args.low_seeds}), each with its own command, machine and date.\n\n"
        "Mean normalised regret (% of the uniform agent's) over the tuning seeds:\n\n"
        + markdown_table(["agent", "value", "δ=0.9", "δ=0.95", "δ=0.99", "mean"], rows)
        + f"\nChosen (lowest mean): {picks}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    if args.quick:  # never over the committed sweep
        out = "runs/bench-quick/bandit_tuning" if in_results(args.out) else args.out
        args = dataclasses.replace(args, high_seeds=[10], low_seeds=[10], out=out)
    todo = jobs(args)
    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        list(pool.map(run, todo))
    text = summary(args, todo, command_line("bandit_tuning.py", argv))
    atomic_write_text(Path(args.out) / "bandit_tuning.md", text)
    print(text)


if __name__ == "__main__":
    main()
