"""Benchmarks: load generator, baselines and tuning runs (scripts, not tests; see README.md)."""
