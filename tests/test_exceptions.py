"""The exception queue through the real server, client and CLI, on SQLite and on PostgreSQL.

The module's server is shared, so each test sends items of its own: ids, and where a filter is tested, worker /
project / customer ids no other test uses (an unknown one is rejected REFERENCE_DATA_MISSING, as any other).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from sqlalchemy import event, select

from tests.auth_support import Identities
from tests.conftest import ROOT, SAMPLE_TIMESHEET, free_port
from tests.ledger_support import BACKENDS, ledger_database
from tests.status_support import bad_request_field, error_info
from tests.test_metrics import scrape, value
from tollgate.api.v1 import exceptions_pb2
from tollgate.clients.channel import ChannelSecurity
from tollgate.clients.cli import main, read_items
from tollgate.clients.client import ExceptionClient, RefDataClient, ValidationClient
from tollgate.ledger import exceptions as queue
from tollgate.ledger.schema import decisions
from tollgate.ledger.store import connect
from tollgate.server.app import RunningServer, start
from tollgate.server.exception_service import revalidation_requests
from tollgate.server.metrics import ExceptionGauges
from tollgate.server.roles import Role
from tollgate.server.settings import Settings

SAMPLE = {entry["entry_id"]: entry for entry in read_items(SAMPLE_TIMESHEET)}
ACCEPTED = SAMPLE["TE-1001"]  # accepted as it is
EXPENSES = {line["expense_id"]: line for line in read_items(ROOT / "examples" / "expense-report-2026-11.csv")}
HELD = SAMPLE["TE-1022"]  # no contract: held (bill_status HOLD, NO_CONTRACT_HOLD)
NO_ASSIGNMENT = SAMPLE["TE-1030"]  # W-2 has no assignment on P-300
NOT_A_NUMBER = SAMPLE["TE-1017"]  # hours 'eight': INVALID_FIELD
PERIOD_CLOSED_INVOICE = {"invoice_id": "INV-E", "invoice_date": "2026-10-30", "contract_id": "C-200",
                         "customer_id": "CU-GLOBEX", "currency": "USD",
                         "lines": [{"line_id": "INV-E-1", "line_type": "FIXED_FEE", "amount": "30000.00"}]}


def _unique(prefix: str = "X") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _entry(base: dict[str, Any], **changes: str) -> dict[str, Any]:
    """A copy of a sample entry as an item of its own (a source_ref of its own: copies are not duplicates)."""
    return {**base, "entry_id": _unique("TE"), "source_ref": _unique("psa"), **changes}


@pytest.fixture(scope="module", params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ledger_database(request.param, tmp_path_factory.mktemp("exceptions")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own: for what counts or re-decides the whole queue."""
    with ledger_database(request.param, tmp_path) as url:
        yield url


def _server(database: str, data_dir: Path, **settings: Any) -> RunningServer:
    return start(Settings(port=0, threads=2, shutdown_grace_seconds=1, database_url=database, data_dir=data_dir,
                          **settings))


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = _server(database, tmp_path_factory.mktemp("data"))
    yield running
    running.stop()


@pytest.fixture
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def validate(target: str) -> Iterator[ValidationClient]:
    with ValidationClient(target, timeout=30) as client:
        yield client


@pytest.fixture
def queued(target: str) -> Iterator[ExceptionClient]:
    with ExceptionClient(target, timeout=30) as client:
        yield client


def _only(client: ExceptionClient, item_id: str, **filters: str) -> exceptions_pb2.ItemException:
    [found] = [e for e in client.list_all(**filters) if e.item_id == item_id]
    return client.get(found.exception_id)


def test_a_rejected_item_opens_its_exception_and_a_second_rejection_updates_it(
        validate: ValidationClient, queued: ExceptionClient) -> None:
    entry = _entry(NO_ASSIGNMENT)
    first = validate.validate_time_entries([entry])
    opened = _only(queued, entry["entry_id"], code="NO_ASSIGNMENT")
    assert (opened.status, opened.outcome, opened.item_kind, opened.times_seen) == ("open", "reject", "time_entry", 1)
    assert list(opened.codes) == ["NO_ASSIGNMENT"] and list(opened.rule_ids) == ["BE-4"]
    assert (opened.project_id, opened.worker_id, opened.customer_id) == ("P-300", "W-2", "")
    assert (opened.batch_id, opened.position) == (first.batch_ids[0], 0)
    assert opened.first_seen == opened.last_seen
    assert json.loads(opened.input_json)["entry_id"] == entry["entry_id"]

    # The same item again, failing otherwise too: one exception, seen twice, with the latest reasons and input.
    again = validate.validate_time_entries([{**entry, "hours": "eight"}])
    updated = queued.get(opened.exception_id)
    assert (updated.status, updated.times_seen, updated.first_seen) == ("open", 2, opened.first_seen)
    assert updated.last_seen > opened.last_seen
    assert "INVALID_FIELD" in updated.codes and updated.batch_id == again.batch_ids[0]
    assert json.loads(updated.input_json)["hours"] == "eight"
    assert [r.code for r in updated.reasons] == [r.code for r in again.decisions[0].reasons]


