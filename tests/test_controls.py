"""Controls that hold across calls (docs/controls.md) and idempotent retries (AIP-155), on SQLite and PostgreSQL.

The real server, called through gRPC: caps and duplicates by source reference hold across calls, chunks and
concurrent callers; a retry with a recorded request id gets the recorded response and consumes nothing again.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from random import Random
from typing import Any

import grpc
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.exc import DBAPIError

from benchmarks.data import generate_firm, iter_chunks
from tests.conftest import ROOT
from tests.ledger_support import BACKENDS, ledger_database, postgres_schema
from tests.status_support import error_info
from tests.test_ruleset_loading import line_with, only_problem, write_ruleset
from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.clients.client import AuditClient, RefDataClient, ValidationClient, time_entry_message
from tollgate.evaluators.accounts import CONTROLS_UNAVAILABLE, Accounts, group_key, hold_unsettled
from tollgate.ledger.controls import LedgerPriors, _statements
from tollgate.ledger.schema import account_keys, batches, consumption, decisions, requests
from tollgate.ledger.statistics import StatisticsKeeper, analyze_due
from tollgate.ledger.store import bound_list, connect, open_database, text_array, unreachable
from tollgate.rules.decisions import Outcome
from tollgate.server.app import RunningServer, start
from tollgate.server.identities import new_token, write_identity
from tollgate.server.roles import Role
from tollgate.server.runtime import Runtime
from tollgate.server.settings import Settings

HARD_CAP = ("contract-line-hard-limit", '["C-100","L1"]')  # 250,000.00 with 241,500.00 billed: 8,500.00 left
EIGHT_HOURS = Decimal("1320.00")  # 8 h at the contract's 165.00 (work dates before the 16th)
WEEKDAYS = [dt.date(2026, 11, d).isoformat() for d in (2, 3, 4, 5, 6, 9, 10, 12, 13)]


def _entry(entry_id: str, work_date: str, **overrides: Any) -> dict[str, Any]:
    return {"entry_id": entry_id, "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1", "work_date": work_date,
            "hours": "8", "labor_category": "SENIOR_CONSULTANT", "submitted_at": "2026-11-14T17:00:00Z",
            **overrides}


@pytest.fixture(scope="module", params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ledger_database(request.param, tmp_path_factory.mktemp("controls")) as url:
        yield url


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start(Settings(port=0, threads=4, shutdown_grace_seconds=1, database_url=database,
                             data_dir=tmp_path_factory.mktemp("data")))
    yield running
    running.stop()


@pytest.fixture
def engine(database: str, server: RunningServer) -> Iterator[Engine]:
    reading = connect(database)  # each test starts with empty accounts and no request ids: tests/conftest.py
    yield reading
    reading.dispose()


@pytest.fixture
def stub(server: RunningServer, engine: Engine) -> Iterator[pb_grpc.ValidationServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.ValidationServiceStub(channel)


def _request(entries: list[dict[str, Any]], request_id: str = "") -> pb.ValidateTimeEntriesRequest:
    return pb.ValidateTimeEntriesRequest(
        entries=[time_entry_message(entry, position) for position, entry in enumerate(entries, start=1)],
        request_id=request_id)


def _outcomes(response: pb.ValidationResponse) -> dict[str, tuple[str, list[str]]]:
    return {d.item_id: (pb.Outcome.Name(d.outcome), [r.code for r in d.reasons if r.severity == pb.ERROR])
            for d in response.decisions}


def _held(engine: Engine, account: str, key: str) -> Decimal:
    with engine.connect() as connection:
        amounts = connection.execute(select(consumption.c.amount).where(
            consumption.c.account == account, consumption.c.group_key == key)).scalars()
        return sum((Decimal(a) for a in amounts), Decimal(0))


def test_a_hard_cap_holds_across_calls_and_the_batch_keeps_what_it_read(
        stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    first = stub.ValidateTimeEntries(_request([_entry(f"CAP-{n}", WEEKDAYS[n]) for n in range(4)]), timeout=30)
    assert all(outcome != "REJECT" for outcome, _codes in _outcomes(first).values())
    assert _held(engine, *HARD_CAP) == 4 * EIGHT_HOURS
    # Four more: each call alone fits the 8,500.00 left, the two together do not. The earliest two fit.
    second = stub.ValidateTimeEntries(_request([_entry(f"CAP-{n}", WEEKDAYS[n]) for n in range(4, 8)]), timeout=30)
    outcomes = _outcomes(second)
    assert [outcomes[f"CAP-{n}"][0] for n in range(4, 8)] == ["ENRICH", "ENRICH", "REJECT", "REJECT"]
    assert outcomes["CAP-6"][1] == ["NOT_TO_EXCEED_LIMIT"]
    rejected = next(d for d in second.decisions if d.item_id == "CAP-6")
    assert "to 250740.00" in next(r.message for r in rejected.reasons if r.code == "NOT_TO_EXCEED_LIMIT")
    assert _held(engine, *HARD_CAP) == 6 * EIGHT_HOURS <= Decimal("8500.00")
    with engine.connect() as connection:
        priors = connection.execute(select(batches.c.priors).where(batches.c.batch_id == second.batch_id)).scalar_one()
        first_priors = connection.execute(select(batches.c.priors).where(
            batches.c.batch_id == first.batch_id)).scalar_one()
    assert json.loads(priors)[HARD_CAP[0]][HARD_CAP[1]] == "5280.00"
    assert first_priors is None  # it read nothing but empty accounts


def test_a_replay_reads_the_accounts_as_the_batch_found_them(server: RunningServer,
                                                              stub: pb_grpc.ValidationServiceStub) -> None:
    stub.ValidateTimeEntries(_request([_entry(f"REPLAY-{n}", WEEKDAYS[n]) for n in range(5)]), timeout=30)
    pressed = stub.ValidateTimeEntries(_request([_entry(f"REPLAY-{n}", WEEKDAYS[n]) for n in range(5, 9)]),
                                       timeout=30)
    assert [o for o, _codes in _outcomes(pressed).values()] == ["ENRICH", "REJECT", "REJECT", "REJECT"]
    # The accounts change afterwards (the earlier items decided again as not billable): the replay still reads
    # what the batch read, and agrees with it.
    stub.ValidateTimeEntries(_request([_entry(f"REPLAY-{n}", WEEKDAYS[n], billable="false") for n in range(5)]),
                             timeout=30)
    with AuditClient(f"127.0.0.1:{server.port}", timeout=60) as audit:
        replayed = audit.replay(pressed.batch_id)
    assert replayed["identical"] is True, replayed


def test_deciding_an_item_again_replaces_what_it_consumed(stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    entries = [_entry(f"AGAIN-{n}", WEEKDAYS[n]) for n in range(6)]
    stub.ValidateTimeEntries(_request(entries), timeout=30)
    assert _held(engine, *HARD_CAP) == 6 * EIGHT_HOURS
    again = stub.ValidateTimeEntries(_request(entries), timeout=30)  # the same items: not counted twice
    assert all(outcome != "REJECT" for outcome, _codes in _outcomes(again).values())
    assert _held(engine, *HARD_CAP) == 6 * EIGHT_HOURS
    # Decided again as not billable: they consume nothing, and release the cap for others.
    stub.ValidateTimeEntries(_request([{**e, "billable": "false"} for e in entries[:4]]), timeout=30)
    assert _held(engine, *HARD_CAP) == 2 * EIGHT_HOURS
    others = stub.ValidateTimeEntries(_request([_entry(f"OTHER-{n}", WEEKDAYS[n]) for n in range(4)]), timeout=30)
    assert all(outcome != "REJECT" for outcome, _codes in _outcomes(others).values())
    # A rejected item consumes nothing: AGAIN-5 on a closed project is rejected and its share goes.
    stub.ValidateTimeEntries(_request([{**entries[5], "project_id": "P-300"}]), timeout=30)
    assert _held(engine, *HARD_CAP) == 5 * EIGHT_HOURS
    # Decided again for fewer hours: its share is what it bills now.
    stub.ValidateTimeEntries(_request([_entry("OTHER-0", WEEKDAYS[0], hours="4")]), timeout=30)
    assert _held(engine, *HARD_CAP) == 5 * EIGHT_HOURS - EIGHT_HOURS / 2


def test_an_item_the_erp_has_billed_is_not_counted_twice(server: RunningServer, stub: pb_grpc.ValidationServiceStub,
                                                         engine: Engine, tmp_path: Path) -> None:
    stub.ValidateTimeEntries(_request([_entry(f"BILL-{n}", WEEKDAYS[n]) for n in range(6)]), timeout=30)
    assert _held(engine, *HARD_CAP) == 6 * EIGHT_HOURS
    # The ERP bills BILL-0..3: its export lists them, and its consumed amount counts them. Without the release
    # the cap would count them twice and reject what still fits.
    with RefDataClient(f"127.0.0.1:{server.port}", timeout=60) as refdata:
        refdata.upsert("billed_item", [{"entry_id": f"BILL-{n}", "invoice_id": "INV-9", "project_id": "P-100",
                                        "task_id": "T-1", "work_date": WEEKDAYS[n], "hours": "8",
                                        "bill_rate": "165.00", "currency": "USD"} for n in range(4)])
        refdata.upsert("contract_line", [{"contract_id": "C-100", "line_id": "L1", "item_class": "TIME",
                                          "start_date": "2026-01-01", "end_date": "2026-12-31",
                                          "nte_limit": "250000.00", "nte_type": "HARD",
                                          "consumed_amount": str(Decimal("241500.00") + 4 * EIGHT_HOURS)}])
    try:
        # 8,500.00 - 4 x 1,320.00 billed - 2 x 1,320.00 accepted, not billed = 580.00 left: one 2-hour entry fits
        fits = stub.ValidateTimeEntries(_request([_entry("BILL-6", WEEKDAYS[6], hours="2"),
                                                  _entry("BILL-7", WEEKDAYS[7], hours="2")]), timeout=30)
        assert [outcome for outcome, _codes in _outcomes(fits).values()] == ["ENRICH", "REJECT"]
    finally:
        with RefDataClient(f"127.0.0.1:{server.port}", timeout=60) as refdata:
            refdata.delete("billed_item", [{"entry_id": f"BILL-{n}"} for n in range(4)])
            refdata.upsert("contract_line", [{"contract_id": "C-100", "line_id": "L1", "item_class": "TIME",
                                              "start_date": "2026-01-01", "end_date": "2026-12-31",
                                              "nte_limit": "250000.00", "nte_type": "HARD",
                                              "consumed_amount": "241500.00"}])


def test_a_source_record_accepted_in_one_call_is_a_duplicate_in_the_next(
        stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    source = {"source_system": "PSA", "source_ref": "PSA-77"}
    first = stub.ValidateTimeEntries(_request([_entry("SRC-1", WEEKDAYS[0], hours="1", **source)]), timeout=30)
    assert _outcomes(first)["SRC-1"][0] != "REJECT"
    second = stub.ValidateTimeEntries(_request([_entry("SRC-2", WEEKDAYS[1], hours="1", **source)]), timeout=30)
    assert _outcomes(second)["SRC-2"] == ("REJECT", ["DUPLICATE_SOURCE_REF"])
    again = stub.ValidateTimeEntries(_request([_entry("SRC-1", WEEKDAYS[0], hours="1", **source)]), timeout=30)
    assert _outcomes(again)["SRC-1"][0] != "REJECT"  # the same entry sent again is itself, not a duplicate
    # entries without a source reference are in no account: any number of them pass
    plain = stub.ValidateTimeEntries(_request([_entry(f"NOSRC-{n}", WEEKDAYS[n], hours="1") for n in range(3)]),
                                     timeout=30)
    assert all(outcome != "REJECT" for outcome, _codes in _outcomes(plain).values())


def test_concurrent_calls_on_one_cap_never_exceed_it(stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    results: list[pb.ValidationResponse] = []
    failures: list[BaseException] = []

    def call(caller: int) -> None:
        try:
            entries = [_entry(f"RACE-{caller}-{n}", WEEKDAYS[n], worker_id=f"W-{1 + caller % 2}") for n in range(3)]
            results.append(stub.ValidateTimeEntries(_request(entries), timeout=60))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    accepted = [d for r in results for d in r.decisions if d.outcome != pb.REJECT]
    # 24 entries of 1,320.00 against 8,500.00 left: six fit, whichever calls came first, never a seventh
    assert len(accepted) == 6
    assert _held(engine, *HARD_CAP) == 6 * EIGHT_HOURS


def test_a_retry_gets_the_recorded_response_and_consumes_nothing_again(
        server: RunningServer, stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    request = _request([_entry(f"RETRY-{n}", WEEKDAYS[n]) for n in range(3)], request_id="retry-0001")
    first = stub.ValidateTimeEntries(request, timeout=30)
    # The data changes: a retry still gets what was answered, against the snapshot it was decided with.
    with RefDataClient(f"127.0.0.1:{server.port}", timeout=60) as refdata:
        refdata.upsert("project", [{"project_id": "P-100", "name": "Acme ERP rollout", "status": "CLOSED",
                                    "project_type": "CLIENT", "billable": "true", "billing_type": "TM",
                                    "start_date": "2026-01-05", "finish_date": "2026-12-31", "contract_id": "C-100",
                                    "customer_id": "CU-ACME"}])
    try:
        retried = stub.ValidateTimeEntries(request, timeout=30)
        assert retried.SerializeToString(deterministic=True) == first.SerializeToString(deterministic=True)
        fresh = stub.ValidateTimeEntries(_request([_entry("RETRY-0", WEEKDAYS[0])], request_id="retry-0002"),
                                         timeout=30)
        assert fresh.provenance.snapshot_id != first.provenance.snapshot_id
        assert _outcomes(fresh)["RETRY-0"][0] == "REJECT"  # the closed project, decided anew
    finally:
        with RefDataClient(f"127.0.0.1:{server.port}", timeout=60) as refdata:
            refdata.upsert("project", [{"project_id": "P-100", "name": "Acme ERP rollout", "status": "ACTIVE",
                                        "project_type": "CLIENT", "billable": "true", "billing_type": "TM",
                                        "start_date": "2026-01-05", "finish_date": "2026-12-31", "contract_id": "C-100",
                                        "customer_id": "CU-ACME"}])
    with engine.connect() as connection:
        recorded = connection.execute(select(func.count()).select_from(batches).where(
            batches.c.request_id == "retry-0001")).scalar_one()
    assert recorded == 1
    # RETRY-1 and RETRY-2 still hold their share; RETRY-0 gave its share up when decided again (rejected)
    assert _held(engine, *HARD_CAP) == 2 * EIGHT_HOURS


def test_a_request_id_reused_for_another_payload_is_already_exists(stub: pb_grpc.ValidationServiceStub,
                                                                  engine: Engine) -> None:
    first = stub.ValidateTimeEntries(_request([_entry("REUSE-1", WEEKDAYS[0])], request_id="reuse-1"), timeout=30)
    with pytest.raises(grpc.RpcError) as reused:
        stub.ValidateTimeEntries(_request([_entry("REUSE-2", WEEKDAYS[0])], request_id="reuse-1"), timeout=30)
    assert reused.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "reuse-1" in reused.value.details() and first.batch_id in reused.value.details()
    info = error_info(reused.value)
    assert info.reason == "REQUEST_ID_REUSED" and info.metadata["batch_id"] == first.batch_id
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(decisions).where(
            decisions.c.item_id == "REUSE-2")).scalar_one() == 0  # nothing decided, nothing recorded
    # the same items under a different acceptance are another payload too
    other = _request([_entry("REUSE-1", WEEKDAYS[0])], request_id="reuse-1")
    other.acceptance = pb.ALL_OR_NOTHING
    with pytest.raises(grpc.RpcError) as changed:
        stub.ValidateTimeEntries(other, timeout=30)
    assert changed.value.code() is grpc.StatusCode.ALREADY_EXISTS


def test_racing_retries_of_one_request_are_decided_once(stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    request = _request([_entry(f"RACING-{n}", WEEKDAYS[n]) for n in range(5)], request_id="racing-1")
    answers: list[bytes] = []
    barrier = threading.Barrier(6)

    def call() -> None:
        barrier.wait()
        answers.append(stub.ValidateTimeEntries(request, timeout=60).SerializeToString(deterministic=True))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 6 and len(set(answers)) == 1
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(batches).where(
            batches.c.request_id == "racing-1")).scalar_one() == 1
    assert _held(engine, *HARD_CAP) == 5 * EIGHT_HOURS


def test_stream_chunks_with_request_ids_are_answered_from_the_record_on_retry(
        stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    chunks = [_request([_entry(f"CHUNK-{c}-{n}", WEEKDAYS[n], hours="1") for n in range(3)], request_id=f"chunk-{c}")
              for c in range(3)]
    first = list(stub.StreamTimeEntries(iter(chunks), timeout=30))
    again = list(stub.StreamTimeEntries(iter(chunks), timeout=30))
    assert [r.batch_id for r in again] == [r.batch_id for r in first] and len({r.batch_id for r in first}) == 3
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(batches).where(
            batches.c.request_id.like("chunk-%"))).scalar_one() == 3


def test_a_request_id_is_forgotten_after_the_window(database: str, tmp_path: Path) -> None:
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, database_url=database,
                             data_dir=tmp_path, request_id_window_hours=1 / 3600))  # one second
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            client = pb_grpc.ValidationServiceStub(channel)
            request = _request([_entry("WINDOW-1", WEEKDAYS[0], hours="1")], request_id="window-1")
            first = client.ValidateTimeEntries(request, timeout=30)
            assert client.ValidateTimeEntries(request, timeout=30).batch_id == first.batch_id
            time.sleep(1.2)
            assert client.ValidateTimeEntries(request, timeout=30).batch_id != first.batch_id
    finally:
        running.stop()
        reading = connect(database)
        with reading.begin() as connection:
            for table in (consumption, account_keys, requests):
                connection.execute(delete(table))
        reading.dispose()


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, 24 * 401, "a day"])
def test_a_request_id_window_that_is_not_one_is_refused(value: object) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(request_id_window_hours=value)
    assert "request_id_window_hours" in str(refused.value)


def test_unreadable_accounts_hold_the_items_that_would_add_to_them() -> None:
    """The ledger's database unreachable while deciding: the items that would consume a cap or a source are held
    (bill_status HOLD, CONTROLS_UNAVAILABLE), never accepted blind; the others stand."""
    runtime = Runtime(ROOT / "rulesets", ROOT / "examples" / "refdata")
    unreachable = connect("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    try:
        accounts = Accounts(LedgerPriors(unreachable), "time_entry")
        evaluator = runtime.generation.evaluators["time_entry"]
        entries = [_entry("HOLD-1", WEEKDAYS[0]), _entry("HOLD-2", WEEKDAYS[1], project_id="P-300")]
        messages = [time_entry_message(entry, position) for position, entry in enumerate(entries, start=1)]
        decided = hold_unsettled(evaluator.evaluate_messages(messages, None, accounts), accounts)
    finally:
        unreachable.dispose()
    assert accounts.unavailable
    held, closed = decided
    assert held.outcome is Outcome.ENRICH and CONTROLS_UNAVAILABLE in held.codes
    assert ("bill_status", "HOLD") in [(e.field, e.new_value) for e in held.enrichments]
    assert closed.outcome is Outcome.REJECT and CONTROLS_UNAVAILABLE not in closed.codes
    assert accounts.entries == []  # a held item consumes nothing


@pytest.mark.parametrize(("aggregate", "message"), [
    ("{sum: hours, by: [worker_id], account: hours}", "running: true"),
    ("{sum: hours, by: [worker_id], running: true, account: 'Not A Name'}", "pattern"),
    ("{sum: hours, by: [worker_id], running: true, released_by: billed_item}", "name the account"),
    ("{sum: hours, by: [worker_id], running: true, account: hours, released_by: no_such}", "keyed by one id"),
    ("{sum: hours, by: [worker_id], running: true, account: hours, released_by: contract_line}", "keyed by one id"),
])
def test_an_account_that_cannot_hold_is_refused_naming_its_line(tmp_path: Path, aggregate: str, message: str) -> None:
    path = write_ruleset(tmp_path, extra=f"aggregates:\n  so_far: {aggregate}\n")
    problem = only_problem(path)
    assert problem.line == line_with(path, "so_far:"), str(problem)
    assert message in problem.message, str(problem)


@pytest.mark.postgres
def test_a_chunked_month_across_two_replicas_sharing_postgresql_holds_every_cap_and_source(tmp_path: Path) -> None:
    firm = generate_firm(people=120, seed=16)
    refdata = firm.write(tmp_path / "refdata")
    entries = firm.entries(3_000, seed=16)
    # A middleware sending some source records twice, in other chunks: later copies under new entry ids.
    entries += [{**entry, "entry_id": f"DUP-{entry['entry_id']}"} for entry in entries[::50] if entry.get("source_ref")]
    with postgres_schema() as database:
        replicas = [start(Settings(port=0, threads=2, shutdown_grace_seconds=1, database_url=database,
                                   refdata=refdata, data_dir=tmp_path / f"data-{n}")) for n in range(2)]
        try:
            chunks = list(iter_chunks(entries, 250))
            failures: list[BaseException] = []

            def send(replica: RunningServer, mine: list[list[dict[str, str]]]) -> None:
                try:
                    with ValidationClient(f"127.0.0.1:{replica.port}", timeout=120, chunk_size=250) as client:
                        for chunk in mine:
                            client.validate_time_entries(chunk)
                except BaseException as error:
                    failures.append(error)

            senders = [threading.Thread(target=send, args=(replicas[n], chunks[n::2])) for n in range(2)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            assert not failures, failures
            _check_month(connect(database), firm.rows["contract_line"])
        finally:
            for replica in replicas:
                replica.stop()


def _check_month(engine: Engine, contract_lines: list[dict[str, Any]]) -> None:
    """Every hard cap's accepted amounts, beside what was billed before, within its limit; every accepted amount on
    record as its item's bill amount; no source record accepted twice."""
    with engine.connect() as connection:
        final = {row.item_id: row for row in connection.execute(
            select(decisions.c.item_id, decisions.c.outcome, decisions.c.input, decisions.c.enrichments,
                   decisions.c.reasons))}
        held = list(connection.execute(select(consumption)))
    engine.dispose()
    limits = {json.dumps([line["contract_id"], line["line_id"]], separators=(",", ":")): line
              for line in contract_lines if line.get("nte_type", "HARD") == "HARD" and line.get("nte_limit")}
    totals: dict[str, Decimal] = {}
    for row in held:
        decision = final[row.item_id]
        assert decision.outcome != "reject", row.item_id
        if row.account == "contract-line-hard-limit":
            item = json.loads(decision.input) | {e["field"]: e["new_value"] for e in json.loads(decision.enrichments)}
            billed = (Decimal(item["hours"]) * Decimal(item["bill_rate"])).quantize(Decimal("0.01"), ROUND_HALF_UP)
            assert Decimal(row.amount) == billed, (row.item_id, item)
            totals[row.group_key] = totals.get(row.group_key, Decimal(0)) + Decimal(row.amount)
    assert limits.keys() & totals.keys(), "the month must bill against some capped line"
    codes = [r["code"] for d in final.values() for r in json.loads(d.reasons)]
    # the month presses on its caps and repeats source records: the controls had something to hold
    assert codes.count("NOT_TO_EXCEED_LIMIT") > 0 and codes.count("DUPLICATE_SOURCE_REF") > 0
    for key, total in totals.items():
        line = limits.get(key)
        if line is None:  # a line without a limit: what it consumed is kept, nothing caps it
            continue
        assert Decimal(str(line.get("consumed_amount") or 0)) + total <= Decimal(str(line["nte_limit"])), key
    sources: dict[tuple[str, str], list[str]] = {}
    for item_id, decision in final.items():
        sent = json.loads(decision.input)
        if decision.outcome != "reject" and sent.get("source_ref"):
            sources.setdefault((sent.get("source_system", ""), sent["source_ref"]), []).append(item_id)
    assert sources and all(len(ids) == 1 for ids in sources.values()), \
        {key: ids for key, ids in sources.items() if len(ids) > 1}


