"""Core: primary networks, flows, the posterior methods, training and metrics."""
