"""The client's request ids and retries, against the real server: a server not up yet, one killed in the middle of
a stream and started again, one that keeps failing, and refusals that are never retried."""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, select
from structlog.testing import capture_logs

from tests.conftest import SAMPLE_TIMESHEET, free_port, run_cli
from tests.ledger_support import postgres_behind_a_proxy
from tests.refdata_support import ServerProcess, wait_until
from tests.status_support import error_info
from tollgate.clients.cli import build_parser, invoices_of, read_items
from tollgate.clients.client import RequestIdError, ValidationClient
from tollgate.clients.retries import RETRYABLE_CODES, RequestIdReusedError, RetryPolicy
from tollgate.ledger.schema import batches
from tollgate.ledger.store import connect
from tollgate.server.app import RunningServer, start
from tollgate.server.settings import Settings

ENTRIES = read_items(SAMPLE_TIMESHEET)
# Quick retries, many of them: a server that is starting takes a few seconds on a loaded machine.
PATIENT = RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.2, deadline=60)
MAX_BATCH_ITEMS = 5


def _copies(count: int) -> list[dict[str, Any]]:
    """``count`` copies of the sample timesheet, each entry and timesheet with ids of its own."""
    return [{**entry, "entry_id": f"{entry['entry_id']}-{copy}", "timesheet_id": f"{entry['timesheet_id']}-{copy}"}
            for copy in range(count) for entry in ENTRIES]


def _batches(engine: Engine, *where: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(batches).where(*where)))


def _events(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retries-ledger")


@pytest.fixture(scope="module")
def small_server(data_dir: Path) -> Iterator[RunningServer]:
    """A server that refuses requests of more than MAX_BATCH_ITEMS items, with its ledger in ``data_dir`` and no
    spool (a ledger made unwritable fails calls UNAVAILABLE, for the retries to meet)."""
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, data_dir=data_dir,
                             max_batch_items=MAX_BATCH_ITEMS, spool_max_bytes=0))
    yield running
    running.stop()


@pytest.fixture
def ledger(small_server: RunningServer, data_dir: Path) -> Iterator[Engine]:
    engine = connect(f"sqlite:///{data_dir / 'tollgate.db'}")
    yield engine
    engine.dispose()


# ---------------------------------------------------------------------------------------------------
# The policy and the arguments, before anything is sent


def test_each_delay_is_drawn_from_zero_to_the_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=2.0, multiplier=2.0)
    caps = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]
    chance = random.Random(20261202)
    for retry, cap in enumerate(caps, start=1):
        drawn = [policy.delay(retry, chance) for _ in range(500)]
        assert all(0 <= delay <= cap for delay in drawn), (retry, max(drawn))
        # Full jitter: the whole range is used, not just near the cap or near 0.
        assert max(drawn) > 0.9 * cap and min(drawn) < 0.1 * cap
        assert 0.4 * cap < sum(drawn) / len(drawn) < 0.6 * cap
    # The same seed, the same delays: the draw is the seeded random's, nothing else's.
    assert [policy.delay(3, random.Random(7)) for _ in range(3)] == [policy.delay(3, random.Random(7))] * 3


def test_a_huge_retry_number_stays_under_the_max_backoff() -> None:
    policy = RetryPolicy(max_attempts=100, initial_backoff=1.0, max_backoff=30.0, multiplier=10.0)
    assert 0 <= policy.delay(99, random.Random(1)) <= 30.0


