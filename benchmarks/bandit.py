"""Wheel bandit (Riquelme, Tucker & Snoek 2018): Thompson sampling vs epsilon-greedy regret.

For each exploration parameter delta and seed, runs the uniform agent, neural Thompson
sampling with a BHN, MC dropout and factorial-VI reward posterior, and epsilon-greedy with a
MAP network, all on the same context stream. Cumulative regret is normalised by the uniform
agent's (as in the paper's tables). Writes benchmarks/results/bandit.{csv,md,png} and the
regret curves bandit.curves.csv. Run from the project root:

    python benchmarks/bandit.py            # the full run (settings in bandit.md)
    python benchmarks/bandit.py --quick    # a smoke test in well under a minute
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium
import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS,
    check_flags,
    command_line,
    fail,
    flag_errors,
    markdown_table,
    mean_std,
    parse_args,
    quick_out,
    quick_settings,
    refuse_unused,
    run_kind,
    run_label,
    seed_everything,
    write_csv,
)

from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.explore import NeuralBandit, RandomAgent, make_env, run_agent, summarize  # noqa: E402
from safety_bhn.explore.plots import plot_regret  # noqa: E402
from safety_bhn.runs import environment  # noqa: E402

# Each agent's exploration setting (``epsilon``, ``bhn_init_scale``, ``fvi_init_std``,
# ``mc_dropout_p``, defaults of Args below) was chosen on tuning seeds, never the reported
# 0-2: among three or four values per agent, all agents alike, the one with the lowest mean
# over delta = 0.9, 0.95 (seeds 10-14) and 0.99 (seeds 10-19) of the mean normalised regret
# (benchmarks/bandit_tuning.py). The agents' library defaults, which the safe-exploration
# benchmark keeps, were the first value of each sweep.

#: (row name, exploration, method) of every agent besides the uniform one.
AGENTS = {
    "bhn": ("thompson", "bhn"),
    "mc_dropout": ("thompson", "mc_dropout"),
    "factorial_vi": ("thompson", "factorial_vi"),
    "epsilon_greedy": ("epsilon_greedy", "map"),
}


SCRIPT = "bandit.py"

#: The flags only some agents use (each agent's exploration setting).
AGENT_FLAGS = {"epsilon": ["epsilon_greedy"], "bhn_init_scale": ["bhn"],
               "fvi_init_std": ["factorial_vi"], "mc_dropout_p": ["mc_dropout"]}  # fmt: skip

#: The per-run counts of RingCounter written to bandit.csv.
RING_FIELDS = (
    "ring_contexts", "ring_payouts", "quadrants_found", "ring_regret", "inner_optimal",
)  # fmt: skip


class RingCounter(gymnasium.Wrapper):
    """Counts the decisions whose context lies in the outer ring (``ring_contexts``), those
    where the chosen action paid the ring's large reward (``ring_payouts``), and the ring's
    quadrants (each paid by its own action) where that happened at least once
    (``quadrants_found``, 0-4). It also splits the regret: ``ring_regret`` is the part earned
    on ring contexts (the rest was earned in the inner disc), and ``inner_optimal`` counts
    the inner-disc decisions that took the optimal action there."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.ring_reward = env.unwrapped.mu[2]
        self.ring_contexts = self.ring_payouts = self.inner_optimal = 0
        self.ring_regret = 0.0
        self.paid_actions: set[int] = set()

    @property
    def quadrants_found(self) -> int:
        return len(self.paid_actions)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        in_ring = info["optimal_expected_reward"] == self.ring_reward
        regret = info["optimal_expected_reward"] - info["expected_reward"]
        self.ring_contexts += in_ring
        self.ring_regret += regret if in_ring else 0.0
        self.inner_optimal += not in_ring and regret == 0
        if info["expected_reward"] == self.ring_reward:
            self.ring_payouts += 1
            self.paid_actions.add(int(action))
        return obs, reward, terminated, truncated, info


