"""The decision ledger's cost over gRPC: ledger off, on SQLite (a file, WAL, synchronous=FULL) and on PostgreSQL.

One ValidateTimeEntries call of 1,000 and of 10,000 entries (time per call), and the latency (p50, p99) of one
40-line timesheet, each against a server process of its own (benchmarks/servers.py, as in test_grpc.py) with
TOLLGATE_LEDGER / TOLLGATE_DATABASE_URL set. The PostgreSQL rows use a schema of their own, dropped afterwards,
and are skipped when the server at TOLLGATE_TEST_POSTGRES_URL cannot be reached. Each call commits its own
transaction (group commit across calls is a later slice).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks.conftest import Sizes, per_entry, record
from benchmarks.data import TIMESHEET_LINES, Firm
from benchmarks.servers import ServerProcess
from benchmarks.test_grpc import BATCH_SIZES, _percentiles, _request, _stub, raw_call_latencies
from tests.ledger_support import postgres_schema

LEDGERS = ("off", "sqlite", "postgres")


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def ledger_servers(refdata_dir: Path, sizes: Sizes,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    targets: dict[str, str] = {}
    with ExitStack() as stack:
        for ledger in LEDGERS:
            data_dir = tmp_path_factory.mktemp(f"ledger-{ledger}")
            settings = {"TOLLGATE_DATA_DIR": str(data_dir), "TOLLGATE_LEDGER": "false" if ledger == "off" else "true"}
            if ledger == "postgres":
                try:
                    settings["TOLLGATE_DATABASE_URL"] = stack.enter_context(postgres_schema())
                except pytest.skip.Exception:
                    continue
            with _environment(**settings):
                server = stack.enter_context(ServerProcess("tollgate", refdata=refdata_dir,
                                                           threads=sizes.server_threads,
                                                           log_path=data_dir / "server.log"))
            targets[ledger] = server.target
        yield targets


def _target(ledger_servers: dict[str, str], ledger: str) -> str:
    if ledger not in ledger_servers:
        pytest.skip(f"no {ledger} ledger (PostgreSQL unreachable)")
    return ledger_servers[ledger]


@pytest.fixture(scope="module")
def ledger_entries(firm: Firm, sizes: Sizes) -> list[dict[str, str]]:
    return firm.entries(3 * max(BATCH_SIZES), sizes.seed + 2, prefix="LB-")


@pytest.mark.parametrize("batch", BATCH_SIZES, ids=lambda n: f"{n}")
@pytest.mark.parametrize("ledger", LEDGERS)
def test_ledger_batch(  # noqa: PLR0917 - pytest passes fixtures positionally
    benchmark: Any, ledger: str, batch: int, ledger_servers: dict[str, str], ledger_entries: list[dict[str, str]],
    sizes: Sizes,
) -> None:
    group = f"ledger: one call of {batch:,} entries, time per call"
    benchmark.group = group
    target = _target(ledger_servers, ledger)
    requests = [_request(ledger_entries[i * batch : (i + 1) * batch]) for i in range(3)]
    rounds = sizes.grpc_rounds * (3 if batch <= 1000 else 1)
    position = iter(range(10**9))
    channel, stub = _stub(target)
    with channel:

        def setup_request() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (requests[next(position) % 3],), {"timeout": 300}

        response = benchmark.pedantic(stub.ValidateTimeEntries, setup=setup_request, rounds=rounds, warmup_rounds=1)
    assert len(response.decisions) == batch
    assert bool(response.batch_id) == (ledger != "off")
    per_entry(benchmark, group, f"ledger {ledger}", batch, what="raw stub, request built beforehand")


@pytest.mark.parametrize("ledger", LEDGERS)
def test_ledger_timesheet_latency(benchmark: Any, ledger: str, ledger_servers: dict[str, str], firm: Firm,
                                  sizes: Sizes) -> None:
    group = f"ledger: latency of one {TIMESHEET_LINES}-line timesheet"
    benchmark.group = group
    target = _target(ledger_servers, ledger)
    warmup = min(50, sizes.latency_calls)
    samples = raw_call_latencies(benchmark, target, _request(firm.timesheet(TIMESHEET_LINES, sizes.seed)),
                                 sizes.latency_calls, warmup)
    stats = _percentiles(samples[warmup:] or samples)
    record(benchmark, group, f"ledger {ledger}", **stats)
    print(f"\n{group} [ledger {ledger}]: p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms "
          f"over {stats['calls']} calls (max {stats['max_ms']:.3f} ms)")