@pytest.mark.postgres
def test_a_retry_sent_to_another_replica_gets_the_recorded_response(tmp_path: Path) -> None:
    with postgres_schema() as database:
        replicas = [start(Settings(port=0, threads=2, shutdown_grace_seconds=1, database_url=database,
                                   data_dir=tmp_path / f"data-{n}")) for n in range(2)]
        try:
            request = _request([_entry(f"REPLICA-{n}", WEEKDAYS[n]) for n in range(3)], request_id="replica-1")
            answers = []
            for replica in replicas:
                with grpc.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
                    answers.append(pb_grpc.ValidationServiceStub(channel).ValidateTimeEntries(request, timeout=30))
            assert answers[0].SerializeToString(deterministic=True) == answers[1].SerializeToString(deterministic=True)
            engine = connect(database)
            with engine.connect() as connection:
                assert connection.execute(select(func.count()).select_from(batches)).scalar_one() == 1
            assert _held(engine, *HARD_CAP) == 3 * EIGHT_HOURS
            engine.dispose()
        finally:
            for replica in replicas:
                replica.stop()


def test_a_long_group_key_is_kept_as_its_digest() -> None:
    short = group_key(("PSA", "PSA-77"))
    assert short == '["PSA","PSA-77"]'
    long_values = ("😀" * 256, "日" * 256)
    kept = group_key(long_values)
    assert kept is not None and kept.startswith("sha256:") and len(kept) == len("sha256:") + 64
    assert kept == group_key(long_values) != group_key(("😀" * 256, "日" * 255 + "本"))
    assert group_key((None, "")) is None


