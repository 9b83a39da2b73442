"""The decision ledger through the real server and client, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, func, inspect, select

from tests.conftest import ROOT, SAMPLE_TIMESHEET, TOLLGATE, run_cli
from tests.ledger_support import BACKENDS, ledger_database
from tests.status_support import bad_request_field, error_info
from tollgate.api.v1 import validation_pb2 as pb
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc
from tollgate.clients.cli import read_items
from tollgate.clients.client import ValidationClient, time_entry_message
from tollgate.ledger.schema import batches, decisions, ruleset_sources
from tollgate.ledger.store import MIGRATIONS, connect, migrate, open_database
from tollgate.rules.typecheck import compile_ruleset
from tollgate.server.app import RunningServer, start
from tollgate.server.settings import Settings

ENTRIES = read_items(SAMPLE_TIMESHEET)


# One server per backend for the module (starting one compiles every ruleset); the tests that need a database of
# their own (migrations) make one.
@pytest.fixture(scope="module", params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ledger_database(request.param, tmp_path_factory.mktemp("ledger")) as url:
        yield url


@pytest.fixture(scope="module")
def ledger_server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, database_url=database,
                             data_dir=tmp_path_factory.mktemp("data")))
    yield running
    running.stop()


@pytest.fixture(params=BACKENDS)
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with ledger_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def engine(database: str, ledger_server: RunningServer) -> Iterator[Engine]:
    reading = connect(database)
    yield reading
    reading.dispose()


def _stub(server: RunningServer) -> Iterator[pb_grpc.ValidationServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.ValidationServiceStub(channel)


@pytest.fixture
def stub(ledger_server: RunningServer) -> Iterator[pb_grpc.ValidationServiceStub]:
    yield from _stub(ledger_server)


def _validate(stub: pb_grpc.ValidationServiceStub, entries: list[dict[str, Any]], request_id: str = "",
              correlation_id: str = "corr-1") -> pb.ValidationResponse:
    messages = [time_entry_message(entry, position) for position, entry in enumerate(entries, start=1)]
    response: pb.ValidationResponse = stub.ValidateTimeEntries(
        pb.ValidateTimeEntriesRequest(entries=messages, request_id=request_id), timeout=30,
        metadata=(("x-correlation-id", correlation_id),))
    return response


def _rows(engine: Engine, table: Any, *where: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(table).where(*where)))


def test_a_validate_call_is_recorded_before_it_is_answered(stub: pb_grpc.ValidationServiceStub,
                                                           engine: Engine) -> None:
    response = _validate(stub, ENTRIES, request_id="req-42", correlation_id="corr-42")
    assert response.batch_id
    [batch] = _rows(engine, batches, batches.c.batch_id == response.batch_id)
    assert (batch.request_id, batch.correlation_id, batch.caller, batch.item_kind) == \
        ("req-42", "corr-42", "anonymous", "time_entry")
    assert batch.snapshot_id == response.provenance.snapshot_id
    assert (batch.total, batch.accepted, batch.enriched, batch.rejected) == (
        response.summary.total, response.summary.accepted, response.summary.enriched, response.summary.rejected)
    assert batch.received_at <= batch.answered_at
    rulesets = json.loads(batch.rulesets)
    assert [(r["id"], r["version"]) for r in rulesets] == [(r.id, r.version) for r in response.provenance.rulesets]
    assert all(len(r["digest"]) == 64 for r in rulesets)
    rows = sorted(_rows(engine, decisions, decisions.c.batch_id == response.batch_id), key=lambda r: r.position)
    assert [r.item_id for r in rows] == [d.item_id for d in response.decisions]
    outcomes = {pb.ACCEPT: "accept", pb.ENRICH: "enrich", pb.REJECT: "reject"}
    assert [r.outcome for r in rows] == [outcomes[d.outcome] for d in response.decisions]
    for row, answered, sent in zip(rows, response.decisions, ENTRIES, strict=True):
        assert [r["code"] for r in json.loads(row.reasons)] == [r.code for r in answered.reasons]
        assert [(e["field"], e["new_value"]) for e in json.loads(row.enrichments)] == \
            [(e.field, e.new_value if e.HasField("new_value") else None) for e in answered.enrichments]
        received = json.loads(row.input)
        assert received == {k: v for k, v in sent.items() if k != "custom"} | (
            {"custom": sent["custom"]} if "custom" in sent else {})


def test_each_stream_chunk_is_a_batch_of_its_own(ledger_server: RunningServer, engine: Engine) -> None:
    with ValidationClient(f"127.0.0.1:{ledger_server.port}", timeout=30, chunk_size=10) as client:
        result = client.validate_time_entries(ENTRIES, correlation_id="corr-stream")
    rows = _rows(engine, batches, batches.c.correlation_id == "corr-stream")
    assert len(rows) >= 3
    assert len({r.batch_id for r in rows}) == len(rows)
    assert set(result.batch_ids) == {r.batch_id for r in rows} and len(result.batch_ids) == len(rows)
    assert sum(r.total for r in rows) == len(result.decisions) == len(ENTRIES)
    with engine.connect() as connection:
        recorded = connection.execute(select(func.count()).select_from(decisions).where(
            decisions.c.batch_id.in_([r.batch_id for r in rows]))).scalar_one()
    assert recorded == len(ENTRIES)


def test_ruleset_sources_are_kept_once_by_digest_and_compile_again(stub: pb_grpc.ValidationServiceStub,
                                                                   engine: Engine, tmp_path: Path) -> None:
    def stored() -> int:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(ruleset_sources)).scalar_one())

    first = _validate(stub, ENTRIES[:3])
    before = stored()
    _validate(stub, ENTRIES[3:6])
    assert stored() == before  # each source stored once, whatever the number of calls
    [batch] = _rows(engine, batches, batches.c.batch_id == first.batch_id)
    named = json.loads(batch.rulesets)
    sources = {row.digest: row for row in _rows(engine, ruleset_sources)}
    assert {r["digest"] for r in named} <= set(sources)
    for ruleset in named:
        kept = sources[ruleset["digest"]]
        copy = tmp_path / "again" / f"{ruleset['id']}.yaml"
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(kept.source, encoding="utf-8")
        compiled = compile_ruleset(copy)
        assert (compiled.id, compiled.version) == (ruleset["id"], ruleset["version"])


def test_audit_show_and_batch_print_what_was_recorded(stub: pb_grpc.ValidationServiceStub,
                                                      ledger_server: RunningServer) -> None:
    server = ("--server", f"127.0.0.1:{ledger_server.port}")
    response = _validate(stub, ENTRIES, request_id="req-audit", correlation_id="corr-audit")
    rejected = next(d for d in response.decisions if d.outcome == pb.REJECT)
    shown = run_cli("audit", "show", rejected.item_id, "--kind", "time_entry", *server)
    assert shown.returncode == 0, shown.stderr
    assert response.batch_id in shown.stdout and "req-audit" in shown.stdout and "corr-audit" in shown.stdout
    assert "anonymous" in shown.stdout and "reject" in shown.stdout
    assert rejected.reasons[0].code in shown.stdout and response.provenance.snapshot_id in shown.stdout
    assert f"{response.provenance.rulesets[0].id}@{response.provenance.rulesets[0].version}" in shown.stdout
    as_json = run_cli("audit", "show", rejected.item_id, *server, "--format", "json")
    documents = json.loads(as_json.stdout)  # every decision on the item (other tests decide it too), oldest first
    [decision] = [d for d in documents if d["batch"]["batch_id"] == response.batch_id]
    assert documents[-1] == decision
    assert [r["code"] for r in decision["reasons"]] == [r.code for r in rejected.reasons]
    assert all(len(r["digest"]) == 64 for r in decision["batch"]["rulesets"])
    whole = run_cli("audit", "batch", response.batch_id, *server, "--format", "json")
    assert whole.returncode == 0, whole.stderr
    document = json.loads(whole.stdout)
    assert [d["item_id"] for d in document["decisions"]] == [d.item_id for d in response.decisions]
    assert document["request_id"] == "req-audit" and document["counts"]["total"] == len(ENTRIES)
    table = run_cli("audit", "batch", response.batch_id, *server)
    assert table.returncode == 0 and rejected.item_id in table.stdout and response.batch_id in table.stdout
    missing = run_cli("audit", "batch", "00000000-0000-4000-8000-000000000000", *server)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    garbage = run_cli("audit", "batch", "no-such-batch", *server)
    assert garbage.returncode == 2 and "batch_id" in garbage.stderr


def _head() -> str:
    """The newest revision in ledger/migrations."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def test_migrations_run_on_an_empty_database_and_again_on_restart(fresh_database: str, tmp_path: Path) -> None:
    database = fresh_database
    first = open_database(connect(database).url)
    try:
        tables = set(inspect(first).get_table_names())
        assert {"batches", "decisions", "ruleset_sources", "consumption", "account_keys", "requests",
                "exceptions", "alembic_version"} <= tables
        migrate(first)  # a restart: nothing to do, nothing lost
        head = _head()
        with first.connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [head]
    finally:
        first.dispose()
    again = start(Settings(port=0, threads=1, shutdown_grace_seconds=1, database_url=database,
                           data_dir=tmp_path / "data"))
    again.stop()


