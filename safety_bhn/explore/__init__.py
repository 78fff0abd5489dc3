"""Safe exploration: Thompson-sampling agents and a plug-in posterior for RL."""