def test_a_later_accepted_decision_resolves_the_exception_pointing_at_it(
        validate: ValidationClient, queued: ExceptionClient, database: str) -> None:
    entry = _entry(ACCEPTED, project_id=_unique("P"))
    validate.validate_time_entries([entry])
    opened = _only(queued, entry["entry_id"])
    assert opened.status == "open" and "REFERENCE_DATA_MISSING" in opened.codes
    # Fixed: sent with its real project, in a batch where it is second.
    fixed = validate.validate_time_entries([_entry(ACCEPTED), {**entry, "project_id": ACCEPTED["project_id"]}])
    assert fixed.decisions[1].outcome.value == "accept"
    resolved = queued.get(opened.exception_id)
    assert (resolved.status, resolved.resolved_batch_id, resolved.resolved_position) == \
        ("resolved", fixed.batch_ids[0], 1)
    assert resolved.resolved_at >= resolved.last_seen and resolved.times_seen == 1
    reading = connect(database)
    try:
        with reading.connect() as connection:
            [row] = connection.execute(select(decisions).where(decisions.c.batch_id == resolved.resolved_batch_id,
                                                               decisions.c.position == resolved.resolved_position))
    finally:
        reading.dispose()
    assert (row.item_id, row.outcome) == (entry["entry_id"], "accept")
    # Rejected once more: re-opened, the resolution cleared.
    validate.validate_time_entries([entry])
    reopened = queued.get(opened.exception_id)
    assert (reopened.status, reopened.times_seen, reopened.resolved_batch_id, reopened.resolved_at) == \
        ("open", 2, "", "")


def test_a_held_item_opens_an_exception_with_the_holds_reason(validate: ValidationClient,
                                                               queued: ExceptionClient) -> None:
    entry = _entry(HELD)
    decided = validate.validate_time_entries([entry])
    assert decided.decisions[0].outcome.value == "enrich"
    assert any(e.field == "bill_status" and e.new_value == "HOLD" for e in decided.decisions[0].enrichments)
    held = _only(queued, entry["entry_id"])
    assert (held.status, held.outcome, list(held.codes), list(held.rule_ids)) == \
        ("open", "hold", ["NO_CONTRACT_HOLD"], ["PS-5"])
    assert {r.code for r in held.reasons} >= {"NO_CONTRACT_HOLD", "RATE_RESOLVED"}  # every reason is kept


def test_an_enriched_item_without_a_hold_and_an_accepted_one_open_none(validate: ValidationClient,
                                                                        queued: ExceptionClient) -> None:
    entries = [_entry(SAMPLE["TE-1002"]), _entry(ACCEPTED)]
    decided = validate.validate_time_entries(entries)
    assert [d.outcome.value for d in decided.decisions] == ["enrich", "accept"]
    ids = {e["entry_id"] for e in entries}
    assert not [e for e in queued.list_all(status="") if e.item_id in ids]


def test_an_invoice_line_takes_its_customer_from_the_invoice_header(validate: ValidationClient,
                                                                     queued: ExceptionClient) -> None:
    customer = _unique("CU")
    invoice = {**PERIOD_CLOSED_INVOICE, "invoice_id": _unique("INV"), "customer_id": customer,
               "lines": [{**PERIOD_CLOSED_INVOICE["lines"][0], "line_id": _unique("L")}]}
    validate.validate_invoices([invoice])
    [line] = list(queued.list_all(customer_id=customer))
    assert (line.item_kind, line.item_id, line.customer_id, line.outcome) == \
        ("invoice_line", invoice["lines"][0]["line_id"], customer, "reject")
    assert json.loads(queued.get(line.exception_id).input_json)["invoice"]["customer_id"] == customer


