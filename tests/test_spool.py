"""The ledger's spool: its file format, claiming and quarantining files, and calls answered through a PostgreSQL
outage (a real TCP proxy that stops listening and resets its connections) and through SIGKILLs of the real server."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from structlog.testing import capture_logs

from tests.conftest import ROOT, SAMPLE_TIMESHEET, TOLLGATE, free_port
from tests.ledger_support import postgres_behind_a_proxy
from tests.refdata_support import ServerProcess, wait_until
from tests.status_support import error_info
from tests.tcp_proxy import TcpProxy
from tests.test_metrics import scrape, value
from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.clients.cli import read_items
from tollgate.clients.client import time_entry_message
from tollgate.ledger.recorder import (
    Batch,
    Decided,
    Recorder,
    TableRows,
    WriteSet,
    build_write_set,
    open_recorder,
    write,
)
from tollgate.ledger.schema import batches, consumption, decisions
from tollgate.ledger.spool import HEADER, Spool, SpoolFormatError, SpoolReader, decode, encode
from tollgate.ledger.store import bulk_insert, database_url, open_database, unreachable
from tollgate.rules.decisions import Acceptance, Decision, Outcome
from tollgate.rules.problems import ProblemsError
from tollgate.server.app import start
from tollgate.server.settings import Settings

ENTRIES = read_items(SAMPLE_TIMESHEET)
ENTRIES_PER_CALL = 3


def _what_record_takes(batch_id: str, count: int = 2) -> tuple[Batch, list[Any], Decided]:
    """What Recorder.record takes for a call of ``count`` sample entries, each accepted."""
    now = datetime.now(UTC)
    items = [time_entry_message(entry, position) for position, entry in enumerate(ENTRIES[:count], start=1)]
    batch = Batch(batch_id, "req", "corr", "anonymous", now, now, "time_entry", (), "snap-000000000000", "test",
                  Acceptance.PARTIAL)
    return batch, items, Decided([Decision(item.entry_id, Outcome.ACCEPT) for item in items])


def _write_set(batch_id: str, count: int = 2) -> WriteSet:
    batch, items, decided = _what_record_takes(batch_id, count)
    return build_write_set(batch, items, None, decided)


def _records(path: Path) -> tuple[list[WriteSet], bool]:
    """The write sets a spool file holds, and whether a torn last record was dropped."""
    with path.open("rb") as handle:
        reader = SpoolReader.checking_header(handle.fileno())
        return [decode(payload)[0] for payload, _ in reader], reader.torn


def _spool_file(path: Path, *records: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HEADER + b"".join(records))
    return path


def _flipped(record: bytes) -> bytes:
    """The record with one payload byte changed: its checksum no longer matches."""
    return record[:-3] + bytes([record[-3] ^ 0x20]) + record[-2:]


# -- the file format ---------------------------------------------------------------------------------------------

def test_spooled_write_sets_read_back_as_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    written = [_write_set(f"batch-{n}", count=n + 1) for n in range(3)]
    for write_set in written:
        spool.append(write_set)
    assert spool.waiting() == 3 and spool.spooling
    read, torn = _records(spool.path)
    assert read == written and not torn
    assert read[0].tables["batches"].rows[0][4].tzinfo is not None  # received_at: a datetime again, with its zone
    spool.close()
    assert spool.path.exists()  # not drained: kept for the next start


def test_every_kind_of_value_a_row_holds_reads_back_as_it_was() -> None:
    row = ("text ünï 😀 \"'\\", 0, -(2**63), 2**64 - 1, 1.5, None, True, b"\x00\xffbytes",
           datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC), '{"$datetime": "not one"}')
    written = WriteSet("values", {"requests": TableRows(tuple(f"c{n}" for n in range(len(row))), [row])})
    assert decode(encode(written, 12.5)[8:]) == (written, 12.5)  # past the frame's length and checksum


@pytest.mark.parametrize("kept", [1, 5, 8, 20, -1], ids=["1-byte", "mid-frame", "frame-only", "mid-payload",
                                                          "all-but-last-byte"])
def test_a_torn_last_record_is_dropped_and_those_before_it_kept(tmp_path: Path, kept: int) -> None:
    first, second = encode(_write_set("first"), 0.0), encode(_write_set("second"), 0.0)
    path = _spool_file(tmp_path / "torn.spool", first, second[:kept])
    read, torn = _records(path)
    assert [w.batch_id for w in read] == ["first"] and torn


@pytest.mark.parametrize("tail", ["zeros", "garbled"])
def test_a_last_record_a_crash_left_unwritten_or_garbled_is_dropped(tmp_path: Path, tail: str) -> None:
    first, second = encode(_write_set("first"), 0.0), encode(_write_set("second"), 0.0)
    last = b"\x00" * len(second) if tail == "zeros" else _flipped(second)
    read, torn = _records(_spool_file(tmp_path / "tail.spool", first, last))
    assert [w.batch_id for w in read] == ["first"] and torn


def test_a_bad_checksum_with_records_after_it_is_corrupt_past_the_good_ones(tmp_path: Path) -> None:
    first, second, third = (encode(_write_set(name), 0.0) for name in ("first", "second", "third"))
    path = _spool_file(tmp_path / "bad.spool", first, _flipped(second), third)
    seen = []
    with path.open("rb") as handle, pytest.raises(SpoolFormatError) as raised:
        seen.extend(decode(payload)[0].batch_id for payload, _ in SpoolReader.checking_header(handle.fileno()))
    assert seen == ["first"]
    assert raised.value.offset == len(HEADER) + len(first) and "checksum" in raised.value.reason


@pytest.mark.parametrize(("content", "torn"), [(b"", False), (HEADER, False), (HEADER[:6], True)],
                         ids=["empty", "header-only", "header-cut-short"])
def test_an_empty_spool_file_holds_nothing(tmp_path: Path, content: bytes, torn: bool) -> None:
    path = tmp_path / "empty.spool"
    path.write_bytes(content)
    assert _records(path) == ([], torn)


@pytest.mark.parametrize("content", [b"hello, world\n", b"PK\x03\x04" + b"\x00" * 40, b'{"batch_id": "x"}',
                                     HEADER.replace(b"1", b"9") + encode(_write_set("x"), 0.0)])
def test_a_file_that_is_not_a_spool_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.spool"
    path.write_bytes(content)
    with pytest.raises(SpoolFormatError) as raised:
        _records(path)
    assert raised.value.offset == 0 and "not a spool file" in raised.value.reason


# -- writing, claiming, quarantining, refusing -------------------------------------------------------------------

def test_a_write_set_already_on_record_is_skipped(tmp_path: Path) -> None:
    engine = open_database(database_url(f"sqlite:///{tmp_path / 'tollgate.db'}", tmp_path))
    try:
        written = _write_set("twice", count=3)
        with engine.begin() as connection:
            assert write(connection, written)
        with engine.begin() as connection:
            assert not write(connection, written)
        url = str(engine.url)
        assert _count(url, batches, ["twice"]) == {"twice": 1} and _count(url, decisions, ["twice"]) == {"twice": 3}
    finally:
        engine.dispose()


def test_a_write_the_database_refuses_fails_loudly_and_is_not_spooled(tmp_path: Path) -> None:
    engine = open_database(database_url(f"sqlite:///{tmp_path / 'tollgate.db'}", tmp_path))
    spool = Spool(tmp_path / "spool")
    recorder = Recorder(engine, spool)
    try:
        with engine.begin() as connection:  # a bug's stand-in: the table the rows go to is gone
            connection.exec_driver_sql("DROP TABLE decisions")
        batch, items, decided = _what_record_takes("refused")
        with pytest.raises(OperationalError, match="no such table") as refused:
            recorder.record(batch, items, None, decided)
        assert not unreachable(refused.value)
        assert not spool.spooling and spool.waiting() == 0
    finally:
        recorder.close()


def _count(url: str, table: Any, batch_ids: list[str]) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(table.c.batch_id, func.count()).where(table.c.batch_id.in_(batch_ids))
                                      .group_by(table.c.batch_id))
            return {row[0]: row[1] for row in rows}
    finally:
        engine.dispose()


def test_a_spool_a_killed_process_left_is_claimed_written_once_and_removed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tollgate.db'}"
    directory = tmp_path / "spool"
    left = Spool(directory)
    for name in ("left-1", "left-2", "left-3"):
        left.append(_write_set(name))
    left.close()  # as a killed process does: its records stay, its lock goes
    # The same records twice (a claim that crashed after writing them, say): each is written once all the same.
    shutil.copy(left.path, directory / "copy.spool")
    recorder = open_recorder(url, tmp_path, directory, 1 << 20)
    try:
        assert recorder.spool is not None
        wait_until(lambda: not left.path.exists() and not (directory / "copy.spool").exists(), timeout=10)
        assert sorted(directory.iterdir()) == [recorder.spool.path]
    finally:
        recorder.close()
    ids = ["left-1", "left-2", "left-3"]
    assert _count(url, batches, ids) == dict.fromkeys(ids, 1)
    assert _count(url, decisions, ids) == dict.fromkeys(ids, 2)


def test_a_spool_file_held_by_a_live_process_is_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tollgate.db'}"
    alive = Spool(tmp_path / "spool")
    alive.append(_write_set("alive"))
    recorder = open_recorder(url, tmp_path, tmp_path / "spool", 1 << 20)
    try:
        assert recorder.spool is not None
        recorder.spool.claim_left_over(recorder)  # what the drainer does; the file is locked by `alive`
        assert alive.path.exists() and _count(url, batches, ["alive"]) == {}
    finally:
        recorder.close()
        alive.close()


def test_a_corrupt_spool_file_is_quarantined_logged_and_not_replayed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tollgate.db'}"
    directory = tmp_path / "spool"
    first, second, third = (encode(_write_set(name), 0.0) for name in ("good", "bad", "after"))
    _spool_file(directory / "middle.spool", first, _flipped(second), third)
    (directory / "stranger.spool").write_bytes(b"not a spool at all\n" * 10)
    with capture_logs() as logs:
        recorder = open_recorder(url, tmp_path, directory, 1 << 20)
        try:
            wait_until(lambda: (directory / "middle.spool.bad").exists()
                       and (directory / "stranger.spool.bad").exists(), timeout=10)
        finally:
            recorder.close()
    assert not (directory / "middle.spool").exists() and not (directory / "stranger.spool").exists()
    # The verified record before the bad one was answered: written. Nothing from the bad one on.
    assert _count(url, batches, ["good", "bad", "after"]) == {"good": 1}
    corrupt = {Path(entry["spool"]).name: entry for entry in logs if entry["event"] == "spool_file_corrupt"}
    assert set(corrupt) == {"middle.spool", "stranger.spool"}
    assert corrupt["middle.spool"]["records_written_before"] == 1
    assert "not a spool file" in corrupt["stranger.spool"]["reason"]


@pytest.mark.parametrize("where", ["a-file", "under-a-file"])
def test_a_spool_dir_that_cannot_be_written_refuses_the_start_naming_the_setting(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    spool_dir = blocker if where == "a-file" else blocker / "spool"
    with pytest.raises(ProblemsError) as refused:
        start(Settings(port=0, threads=1, data_dir=tmp_path / "data", spool_dir=spool_dir))
    [problem] = refused.value.problems
    assert problem.path == "spool_dir" and problem.subject == str(spool_dir) and "cannot be written" in str(problem)


@pytest.mark.parametrize("value", ["-1", "lots", "1.5"])
def test_a_spool_size_that_is_not_one_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(spool_max_bytes=value)  # type: ignore[arg-type]
    assert "spool_max_bytes" in str(refused.value)


# -- through the real server ----------------------------------------------------------------------------------

def _call(stub: pb_grpc.ValidationServiceStub, number: int) -> str:
    entries = ENTRIES[number % 20: number % 20 + ENTRIES_PER_CALL]
    request = pb.ValidateTimeEntriesRequest(
        entries=[time_entry_message(entry, position) for position, entry in enumerate(entries, start=1)])
    response: pb.ValidationResponse = stub.ValidateTimeEntries(request, timeout=20)
    assert response.batch_id
    return response.batch_id


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[str, str, TcpProxy]]:
    with postgres_behind_a_proxy() as proxied:
        yield proxied


@pytest.mark.postgres
def test_calls_during_a_postgres_outage_are_answered_spooled_and_reach_it_once(
        proxied_postgres: tuple[str, str, TcpProxy], tmp_path: Path) -> None:
    url, through, proxy = proxied_postgres
    metrics_port = free_port()
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, database_url=through, data_dir=tmp_path,
                             metrics_port=metrics_port))
    assert running.ledger is not None and running.ledger.spool is not None
    spool = running.ledger.spool
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ValidationServiceStub(channel)
            before = [_call(stub, n) for n in range(3)]
            proxy.stop()  # refused from now on, and the pool's open connections reset
            with capture_logs() as logs:
                during = [_call(stub, n) for n in range(3, 9)]
                assert spool.spooling and spool.waiting() == len(during)
                assert _count(url, batches, during) == {}  # not in the database yet: in the spool
                samples = scrape(metrics_port)
                assert value(samples, "tollgate_ledger_spool_records") == len(during)
                assert value(samples, "tollgate_ledger_spool_oldest_seconds") > 0
                proxy.start()
                after = [_call(stub, n) for n in range(9, 12)]
                wait_until(lambda: not spool.spooling and spool.waiting() == 0, timeout=30)
                assert value(scrape(metrics_port), "tollgate_ledger_spool_records") == 0
        answered = before + during + after
        assert _count(url, batches, answered) == dict.fromkeys(answered, 1)
        assert _count(url, decisions, answered) == dict.fromkeys(answered, ENTRIES_PER_CALL)
        events = [entry["event"] for entry in logs]
        assert events.count("ledger_spooling") == 1 and events.count("ledger_spool_drained") == 1
    finally:
        running.stop()


@pytest.mark.postgres
def test_a_copy_on_a_connection_the_server_dropped_is_an_outage_not_a_bug() -> None:
    """The decisions and the consumption go by COPY: one begun on a connection reset under it counts as the database
    out of reach, so the call goes to the spool rather than failing INTERNAL. (Reset at another moment, psycopg says
    "COPY cannot be mixed with other operations", a ProgrammingError; CI met it under load, and the recorder
    asks the database, store.out_of_reach, rather than trust the error's class.)"""
    with postgres_behind_a_proxy() as (_url, through, proxy):
        engine = open_database(database_url(through, Path("unused")))
        try:
            with engine.connect() as connection:
                connection.execute(select(1))  # the connection open (no table locked: the schema is dropped after)
                proxy.stop()
                with pytest.raises(DBAPIError) as cut:
                    bulk_insert(connection, consumption, ("account", "group_key", "item_kind", "item_id", "amount",
                                                          "batch_id"), [("a", "k", "time_entry", "TE-1", "1", "b")])
                assert unreachable(cut.value), repr(cut.value)
                connection.invalidate()  # lost: nothing to roll back
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_an_error_of_another_class_while_the_database_is_out_of_reach_goes_to_the_spool(
        proxied_postgres: tuple[str, str, TcpProxy], tmp_path: Path) -> None:
    """A connection reset under a statement does not always say so (psycopg once raised ProgrammingError, "COPY
    cannot be mixed with other operations"): a write that fails while the database cannot be reached goes to the
    spool whatever the error's class. (With the database up, a refused write fails loudly: the test above.)"""
    _url, through, proxy = proxied_postgres
    recorder = Recorder(open_database(database_url(through, tmp_path)), Spool(tmp_path / "spool"))
    try:
        proxy.stop()

        def reset_mid_copy(*_args: Any, **_kwargs: Any) -> Any:  # the error the reset raised, as psycopg raised it
            raise ProgrammingError("COPY consumption FROM STDIN", None,
                                   Exception("COPY cannot be mixed with other operations"))

        recorder.group.run = reset_mid_copy  # type: ignore[method-assign]
        batch, items, decided = _what_record_takes("reset")
        recorded = recorder.record(batch, items, None, decided)
        assert recorded.decisions == decided.decisions
        assert recorder.spool is not None and recorder.spool.waiting() == 1
    finally:
        recorder.close()


@pytest.mark.postgres
def test_a_full_spool_fails_the_call_unavailable_and_records_nothing(
        proxied_postgres: tuple[str, str, TcpProxy], tmp_path: Path) -> None:
    url, through, proxy = proxied_postgres
    # Room for the header and little else: the first call of the outage does not fit.
    running = start(Settings(port=0, threads=1, shutdown_grace_seconds=1, database_url=through, data_dir=tmp_path,
                             spool_max_bytes=len(HEADER) + 100))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ValidationServiceStub(channel)
            proxy.stop()
            with pytest.raises(grpc.RpcError) as refused:
                _call(stub, 0)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info(refused.value).reason == "LEDGER_UNAVAILABLE"
            proxy.start()
            answered = _call(stub, 1)  # once the database is back (the drainer finds the spool empty)
        assert _count(url, batches, [answered]) == {answered: 1}
    finally:
        running.stop()


def _calls_in_a_loop(target: str, answered: list[str], stop: threading.Event) -> None:
    """Call until the server goes away (or ``stop``), keeping each answered batch id."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ValidationServiceStub(channel)
        number = 0
        while not stop.is_set():
            try:
                answered.append(_call(stub, number))
            except grpc.RpcError:
                return
            number += 1


def _kill_while_calling(server: ServerProcess, answered: list[str], seconds: float) -> None:
    server.wait_until_up()
    stop = threading.Event()
    caller = threading.Thread(target=_calls_in_a_loop, args=(server.target, answered, stop))
    answered_before = len(answered)
    caller.start()
    try:
        # killed ``seconds`` after its first answer (however long a loaded machine took to give it), mid-call
        wait_until(lambda: len(answered) > answered_before, timeout=60, interval=0.01)
        time.sleep(seconds)
        server.process.kill()  # SIGKILL: no drain, no cleanup
        server.process.wait(timeout=10)
    finally:
        stop.set()
        caller.join(timeout=30)


def test_every_answered_call_is_on_record_after_sigkill(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    answered: list[str] = []
    rounds = random.Random(16)
    for _ in range(2):  # the second start is on what the first kill left
        counted = len(answered)
        _kill_while_calling(ServerProcess("--data-dir", str(data_dir)), answered, rounds.uniform(0.3, 1.0))
        assert len(answered) > counted, "no call was answered before the kill"
    url = f"sqlite:///{data_dir / 'tollgate.db'}"
    assert _count(url, batches, answered) == dict.fromkeys(answered, 1)
    assert _count(url, decisions, answered) == dict.fromkeys(answered, ENTRIES_PER_CALL)


@pytest.mark.postgres
def test_a_server_killed_during_an_outage_loses_no_spooled_call(proxied_postgres: tuple[str, str, TcpProxy],
                                                                tmp_path: Path) -> None:
    url, through, proxy = proxied_postgres
    data_dir = tmp_path / "data"
    server = ServerProcess("--data-dir", str(data_dir), "--database-url", through)
    answered: list[str] = []
    server.wait_until_up()
    with grpc.insecure_channel(server.target) as channel:
        before = [_call(pb_grpc.ValidationServiceStub(channel), n) for n in range(2)]
    proxy.stop()
    _kill_while_calling(server, answered, random.Random(17).uniform(0.5, 1.0))
    assert answered, "no call was answered (spooled) before the kill"
    left = list((data_dir / "spool").glob("*.spool"))
    assert left and _count(url, batches, answered) == {}
    proxy.start()
    again = ServerProcess("--data-dir", str(data_dir), "--database-url", through)
    try:
        again.wait_until_up()
        wait_until(lambda: not any(path.exists() for path in left), timeout=30)  # claimed, drained, removed
    finally:
        again.stop()
    every = before + answered
    assert _count(url, batches, every) == dict.fromkeys(every, 1)
    assert _count(url, decisions, every) == dict.fromkeys(every, ENTRIES_PER_CALL)


@pytest.mark.postgres
def test_a_killed_worker_spool_is_claimed_by_another_process_and_written_once(
        proxied_postgres: tuple[str, str, TcpProxy], tmp_path: Path) -> None:
    url, through, proxy = proxied_postgres
    spool_dir = tmp_path / "data" / "spool"
    port = free_port()
    with (tmp_path / "supervisor.log").open("wb") as log:
        supervisor = subprocess.Popen([*TOLLGATE, "serve", "--port", str(port), "--workers", "2", "--data-dir",
                                       str(tmp_path / "data"), "--database-url", through],
                                      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_until(lambda: len(list(spool_dir.glob("*.spool"))) == 2, timeout=120, interval=0.1)  # one a worker
        proxy.stop()
        answered: list[str] = []
        for number in range(12):  # each channel a connection of its own: the kernel spreads them over the workers
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=60)
                answered.append(_call(pb_grpc.ValidationServiceStub(channel), number))
        [holding, *_] = [path for path in spool_dir.glob("*.spool") if path.stat().st_size > len(HEADER)]
        worker = int(holding.name.split("-")[1])  # spool-<pid>-<random>.spool
        os.kill(worker, signal.SIGKILL)  # a worker of the supervisor this test started; the supervisor restarts it
        proxy.start()
        # Its file is claimed by a live worker (the survivor, or its replacement starting), drained and removed.
        wait_until(lambda: not holding.exists(), timeout=60, interval=0.1)
        wait_until(lambda: len(_count(url, batches, answered)) == len(answered), timeout=30, interval=0.1)
        assert _count(url, batches, answered) == dict.fromkeys(answered, 1)
        assert _count(url, decisions, answered) == dict.fromkeys(answered, ENTRIES_PER_CALL)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=60)
