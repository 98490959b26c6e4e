"""Benchmark scripts, run from a source checkout: ``python -m benchmarks.NAME`` in the repository root.

Each script prints its figures and rewrites its own section of ``docs/benchmarks.md``
(:mod:`benchmarks.report`). They are not part of the installed ``medseg`` package and are never
run by the default tests; :mod:`benchmarks.repo` is the one place that finds the checkout's files.
"""
