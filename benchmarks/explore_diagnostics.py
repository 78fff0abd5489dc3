"""Two checks behind the safe-exploration notes of benchmarks/results/README.md: where MC
dropout's Q samples trap it on the shifted gridworld, and how often ``resample_on_revisit``
fires on CartPole.

    python benchmarks/explore_diagnostics.py            # prints both, writes explore_diagnostics.md
    python benchmarks/explore_diagnostics.py --quick    # smoke test
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

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
)

from safety_bhn._io import atomic_write_text  # noqa: E402
from safety_bhn.explore import ENV_PRESETS, make_agent, make_env, run_agent  # noqa: E402
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
    """MC dropout's training steps on the gridworld's training layout"""
    shift_steps: int = 500
    """its steps on the shifted layout before its Q samples are read"""
    cartpole_steps: int = 5000
    """factorial-VI Thompson DQN's steps on CartPole, counting revisit resamples"""
    samples: int = 20
    """Q posterior samples per visited cell"""
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(Args, argv)
    if args.quick:
        args = quick_settings(args, grid_steps=300, shift_steps=100, cartpole_steps=300,
                              out=quick_out(args.out))  # fmt: skip
    check_flags("explore_diagnostics.py", args,
                positive=["grid_steps", "shift_steps", "cartpole_steps"])  # fmt: skip
    if args.samples < 2:  # the table's spread over samples needs two
        fail("explore_diagnostics.py", f"--samples must be at least 2, got {args.samples}")
    torch.set_num_threads(1)
    table = markdown_table(["cell", "action", *(f"Q {a}" for a in ACTIONS)], q_along_episode(args))
    resamples = cartpole_resamples(args)
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
        f"again {resamples} times in {args.cartpole_steps} steps.\n"
    )
    print(text)
    atomic_write_text(Path(args.out) / "explore_diagnostics.md", text)


if __name__ == "__main__":
    main()