@dataclass
class Args:
    """Wheel bandit: normalised cumulative regret of Thompson sampling vs epsilon-greedy."""

    deltas: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.9, 0.95, 0.99])
    """exploration parameters delta of the wheel"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds (each seed: one context stream shared by all agents, and the agents' seeds)"""
    agents: list[str] = field(default_factory=lambda: list(AGENTS))
    """agents besides the uniform baseline: bhn, mc_dropout, factorial_vi, epsilon_greedy"""
    steps: int = 4000
    """decisions per run (at delta=0.99 only 1 context in 50 lies in the lucrative outer ring,
    so 2000 decisions give about 40 chances to find it; 4000 give about 80)"""
    hidden: list[int] = field(default_factory=lambda: [50])
    """hidden units of the reward MLP (2 -> hidden -> 5)"""
    train_every: int = 50
    """retrain the reward model every this many decisions"""
    train_steps: int = 100
    """minibatch gradient steps per retraining"""
    batch_size: int = 64
    """minibatch size of each retraining step (Riquelme et al. 2018 used 512)"""
    lr: float = 1e-3
    """Adam learning rate of the reward model"""
    noise_std: float = 0.1
    """the reward model's Gaussian noise std, in units of the largest reward seen so far (its
    starting value when --learn-noise)"""
    learn_noise: bool = True
    """learn the noise std, one per action (else hold it at --noise-std)"""
    fixed_noise: list[str] = field(default_factory=list)
    """agents whose reward model holds its noise std fixed whatever --learn-noise says, as
    AGENT=STD (e.g. factorial_vi=0.01; STD in the units of --noise-std)"""
    heteroscedastic: list[str] = field(default_factory=list)
    """agents whose reward model also predicts a noise std per context, added to the learned
    or fixed one per action (`all` for every agent)"""
    epsilon: float = 0.1
    """random-action probability of the epsilon-greedy baseline"""
    bhn_init_scale: float = 0.5
    """initial std of the BHN's q around its mean (wider: more exploration before the data
    narrow it)"""
    fvi_init_std: float = 0.02
    """initial posterior std of every factorial-VI weight"""
    mc_dropout_p: float = 0.5
    """MC dropout's rate on the hidden layer"""
    quick: bool = False
    """smoke test: two deltas, one seed, 300 decisions, 20 steps per retraining"""
    out: str = str(RESULTS)
    """folder for bandit.{csv,md,png} and bandit.curves.csv"""
    progress: bool = True
    """show progress bars"""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    if args.quick:  # never over the committed results
        args = quick_settings(args, deltas=[0.5, 0.95], seeds=[0],
                              steps=300, train_steps=20, out=quick_out(args.out))  # fmt: skip
    bad = [d for d in args.deltas if not 0.0 < d < 1.0]
    if bad:
        fail(SCRIPT, f"--deltas {bad}: the wheel's delta must lie in (0, 1)")
    unknown = set(args.agents) - set(AGENTS)
    if unknown:
        fail(SCRIPT, f"unknown agents {sorted(unknown)}; choose from {list(AGENTS)}")
    check_flags(SCRIPT, args, positive=["steps"], distinct=["deltas", "agents"])
    refuse_unused(SCRIPT, args, AGENT_FLAGS, "agents", args.agents)
    fixed = fixed_noise(args)
    varying = heteroscedastic_agents(args)
    for name in args.agents:  # each agent's settings checked before any agent runs
        with flag_errors(SCRIPT, f"agent {name}: "):
            make_agent(args, name, args.seeds[0], fixed, varying)
    run_name = f"bandit__{run_label(args)}__{int(time.time())}"
    torch.set_num_threads(1)  # tiny networks: extra intra-op threads only add overhead
    out = Path(args.out)
    rows, curves = [], []
    jobs = [(d, s) for d in args.deltas for s in args.seeds]
    for delta, seed in tqdm(jobs, desc=run_name, disable=not args.progress):
        results = {}
        for name in ["uniform", *args.agents]:
            env = RingCounter(make_env("safety_bhn/WheelBandit-v0", delta=delta))
            seed_everything(seed)
            start = time.perf_counter()
            if name == "uniform":
                agent = RandomAgent(5, seed=seed)
            else:
                agent = make_agent(args, name, seed, fixed, varying)
            episodes = run_agent(env, agent, args.steps, seed=seed, progress=False)
            results[name] = summarize(episodes)
            results[name]["seconds"] = time.perf_counter() - start
            results[name].update({f: getattr(env, f) for f in RING_FIELDS})
            curves += [{**e, "agent": name, "delta": delta, "seed": seed} for e in episodes]
        uniform = results["uniform"]["cumulative_regret"]
        for name, r in results.items():
            rows.append({
                "method": name,
                "exploration": "uniform" if name == "uniform" else AGENTS[name][0],
                "delta": delta,
                "seed": seed,
                "steps": r["steps"],
                "cumulative_regret": round(r["cumulative_regret"], 3),
                "normalized_regret": round(r["cumulative_regret"] / uniform, 4),
                **{f: round(r[f], 3) for f in RING_FIELDS},
                "seconds": round(r["seconds"], 2),
            })  # fmt: skip
    write_csv(rows, out / "bandit.csv")
    write_csv(curves, out / "bandit.curves.csv")
    plot_regret(curves, out / "bandit.png")
    text = report(args, rows, run_name, command_line("bandit.py", argv))
    atomic_write_text(out / "bandit.md", text)
    print(text)


