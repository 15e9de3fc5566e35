"""Analyses of trained and untrained networks: cost, memory, attention, curves."""
