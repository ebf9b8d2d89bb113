"""Experiments, runs and the Lightning training engine."""