def make_agent(
    args: Args, name: str, seed: int, fixed: dict[str, float], varying: set[str]
) -> NeuralBandit:
    """The agent ``name`` (a key of AGENTS) with the settings ``args`` give it; a bad setting
    raises the agent's ValueError. ``fixed``: :func:`fixed_noise`; ``varying``:
    :func:`heteroscedastic_agents`."""
    exploration, method = AGENTS[name]
    return NeuralBandit(
        5, 2, method, exploration, hidden=args.hidden,
        **({"epsilon": args.epsilon} if exploration == "epsilon_greedy" else {}),
        train_every=args.train_every, train_steps=args.train_steps,
        batch_size=args.batch_size, lr=args.lr,
        noise_std=fixed.get(name, args.noise_std),
        learn_noise=args.learn_noise and name not in fixed,
        heteroscedastic=name in varying, seed=seed,
        model_options=model_options(args, method),
    )  # fmt: skip


def model_options(args: Args, method: str) -> dict[str, float]:
    """The posterior-width option of ``method`` that ``args`` sets (none for MAP)."""
    return {
        "bhn": {"init_scale": args.bhn_init_scale},
        "factorial_vi": {"init_std": args.fvi_init_std},
        "mc_dropout": {"p_hidden": args.mc_dropout_p},
    }.get(method, {})


def fixed_noise(args: Args) -> dict[str, float]:
    """``--fixed-noise`` as ``{agent: noise std}``; a malformed entry, an agent named twice or
    one that ``--agents`` leaves out stops the run."""
    fixed: dict[str, float] = {}
    for entry in args.fixed_noise:
        agent, _, value = entry.partition("=")
        try:
            std = float(value)
        except ValueError:
            std = float("nan")
        if agent not in AGENTS or not std > 0 or not np.isfinite(std):
            fail(SCRIPT, f"--fixed-noise {entry!r}: expected AGENT=STD with AGENT one of "
                         f"{list(AGENTS)} and STD a positive number, e.g. "
                         "factorial_vi=0.01")  # fmt: skip
        if agent in fixed:  # the last one won before
            fail(SCRIPT, f"--fixed-noise names {agent} more than once; give one STD per agent")
        if agent not in args.agents:  # it would be ignored, and stated in the report
            fail(SCRIPT, f"--fixed-noise {entry!r}: {agent} is not among --agents "
                         f"{' '.join(args.agents)}; drop the entry, or add the agent")  # fmt: skip
        fixed[agent] = std
    return fixed


def heteroscedastic_agents(args: Args) -> set[str]:
    """``--heteroscedastic`` as the set of agents run whose model predicts a noise std per
    context (``all``: every agent in ``--agents``); an unknown name, or an agent that
    ``--agents`` leaves out, stops the run."""
    named = [name for name in args.heteroscedastic if name != "all"]
    unknown = sorted(set(named) - set(AGENTS))
    if unknown:
        fail(SCRIPT, f"--heteroscedastic {unknown}: unknown agents; choose from {list(AGENTS)} "
                     "or all")  # fmt: skip
    left_out = sorted(set(named) - set(args.agents))
    if left_out:
        fail(SCRIPT, f"--heteroscedastic {left_out}: not among --agents "
                     f"{' '.join(args.agents)}; drop them, or add them to --agents")  # fmt: skip
    return set(args.agents) if "all" in args.heteroscedastic else set(named)


