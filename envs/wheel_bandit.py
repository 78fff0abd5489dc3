"""The wheel contextual bandit of Riquelme, Tucker & Snoek (2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from ._checks import integer, real


class WheelBanditEnv(gymnasium.Env):
    """Contexts uniform on the unit disc; five actions; exploration parameter ``delta``.

    Action 0 always pays ``mu_1`` (1.2). Inside the disc of radius ``delta`` actions 1-4 pay
    ``mu_2`` (1.0), so action 0 is optimal. Outside it, the action of the context's quadrant
    (1: x>0,y>0; 2: x>0,y<0; 3: x<0,y<0; 4: x<0,y>0) pays ``mu_3`` (50) and is optimal; the
    other actions pay ``mu_2``. Every reward gets Gaussian noise of std ``sigma`` (0.01).
    Large ``delta`` makes the lucrative outer ring rare, so finding it needs exploration.

    Each step returns the next context. Its ``info`` holds the chosen action's expected
    reward, the optimal action, its realised and expected reward, the step's expected
    ``regret`` (optimal minus chosen expected reward; 0 for the oracle) and ``cost`` (always
    0). The ``info`` of ``reset`` holds the returned context's ``optimal_action``,
    ``optimal_expected_reward``, ``expected_rewards`` (all five) and ``cost``; that of
    ``step`` describes the context just acted on, not the returned one, so an oracle reads
    ``info["optimal_action"]`` from ``reset`` once and then needs the next context's optimum,
    which ``step`` gives as ``info["next_optimal_action"]``.
    An episode is ``episode_length`` decisions (then ``truncated``); it never terminates.

    Example:
        >>> import gymnasium, safety_bhn_envs
        >>> env = gymnasium.make("safety_bhn/WheelBandit-v0", delta=0.9)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(info["optimal_action"])
        >>> info["regret"]
        0.0
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        delta: float = 0.5,
        episode_length: int = 100,
        mu: tuple[float, float, float] = (1.2, 1.0, 50.0),
        sigma: float = 0.01,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise ValueError(
                f"render_mode={render_mode!r}: the wheel bandit has nothing to draw (a context "
                "is two numbers); plot its contexts or regret instead"
            )
        self.render_mode = None
        self.delta = real("delta", delta, 0.0, 1.0)
        self.episode_length = integer("episode_length", episode_length, 1)
        self.sigma = real("sigma", sigma, 0.0)
        if isinstance(mu, str) or not isinstance(mu, Sequence | np.ndarray) or len(mu) != 3:
            raise ValueError(
                f"mu must be 3 finite mean rewards (inner disc's best action, the others, "
                f"the outer ring's best action), got {mu!r}"
            )
        self.mu = tuple(real(f"mu[{i}]", m) for i, m in enumerate(mu))
        self.n_actions = 5
        self.action_space = spaces.Discrete(self.n_actions)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._context = np.zeros(2, dtype=np.float32)
        self._t = 0

    def expected_rewards(self, context: np.ndarray) -> np.ndarray:
        """Expected reward of each of the five actions for ``context`` (shape ``(2,)``)."""
        mu1, mu2, mu3 = self.mu
        means = np.full(self.n_actions, mu2)
        means[0] = mu1
        x, y = float(context[0]), float(context[1])
        if np.hypot(x, y) > self.delta:
            quadrant = (1 if y > 0 else 2) if x > 0 else (3 if y <= 0 else 4)
            means[quadrant] = mu3
        return means

    def _sample_context(self) -> np.ndarray:
        while True:
            c = self.np_random.uniform(-1.0, 1.0, size=2)
            if c[0] ** 2 + c[1] ** 2 <= 1.0:
                return c.astype(np.float32)

    def _info(self) -> dict[str, Any]:
        means = self.expected_rewards(self._context)
        best = int(np.argmax(means))
        return {
            "optimal_action": best,
            "optimal_expected_reward": float(means[best]),
            "expected_rewards": means.copy(),
            "cost": 0.0,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._context = self._sample_context()
        return self._context.copy(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # bool is refused: Discrete.contains(True) holds, but True is no action number
        if isinstance(action, bool) or not self.action_space.contains(action):
            raise ValueError(
                f"action must be an integer in 0..{self.n_actions - 1}, got {action!r}"
            )
        action = int(action)
        means = self.expected_rewards(self._context)
        noise = self.np_random.normal(0.0, self.sigma, size=self.n_actions)
        rewards = means + noise
        best = int(np.argmax(means))
        info = {
            "optimal_action": best,
            "optimal_reward": float(rewards[best]),
            "optimal_expected_reward": float(means[best]),
            "expected_reward": float(means[action]),
            "regret": float(means[best] - means[action]),
            "cost": 0.0,
        }
        self._t += 1
        truncated = self._t >= self.episode_length
        self._context = self._sample_context()
        info["next_optimal_action"] = int(np.argmax(self.expected_rewards(self._context)))
        return self._context.copy(), float(rewards[action]), False, truncated, info