@pytest.mark.parametrize(("field", "value"), [
    ("max_attempts", 0), ("max_attempts", -1), ("max_attempts", 101), ("max_attempts", 10**12),
    ("max_attempts", 2.5), ("max_attempts", True), ("max_attempts", "3"),
    ("initial_backoff", 0), ("initial_backoff", -0.5), ("initial_backoff", math.nan), ("initial_backoff", math.inf),
    ("initial_backoff", "0.1"),
    ("max_backoff", 0), ("max_backoff", -1.0), ("max_backoff", math.nan), ("max_backoff", 1e9),
    ("max_backoff", 0.05),  # below initial_backoff
    ("multiplier", 0.5), ("multiplier", math.nan), ("multiplier", 1e6), ("multiplier", -2),
    ("deadline", 0), ("deadline", -10), ("deadline", math.nan), ("deadline", math.inf),
])
def test_a_policy_that_cannot_be_is_refused_naming_the_setting(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        RetryPolicy(**{field: value})


@pytest.mark.parametrize("request_id", ["a b", "x" * 200, "ünïcødé", "", "tab\there", "new\nline", "\x00", 42])
def test_a_request_id_that_is_not_one_is_refused_before_anything_is_sent(request_id: Any) -> None:
    # Nothing listens on the port and no retry is allowed: had anything been sent, the call would fail UNAVAILABLE.
    with ValidationClient(f"127.0.0.1:{free_port()}", retry=RetryPolicy(max_attempts=1)) as client, \
            pytest.raises(RequestIdError, match=r"^request_id: .* is not a request id: at most 128 printable ASCII"):
        client.validate_time_entries(ENTRIES[:1], request_id=request_id)


@pytest.mark.parametrize("retry", [5, "3", {"max_attempts": 3}])
def test_a_retry_that_is_not_a_policy_is_refused(retry: Any) -> None:
    with pytest.raises(TypeError, match=r"^retry: .* is not a RetryPolicy"):
        ValidationClient(f"127.0.0.1:{free_port()}", retry=retry)


def test_a_request_id_too_long_to_number_the_chunks_is_refused_before_anything_is_sent() -> None:
    with ValidationClient(f"127.0.0.1:{free_port()}", chunk_size=10, retry=RetryPolicy(max_attempts=1)) as client, \
            pytest.raises(RequestIdError, match=r"^request_id: .*too long to number the \d+ chunks.*at most 126"):
        client.validate_time_entries(ENTRIES, request_id="k" * 127)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--retries", "-1", "not a number of retries from 0 to 99"),
    ("--retries", "100", "not a number of retries from 0 to 99"),
    ("--retries", "99999999999999999999", "not a number of retries from 0 to 99"),
    ("--retries", "three", "'three' is not a whole number of retries"),
    ("--retries", "2.5", "'2.5' is not a whole number of retries"),
    ("--retry-max-backoff", "0", "'0' is not a number of seconds above 0"),
    ("--retry-max-backoff", "-3", "'-3' is not a number of seconds above 0"),
    ("--retry-max-backoff", "nan", "'nan' is not a number of seconds above 0"),
    ("--retry-max-backoff", "inf", "'inf' is not a number of seconds above 0"),
    ("--retry-max-backoff", "1e400", "'1e400' is not a number of seconds above 0"),
    ("--retry-max-backoff", "soon", "'soon' is not a number of seconds"),
    ("--request-id", "a b", "'a b' is not a request id"),
    ("--request-id", "x" * 200, "is not a request id: at most 128 printable ASCII"),
    ("--request-id", "ünïcødé", "'ünïcødé' is not a request id"),
])
def test_a_hostile_retry_or_request_id_flag_is_refused_naming_the_flag(
        flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["validate", str(SAMPLE_TIMESHEET), f"{flag}={value}"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {flag}: " in error and message in error, error


def test_the_retry_flags_make_the_policy() -> None:
    from tollgate.clients.cli import _retry_policy

    args = build_parser().parse_args(["validate", str(SAMPLE_TIMESHEET), "--retries", "0",
                                      "--retry-max-backoff", "0.05"])
    assert _retry_policy(args) == RetryPolicy(max_attempts=1, initial_backoff=0.05, max_backoff=0.05)
    defaults = build_parser().parse_args(["validate", str(SAMPLE_TIMESHEET)])
    assert _retry_policy(defaults) == RetryPolicy()


# ---------------------------------------------------------------------------------------------------
# Retried: a server not up yet, a server killed in the middle of a stream


def test_a_server_that_starts_listening_late_is_retried_with_the_same_request_id(tmp_path: Path) -> None:
    port = free_port()
    started: list[RunningServer] = []
    # Connections to the port are refused (UNAVAILABLE) until the server, started a moment later, listens.
    starting = threading.Timer(0.5, lambda: started.append(start(Settings(
        port=port, threads=2, shutdown_grace_seconds=1, data_dir=tmp_path))))
    starting.start()
    try:
        with capture_logs() as logs, ValidationClient(f"127.0.0.1:{port}", retry=PATIENT) as client:
            result = client.validate_time_entries(ENTRIES[:4])
    finally:
        starting.join()
        for running in started:
            running.stop()
    [request_id] = result.request_ids
    retries = _events(logs, "retrying")
    assert retries, "the call was answered at once: the server was up before it"
    assert {r["code"] for r in retries} == {"UNAVAILABLE"}
    assert [r["attempt"] for r in retries] == list(range(2, len(retries) + 2))
    assert {r["request_id"] for r in retries} == {request_id}
    assert all(0 <= r["delay_seconds"] <= PATIENT.max_backoff for r in retries)
    engine = connect(f"sqlite:///{tmp_path / 'tollgate.db'}")
    try:
        [batch] = _batches(engine)  # the one attempt that reached the server, with the id the client chose
    finally:
        engine.dispose()
    assert (batch.request_id, batch.batch_id, batch.total) == (request_id, result.batch_ids[0], 4)


def _decided(server: ServerProcess) -> int:
    return server.stderr().count('"event": "decided"')


def _logged(server: ServerProcess, event: str, correlation_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(text) for text in server.stderr().splitlines() if text.startswith("{")]
    return [line for line in lines if line["event"] == event and line.get("correlation_id") == correlation_id]


def test_a_stream_broken_by_a_killed_server_completes_on_the_restarted_one(tmp_path: Path) -> None:
    items = _copies(40)  # 1,440 entries in chunks of 36 (one copy of the sample each): 40 chunks
    port = free_port()
    arguments = ("--data-dir", str(tmp_path), "--stream-idle-seconds", "30")
    first = ServerProcess(*arguments, port=port)
    first.wait_until_up()
    restarted: list[ServerProcess] = []
    recorded_by_the_first: list[str] = []  # their request ids
    engine = connect(f"sqlite:///{tmp_path / 'tollgate.db'}")

    def kill_and_restart() -> None:
        # Killed once a few chunks are decided (so some are answered), while the rest are still to come.
        wait_until(lambda: _decided(first) >= 3, timeout=60, interval=0.002)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        recorded_by_the_first.extend(row.request_id for row in _batches(engine, batches.c.correlation_id == "broken"))
        restarted.append(ServerProcess(*arguments, port=port))

    killer = threading.Thread(target=kill_and_restart)
    killer.start()
    try:
        with capture_logs() as logs, ValidationClient(f"127.0.0.1:{port}", chunk_size=len(ENTRIES),
                                                      retry=PATIENT) as client:
            result = client.validate_time_entries(items, correlation_id="broken")
            killer.join()
            # Decided again on the same ledger: an item decided again replaces what it consumed (docs/controls.md).
            unbroken = client.validate_time_entries(items, correlation_id="unbroken")
        chunks = len(items) // len(ENTRIES)
        assert _decided(first) < chunks, "the stream was over before the server was killed"
        assert any(r["code"] == "UNAVAILABLE" for r in _events(logs, "retrying"))

        # The same answer as an unbroken stream, every item once and in order.
        assert [d.item_id for d in result.decisions] == [item["entry_id"] for item in items]
        assert [(d.item_id, d.outcome, d.codes) for d in result.decisions] == \
            [(d.item_id, d.outcome, d.codes) for d in unbroken.decisions]
        assert result.rollups == unbroken.rollups
        assert len(result.request_ids) == len(set(result.request_ids)) == len(result.batch_ids) == chunks

        # Each chunk is on record once, under its request id, and answered with that batch.
        recorded = {row.batch_id: row for row in _batches(engine, batches.c.correlation_id == "broken")}
        assert [recorded[batch_id].request_id for batch_id in result.batch_ids] == result.request_ids
        assert len(recorded) == chunks
        # Sent again: a tail of the chunks, each once, from the first one not answered. Those the first server had
        # recorded but not answered were answered from the record; the answered ones were not sent again.
        position = {request_id: index for index, request_id in enumerate(result.request_ids)}
        first_decided = sorted(position[request_id] for request_id in recorded_by_the_first)
        assert first_decided == list(range(len(first_decided)))
        [second] = restarted
        replayed = [line["request_id"] for line in _logged(second, "request_replayed", "broken")]
        assert set(replayed) <= set(recorded_by_the_first)
        decided_again = [position[row.request_id] for row in recorded.values()
                         if row.request_id not in recorded_by_the_first]
        resent = sorted([position[request_id] for request_id in replayed] + decided_again)
        assert resent == list(range(chunks - len(resent), chunks)) and len(resent) < chunks
        assert len(_logged(second, "decided", "broken")) == len(decided_again)
    finally:
        killer.join()
        engine.dispose()
        for server in (first, *restarted):
            server.stop()


# ---------------------------------------------------------------------------------------------------
# Given up, or never retried


@pytest.mark.postgres
def test_retries_give_up_after_the_policy_s_attempts_with_the_last_error(tmp_path: Path) -> None:
    # The ledger's PostgreSQL refusing connections (a real proxy in front of it, stopped) and no spool: the server
    # answers UNAVAILABLE (LEDGER_UNAVAILABLE) to every attempt.
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    with postgres_behind_a_proxy() as (_direct, proxied, proxy):
        server = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, data_dir=tmp_path, database_url=proxied,
                                spool_max_bytes=0))
        try:
            proxy.stop()
            with capture_logs() as logs, ValidationClient(f"127.0.0.1:{server.port}", retry=policy) as client, \
                    pytest.raises(grpc.RpcError) as failed:
                client.validate_time_entries(ENTRIES[:2], request_id="given-up-1")
        finally:
            proxy.start()
            server.stop()
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "decision ledger cannot be written" in failed.value.details()
    assert len(_events(logs, "ledger_unavailable")) == 3  # what the server saw: three attempts
    assert [r["attempt"] for r in _events(logs, "retrying")] == [2, 3]
    [given_up] = _events(logs, "retries_given_up")
    assert (given_up["attempt"], given_up["code"], given_up["request_id"]) == (3, "UNAVAILABLE", "given-up-1")