def noise_words(args: Args) -> str:
    """The reward model's likelihood in words, for bandit.md."""
    if args.learn_noise:
        if args.noise_std == Args.noise_std:  # the wording of the runs that predate the flag
            words = "learned Gaussian noise"
        else:
            words = f"Gaussian noise learned per action from std {args.noise_std:g}"
    else:
        words = f"Gaussian noise of fixed std {args.noise_std:g} × the largest reward seen"
    held = [f"{agent} {std:g}" for agent, std in fixed_noise(args).items()]
    words += f"; noise std held fixed for {', '.join(held)}" if held else ""
    varying = [agent for agent in args.agents if agent in heteroscedastic_agents(args)]
    return words + (
        f"; noise std also predicted per context for {', '.join(varying)}" if varying else ""
    )


def agent_words(args: Args) -> str:
    """The exploration settings of the agents run, in words, for bandit.md."""
    words = {
        "bhn": f"BHN with 4 couplings (32 hidden) and initial q std {args.bhn_init_scale:g}",
        "factorial_vi": f"factorial VI with initial std {args.fvi_init_std:g}",
        "mc_dropout": f"MC dropout p={args.mc_dropout_p:g} on the hidden layer",
    }
    thompson = ", ".join(words[a] for a in words if a in args.agents)
    greedy = f"epsilon-greedy epsilon={args.epsilon} with a MAP network"
    return "; ".join([greedy] * ("epsilon_greedy" in args.agents) + [thompson] * bool(thompson))


#: columns of the target table in bandit.md
CHECK_COLUMNS = ["δ", "agent", "regret %", "ε-greedy %", "lower on seeds", "paired difference",
                 "target"]  # fmt: skip


def paired_difference(rows: list[dict], agent: str, delta: float) -> np.ndarray:
    """Per seed at ``delta``: ``agent``'s normalised regret minus epsilon-greedy's, in
    percentage points (both agents saw the seed's contexts)."""
    eps = {r["seed"]: r["normalized_regret"] for r in rows
           if r["method"] == "epsilon_greedy" and r["delta"] == delta}  # fmt: skip
    mine = {r["seed"]: r["normalized_regret"] for r in rows
            if r["method"] == agent and r["delta"] == delta}  # fmt: skip
    return np.array([100 * (mine[s] - eps[s]) for s in sorted(mine) if s in eps])