def test_filters_select_exactly_and_filters_matching_nothing_give_nothing(
        validate: ValidationClient, queued: ExceptionClient) -> None:
    worker, project = _unique("W"), _unique("P")
    mine = [_entry(ACCEPTED, worker_id=worker, project_id=project), _entry(ACCEPTED, worker_id=worker)]
    validate.validate_time_entries(mine)
    ids = {e["entry_id"] for e in mine}
    assert {e.item_id for e in queued.list_all(worker_id=worker)} == ids
    assert {e.item_id for e in queued.list_all(worker_id=worker, project_id=project)} == {mine[0]["entry_id"]}
    assert {e.item_id for e in queued.list_all(worker_id=worker, code="REFERENCE_DATA_MISSING")} == ids
    assert {e.item_id for e in queued.list_all(worker_id=worker, rule_id="refdata:project")} == {mine[0]["entry_id"]}
    assert {e.item_id for e in queued.list_all(worker_id=worker, since="2020-01-01")} == ids
    assert {e.item_id for e in queued.list_all(worker_id=worker, since="2020-01-01T00:00:00Z", status="open")} == ids
    # A code is matched whole: part of one matches nothing (REFERENCE_DATA is in REFERENCE_DATA_MISSING).
    for nothing in ({"code": "REFERENCE_DATA"}, {"code": "NO_SUCH_CODE"}, {"rule_id": "refdata"},
                    {"since": "2999-01-01"}, {"status": "resolved"}, {"status": "waived"}, {"customer_id": "CU-1"},
                    {"code": "REFERENCE%"}, {"code": "REFERENCE_DATA_MISSIN_"}):
        assert list(queued.list_all(worker_id=worker, **nothing)) == [], nothing
    assert list(queued.list_all(code="NO_SUCH_CODE")) == []
    assert queued.revalidate(worker_id=_unique("W")).re_decided == 0


def test_pages_cover_every_exception_once_in_order(validate: ValidationClient, queued: ExceptionClient) -> None:
    worker = _unique("W")
    validate.validate_time_entries([_entry(ACCEPTED, worker_id=worker) for _ in range(5)])
    first = queued.list(page_size=2, worker_id=worker)
    assert len(first.exceptions) == 2 and first.next_page_token
    paged = list(queued.list_all(page_size=2, worker_id=worker))
    ids = [int(e.exception_id) for e in paged]
    assert len(ids) == 5 and ids == sorted(set(ids))
    last = queued.list(page_size=5, worker_id=worker)
    assert len(last.exceptions) == 5 and last.next_page_token == ""
    # A token belongs to its filter.
    with pytest.raises(grpc.RpcError) as refused:
        queued.list(page_size=2, page_token=first.next_page_token, worker_id=_unique("W"))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(refused.value) == "page_token"


def test_summary_counts_open_exceptions_by_code_project_customer_and_worker(
        validate: ValidationClient, queued: ExceptionClient) -> None:
    worker, project = _unique("W"), _unique("P")
    before = queued.summary()
    validate.validate_time_entries([_entry(ACCEPTED, worker_id=worker, project_id=project) for _ in range(3)]
                                   + [_entry(ACCEPTED, worker_id=worker)])
    after = queued.summary()
    mine = {(g.code, g.project_id, g.customer_id): g.open for g in after.groups if g.worker_id == worker}
    # The entry on P-100 fails twice (no such worker, so no assignment either): counted under each code.
    assert mine == {("REFERENCE_DATA_MISSING", project, ""): 3, ("REFERENCE_DATA_MISSING", "P-100", ""): 1,
                    ("NO_ASSIGNMENT", "P-100", ""): 1}
    assert after.total_open == before.total_open + 4
    assert after.open_by_code["REFERENCE_DATA_MISSING"] == before.open_by_code.get("REFERENCE_DATA_MISSING", 0) + 4
    assert after.oldest_open_exception_id and after.oldest_open_age_seconds > 0
    oldest = queued.get(after.oldest_open_exception_id)
    assert oldest.status == "open" and oldest.first_seen == after.oldest_open_first_seen
    assert all(e.first_seen >= oldest.first_seen for e in queued.list_all(status="open"))


