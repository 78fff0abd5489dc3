"""CartPole with a safety cost: ``info["cost"] = 1`` when the pole falls or the cart leaves."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class CartPoleCostEnv(CartPoleEnv):
    """Gymnasium's CartPole (v1 dynamics and rewards) with a cost signal in ``info``.

    A termination (pole beyond 12 degrees or cart beyond 2.4) is the safety violation:
    that step has ``info["cost"] = 1``; every other step, and ``reset``, has
    ``info["cost"] = 0``.

    Rendering (``render_mode="rgb_array"`` or ``"human"``) is Gymnasium's and needs pygame:
    ``pip install "safety-bhn[render]"``; without it ``render()`` raises Gymnasium's
    ``DependencyNotInstalled`` naming the package to install.
    """

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """CartPole's reset; ``info["cost"] = 0`` as in the other safety_bhn envs."""
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, "cost": 0.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # not an assert: python -O keeps it; bool is refused (Discrete.contains(True) holds)
        if isinstance(action, bool) or not self.action_space.contains(action):
            raise ValueError(f"action must be 0 (push left) or 1 (push right), got {action!r}")
        obs, reward, terminated, truncated, info = super().step(action)
        info = dict(info)
        info["cost"] = 1.0 if terminated else 0.0
        return obs, reward, terminated, truncated, info
