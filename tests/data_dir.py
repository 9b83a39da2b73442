"""A temporary data directory for every server a test run starts, so none writes its ledger into ./var.

Used by the pytest hooks of tests/ and benchmarks/ alike."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_MADE_DATA_DIR = pytest.StashKey[str]()


def use_temporary_data_dir(config: pytest.Config, prefix: str) -> None:
    """Point TOLLGATE_DATA_DIR at a new temporary directory, unless it is set (xdist workers inherit it)."""
    if "TOLLGATE_DATA_DIR" not in os.environ:
        os.environ["TOLLGATE_DATA_DIR"] = tempfile.mkdtemp(prefix=prefix)
        config.stash[_MADE_DATA_DIR] = os.environ["TOLLGATE_DATA_DIR"]


def remove_temporary_data_dir(config: pytest.Config) -> None:
    made = config.stash.get(_MADE_DATA_DIR, None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        del os.environ["TOLLGATE_DATA_DIR"]