def test_source_records_of_the_longest_unicode_values_are_held_across_calls(
        stub: pb_grpc.ValidationServiceStub) -> None:
    # 256 characters of 3 and 4 bytes each, twice, no run that compresses: a key past MAX_KEY_CHARS, kept by its
    # digest (test_a_statement_postgresql_refuses_is_not_an_outage shows what a raw key past the index's limit does)
    random = Random(8)
    source = {"source_system": "".join(chr(random.randrange(0x1F300, 0x1F5FF)) for _ in range(256)),
              "source_ref": "".join(chr(random.randrange(0x4E00, 0x9FFF)) for _ in range(256))}
    first = stub.ValidateTimeEntries(_request([_entry("LONG-1", WEEKDAYS[0], hours="1", **source)]), timeout=30)
    assert _outcomes(first)["LONG-1"][0] != "REJECT", _outcomes(first)
    second = stub.ValidateTimeEntries(_request([_entry("LONG-2", WEEKDAYS[1], hours="1", **source)]), timeout=30)
    assert _outcomes(second)["LONG-2"] == ("REJECT", ["DUPLICATE_SOURCE_REF"])


@pytest.mark.postgres
def test_a_statement_postgresql_refuses_is_not_an_outage() -> None:
    """Only an error saying the database cannot take work now sends calls to the spool: a value past a limit (an
    index row too long for a b-tree) fails loudly, the call alone; a connection refused is an outage."""
    random = Random(5)
    too_long = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20_000))
    with postgres_schema() as database:
        engine = open_database(connect(database).url)
        try:
            with pytest.raises(DBAPIError) as refused, engine.begin() as connection:
                connection.execute(insert(account_keys), [{"account": "a", "group_key": too_long, "version": 0}])
            assert getattr(refused.value.orig, "sqlstate", "").startswith("54")  # program limit exceeded
            assert not unreachable(refused.value)
        finally:
            engine.dispose()
    closed = connect("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    try:
        with pytest.raises(DBAPIError) as down:
            closed.connect().close()
        assert unreachable(down.value)
    finally:
        closed.dispose()


@pytest.mark.postgres
def test_on_a_grown_ledger_the_accounts_are_read_and_settled_by_looking_their_keys_up() -> None:
    """A call reads and settles only its own groups and items, whatever the ledger holds: once the tables have
    statistics (autovacuum's, or the keeper's where autovacuum is off: ledger/statistics.py), every statement a call
    runs on the accounts looks its keys up in an index, never reads the rest of an account's rows."""
    with postgres_schema() as database:
        engine = open_database(connect(database).url)
        try:
            with engine.begin() as connection:
                connection.execute(insert(account_keys), [{"account": "cap", "group_key": f"g{n}", "version": 1}
                                                          for n in range(2_000)])
                connection.execute(insert(consumption), [
                    {"account": "cap", "group_key": f"g{n % 2_000}", "item_kind": "time_entry", "item_id": f"TE-{n}",
                     "amount": "1", "batch_id": "b"} for n in range(40_000)])
            with engine.begin() as connection:
                assert {"account_keys", "consumption"} <= set(analyze_due(connection))
            with engine.begin() as connection:
                assert analyze_due(connection) == []  # nothing changed since
            statements = _statements("postgresql")
            keys, ids = bound_list(["g1", "g2", "g3"], "postgresql"), bound_list(["TE-1", "TE-2"], "postgresql")
            with engine.connect() as connection:
                for statement, values, looked_up in (
                        (statements.priors, {"b_account": "cap", "b_keys": keys}, "group_key = ANY"),
                        (statements.own, {"b_kind": "time_entry", "b_ids": ids}, "item_id = ANY"),
                        (statements.lock, {"b_account": "cap", "b_keys": keys}, "group_key = ANY"),
                        (statements.bump, {"b_account": "cap", "b_keys": keys}, "group_key = ANY"),
                        (statements.forget, {"b_kind": "time_entry", "b_ids": ids}, "item_id = ANY")):
                    compiled = statement.compile(dialect=connection.dialect)
                    plan = "\n".join(row[0] for row in connection.exec_driver_sql(
                        f"EXPLAIN {compiled}", compiled.construct_params(values)))
                    assert "Seq Scan" not in plan and "Hash" not in plan and "Filter" not in plan, plan
                    conditions = [line for line in plan.splitlines() if "Index Cond" in line]
                    assert conditions and all(looked_up in line for line in conditions), plan
                connection.rollback()
            reader = LedgerPriors(engine)
            try:
                held = reader.prior("cap", "time_entry", ["g1", "g2"], ["TE-1"], None)
            finally:
                reader.close()
            assert held == {"g1": Decimal(19), "g2": Decimal(20)}  # TE-1 (g1) is the batch's own
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_a_key_list_reaches_postgresql_as_sent_whatever_its_keys_hold() -> None:
    """The keys go as one array literal (store.bound_list): quotes, backslashes, commas, braces, the word NULL, an
    empty key, spaces, newlines and any unicode arrive as the same strings, each one element."""
    hostile = ['a"b', "c\\d", "\\", '"', "e,f", "{g}", "}", " h ", "NULL", "null", "", "ünï😀", "new\nline", "\t",
               '["C-1","L1"]', "x" * 5_000]
    with postgres_schema() as database:
        engine = open_database(connect(database).url)
        try:
            with engine.connect() as connection:
                listed = connection.execute(select(func.unnest(text_array("b_keys"))),
                                            {"b_keys": bound_list(hostile, "postgresql")}).scalars().all()
            assert listed == hostile
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_the_statistics_keeper_runs_only_where_autovacuum_does_not() -> None:
    with postgres_schema() as database:
        engine = open_database(connect(database).url)
        try:
            with engine.connect() as connection:
                autovacuum = connection.exec_driver_sql("SHOW autovacuum").scalar_one()
            assert StatisticsKeeper(engine).needed() == (autovacuum == "off")
            with engine.begin() as connection:
                connection.execute(insert(account_keys), [{"account": "cap", "group_key": f"g{n}", "version": 1}
                                                          for n in range(500)])
            keeper = StatisticsKeeper(engine, interval_seconds=0.05)
            keeper.start()
            try:
                deadline = time.monotonic() + 20
                analyzed = None
                while analyzed is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    with engine.connect() as connection:
                        analyzed = connection.exec_driver_sql(
                            "SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = current_schema() "
                            "AND relname = 'account_keys'").scalar_one()
                assert analyzed is not None  # the keeper's thread analyzed the table that changed
            finally:
                keeper.stop()
        finally:
            engine.dispose()
    sqlite = open_database(connect("sqlite://").url)
    try:
        assert not StatisticsKeeper(sqlite).needed()
    finally:
        sqlite.dispose()


def test_a_stream_chunk_reusing_an_earlier_chunk_s_id_for_other_items_ends_the_stream_naming_it(
        stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    first = _request([_entry("SAME-ID-1", WEEKDAYS[0], hours="1")], request_id="stream-same-1")
    again = _request([_entry("SAME-ID-1", WEEKDAYS[0], hours="1")], request_id="stream-same-1")
    other = _request([_entry("SAME-ID-2", WEEKDAYS[1], hours="1")], request_id="stream-same-1")
    answered: list[pb.ValidationResponse] = []
    with pytest.raises(grpc.RpcError) as refused:
        for response in stub.StreamTimeEntries(iter([first, again, other]), timeout=30):
            answered.append(response)
    assert refused.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert refused.value.details().startswith("chunk 3: ") and error_info(refused.value).reason == "REQUEST_ID_REUSED"
    # the same chunk sent twice is answered twice from one record
    assert len(answered) == 2 and answered[0].batch_id == answered[1].batch_id
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(decisions).where(
            decisions.c.item_id.in_(["SAME-ID-1", "SAME-ID-2"]))).scalar_one() == 1


def test_request_ids_are_each_caller_s_own(tmp_path: Path) -> None:
    """Two middlewares that happen to use the same request id send two requests: neither is refused or answered
    with the other's decisions."""
    identities = tmp_path / "identities.yaml"
    tokens = {}
    for name in ("middleware-a", "middleware-b"):
        token, token_hash = new_token(name)
        write_identity(identities, name, [Role.CALLER], token_hash)
        tokens[name] = token
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, data_dir=tmp_path / "data",
                             identities_file=identities))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            client = pb_grpc.ValidationServiceStub(channel)
            answers = {name: client.ValidateTimeEntries(
                _request([_entry(f"OWN-{name}", WEEKDAYS[0], hours="1")], request_id="shared-id-1"), timeout=30,
                metadata=(("authorization", f"Bearer {token}"),)) for name, token in tokens.items()}
    finally:
        running.stop()
    assert answers["middleware-a"].batch_id != answers["middleware-b"].batch_id
    assert [d.item_id for d in answers["middleware-b"].decisions] == ["OWN-middleware-b"]
