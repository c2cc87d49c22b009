"""Runnable examples of skelias (``python examples/NAME.py``) and the benchmark harness (``examples.benchmarks``)."""
