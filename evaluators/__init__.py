"""Deciding batches of items against compiled rulesets and reference data: bind → decide → roll up.

Bind: ``items`` (wire strings into rule values), ``binding`` (reference records as of each item's
business date). Decide: ``engine`` (rulesets in order, per item), ``batch`` (figures over the whole
batch), ``collector``. Roll up: ``rollups`` (timesheets, expense reports, invoices). ``ruleset_tests``
runs the tests written inside rulesets.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    ENGINE_VERSION = version("tollgate")
except PackageNotFoundError:  # running from a source tree that was never installed
    ENGINE_VERSION = "0.0.0+source"
