"""The decision ledger's cost over gRPC: ledger off, on SQLite (a file, WAL, synchronous=FULL) and on PostgreSQL.

One ValidateTimeEntries call of 1,000 and of 10,000 entries (time per call), and the latency (p50, p99) of one
40-line timesheet, each against a server process of its own (benchmarks/servers.py, as in test_grpc.py) with
TOLLGATE_LEDGER / TOLLGATE_DATABASE_URL set. The PostgreSQL rows use a schema of their own, dropped afterwards,
and are skipped when the server at TOLLGATE_TEST_POSTGRES_URL cannot be reached. One caller, one call at a
time: each call commits alone (group commit has nothing to share; ``test_ledger_concurrent_timesheets`` measures
it with several callers).

``test_ledger_recording_many`` records TOLLGATE_BENCH_LEDGER_DECISIONS decisions (default 50,000; 1,000,000 for the
month-end figure) straight through ``Recorder.record``, in calls of 10,000 entries decided once beforehand, on SQLite
and on PostgreSQL: the time, and the database's size on disk afterwards (SQLite: the file after a WAL checkpoint;
PostgreSQL: the tables with their indexes and TOAST).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from benchmarks.conftest import RULESETS, Sizes, _env_int, per_entry, record
from benchmarks.data import TIMESHEET_LINES, Firm
from benchmarks.servers import ServerProcess
from benchmarks.test_grpc import BATCH_SIZES, _percentiles, _request, _stub, raw_call_latencies
from tests.ledger_support import ledger_database, postgres_schema
from tollgate.clients.client import time_entry_message
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.ledger.group_commit import MAX_CALLS
from tollgate.ledger.recorder import Batch, Decided, Recorder
from tollgate.ledger.store import connect, database_url, open_database
from tollgate.refdata.snapshot import ReferenceSnapshot
from tollgate.rules.decisions import Acceptance
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets

LEDGERS = ("off", "sqlite", "postgres")
MANY_DECISIONS = _env_int("TOLLGATE_BENCH_LEDGER_DECISIONS", 50_000)
MANY_PER_CALL = 10_000


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


def _size_on_disk(url: str) -> int:
    """The ledger's bytes on disk: the SQLite file after a WAL checkpoint, or PostgreSQL's tables (the test schema's)
    with their indexes and TOAST."""
    engine = connect(url)
    try:
        if engine.dialect.name == "sqlite":
            raw = engine.raw_connection()  # outside any transaction: a checkpoint cannot run inside one
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                return sum(Path(f"{engine.url.database}{suffix}").stat().st_size for suffix in ("", "-wal")
                           if Path(f"{engine.url.database}{suffix}").exists())
            return int(connection.execute(text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                "c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'")).scalar_one())
    finally:
        engine.dispose()


def _record_calls(recorder: Recorder, calls: int, rulesets: Any, snapshot: ReferenceSnapshot,  # noqa: PLR0917
                  items: list[Any], decided: list[Any]) -> None:
    """``calls`` calls of ``items``, decided beforehand, through ``Recorder.record``, one after the other."""
    for _ in range(calls):
        now = dt.datetime.now(dt.UTC)
        recorder.record(Batch(str(uuid.uuid4()), "", "bench", "anonymous", now, now, TIME_ENTRY.name,
                              tuple(rulesets), snapshot.snapshot_id, ENGINE_VERSION, Acceptance.PARTIAL),
                        items, None, Decided(decided))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_ledger_recording_many(  # noqa: PLR0917 - pytest passes fixtures positionally
    benchmark: Any, backend: str, firm: Firm, snapshot: ReferenceSnapshot, sizes: Sizes, tmp_path: Path,
) -> None:
    group = f"ledger: recording {MANY_DECISIONS:,} decisions, {MANY_PER_CALL:,} a call (Recorder.record)"
    benchmark.group = group
    rulesets = load_rulesets(RULESETS).for_kind(TIME_ENTRY.name)
    evaluator = Evaluator(TIME_ENTRY, rulesets, SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id,
                          ENGINE_VERSION)
    per_call = min(MANY_PER_CALL, MANY_DECISIONS)
    items = [time_entry_message(entry, position)
             for position, entry in enumerate(firm.entries(per_call, sizes.seed + 3, prefix="LM-"), start=1)]
    decided = evaluator.evaluate_messages(items, None)
    calls = max(1, MANY_DECISIONS // per_call)
    with ledger_database(backend, tmp_path) as url:  # skipped when PostgreSQL cannot be reached
        recorder = Recorder(open_database(database_url(url, tmp_path)))

        benchmark.pedantic(_record_calls, (recorder, calls, rulesets, snapshot, items, decided), rounds=1,
                           iterations=1)
        recorder.close()
        on_disk = _size_on_disk(url)
    seconds = benchmark.stats.stats.median
    record(benchmark, group, f"ledger {backend}", decisions=calls * per_call, seconds=round(seconds, 2),
           decisions_per_s=round(calls * per_call / seconds), mib_on_disk=round(on_disk / 2**20, 1),
           bytes_per_decision=round(on_disk / (calls * per_call)))


CONCURRENT_CALLERS = _env_int("TOLLGATE_BENCH_LEDGER_CALLERS", 4)
CONCURRENT_CALLS = _env_int("TOLLGATE_BENCH_LEDGER_CONCURRENT_CALLS", 200)  # per caller


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("grouped", [False, True], ids=["commit-per-call", "group-commit"])
def test_ledger_concurrent_timesheets(  # noqa: PLR0917 - pytest passes fixtures positionally
    benchmark: Any, backend: str, grouped: bool, firm: Firm, snapshot: ReferenceSnapshot, sizes: Sizes,
    tmp_path: Path,
) -> None:
    """TOLLGATE_BENCH_LEDGER_CALLERS threads each recording TOLLGATE_BENCH_LEDGER_CONCURRENT_CALLS 40-line
    timesheets (decided once beforehand) through one ``Recorder``: with group commit (ledger/group_commit.py), and
    with a commit per call (the baseline: at most one call a transaction)."""
    group = (f"ledger: {CONCURRENT_CALLERS} callers recording {TIMESHEET_LINES}-line timesheets at once "
             "(Recorder.record)")
    benchmark.group = group
    rulesets = load_rulesets(RULESETS).for_kind(TIME_ENTRY.name)
    evaluator = Evaluator(TIME_ENTRY, rulesets, SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id,
                          ENGINE_VERSION)
    items = [time_entry_message(entry, position)
             for position, entry in enumerate(firm.timesheet(TIMESHEET_LINES, sizes.seed), start=1)]
    decided = evaluator.evaluate_messages(items, None)
    commits: list[int] = []
    with ledger_database(backend, tmp_path) as url:  # skipped when PostgreSQL cannot be reached
        recorder = Recorder(open_database(database_url(url, tmp_path)))
        recorder.group.max_calls = MAX_CALLS if grouped else 1
        recorder.group.on_commit = commits.append

        def all_callers() -> None:
            with ThreadPoolExecutor(CONCURRENT_CALLERS) as pool:
                for done in [pool.submit(_record_calls, recorder, CONCURRENT_CALLS, rulesets, snapshot, items, decided)
                             for _ in range(CONCURRENT_CALLERS)]:
                    done.result()

        benchmark.pedantic(all_callers, rounds=1, iterations=1)
        recorder.close()
    seconds = benchmark.stats.stats.median
    calls = CONCURRENT_CALLERS * CONCURRENT_CALLS
    record(benchmark, group, f"ledger {backend}, {'group commit' if grouped else 'a commit per call'}",
           calls=calls, seconds=round(seconds, 2), calls_per_s=round(calls / seconds),
           calls_per_commit=round(sum(commits) / len(commits), 2))
