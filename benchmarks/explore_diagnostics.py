"""Three checks behind the safe-exploration notes of benchmarks/results/README.md: where MC
dropout's Q samples trap it on the shifted gridworld, how often ``resample_on_revisit`` fires
on CartPole, and what the safe agents' cost posteriors say about the moved lava.

    python benchmarks/explore_diagnostics.py          # prints all three, writes the .md file
    python benchmarks/explore_diagnostics.py --quick  # smoke test
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS,
    check_flags,
    command_line,
    fail,
    markdown_table,
    parse_args,
    quick_out,
    quick_settings,
    seed_everything,
)
from safe_exploration import AGENTS, build_agent  # noqa: E402
from safe_exploration import Args as SafeArgs  # noqa: E402

from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.explore import (  # noqa: E402
    ENV_PRESETS,
    make_agent,
    make_env,
    run_agent,
    shift_detection_auroc,
)
from safety_bhn.runs import environment  # noqa: E402

GRID, SHIFTED, CARTPOLE = (
    "safety_bhn/LavaGrid-v0",
    "safety_bhn/LavaGridShifted-v0",
    "safety_bhn/CartPoleCost-v0",
)
ACTIONS = ("up", "right", "down", "left")


@dataclass
class Args:
    """Diagnostics of the Thompson DQNs on the shifted gridworld and on CartPole."""

    seed: int = 0
    """seed of the environments, the agents and torch"""
    grid_steps: int = 3000
    """training steps on the gridworld's training layout: MC dropout's, and the safe agents'
    (safe_exploration.py's --grid-steps; another value no longer replays its runs)"""
    shift_steps: int = 500
    """its steps on the shifted layout before its Q samples are read"""
    cartpole_steps: int = 5000
    """factorial-VI Thompson DQN's steps on CartPole, counting revisit resamples"""
    samples: int = 20
    """Q posterior samples per visited cell"""
    cost_seeds: list[int] = field(default_factory=lambda: list(range(10)))
    """seeds of the safe agents whose cost posteriors are read (safe_exploration.py's runs of
    these seeds, rebuilt the same way)"""
    cost_agents: list[str] = field(default_factory=lambda: list(AGENTS))
    """agents whose safe variants are read: bhn, mc_dropout, factorial_vi (Thompson) and
    epsilon_greedy (its cost model a MAP network, for reference)"""
    cost_shift_steps: int = 1000
    """their steps on the shifted layout (safe_exploration.py's --shift-steps)"""
    violation_replay: int = 0
    """the safe agents' violation_replay (safe_exploration.py's --violation-replay)"""
    quick: bool = False
    """smoke test: a few hundred steps"""
    out: str = str(RESULTS)
    """folder for explore_diagnostics.md"""
    progress: bool = True
    """show progress bars while the agents train"""


def q_along_episode(args: Args) -> list[list[str]]:
    """Train MC dropout on the gridworld, shift the lava, then follow one greedy episode:
    per step the cell, the action taken and each action's Q mean ± std over samples."""
    torch.manual_seed(args.seed)
    agent = make_agent(make_env(GRID), "thompson", "mc_dropout", seed=args.seed,
                       **ENV_PRESETS[GRID])  # fmt: skip
    run_agent(make_env(GRID), agent, args.grid_steps, seed=args.seed, progress=args.progress)
    shifted = make_env(SHIFTED)
    run_agent(shifted, agent, args.shift_steps, seed=args.seed, progress=args.progress)
    obs, _ = shifted.reset(seed=args.seed + 1)
    agent.begin_episode()
    rows = []
    for _ in range(12):
        q = agent.q.sample(torch.as_tensor(obs)[None], args.samples, agent.generator)[:, 0]
        action = agent.act(obs)
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in zip(q.mean(0), q.std(0), strict=True)]
        rows.append([str(shifted.unwrapped.pos), ACTIONS[action], *cells])
        obs, _, terminated, truncated, _ = shifted.step(action)
        if terminated or truncated:
            break
    return rows


def cartpole_resamples(args: Args) -> int:
    """How often a Thompson DQN with ``resample_on_revisit`` saw a CartPole observation twice."""
    torch.manual_seed(args.seed)
    env = make_env(CARTPOLE)
    agent = make_agent(env, "thompson", "factorial_vi", seed=args.seed, resample_on_revisit=True,
                       **ENV_PRESETS[CARTPOLE])  # fmt: skip
    run_agent(env, agent, args.cartpole_steps, seed=args.seed, progress=args.progress)
    return agent.resamples