def test_the_policy_s_deadline_ends_the_retries_before_the_attempts_run_out() -> None:
    policy = RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.1, deadline=0.5)
    started = time.monotonic()
    with capture_logs() as logs, ValidationClient(f"127.0.0.1:{free_port()}", retry=policy) as client, \
            pytest.raises(grpc.RpcError) as failed:
        client.validate_time_entries(ENTRIES[:1])
    took = time.monotonic() - started
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert 0.3 < took < 5  # about the deadline (a loaded machine may stretch the last attempt)
    [given_up] = _events(logs, "retries_given_up")
    assert given_up["attempt"] < 100 and given_up["seconds_left"] < policy.max_backoff


@pytest.mark.parametrize(("refusal", "code"), [
    ({"items": MAX_BATCH_ITEMS + 1}, grpc.StatusCode.INVALID_ARGUMENT),  # over the server's max_batch_items
    ({"snapshot_id": "snap-000000000000"}, grpc.StatusCode.NOT_FOUND),  # not a kept snapshot
    ({"snapshot_id": "snap-nope"}, grpc.StatusCode.INVALID_ARGUMENT),
])
def test_a_refusal_is_not_retried(small_server: RunningServer, ledger: Engine, refusal: dict[str, Any],
                                  code: grpc.StatusCode) -> None:
    assert code not in RETRYABLE_CODES
    items = ENTRIES[:refusal.get("items", 1)]
    with capture_logs() as logs, ValidationClient(f"127.0.0.1:{small_server.port}", chunk_size=100,
                                                  retry=PATIENT) as client, pytest.raises(grpc.RpcError) as refused:
        client.validate_time_entries(items, snapshot_id=refusal.get("snapshot_id"), request_id=f"refused-{code.name}")
    assert refused.value.code() is code
    assert [r["code"] for r in _events(logs, "call_refused")] == [code.name]  # the server was called once
    assert not _events(logs, "retrying")
    assert not _batches(ledger, batches.c.request_id == f"refused-{code.name}")


