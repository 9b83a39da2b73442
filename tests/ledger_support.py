"""The ledger's databases for tests: a SQLite file of the test's own, or a PostgreSQL schema of its own.

PostgreSQL tests use the server at TOLLGATE_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test),
each in a schema created for it and dropped (CASCADE) afterwards; when the server cannot be reached they fail
if CI is set (.ci/run starts PostgreSQL), else they are skipped, loudly.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tests.tcp_proxy import TcpProxy

TEST_POSTGRES_URL = os.environ.get("TOLLGATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests (.ci/run starts PostgreSQL on 127.0.0.1:5432)")
    warnings.warn(f"SKIPPING POSTGRESQL TESTS: {reason}", stacklevel=2)
    pytest.skip(f"{reason} (these tests fail instead of skipping when CI is set)")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose connections use a fresh schema (search_path), dropped with everything in it afterwards."""
    schema = f"ledger_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(TEST_POSTGRES_URL, connect_args={"connect_timeout": 2})
    try:
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as error:
        admin.dispose()
        _unavailable(f"PostgreSQL at {TEST_POSTGRES_URL} is unreachable: {str(error).splitlines()[0]}")
    separator = "&" if "?" in TEST_POSTGRES_URL else "?"
    try:
        yield f"{TEST_POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def ledger_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database URL of the test's own for ``backend`` ("sqlite" or "postgres")."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger' / 'tollgate.db'}"
        return
    with postgres_schema() as url:
        yield url


@contextmanager
def postgres_behind_a_proxy() -> Iterator[tuple[str, str, TcpProxy]]:
    """A PostgreSQL schema of the test's own: its URL, the same URL through a real TCP proxy (tests/tcp_proxy.py,
    which a test stops to make the database refuse connections), and the proxy."""
    with postgres_schema() as url, TcpProxy(("127.0.0.1", make_url(url).port or 5432)) as proxy:
        yield url, make_url(url).set(port=proxy.port).render_as_string(hide_password=False), proxy
