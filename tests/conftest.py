"""Shared fixtures: the real gRPC server on a free port, and the real client talking to it."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete

from tests.data_dir import remove_temporary_data_dir, use_temporary_data_dir
from tollgate.clients.client import ValidationClient
from tollgate.ledger.schema import account_keys, consumption, requests
from tollgate.server.app import RunningServer, start
from tollgate.server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_TIMESHEET = ROOT / "examples" / "timesheet-2026-11.csv"
TOLLGATE = [sys.executable, "-m", "tollgate.clients.cli"]


def pytest_configure(config: pytest.Config) -> None:
    """Every server a test starts (in this process or a ``tollgate serve`` of its own) keeps its ledger in a
    temporary directory, never in the repository's ./var, unless the test says where."""
    use_temporary_data_dir(config, "tollgate-test-data-")


def pytest_unconfigure(config: pytest.Config) -> None:
    remove_temporary_data_dir(config)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``tollgate`` command in a process of its own, as a user runs it from the project root."""
    return subprocess.run([*TOLLGATE, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # The ledger in a temporary directory: no test writes into the repository's ./var.
    running = start(Settings(port=0, threads=4, shutdown_grace_seconds=2,
                             data_dir=tmp_path_factory.mktemp("session-ledger")))
    yield running
    running.stop()


@pytest.fixture(scope="module", autouse=True)
def _module_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A data directory (so a ledger) for each test module's servers: what one module's calls accepted against a cap
    must not decide another module's items (docs/controls.md). The servers a module shares see one another's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOLLGATE_DATA_DIR", str(tmp_path_factory.mktemp("module-data")))
        yield


@pytest.fixture(autouse=True)
def _test_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """And one for the servers a test starts itself (module and session servers were started already)."""
    monkeypatch.setenv("TOLLGATE_DATA_DIR", str(tmp_path_factory.mktemp("test-data")))


@pytest.fixture(autouse=True)
def _fresh_accounts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test that calls the session's server starts with empty accounts and no request ids remembered: what one
    test's calls accepted against a cap (docs/controls.md) must not decide another test's items."""
    if "server" in request.fixturenames:
        running: RunningServer = request.getfixturevalue("server")
        if running.ledger is not None:
            with running.ledger.engine.begin() as connection:
                for table in (consumption, account_keys, requests):
                    connection.execute(delete(table))
    yield


@pytest.fixture
def client(server: RunningServer) -> Iterator[ValidationClient]:
    with ValidationClient(f"127.0.0.1:{server.port}", timeout=30) as connected:
        yield connected
