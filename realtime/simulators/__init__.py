"""Simulated field devices for the demo and the tests: they speak the real protocols."""
