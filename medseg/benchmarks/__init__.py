"""Benchmark scripts (``python -m medseg.benchmarks.NAME``); each prints its figures and
rewrites its own section of ``docs/benchmarks.md``. Never run by the default tests."""