def test_the_caller_s_request_id_is_sent_and_a_stream_numbers_its_chunks(small_server: RunningServer,
                                                                         ledger: Engine) -> None:
    with ValidationClient(f"127.0.0.1:{small_server.port}", chunk_size=MAX_BATCH_ITEMS) as client:
        one = client.validate_time_entries(ENTRIES[:1], request_id="mw-key-7")
        streamed = client.validate_time_entries(ENTRIES[:9], request_id="mw-key-8")
        chosen = client.validate_time_entries(ENTRIES[:9])
    assert one.request_ids == ["mw-key-7"]
    assert streamed.request_ids == [f"mw-key-8/{n}" for n in range(1, len(streamed.batch_ids) + 1)]
    assert len(streamed.request_ids) >= 2
    for result in (one, streamed, chosen):
        recorded = {row.batch_id: row.request_id for row in _batches(ledger, batches.c.batch_id.in_(result.batch_ids))}
        assert [recorded[batch_id] for batch_id in result.batch_ids] == result.request_ids
    assert all(uuid.UUID(request_id).version == 4 for request_id in chosen.request_ids)  # one per chunk
    assert len(set(chosen.request_ids)) == len(chosen.request_ids)


@pytest.mark.parametrize("kind", ["expense_line", "invoice"])
def test_expense_lines_and_invoices_carry_the_request_id_too(small_server: RunningServer, ledger: Engine,
                                                             kind: str) -> None:
    examples = SAMPLE_TIMESHEET.parent
    with ValidationClient(f"127.0.0.1:{small_server.port}", chunk_size=2) as client:
        if kind == "invoice":
            invoices = [i for i in invoices_of(read_items(examples / "invoices-2026-11.jsonl")) if len(i["lines"]) <= 2]
            result = client.validate_invoices(invoices[:3], request_id=f"{kind}-key")
        else:
            lines = read_items(examples / "expense-report-2026-11.csv")
            first_of_each_report = list({line["report_id"]: line for line in reversed(lines)}.values())
            result = client.validate_expense_lines(first_of_each_report[:4], request_id=f"{kind}-key")
    assert len(result.request_ids) >= 2  # streamed, one id per chunk
    assert result.request_ids == [f"{kind}-key/{n}" for n in range(1, len(result.request_ids) + 1)]
    recorded = {row.batch_id: row.request_id for row in _batches(ledger, batches.c.batch_id.in_(result.batch_ids))}
    assert [recorded[batch_id] for batch_id in result.batch_ids] == result.request_ids


