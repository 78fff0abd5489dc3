"""Gymnasium environments of safety_bhn, registered under the namespace ``safety_bhn/``."""

from __future__ import annotations

import gymnasium

from .gridworld import LAYOUTS, LavaGridEnv
from .wheel_bandit import WheelBanditEnv

__all__ = ["LAYOUTS", "LavaGridEnv", "WheelBanditEnv", "register_envs"]

ENV_IDS = (
    "safety_bhn/WheelBandit-v0",
    "safety_bhn/LavaGrid-v0",
    "safety_bhn/LavaGridShifted-v0",
    "safety_bhn/CartPoleCost-v0",
)


def register_envs() -> None:
    """Register every environment under ``safety_bhn/`` (safe to call more than once).

    ``safety_bhn/CartPoleCost-v0`` is Gymnasium's ``CartPole-v1`` with ``info["cost"] = 1``
    on the step where the pole falls or the cart leaves the track (a safety violation).
    """
    specs = {
        "safety_bhn/WheelBandit-v0": dict(
            entry_point="safety_bhn_envs.wheel_bandit:WheelBanditEnv"
        ),
        "safety_bhn/LavaGrid-v0": dict(
            entry_point="safety_bhn_envs.gridworld:LavaGridEnv",
            kwargs={"layout": "train"},
            max_episode_steps=50,
        ),
        "safety_bhn/LavaGridShifted-v0": dict(
            entry_point="safety_bhn_envs.gridworld:LavaGridEnv",
            kwargs={"layout": "shifted"},
            max_episode_steps=50,
        ),
        "safety_bhn/CartPoleCost-v0": dict(
            entry_point="safety_bhn_envs.cartpole:CartPoleCostEnv",
            max_episode_steps=500,
            reward_threshold=475.0,
        ),
    }
    for env_id, spec in specs.items():
        if env_id not in gymnasium.envs.registry:
            gymnasium.register(id=env_id, **spec)


register_envs()
