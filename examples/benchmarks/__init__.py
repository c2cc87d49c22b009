"""The benchmark harness: run its scripts from the repository root as modules, e.g.
``python -m examples.benchmarks.run ../shared/datasets/cooking-stackexchange --out-dir OUT``."""