#: The moves into the shifted layout's lava (row 2, column 3), which the training layout's
#: route crossed: (cell, action).
NEW_LAVA_MOVES = (((1, 3), 2), ((2, 2), 1), ((2, 4), 3), ((3, 3), 0))
#: the six moves into the training layout's lava (cells (1, 3) and (3, 3))
TRAIN_LAVA_MOVES = (((1, 2), 1), ((1, 4), 3), ((2, 3), 0), ((2, 3), 2), ((3, 2), 1), ((3, 4), 3))
#: the four of them that the shifted layout makes safe (their cells are free there; the other
#: two start from its lava)
FREED_MOVES = (((1, 2), 1), ((1, 4), 3), ((3, 2), 1), ((3, 4), 3))


class _RecordViolations(gymnasium.Wrapper):
    """Records, for each step into lava, the cell, the move and the agent's upper cost
    quantile for it (read from the episode's fixed cost draws, so no randomness is used)."""

    def __init__(self, env: gymnasium.Env, agent: object) -> None:
        super().__init__(env)
        self.agent, self.obs, self.violations = agent, None, []

    def reset(self, **kwargs):
        self.obs, info = self.env.reset(**kwargs)
        return self.obs, info

    def step(self, action):
        cell = self.env.unwrapped.pos
        _, upper = self.agent.allowed_actions(self.obs)
        self.obs, reward, terminated, truncated, info = self.env.step(action)
        if info.get("cost", 0.0) > 0:
            self.violations.append((cell, int(action), float(upper[int(action)])))
        return self.obs, reward, terminated, truncated, info


def upper_quantiles(agent: object, env: gymnasium.Env, moves: Sequence[tuple], gen: torch.Generator
                    ) -> list[float]:  # fmt: skip
    """The safe ``agent``'s upper cost quantile of each ``(cell, action)`` of ``moves`` in
    ``env``'s layout, over as many draws (from ``gen``) as it masks with."""
    upper = []
    for cell, action in moves:
        obs = torch.as_tensor(env.unwrapped.observation_at(cell))[None]
        draws = agent.cost.sample(obs, agent.cost_samples, gen)[:, 0, action]
        upper.append(float(torch.quantile(draws, agent.quantile)))
    return upper


def cost_at_shift(args: Args, name: str, seed: int) -> dict[str, object]:
    """Rebuild safe_exploration.py's safe ``name`` agent of ``seed`` and run its two phases
    as that script does; between them read the cost model's upper quantile of each move
    into the moved lava and into the training layout's lava (with a generator of its own, so
    the run goes on unchanged), during the shifted phase record each step into lava with the
    quantile it was given, and after it read the moves into the cells the lava left."""
    env = make_env(GRID)
    seed_everything(seed)
    safe_args = SafeArgs(violation_replay=args.violation_replay)
    agent = build_agent(safe_args, GRID, env, name, True, seed)
    eps = run_agent(env, agent, args.grid_steps, seed=seed, phase="LavaGrid-v0", progress=False)
    shift_detection_auroc(agent)  # as safe_exploration.py does: it draws from the agent's RNG
    shifted = make_env(SHIFTED)
    gen = torch.Generator().manual_seed(seed)
    upper = upper_quantiles(agent, shifted, NEW_LAVA_MOVES, gen)
    # drawn after the moves above, so their numbers stay as they were
    train_upper = upper_quantiles(agent, env, TRAIN_LAVA_MOVES, gen)
    recorder = _RecordViolations(shifted, agent)
    shifted_eps = run_agent(recorder, agent, args.cost_shift_steps, seed=seed,
                            episode_offset=len(eps), phase="LavaGridShifted-v0",
                            progress=False)  # fmt: skip
    # after the shifted phase: is the lava that left still masked?
    freed = upper_quantiles(agent, shifted, FREED_MOVES, gen)
    return {"agent": name, "seed": seed, "upper": upper, "train_upper": train_upper,
            "freed_upper": freed, "violations": recorder.violations,
            "threshold": agent.threshold, "quantile": agent.quantile,
            "cost_samples": agent.cost_samples, "episodes": shifted_eps}  # fmt: skip


