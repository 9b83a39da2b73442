"""Evaluating batches of items against compiled rulesets and reference data."""

from importlib.metadata import PackageNotFoundError, version

try:
    ENGINE_VERSION = version("tollgate")
except PackageNotFoundError:  # running from a source tree that was never installed
    ENGINE_VERSION = "0.0.0+source"
