"""Run agents on gymnasium environments: per-episode returns, costs, regret, and shift detection."""

from __future__ import annotations

import copy
import inspect
import json
import math
import numbers
from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
from tqdm.auto import tqdm

from .._checks import check_flag
from .._choices import did_you_mean, parse_choice
from ..core.build import Method
from .agents import DQNAgent, Exploration, NeuralBandit, RandomAgent, check_outcome

Agent = NeuralBandit | DQNAgent | RandomAgent


def make_env(env_id: str, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make(env_id)`` with the ``safety_bhn/`` environments registered."""
    import safety_bhn_envs

    safety_bhn_envs.register_envs()
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(
            f"env must be a gymnasium id such as 'safety_bhn/LavaGrid-v0', got {env_id!r}"
        )
    try:
        return gymnasium.make(env_id, **kwargs)
    except gymnasium.error.Error as err:
        raise ValueError(f"cannot make environment {env_id!r}: {err}") from None


def is_bandit(env: gymnasium.Env) -> bool:
    """True for the wheel bandit (a contextual bandit: each step is a new context)."""
    from safety_bhn_envs import WheelBanditEnv

    return isinstance(env.unwrapped, WheelBanditEnv)


def make_agent(
    env: gymnasium.Env,
    agent: str | Exploration = "thompson",
    method: str | Method = "bhn",
    *,
    safe: bool = False,
    seed: int = 0,
    **kwargs: Any,
) -> Agent:
    """The agent for ``env``: a neural bandit for the wheel bandit, a DQN otherwise.

    Checks the spaces: a discrete action space and a flat ``Box`` observation space.
    ``agent="random"`` gives a :class:`RandomAgent`, which uses neither the method nor the
    keyword arguments; they are checked all the same (a method name, keywords of the agent
    class this env would get), and ``safe=True`` is refused. A safe agent needs an env whose
    steps report ``info["cost"]``; :func:`run_agent` refuses one that does not.

    Example:
        >>> env = make_env("safety_bhn/LavaGrid-v0")
        >>> agent = make_agent(env, "thompson", "mc_dropout", safe=True, hidden=[16])
        >>> type(agent).__name__
        'DQNAgent'
    """
    exploration = parse_choice(agent, Exploration, "agent")
    safe = check_flag("safe", safe)
    if not isinstance(env.action_space, gymnasium.spaces.Discrete):
        raise ValueError(
            f"the agents need a discrete action space, but this environment has "
            f"{env.action_space}; discretise the actions first"
        )
    obs_space = env.observation_space
    if not isinstance(obs_space, gymnasium.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"the agents need a flat Box observation space, got {obs_space}")
    if int(env.action_space.start) != 0:
        raise ValueError(
            f"the agents choose actions 0..n-1, but this environment's actions start at "
            f"{int(env.action_space.start)} ({env.action_space}); wrap it to shift them"
        )
    n_actions, obs_dim = int(env.action_space.n), int(obs_space.shape[0])
    if exploration is Exploration.RANDOM:
        # nothing of the method or the keywords is used, but a mistake in them is still one
        parse_choice(method, Method, "method")
        if safe:
            raise ValueError(
                "the random agent has no cost model to be safe with; pass safe=False, or use "
                "agent='thompson' or 'epsilon_greedy'"
            )
        cls = NeuralBandit if is_bandit(env) else DQNAgent
        params = inspect.signature(cls).parameters.values()
        valid = sorted(p.name for p in params if p.kind is p.KEYWORD_ONLY)
        unknown = sorted(k for k in kwargs if k not in valid)
        if unknown:
            hint = did_you_mean(unknown[0], valid)
            raise ValueError(
                f"unknown keyword argument(s) {', '.join(map(repr, unknown))} for the agents "
                f"of this environment ({cls.__name__}){hint}; expected some of {', '.join(valid)}"
            )
        return RandomAgent(n_actions, seed=seed)
    if is_bandit(env):
        if safe:
            raise ValueError("the safe variant needs costs; the wheel bandit has none")
        return NeuralBandit(n_actions, obs_dim, method, exploration, seed=seed, **kwargs)
    return DQNAgent(obs_dim, n_actions, method, exploration, safe=safe, seed=seed, **kwargs)


def run_agent(
    env: gymnasium.Env,
    agent: Agent,
    steps: int,
    *,
    seed: int = 0,
    phase: str = "train",
    episode_offset: int = 0,
    progress: bool = True,
    desc: str | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run ``agent`` on ``env`` for ``steps`` environment steps (the last episode may be cut).

    Returns one row per episode: ``episode, phase, steps, episode_return, cost, regret``
    (sums of ``info["cost"]`` and ``info["regret"]``; NaN where the env gives none, so an env
    without costs, such as ``CartPole-v1``, reports no violations rather than 0; once an env
    has reported a cost, on reset or on a step, a step without one counts 0),
    ``reached_goal``, ``complete`` (False for a last episode cut short by ``steps``) and the
    running totals of this call ``violations`` (cumulative cost) and ``fallbacks`` (all-masked
    decisions). A safe agent (``agent.safe``) needs the costs: a step without
    ``info["cost"]`` raises a ValueError naming the env.
    A tqdm bar shows the running mean return of the last 10 episodes and the violations.

    ``checkpoint(loop)`` is called after every episode but the last, before the next reset,
    with the loop's state: the step count, the rows so far, the running totals and the
    environment's random state. Saved with ``agent.state_dict()`` and the global torch RNG
    state, it lets ``run_agent(..., resume=loop)`` on a freshly built env and agent (with
    the agent's and torch's state restored) continue exactly as the uninterrupted run would.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = int(steps)  # numpy integers too
    rows: list[dict[str, Any]] = []
    recent: deque[float] = deque(maxlen=10)
    violations = 0.0
    fallbacks_before = agent.fallbacks  # an agent's own count runs across calls (phases)
    start = 0
    if resume is None:
        obs, info = env.reset(seed=seed)
        cost_seen = False
    else:
        try:
            start, rows = int(resume["t"]), [dict(r) for r in resume["rows"]]
            recent.extend(resume["recent"])
            violations = float(resume["violations"])
            fallbacks_before = int(resume["fallbacks_before"])
            # absent in checkpoints before 2026-12-06, which counted a missing cost as 0
            cost_seen = bool(resume.get("cost_seen", True))
            env.reset(seed=seed)  # seeds the env's own generator; its state is then set
            env.unwrapped.np_random.bit_generator.state = json.loads(resume["env_rng"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(
                f"resume is not a loop state that run_agent passed to checkpoint, or a damaged "
                f"one ({type(err).__name__}: {str(err):.100}); start the run again"
            ) from None
        obs, info = env.reset()
    cost_seen = cost_seen or "cost" in info
    agent.begin_episode()
    ep_return = ep_cost = ep_regret = 0.0
    ep_steps, has_regret, goal = 0, False, False
    bar = tqdm(range(start, steps), desc=desc or phase, disable=not progress, leave=False,
               initial=start, total=steps)  # fmt: skip
    for t in bar:
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        if "cost" in info:
            reward, cost = check_outcome(reward, info["cost"])  # info["cost"]=None is named
            cost_seen = True
            agent.observe(obs, action, reward, next_obs, terminated, cost)
        elif cost_seen:  # an env that reports costs (on reset, or before): none here is 0
            cost = 0.0
            agent.observe(obs, action, reward, next_obs, terminated, cost)
        else:  # no cost reported yet: NaN (unknown), not 0; a safe agent needs the costs
            if getattr(agent, "safe", False):
                raise ValueError(no_costs_message(_env_name(env)))
            cost = math.nan
            agent.observe(obs, action, reward, next_obs, terminated, 0.0)
        ep_return += float(reward)
        ep_cost += cost
        ep_steps += 1
        if "regret" in info:
            has_regret = True
            ep_regret += float(info["regret"])
        goal = goal or bool(info.get("goal", False))
        obs = next_obs
        if terminated or truncated or t == steps - 1:
            violations += ep_cost
            recent.append(ep_return)
            rows.append({
                "episode": episode_offset + len(rows),
                "phase": phase,
                "steps": ep_steps,
                "episode_return": ep_return,
                "cost": ep_cost,
                "regret": ep_regret if has_regret else math.nan,
                "reached_goal": goal,
                "complete": bool(terminated or truncated),
                "violations": violations,
                "fallbacks": agent.fallbacks - fallbacks_before,
            })  # fmt: skip
            bar.set_postfix(ret=f"{np.mean(recent):.2f}", violations=_count(violations))
            if checkpoint is not None and t < steps - 1:
                checkpoint({
                    "t": t + 1, "rows": rows, "recent": list(recent), "violations": violations,
                    "fallbacks_before": fallbacks_before, "cost_seen": cost_seen,
                    "env_rng": json.dumps(env.unwrapped.np_random.bit_generator.state),
                })  # fmt: skip
            obs, info = env.reset()
            cost_seen = cost_seen or "cost" in info
            agent.begin_episode()
            ep_return = ep_cost = ep_regret = 0.0
            ep_steps, has_regret, goal = 0, False, False
    bar.close()
    return rows


def no_costs_message(env_name: str) -> str:
    """The error for a safe agent on an env that gives no ``info["cost"]``."""
    return (
        f"{env_name} gives no info['cost'] on its steps, and a safe agent learns which actions "
        "to avoid from info['cost']; use an environment that reports costs (e.g. "
        "safety_bhn/CartPoleCost-v0 for CartPole-v1), or a plain agent (safe=False, no --safe)"
    )


def _env_name(env: gymnasium.Env) -> str:
    """The env's gymnasium id, or its class name for one made without ``gymnasium.make``."""
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _count(violations: float) -> str:
    """A violation count for display: ``"n/a"`` where the env reports no costs (NaN)."""
    return "n/a" if math.isnan(violations) else f"{violations:.0f}"


def shift_detection_auroc(agent: DQNAgent, n_samples: int = 20) -> float:
    """Does the agent notice the shifted lava? AUROC of its Q-uncertainty on shifted inputs.

    Positives: observations of the shifted layout that the training layout never produces
    (cells whose lava neighbourhood changed); negatives: every observation of the training
    layout. 0.5 = cannot tell them apart; 1 = every novel input is more uncertain.
    """
    from safety_bhn_envs import LavaGridEnv
    from sklearn.metrics import roc_auc_score

    train, shifted = LavaGridEnv("train"), LavaGridEnv("shifted")
    dim = train.observation_space.shape[0]
    if getattr(agent, "obs_dim", None) != dim:
        raise ValueError(
            f"shift_detection_auroc scores LavaGrid observations ({dim} numbers), but the agent "
            f"takes obs_dim={getattr(agent, 'obs_dim', None)}; pass a DQNAgent trained on "
            "safety_bhn/LavaGrid-v0"
        )
    seen = np.stack([train.observation_at(p) for p in train.safe_cells()])
    shifted_obs = np.stack([shifted.observation_at(p) for p in shifted.safe_cells()])
    novel = np.array([not (seen == o).all(1).any() for o in shifted_obs])
    scores_seen = agent.q_uncertainty(seen, n_samples)
    scores_novel = agent.q_uncertainty(shifted_obs[novel], n_samples)
    labels = np.r_[np.zeros(len(scores_seen)), np.ones(len(scores_novel))]
    return float(roc_auc_score(labels, np.r_[scores_seen, scores_novel]))


#: Per-environment agent settings used by the CLI and the benchmarks (chosen on the
#: training layout with a few short runs): the gridworld's goal is 6 steps away, so a short
#: horizon (gamma 0.9) learns fastest; CartPole's Q-values reach ~100, hence ``q_scale``.
#: The gridworld keeps only its last 1000 transitions: after the lava moves, transitions from
#: cells that look the same in both layouts but now lead elsewhere must leave the buffer, or
#: the stale Q-values trap Thompson agents in a loop (chosen on tuning seeds 10-12 with a
#: script that was not committed; the safe-exploration section of benchmarks/results/README.md
#: says what it found).
#: Agents with a posterior there also draw a new Q sample when they revisit a cell within an
#: episode (``resample_on_revisit``; :func:`dqn_preset` leaves it out for "map"): the grid is
#: deterministic, so a held sample that revisits a cell would loop until the step limit
#: (benchmarks/results/safe_exploration_tuning compares, on tuning seeds 10-12).
_GRID: dict[str, Any] = {
    "gamma": 0.9,
    "epsilon_decay_steps": 1500,
    "buffer_size": 1000,
    "resample_on_revisit": True,
}
ENV_PRESETS: dict[str, dict[str, Any]] = {
    "safety_bhn/LavaGrid-v0": dict(_GRID),
    "safety_bhn/LavaGridShifted-v0": dict(_GRID),
    "safety_bhn/CartPoleCost-v0": {"gamma": 0.99, "q_scale": 10.0, "epsilon_decay_steps": 2000},
    "CartPole-v1": {"gamma": 0.99, "q_scale": 10.0, "epsilon_decay_steps": 2000},
}

#: ENV_PRESETS' settings that redraw a posterior sample, which a "map" network has not got
SAMPLING_SETTINGS = ("resample_every", "resample_on_revisit")


def dqn_preset(env_id: str, method: str | Method) -> dict[str, Any]:
    """The :class:`DQNAgent` keyword arguments of :data:`ENV_PRESETS` for ``env_id`` ({} for
    an env without a preset), less the resampling settings for ``"map"``, which refuses them.

    Example:
        >>> dqn_preset("safety_bhn/LavaGrid-v0", "map")
        {'gamma': 0.9, 'epsilon_decay_steps': 1500, 'buffer_size': 1000}
    """
    preset = copy.deepcopy(ENV_PRESETS.get(env_id, {}))
    if parse_choice(method, Method, "method") is Method.MAP:
        preset = {k: v for k, v in preset.items() if k not in SAMPLING_SETTINGS}
    return preset


#: The wheel bandit's settings per method, chosen on tuning seeds 10-19 by the lowest mean
#: regret over δ = 0.9, 0.95 and 0.99 (``benchmarks/bandit_tuning.py`` for each method's
#: posterior width and epsilon-greedy's epsilon, ``benchmarks/bandit_noise.py`` for the
#: likelihood: only factorial VI gains from holding its noise std fixed). The library's
#: defaults are tuned for neither; the CLI uses these on ``safety_bhn/WheelBandit-v0``.
WHEEL_BANDIT_PRESETS: dict[str, dict[str, Any]] = {
    "bhn": {"model_options": {"init_scale": 0.5}},
    "mc_dropout": {"model_options": {"p_hidden": 0.5}},
    "factorial_vi": {"model_options": {"init_std": 0.02}, "noise_std": 0.01, "learn_noise": False},
    "map": {},
}
#: epsilon of the epsilon-greedy baseline on the wheel bandit (chosen as above)
WHEEL_BANDIT_EPSILON = 0.1


def bandit_preset(agent: str | Exploration, method: str | Method) -> dict[str, Any]:
    """The tuned :class:`NeuralBandit` keyword arguments for the wheel bandit.

    Example:
        >>> bandit_preset("epsilon_greedy", "map")
        {'epsilon': 0.1}
    """
    exploration = parse_choice(agent, Exploration, "agent")
    if exploration is Exploration.RANDOM:
        return {}
    preset = copy.deepcopy(WHEEL_BANDIT_PRESETS[parse_choice(method, Method, "method").value])
    if exploration is Exploration.EPSILON_GREEDY:
        preset["epsilon"] = WHEEL_BANDIT_EPSILON
    return preset


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Totals of a run: episodes, mean return, violations, regret, goal rate, fallbacks.

    Mean return and goal rate average the complete episodes (an episode that the step budget
    cut short would count a fragment as an episode), or every episode if none is complete;
    violations, regret and steps count every step (violations and regret are NaN where the
    env reports no costs or no regret).
    """
    if not rows:
        raise ValueError("no episodes to summarise")
    regret = [r["regret"] for r in rows]
    whole = [r for r in rows if r.get("complete", True)] or rows
    return {
        "episodes": len(rows),
        "complete_episodes": sum(bool(r.get("complete", True)) for r in rows),
        "steps": int(sum(r["steps"] for r in rows)),
        "mean_return": float(np.mean([r["episode_return"] for r in whole])),
        "violations": float(sum(r["cost"] for r in rows)),
        "cumulative_regret": float(np.sum(regret)) if not np.isnan(regret).any() else math.nan,
        "goal_rate": float(np.mean([r["reached_goal"] for r in whole])),
        "fallbacks": int(rows[-1]["fallbacks"]),
    }
