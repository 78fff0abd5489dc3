"""CartPole with a safety cost: ``info["cost"] = 1`` when the pole falls or the cart leaves."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class CartPoleCostEnv(CartPoleEnv):
    """Gymnasium's CartPole (v1 dynamics and rewards) with a cost signal in ``info``.

    A termination (pole beyond 12 degrees or cart beyond 2.4) is the safety violation:
    that step has ``info["cost"] = 1``; every other step has ``info["cost"] = 0``.

    Rendering (``render_mode="rgb_array"`` or ``"human"``) is Gymnasium's and needs pygame:
    ``pip install "safety-bhn[render]"``; without it ``render()`` raises Gymnasium's
    ``DependencyNotInstalled`` naming the package to install.
    """

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):  # not an assert: python -O keeps it
            raise ValueError(f"action must be 0 (push left) or 1 (push right), got {action!r}")
        obs, reward, terminated, truncated, info = super().step(action)
        info = dict(info)
        info["cost"] = 1.0 if terminated else 0.0
        return obs, reward, terminated, truncated, info