def test_a_waived_exception_stays_waived_when_the_item_comes_again(validate: ValidationClient,
                                                                    queued: ExceptionClient) -> None:
    entry = _entry(NO_ASSIGNMENT)
    validate.validate_time_entries([entry])
    opened = _only(queued, entry["entry_id"])
    waived = queued.waive(opened.exception_id, "  W-2 works on P-300 under a side letter; accepted by finance  ")
    assert (waived.status, waived.waived_by, waived.waive_reason) == \
        ("waived", "anonymous", "W-2 works on P-300 under a side letter; accepted by finance")
    assert waived.waived_at >= waived.last_seen
    validate.validate_time_entries([entry])  # failing again: what was waived
    seen = queued.get(opened.exception_id)
    assert (seen.status, seen.times_seen, seen.waive_reason) == ("waived", 2, waived.waive_reason)
    assert seen.last_seen > waived.last_seen
    validate.validate_time_entries([{**entry, "project_id": "P-100", "role_code": "DEV"}])
    assert queued.get(opened.exception_id).status == "waived"  # a waiver is not undone by a pass either
    assert opened.exception_id not in {e.exception_id for e in queued.list_all(status="open")}
    with pytest.raises(grpc.RpcError) as refused:
        queued.waive(opened.exception_id, "again")
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(refused.value)
    assert (info.reason, info.metadata["status"], info.metadata["exception_id"]) == \
        ("EXCEPTION_NOT_OPEN", "waived", opened.exception_id)


def test_concurrent_calls_on_one_item_lose_no_update(validate: ValidationClient, queued: ExceptionClient,
                                                     target: str) -> None:
    entry = _entry(NO_ASSIGNMENT)
    failures: list[BaseException] = []

    def send() -> None:
        try:
            with ValidationClient(target, timeout=60) as client:
                for _ in range(3):
                    client.validate_time_entries([entry, _entry(NO_ASSIGNMENT)])
        except BaseException as error:  # every failure is reported by the assertion
            failures.append(error)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert _only(queued, entry["entry_id"]).times_seen == 18