def test_a_database_that_refuses_connections_fails_the_call_unavailable(
        ledger_server: RunningServer, stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    assert ledger_server.ledger is not None
    working, spool = ledger_server.ledger.engine, ledger_server.ledger.spool
    # The database goes away (nothing listens on port 1), with no spool to keep the call (tests/test_spool.py: with).
    ledger_server.ledger.engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test",
                                                connect_args={"connect_timeout": 2})
    ledger_server.ledger.spool = None
    try:
        with pytest.raises(grpc.RpcError) as raised:
            _validate(stub, ENTRIES[:5], correlation_id="corr-down")
    finally:
        ledger_server.ledger.engine.dispose()
        ledger_server.ledger.engine, ledger_server.ledger.spool = working, spool
    error = raised.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(error)
    assert info.reason == "LEDGER_UNAVAILABLE" and info.metadata["correlation_id"] == "corr-down"
    assert _rows(engine, batches, batches.c.correlation_id == "corr-down") == []
    assert _validate(stub, ENTRIES[:1]).batch_id  # back once the database is


def test_hostile_values_are_stored_and_shown_exactly(stub: pb_grpc.ValidationServiceStub, engine: Engine,
                                                     ledger_server: RunningServer) -> None:
    server = ("--server", f"127.0.0.1:{ledger_server.port}")
    hostile_ids = ["TE-'quoted\"; DROP TABLE decisions; --", "TE-ünïcødé-日本-😀", "T" * 256]
    free_text = ("ref \"'\\ % _ \u0000-free " * 200)[:4000].replace("\u0000", "")
    free_text = (free_text + "x" * 4000)[:4000]
    entries = [{**ENTRIES[0], "entry_id": item_id, "source_ref": free_text} for item_id in hostile_ids]
    response = _validate(stub, entries)
    assert [d.item_id for d in response.decisions] == hostile_ids
    rows = sorted(_rows(engine, decisions, decisions.c.batch_id == response.batch_id), key=lambda r: r.position)
    assert [r.item_id for r in rows] == hostile_ids
    assert all(json.loads(r.input)["source_ref"] == free_text for r in rows)
    for item_id in hostile_ids:
        shown = run_cli("audit", "show", item_id, *server, "--format", "json")
        assert shown.returncode == 0, shown.stderr
        [decision] = json.loads(shown.stdout)
        assert decision["item_id"] == item_id and decision["input"]["source_ref"] == free_text
    table = run_cli("audit", "show", hostile_ids[1], *server)
    assert hostile_ids[1] in table.stdout