def report(args: Args, rows: list[dict], run_name: str, command: str) -> str:
    env = environment()
    names = ["uniform", *args.agents]
    table = []
    for name in names:
        cells = []
        for delta in args.deltas:
            vals = [r["normalized_regret"] * 100 for r in rows
                    if r["method"] == name and r["delta"] == delta]  # fmt: skip
            cells.append(mean_std(vals, "{:.1f}"))
        table.append([name, *cells])
    checks = []
    for delta in [d for d in args.deltas if d >= 0.9]:
        eps_runs = [r["normalized_regret"] for r in rows
                    if r["method"] == "epsilon_greedy" and r["delta"] == delta]  # fmt: skip
        for name in [a for a in args.agents if a != "epsilon_greedy"]:
            my_runs = [r["normalized_regret"] for r in rows
                       if r["method"] == name and r["delta"] == delta]  # fmt: skip
            mine, eps = np.mean(my_runs or [np.nan]), np.mean(eps_runs or [np.nan])
            if not (np.isfinite(mine) and np.isfinite(eps)):  # ε-greedy or this agent not run
                checks.append([delta, name, f"{100 * mine:.1f}", f"{100 * eps:.1f}", "–", "–",
                               "not measured"])  # fmt: skip
                continue
            verdict = "met" if mine < eps else "missed"
            diff = paired_difference(rows, name, delta)
            lower = f"{int((diff < 0).sum())} of {len(diff)}"
            paired = f"{diff.mean():+.1f}"
            if len(diff) > 1:  # a standard error needs two seeds
                paired += f" ± {diff.std(ddof=1) / np.sqrt(len(diff)):.1f}"
            checks.append([delta, name, f"{100 * mine:.1f}", f"{100 * eps:.1f}", lower, paired,
                           verdict])  # fmt: skip
    ring = []
    for name in names:
        cells = []
        for delta in args.deltas:
            runs = [r for r in rows if r["method"] == name and r["delta"] == delta]
            paid = sum(r["ring_payouts"] for r in runs)
            found = sum(r["ring_payouts"] > 0 for r in runs)
            quadrants = np.mean([r["quadrants_found"] for r in runs])
            contexts = sum(r["ring_contexts"] for r in runs)
            cells.append(f"{paid} / {contexts} ({found} of {len(runs)}; {quadrants:.1f})")
        ring.append([name, *cells])
    split = []
    for name in names:
        cells = []
        for delta in args.deltas:
            runs = [r for r in rows if r["method"] == name and r["delta"] == delta]
            ring_regret = np.mean([r["ring_regret"] for r in runs])
            inner = np.mean([r["cumulative_regret"] - r["ring_regret"] for r in runs])
            optimal = sum(r["inner_optimal"] for r in runs) / sum(
                r["steps"] - r["ring_contexts"] for r in runs
            )
            found = [r["inner_optimal"] / (r["steps"] - r["ring_contexts"])
                     for r in runs if r["ring_payouts"] > 0]  # fmt: skip
            after = f"{100 * np.mean(found):.0f}%" if found else "-"
            cells.append(f"{ring_regret:.0f} / {inner:.0f} ({100 * optimal:.0f}%; {after})")
        split.append([name, *cells])
    seconds = sum(r["seconds"] for r in rows)
    return (
        f"# Wheel bandit: normalised cumulative regret\n\n"
        f"Run `{run_name}` ({run_kind(args)}); "
        f"{env['date']}, {env['machine']}, torch {env['torch']}; {seconds / 60:.1f} CPU-minutes "
        f"of agent time (1 thread).\n\n"
        f"Command: `{command}`. Settings: "
        f"{args.steps} decisions per run, seeds {args.seeds}, reward MLP 2-{args.hidden}-5, "
        f"retrained every {args.train_every} decisions with {args.train_steps} Adam steps "
        f"(batch {args.batch_size}, lr {args.lr:g}, {noise_words(args)}), "
        f"{agent_words(args)}.\n\n"
        f"Cumulative regret (expected reward of the optimal minus the chosen action, summed) as "
        f"% of the uniform agent's on the same contexts (lower is better; mean ± std over "
        f"seeds):\n\n"
        + markdown_table(["agent", *[f"δ={d}" for d in args.deltas]], table)
        + "\nTarget: every Thompson agent's normalised regret below epsilon-greedy's for "
        "δ ≥ 0.9.\n\n"
        + "Each seed gives every agent the same contexts, so the comparison is also paired: "
        "the seeds where the agent's regret is below ε-greedy's, and the mean over seeds of "
        "the difference (percentage points) ± its standard error.\n\n"
        + markdown_table(CHECK_COLUMNS, checks)
        + "\nOuter-ring payouts: decisions whose chosen action paid the ring's reward of 50, "
        "out of the decisions whose context lay in the ring, summed over seeds (in brackets: "
        "the runs with at least one payout, i.e. that found the ring, and the mean number of "
        "the ring's four quadrants found; each quadrant is paid by its own action, so each "
        "must be found on its own):\n\n"
        + markdown_table(["agent", *[f"δ={d}" for d in args.deltas]], ring)
        + "\nWhere the regret comes from: mean regret per run earned on ring contexts / in "
        "the inner disc (in brackets: the inner-disc decisions that took its optimal action, "
        "0, over all runs; then the mean of that share over the runs that found the ring, '-' "
        "if none did):\n\n"
        + markdown_table(["agent", *[f"δ={d}" for d in args.deltas]], split)
        + "\nPer-run rows: `bandit.csv`; regret curves: `bandit.png` (data `bandit.curves.csv`)."
        "\n"
    )


if __name__ == "__main__":
    main()