def cost_tables(results: list[dict[str, object]]) -> tuple[str, str]:
    """Markdown tables: per method, the upper cost quantiles of the new-lava moves at the
    shift (and of the old lava's and the freed cells' moves); and every step into lava during
    the shifted phase."""

    def cell(values: np.ndarray, threshold: float) -> str:
        """The median upper quantile and, in brackets, the share masked (above threshold)."""
        return f"{np.median(values):.2f} ({np.mean(values > threshold):.0%})"

    rows = []
    for name in dict.fromkeys(r["agent"] for r in results):
        sel = [r for r in results if r["agent"] == name]
        threshold = sel[0]["threshold"]
        upper = np.array([r["upper"] for r in sel])  # (seeds, moves)
        old = np.array([r["train_upper"] for r in sel])  # (seeds, training-lava moves)
        freed = np.array([r["freed_upper"] for r in sel])  # (seeds, freed moves)
        steps_into_lava = str(sum(len(r["violations"]) for r in sel))
        rows.append([name, cell(old, threshold), *(cell(u, threshold) for u in upper.T),
                     steps_into_lava, cell(freed, threshold)])  # fmt: skip
    moves = [f"{c} {ACTIONS[a]}" for c, a in NEW_LAVA_MOVES]
    at_shift = markdown_table(["agent (safe)", "old lava (6 moves)", *moves,
                               "steps into lava after", "freed cells (4 moves), at the end"],
                              rows)  # fmt: skip
    steps = [[r["agent"], str(r["seed"]), str(c), ACTIONS[a], f"{u:.2f}"]
             for r in results for c, a, u in r["violations"]]  # fmt: skip
    into_lava = (markdown_table(["agent (safe)", "seed", "cell", "move", "upper quantile"], steps)
                 if steps else "None.\n")  # fmt: skip
    return at_shift, into_lava


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    if args.quick:
        args = quick_settings(args, grid_steps=300, shift_steps=100, cartpole_steps=300,
                              cost_seeds=[0], cost_agents=["bhn"], cost_shift_steps=100,
                              out=quick_out(args.out))  # fmt: skip
    unknown = [a for a in args.cost_agents if a not in AGENTS]
    if unknown:
        fail("explore_diagnostics.py", f"--cost-agents: unknown {', '.join(unknown)}; choose "
                                       f"from {', '.join(AGENTS)}")  # fmt: skip
    check_flags("explore_diagnostics.py", args,
                positive=["grid_steps", "shift_steps", "cartpole_steps", "cost_shift_steps"],
                nonnegative=["violation_replay"], distinct=["cost_agents"])  # fmt: skip
    if args.samples < 2:  # the table's spread over samples needs two
        fail("explore_diagnostics.py", f"--samples must be at least 2, got {args.samples}")
    torch.set_num_threads(1)
    table = markdown_table(["cell", "action", *(f"Q {a}" for a in ACTIONS)], q_along_episode(args))
    resamples = cartpole_resamples(args)
    jobs = [(name, seed) for name in args.cost_agents for seed in args.cost_seeds]
    results = [cost_at_shift(args, name, seed) for name, seed in
               tqdm(jobs, desc="safe agents at the shift", disable=not args.progress)]  # fmt: skip
    at_shift, into_lava = cost_tables(results)
    safe = results[0]
    env = environment()
    text = (
        "# Thompson-DQN diagnostics\n\n"
        f"Command: `{command_line('explore_diagnostics.py', argv)}`; seed {args.seed}; "
        f"{env['date']}, {env['machine']}, torch {env['torch']}.\n\n"
        f"MC dropout (gridworld preset) after {args.grid_steps} steps on the training layout "
        f"and {args.shift_steps} on the shifted one: one greedy episode on the shifted layout, "
        f"Q mean ± std over {args.samples} posterior samples per cell (row, column).\n\n"
        + table
        + f"\nCartPole: a factorial-VI Thompson DQN with resample_on_revisit saw an observation "
        f"again {resamples} times in {args.cartpole_steps} steps.\n\n"
        f"Safe agents of `safe_exploration.py` (its settings; seeds "
        f"{' '.join(map(str, args.cost_seeds))}), after {args.grid_steps} steps on the training "
        f"layout: the cost model's upper {safe['quantile']} quantile (over "
        f"{safe['cost_samples']} posterior draws, as many as the agent masks with, from a "
        "generator of their own seeded with the seed) of each move into the lava of the shifted "
        "layout, "
        f"median over seeds, and in brackets the share of seeds where it exceeds the threshold "
        f"{safe['threshold']}, so that the move is masked; then the steps into lava in the "
        f"{args.cost_shift_steps} steps that follow on the shifted layout (learning goes on). "
        "`old lava`: the same for the six moves into the training layout's own lava (cells "
        "(1, 3) and (3, 3)), the median and the share masked over seeds and moves together: "
        "whether the cost model still knows the lava it was trained on. `freed cells`: the "
        "same at the end of the shifted phase for the four moves into the cells that held lava "
        "before the shift and are free after it, from free cells of the shifted layout "
        "((1, 2) right, (1, 4) left, (3, 2) right, (3, 4) left; masked there = still avoiding "
        "the lava that left)"
        + (
            f". The safe agents add {args.violation_replay} transitions with a cost to each "
            "cost-model batch (violation_replay)"
            if args.violation_replay
            else ""
        )
        + ".\n\n"
        + at_shift
        + "\nEach step into lava, with the upper cost quantile the agent gave that move when it "
        f"took it (masked above {safe['threshold']}):\n\n" + into_lava
    )
    print(text)
    atomic_write_text(Path(args.out) / "explore_diagnostics.md", text)


if __name__ == "__main__":
    main()