def test_the_cli_sends_its_request_id_and_logs_its_retries_on_stderr(small_server: RunningServer, ledger: Engine,
                                                                     tmp_path: Path) -> None:
    path = tmp_path / "three.jsonl"
    path.write_text("".join(json.dumps(entry) + "\n" for entry in ENTRIES[:3]))
    sent = run_cli("validate", str(path), "--server", f"127.0.0.1:{small_server.port}", "--request-id", "cli-key-1",
                   "--format", "json")
    assert sent.returncode == 0, sent.stderr
    document = json.loads(sent.stdout)
    assert document["request_ids"] == ["cli-key-1"]
    [batch] = _batches(ledger, batches.c.request_id == "cli-key-1")
    assert [batch.batch_id] == document["batch_ids"]

    unreachable = run_cli("validate", str(path), "--server", f"127.0.0.1:{free_port()}", "--retries", "2",
                          "--retry-max-backoff", "0.05")
    assert unreachable.returncode == 2 and unreachable.stdout == ""
    logged = [json.loads(line) for line in unreachable.stderr.splitlines() if line.startswith("{")]
    assert [(line["event"], line["attempt"]) for line in logged] == \
        [("retrying", 2), ("retrying", 3), ("retries_given_up", 3)]
    assert unreachable.stderr.splitlines()[-1].startswith("tollgate validate: 127.0.0.1:")
    assert "UNAVAILABLE" in unreachable.stderr.splitlines()[-1]


