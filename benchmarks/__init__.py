"""Benchmark and validation helpers for pymc-dilation (reference posteriors, port checks)."""
