"""Benchmark models and scripts for nnc (run from the repository root: `python -m benchmarks.…`)."""