# ---------------------------------------------------------------------------------------------------
# Against the server's idempotency (AIP-155): the same request id and bytes are answered from the record


def test_a_call_sent_again_is_recorded_once_and_answered_with_the_same_batch(small_server: RunningServer,
                                                                            ledger: Engine) -> None:
    with ValidationClient(f"127.0.0.1:{small_server.port}", chunk_size=MAX_BATCH_ITEMS) as client:
        first = client.validate_time_entries(ENTRIES[:3], request_id="again-1")
        again = client.validate_time_entries(ENTRIES[:3], request_id="again-1")
        streamed = client.validate_time_entries(ENTRIES[:9], request_id="again-2")
        streamed_again = client.validate_time_entries(ENTRIES[:9], request_id="again-2")
    assert again.batch_ids == first.batch_ids
    assert [(d.item_id, d.outcome, d.codes) for d in again.decisions] == \
        [(d.item_id, d.outcome, d.codes) for d in first.decisions]
    [batch] = _batches(ledger, batches.c.request_id == "again-1")
    assert batch.batch_id == first.batch_ids[0]
    assert streamed_again.batch_ids == streamed.batch_ids and len(streamed.batch_ids) >= 2
    recorded = _batches(ledger, batches.c.request_id.in_(streamed.request_ids))
    assert sorted(row.request_id for row in recorded) == sorted(streamed.request_ids)  # each chunk once


def test_a_request_id_reused_for_another_payload_is_refused_and_not_retried(small_server: RunningServer,
                                                                           ledger: Engine) -> None:
    with capture_logs() as logs, ValidationClient(f"127.0.0.1:{small_server.port}", retry=PATIENT) as client:
        client.validate_time_entries(ENTRIES[:1], request_id="reused-1")
        with pytest.raises(RequestIdReusedError,
                           match=r"^request id 'reused-1' was already used for a different payload") as reused:
            client.validate_time_entries(ENTRIES[1:2], request_id="reused-1")
    refusal = reused.value.__cause__
    assert isinstance(refusal, grpc.RpcError) and refusal.code() is grpc.StatusCode.ALREADY_EXISTS
    assert error_info(refusal).reason == "REQUEST_ID_REUSED"
    assert not _events(logs, "retrying")
    assert len(_batches(ledger, batches.c.request_id == "reused-1")) == 1


def test_an_attempt_past_its_deadline_is_retried_and_answered_from_the_record(server: RunningServer) -> None:
    items = _copies(100)  # 3,600 entries in one call: longer to decide and record than an attempt may take
    with capture_logs() as logs, ValidationClient(f"127.0.0.1:{server.port}", timeout=0.2, chunk_size=len(items),
                                                  retry=PATIENT) as client:
        result = client.validate_time_entries(items)
    [request_id] = result.request_ids
    retries = _events(logs, "retrying")
    assert retries, "answered within the first attempt's 0.2 s: make the batch larger"
    assert {(r["code"], r["request_id"]) for r in retries} == {("DEADLINE_EXCEEDED", request_id)}
    # The server decided the batch once; the attempt that got through was answered from the record.
    assert len(_events(logs, "decided")) == 1
    assert {r["request_id"] for r in _events(logs, "request_replayed")} == {request_id}
    assert server.ledger is not None
    [batch] = _batches(server.ledger.engine, batches.c.request_id == request_id)
    assert (batch.batch_id, batch.total) == (result.batch_ids[0], len(items))
    assert [d.item_id for d in result.decisions] == [item["entry_id"] for item in items]