def test_a_database_url_of_another_scheme_refuses_to_start_naming_the_setting(tmp_path: Path) -> None:
    completed = subprocess.run([*TOLLGATE, "serve", "--port", "0", "--workers", "1", "--data-dir", str(tmp_path),
                                "--database-url", "mysql://admin:s3cret-pw@db.example/ledger"],
                               capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output
    assert "database_url" in output and "mysql" in output
    assert "s3cret-pw" not in output


def test_two_workers_starting_at_once_migrate_one_after_the_other(fresh_database: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        engines = list(pool.map(lambda _: open_database(connect(fresh_database).url), range(4)))
    try:
        with engines[0].connect() as connection:
            assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [_head()]
    finally:
        for opened in engines:
            opened.dispose()


def test_an_invoice_line_is_recorded_with_its_invoice_header(stub: pb_grpc.ValidationServiceStub,
                                                             engine: Engine) -> None:
    from tollgate.clients.client import invoice_message

    [invoice] = [json.loads(line) for line in (ROOT / "examples" / "invoices-2026-11.jsonl").read_text().splitlines()
                 if line.strip()][:1]
    response = stub.ValidateInvoices(pb.ValidateInvoicesRequest(invoices=[invoice_message(invoice, 1)],
                                                                request_id="inv-req"), timeout=30)
    [batch] = _rows(engine, batches, batches.c.batch_id == response.batch_id)
    assert (batch.item_kind, batch.request_id, batch.total) == ("invoice_line", "inv-req", len(invoice["lines"]))
    rows = sorted(_rows(engine, decisions, decisions.c.batch_id == response.batch_id), key=lambda r: r.position)
    first = json.loads(rows[0].input)
    assert first["line_id"] == invoice["lines"][0]["line_id"]
    assert first["invoice"]["invoice_id"] == invoice["invoice_id"] and "lines" not in first["invoice"]


@pytest.mark.parametrize("request_id", ["x" * 129, "a b", "id\n", "ünïcødé", "\x00", "1e5 "])
def test_a_request_id_that_is_not_one_is_refused_naming_the_field(stub: pb_grpc.ValidationServiceStub,
                                                                   engine: Engine, request_id: str) -> None:
    request = pb.ValidateTimeEntriesRequest(entries=[time_entry_message(ENTRIES[0], 1)], request_id=request_id)
    before = _count(engine, batches)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ValidateTimeEntries(request, timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(refused.value) == "request_id"
    assert _count(engine, batches) == before  # nothing recorded


def test_a_request_id_is_recorded_as_sent(stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    request_id = "3f0c9a4e-7b1d-4e8a-9c2f-0d6b5a4e3c21"
    request = pb.ValidateTimeEntriesRequest(entries=[time_entry_message(ENTRIES[0], 1)], request_id=request_id)
    response = stub.ValidateTimeEntries(request, timeout=10)
    [batch] = _rows(engine, batches, batches.c.batch_id == response.batch_id)
    assert batch.request_id == request_id


def test_an_item_id_with_a_nul_costs_only_its_item(stub: pb_grpc.ValidationServiceStub, engine: Engine) -> None:
    """PostgreSQL's text cannot hold NUL: a hostile id is rejected alone, and the call recorded all the same."""
    entries = [{**ENTRIES[0], "entry_id": "TE-\x00-nul"}, {**ENTRIES[1], "entry_id": "TE-after-nul"}]
    response = _validate(stub, entries)
    # The id cannot be read, so the decision names the item by its position (the wire grammar's rule).
    assert [d.item_id for d in response.decisions] == ["(item 1)", "TE-after-nul"]
    assert response.decisions[0].outcome == pb.REJECT
    assert [r.field for r in response.decisions[0].reasons if r.code == "INVALID_FIELD"] == ["entry_id"]
    assert not any(r.code == "INVALID_FIELD" for r in response.decisions[1].reasons)
    rows = sorted(_rows(engine, decisions, decisions.c.batch_id == response.batch_id), key=lambda r: r.position)
    assert [r.item_id for r in rows] == ["(item 1)", "TE-after-nul"]
    assert json.loads(rows[0].input)["entry_id"] == "TE-\x00-nul"  # the input kept as received


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())
