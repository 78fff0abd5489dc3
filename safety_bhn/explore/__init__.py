"""Safe exploration: Thompson-sampling agents and a plug-in posterior for RL."""

from .agents import SAFE_DEFAULTS, DQNAgent, Exploration, NeuralBandit, RandomAgent, ReplayBuffer
from .posterior import RegressionPosterior
from .run import (
    ENV_PRESETS,
    WHEEL_BANDIT_EPSILON,
    WHEEL_BANDIT_PRESETS,
    bandit_preset,
    dqn_preset,
    is_bandit,
    make_agent,
    make_env,
    run_agent,
    shift_detection_auroc,
    summarize,
)

__all__ = [
    "DQNAgent",
    "ENV_PRESETS",
    "Exploration",
    "NeuralBandit",
    "RandomAgent",
    "RegressionPosterior",
    "ReplayBuffer",
    "SAFE_DEFAULTS",
    "WHEEL_BANDIT_EPSILON",
    "WHEEL_BANDIT_PRESETS",
    "bandit_preset",
    "dqn_preset",
    "is_bandit",
    "make_agent",
    "make_env",
    "run_agent",
    "shift_detection_auroc",
    "summarize",
]
