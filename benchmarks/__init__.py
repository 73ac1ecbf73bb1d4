"""Benchmarks against the textbook: ``python -m benchmarks`` (benchmarks/run.py)."""
