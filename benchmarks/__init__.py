"""Tollgate benchmarks (pytest-benchmark); see benchmarks/README.md. Not part of the normal test run."""