def test_concurrent_batches_failing_and_passing_the_same_items_crosswise_neither_deadlock_nor_lose_counts(
        queued: ExceptionClient, target: str) -> None:
    """Batches fail the Xs and pass the Ys while others fail the Ys and pass the Xs. Each batch locks all its rows
    first, in one order, which rules a deadlock out; this checks that no call fails and no count is lost (it
    cannot force the interleaving a deadlock needs)."""
    # 80 quarter hours of W-1 on one day: within the daily limit, so each passes unless its project is unknown.
    xs, ys = ([_entry(ACCEPTED, hours="0.25", billable="false") for _ in range(40)] for _ in range(2))
    project = {"project_id": _unique("P")}
    failures: list[BaseException] = []

    def send(batch: list[dict[str, Any]]) -> None:
        try:
            with ValidationClient(target, timeout=60) as client:
                for _ in range(5):
                    client.validate_time_entries(batch)
        except BaseException as error:  # every failure is reported by the assertion
            failures.append(error)

    crosswise = ([{**x, **project} for x in xs] + ys, [{**y, **project} for y in ys] + xs)
    threads = [threading.Thread(target=send, args=(crosswise[n % 2],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for item in (xs[0], xs[-1], ys[0], ys[-1]):
        assert _only(queued, item["entry_id"], status="").times_seen == 10  # failed in 2 threads x 5 batches


def test_a_batch_costs_a_few_statements_whatever_its_rejections(server: RunningServer,
                                                                 validate: ValidationClient) -> None:
    assert server.ledger is not None
    statements: list[str] = []

    def count(_connection: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    # Three that pass (W-1's daily hours allow three 8-hour entries), then 1,997 of workers no one knows, rejected.
    entries = [_entry(ACCEPTED) for _ in range(3)] + [_entry(ACCEPTED, worker_id=_unique("W")) for _ in range(1_997)]
    event.listen(server.ledger.engine, "before_cursor_execute", count)
    try:
        decided = validate.validate_time_entries(entries)
    finally:
        event.remove(server.ledger.engine, "before_cursor_execute", count)
    assert [d.outcome.value for d in decided.decisions[:3]] == ["accept"] * 3
    assert all(d.outcome.value == "reject" for d in decided.decisions[3:])
    on_exceptions = [s for s in statements if "exceptions" in s]
    # One look-up (and lock) of the items' exceptions, one upsert (one executemany on SQLite, one INSERT ... SELECT
    # on PostgreSQL); nothing to resolve.
    assert [s.lstrip().split()[0] for s in on_exceptions] == ["SELECT", "INSERT"], on_exceptions


def test_an_item_with_an_unreadable_id_or_a_nul_in_a_reference_costs_only_itself(
        validate: ValidationClient, queued: ExceptionClient) -> None:
    worker = _unique("W")
    nul_worker = _entry(ACCEPTED, project_id=_unique("P"), worker_id="W-1\x00")
    unnamed = _entry(ACCEPTED, entry_id="TE-\x00", worker_id=worker)
    plain = _entry(ACCEPTED, worker_id=worker)
    decided = validate.validate_time_entries([nul_worker, unnamed, plain])
    assert [d.outcome.value for d in decided.decisions] == ["reject", "reject", "reject"]
    [kept] = [e for e in queued.list_all(code="INVALID_FIELD") if e.item_id == nul_worker["entry_id"]]
    assert kept.worker_id == "" and kept.project_id == nul_worker["project_id"]  # the NUL'd id left out, not mangled
    # "(item 2)" is a position, not an item: no exception under that name for this batch.
    assert {e.item_id for e in queued.list_all(worker_id=worker)} == {plain["entry_id"]}
    assert all(e.batch_id != decided.batch_ids[0] for e in queued.list_all(status="") if e.item_id == "(item 2)")


# ---------------------------------------------------------------------------------------------------
# Hostile requests: each refused naming its field, nothing changed


@pytest.mark.parametrize(("filters", "field"), [
    ({"status": "bogus"}, "filter.status"),
    ({"status": "OPEN"}, "filter.status"),
    ({"since": "yesterday"}, "filter.since"),
    ({"since": "2026-13-01"}, "filter.since"),
    ({"since": "2026-11-01T09:00:00"}, "filter.since"),  # no offset: which 9 o'clock?
    ({"since": "2" * 5000}, "filter.since"),
    ({"code": "NO ASSIGNMENT"}, "filter.code"),
    ({"code": "C" * 129}, "filter.code"),
    ({"rule_id": "BE-4\x00"}, "filter.rule_id"),
    ({"project_id": "P-1\n"}, "filter.project_id"),
    ({"worker_id": "W" * 257}, "filter.worker_id"),
    ({"customer_id": "CU-\u202e"}, "filter.customer_id"),
])
def test_a_bad_filter_is_refused_naming_its_field(queued: ExceptionClient, filters: dict[str, str],
                                                   field: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        queued.list(**filters)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(refused.value) == field
    with pytest.raises(grpc.RpcError) as revalidating:
        queued.revalidate(**filters)
    assert bad_request_field(revalidating.value) == field


@pytest.mark.parametrize("token", ["garbage", "!!!", "eyJhZnRlciI6IC0xfQ==", "e30=", "bnVsbA==", "\u00e9",
                                   "eyJhZnRlciI6IHRydWUsICJmaWx0ZXIiOiAiIn0=", "x" * 10_000])
def test_a_page_token_not_given_by_the_server_is_refused(queued: ExceptionClient, token: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        queued.list(page_token=token)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(refused.value) == "page_token"


def test_page_sizes(queued: ExceptionClient) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        queued.list(page_size=-1)
    assert bad_request_field(refused.value) == "page_size"
    assert len(queued.list(page_size=1_000_000).exceptions) <= 1000  # larger is taken as the largest


def test_revalidate_takes_only_open_exceptions(queued: ExceptionClient) -> None:
    for status in ("resolved", "waived"):
        with pytest.raises(grpc.RpcError) as refused:
            queued.revalidate(status=status)
        assert bad_request_field(refused.value) == "filter.status"


@pytest.mark.parametrize("reason", ["", "   ", "x" * 1001, "ok\x00", "two\nlines", "bidi \u202e override", "\t"])
def test_a_waiver_without_a_proper_reason_is_refused_and_changes_nothing(
        validate: ValidationClient, queued: ExceptionClient, reason: str) -> None:
    entry = _entry(NO_ASSIGNMENT)
    validate.validate_time_entries([entry])
    opened = _only(queued, entry["entry_id"])
    with pytest.raises(grpc.RpcError) as refused:
        queued.waive(opened.exception_id, reason)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(refused.value) == "reason"
    assert queued.get(opened.exception_id).status == "open"


@pytest.mark.parametrize(("exception_id", "code"), [
    ("999999999", grpc.StatusCode.NOT_FOUND), ("0", grpc.StatusCode.NOT_FOUND),
    ("abc", grpc.StatusCode.INVALID_ARGUMENT), ("", grpc.StatusCode.INVALID_ARGUMENT),
    ("-1", grpc.StatusCode.INVALID_ARGUMENT), ("9" * 19, grpc.StatusCode.INVALID_ARGUMENT),
    ("1 OR 1=1", grpc.StatusCode.INVALID_ARGUMENT), ("\u0661", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_an_unknown_or_malformed_exception_id(queued: ExceptionClient, exception_id: str,
                                              code: grpc.StatusCode) -> None:
    for call in (lambda: queued.get(exception_id), lambda: queued.waive(exception_id, "a reason")):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() is code
        if code is grpc.StatusCode.NOT_FOUND:
            info = error_info(refused.value)
            assert (info.reason, info.domain, info.metadata["exception_id"]) == \
                ("EXCEPTION_NOT_FOUND", "tollgate", exception_id)
        else:
            assert bad_request_field(refused.value) == "exception_id"


# ---------------------------------------------------------------------------------------------------
# The CLI


def test_the_cli_lists_shows_summarises_and_waives(validate: ValidationClient, target: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``tollgate exceptions`` as a user types it (its main(), in this process: a process per command costs
    seconds on this machine; tests/test_cli.py runs the command as a process of its own)."""

    def tollgate(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()  # what the server printed before
        with structlog.testing.capture_logs():  # the server's log lines, printed in this process, kept apart
            code = main(["exceptions", *args, "--server", target])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    worker = _unique("W")
    entry = _entry(ACCEPTED, worker_id=worker)
    validate.validate_time_entries([entry])
    code, out, err = tollgate("list", "--worker", worker, "--format", "json")
    assert code == 0, err
    [document] = json.loads(out)
    assert (document["item_id"], document["status"], document["codes"]) == \
        (entry["entry_id"], "open", ["REFERENCE_DATA_MISSING", "NO_ASSIGNMENT"])
    code, out, _ = tollgate("list", "--worker", worker)
    assert code == 0 and entry["entry_id"] in out and "1 exception(s)" in out
    code, out, _ = tollgate("show", document["exception_id"])
    assert code == 0 and "REFERENCE_DATA_MISSING" in out and worker in out
    code, out, _ = tollgate("summary")
    assert code == 0 and worker in out and "oldest open" in out
    code, out, _ = tollgate("waive", document["exception_id"], "--reason", "contractor")
    assert code == 0 and "waived by anonymous" in out
    code, _, err = tollgate("list", "--since", "soon")
    assert code == 2 and "filter.since" in err
    code, _, err = tollgate("show", "999999999")
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = tollgate("waive", "999999999", "--reason", "")
    assert code == 2 and "reason" in err


# ---------------------------------------------------------------------------------------------------
# Servers of their own: revalidation after a reference-data change, roles, the ledger off, the gauges


def test_revalidate_after_a_reference_data_change_resolves_those_that_now_pass(
        fresh_database: str, tmp_path: Path) -> None:
    refdata = tmp_path / "refdata"
    shutil.copytree(ROOT / "examples" / "refdata", refdata)
    # One item per request (max_batch_items 1): the revalidation is split the same way.
    running = _server(fresh_database, tmp_path / "data", max_batch_items=1, refdata=refdata)
    target = f"127.0.0.1:{running.port}"
    try:
        with ValidationClient(target, timeout=30, chunk_size=1) as client, ExceptionClient(target) as queued:
            worker = _unique("W")
            fixable, hopeless = _entry(NO_ASSIGNMENT), _entry(NOT_A_NUMBER)
            invoice = {**PERIOD_CLOSED_INVOICE, "invoice_id": _unique("INV"),
                       "lines": [{**PERIOD_CLOSED_INVOICE["lines"][0], "line_id": _unique("L")}]}
            unknown = _entry(ACCEPTED, worker_id=worker)
            no_receipt = {**EXPENSES["EX-1005"], "expense_id": _unique("EX")}  # RECEIPT_REQUIRED
            client.validate_time_entries([fixable, hopeless, unknown])
            client.validate_invoices([invoice])
            client.validate_expense_lines([no_receipt])
            ours = {fixable["entry_id"], hopeless["entry_id"], unknown["entry_id"], invoice["lines"][0]["line_id"],
                    no_receipt["expense_id"]}
            before = {e.item_id: e for e in queued.list_all() if e.item_id in ours}
            assert set(before) == ours

            # The steward adds the missing assignment and loads the changed export.
            with (refdata / "assignments.csv").open("a") as assignments:
                assignments.write("A-99,W-2,P-300,ANALYST,2026-03-01,2026-12-31,\n")
            with RefDataClient(target) as loads:
                loads.load_directory(refdata)
            answer = queued.revalidate(code="NO_ASSIGNMENT", worker_id="W-2")
            assert (answer.re_decided, answer.resolved, answer.still_open, answer.not_rebuilt) == (1, 1, 0, 0)
            resolved = queued.get(before[fixable["entry_id"]].exception_id)
            assert resolved.status == "resolved" and resolved.resolved_batch_id in answer.batch_ids

            everything = queued.revalidate()
            assert (everything.re_decided, everything.resolved, everything.still_open) == (4, 0, 4)
            assert len(everything.batch_ids) == 4  # at most max_batch_items (1) each
            for item_id in ours - {fixable["entry_id"]}:
                after = queued.get(before[item_id].exception_id)
                assert (after.status, after.times_seen) == ("open", 2), item_id
                assert after.batch_id in everything.batch_ids
            line = queued.get(before[invoice["lines"][0]["line_id"]].exception_id)
            assert json.loads(line.input_json)["invoice"]["invoice_id"] == invoice["invoice_id"]
            assert "PERIOD_NOT_OPEN" in line.codes
    finally:
        running.stop()


def test_a_recorded_input_that_no_longer_makes_an_item_costs_only_itself() -> None:
    """A field whose type changed in the contract since it was recorded (here: hours as a list) is left out."""
    found = [(1, "time_entry", {"entry_id": "TE-1", "hours": ["8"]}),
             (2, "time_entry", {"entry_id": "TE-2", "hours": "8", "field_of_a_newer_client": "x"}),
             (3, "invoice_line", {"line_id": "L-1", "invoice": {"invoice_id": "INV-1"}}),
             (4, "invoice_line", {"line_id": "L-2", "invoice": {"invoice_id": "INV-1", "currency": "USD"}}),
             (5, "invoice_line", {"line_id": "L-3"}),  # no header: not a line of any invoice
             (6, "expense_line", {"expense_id": "EX-1", "amount": {"value": "1"}})]
    requests, rebuilt, not_rebuilt = revalidation_requests(found)
    assert (rebuilt, not_rebuilt) == ([2, 3, 4], 3)
    by_kind = dict(requests)
    assert [e.entry_id for e in by_kind["time_entry"].entries] == ["TE-2"]
    [invoice] = by_kind["invoice_line"].invoices
    assert (invoice.invoice_id, [line.line_id for line in invoice.lines]) == ("INV-1", ["L-1", "L-2"])
    assert "expense_line" not in by_kind


def test_waive_needs_the_approver_role_and_revalidate_the_operator(tmp_path: Path) -> None:
    identities = Identities.make(tmp_path)
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, identities_file=identities.path,
                             data_dir=tmp_path / "data"))
    target = f"127.0.0.1:{running.port}"

    def as_role(role: Role) -> ExceptionClient:
        return ExceptionClient(target, timeout=30, security=ChannelSecurity(token=identities.tokens[role]))

    try:
        entry = _entry(NO_ASSIGNMENT)
        with ValidationClient(target, timeout=30, security=ChannelSecurity(token=identities.tokens[Role.CALLER])) \
                as client:
            client.validate_time_entries([entry])
        with as_role(Role.AUDITOR) as auditor:
            opened = _only(auditor, entry["entry_id"])
            assert auditor.summary().total_open >= 1
        for role in (Role.CALLER, Role.AUDITOR, Role.OPERATOR, Role.READER):
            with as_role(role) as refused_client, pytest.raises(grpc.RpcError) as refused:
                refused_client.waive(opened.exception_id, "not mine to waive")
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED, role
            assert error_info(refused.value).metadata["role_required"] == "approver"
        for role in (Role.CALLER, Role.APPROVER):
            with as_role(role) as refused_client, pytest.raises(grpc.RpcError) as refused:
                refused_client.list()
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with as_role(Role.APPROVER) as approver:
            waived = approver.waive(opened.exception_id, "billed by hand")
        assert (waived.status, waived.waived_by) == ("waived", "as-approver")
        with as_role(Role.AUDITOR) as auditor, pytest.raises(grpc.RpcError) as refused:
            auditor.revalidate()
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with as_role(Role.OPERATOR) as operator:
            assert operator.revalidate().re_decided == 0  # the only exception is waived
    finally:
        running.stop()


def test_with_the_ledger_off_every_method_says_so(tmp_path: Path) -> None:
    running = start(Settings(port=0, threads=1, shutdown_grace_seconds=1, ledger=False, data_dir=tmp_path))
    try:
        with ExceptionClient(f"127.0.0.1:{running.port}", timeout=10) as queued:
            for call in (queued.list, lambda: queued.get("1"), queued.summary, lambda: queued.waive("1", "why"),
                         queued.revalidate):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
                assert "ledger is off" in refused.value.details()
                assert error_info(refused.value).reason == "LEDGER_OFF"
    finally:
        running.stop()


def test_the_gauges_count_open_exceptions_by_code_and_the_oldest_ones_age(fresh_database: str,
                                                                          tmp_path: Path) -> None:
    port = free_port()
    running = _server(fresh_database, tmp_path / "data", metrics_port=port)
    target = f"127.0.0.1:{running.port}"
    try:
        with ValidationClient(target, timeout=30) as client:
            client.validate_time_entries([_entry(NO_ASSIGNMENT), _entry(NO_ASSIGNMENT), _entry(HELD)])
            time.sleep(0.05)
            first = scrape(port)
            assert value(first, "tollgate_exceptions_open", code="NO_ASSIGNMENT") == 2
            assert value(first, "tollgate_exceptions_open", code="NO_CONTRACT_HOLD") == 1
            assert value(first, "tollgate_exceptions_open_items") == 3
            assert value(first, "tollgate_exceptions_oldest_open_age_seconds") > 0
            client.validate_time_entries([_entry(NO_ASSIGNMENT)])
            # Read from the database at most every few seconds, whatever the scrapes: the same count, an older age.
            second = scrape(port)
            assert value(second, "tollgate_exceptions_open", code="NO_ASSIGNMENT") == \
                value(first, "tollgate_exceptions_open", code="NO_ASSIGNMENT")
            assert value(second, "tollgate_exceptions_oldest_open_age_seconds") > \
                value(first, "tollgate_exceptions_oldest_open_age_seconds")
    finally:
        running.stop()
    assert ("tollgate_exceptions_open_items", frozenset()) not in _collected(ExceptionGauges(0))  # following none


def test_only_worker_0_reports_the_gauges(tmp_path: Path) -> None:
    """The queue is every worker's (one ledger): a second worker's metrics leave it out, so sums stay right."""
    port = free_port()  # worker i serves its metrics on metrics_port + i
    running = start(Settings(port=0, threads=1, shutdown_grace_seconds=1, data_dir=tmp_path, metrics_port=port - 1,
                             worker_index=1, worker_group=2))
    try:
        with ValidationClient(f"127.0.0.1:{running.port}", timeout=30) as client:
            client.validate_time_entries([_entry(NO_ASSIGNMENT)])
        samples = scrape(port)
        assert ("tollgate_decisions_total", frozenset({("kind", "time_entry"), ("outcome", "reject")})) in samples
        assert not [name for name, _labels in samples if name.startswith("tollgate_exceptions")]
    finally:
        running.stop()


def test_the_gauges_read_again_once_their_cache_is_old(database: str, server: RunningServer,
                                                       validate: ValidationClient) -> None:
    assert server.ledger is not None
    engine = server.ledger.engine
    # long enough for one call on a loaded machine (0.2 s was not, in CI), short enough to wait out
    gauges = ExceptionGauges(cache_seconds=2.0)
    gauges.follow(lambda: queue.summary(engine))
    read_at = time.monotonic()
    before = _collected(gauges)[("tollgate_exceptions_open_items", frozenset())]
    validate.validate_time_entries([_entry(NO_ASSIGNMENT)])
    if time.monotonic() - read_at < 1.5:  # (with room before the cache runs out)
        assert _collected(gauges)[("tollgate_exceptions_open_items", frozenset())] == before  # cached
    time.sleep(max(0.0, read_at + 2.05 - time.monotonic()))
    assert _collected(gauges)[("tollgate_exceptions_open_items", frozenset())] == before + 1


def _collected(gauges: ExceptionGauges) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in gauges.collect() for sample in family.samples}
