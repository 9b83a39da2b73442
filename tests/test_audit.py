"""The AuditService through the real server and client (and the `tollgate audit` commands), on SQLite and PostgreSQL:
history, batches, masked exports read back, replays, purges and retention, masking keys, roles."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pyarrow.parquet as pq
import pytest
import structlog
from pydantic import ValidationError
from sqlalchemy import Engine, insert, select, update

from tests.auth_support import Identities, bearer
from tests.conftest import ROOT, SAMPLE_TIMESHEET, run_cli
from tests.ledger_support import BACKENDS, ledger_database
from tests.status_support import bad_request_field, error_info
from tollgate.api.v1 import audit_pb2, audit_pb2_grpc
from tollgate.clients.channel import ChannelSecurity
from tollgate.clients.cli import read_items
from tollgate.clients.client import AdminClient, AuditClient, RefDataClient, ValidationClient
from tollgate.ledger import retention
from tollgate.ledger.schema import batches, decisions, ruleset_sources
from tollgate.ledger.store import connect
from tollgate.rules.problems import ProblemsError
from tollgate.server.app import RunningServer, start
from tollgate.server.logs import MaskPersonalFields
from tollgate.server.masking import masking_policy
from tollgate.server.roles import Role
from tollgate.server.settings import Settings

ENTRIES = read_items(SAMPLE_TIMESHEET)
EXPENSES = read_items(ROOT / "examples" / "expense-report-2026-11.csv")
INVOICES = [json.loads(line) for line in (ROOT / "examples" / "invoices-2026-11.jsonl").read_text().splitlines()
            if line.strip()]
KEY = b"test-masking-key-0123456789abcdef"
MASKED = "purpose,attendees,custom.employee_ssn"
RETENTION_DAYS = 400


def _token(value: str) -> str:
    return "hmac:" + hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.fixture(scope="module", params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ledger_database(request.param, tmp_path_factory.mktemp("ledger")) as url:
        yield url


@pytest.fixture(scope="module")
def audited(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    """A server with a masking key, deciding with a copy of the bundled rulesets (which a test changes)."""
    work = tmp_path_factory.mktemp("audit")
    rulesets = work / "rulesets"
    shutil.copytree(ROOT / "rulesets", rulesets)
    key_file = work / "masking.key"
    key_file.write_bytes(KEY + b"\n")
    key_file.chmod(0o600)
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, database_url=database, data_dir=work,
                             rulesets=rulesets, masking_key_file=key_file, masked_fields=MASKED,
                             ledger_retention_days=RETENTION_DAYS))
    yield running, rulesets
    running.stop()


@pytest.fixture
def server(audited: tuple[RunningServer, Path]) -> RunningServer:
    return audited[0]


@pytest.fixture
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def audit(target: str) -> Iterator[AuditClient]:
    with AuditClient(target, timeout=60) as client:
        yield client


@pytest.fixture
def validation(target: str) -> Iterator[ValidationClient]:
    with ValidationClient(target, timeout=60) as client:
        yield client


@pytest.fixture
def engine(database: str, server: RunningServer) -> Iterator[Engine]:
    reading = connect(database)
    yield reading
    reading.dispose()


def _code(raised: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    code: grpc.StatusCode = raised.value.code()
    return code


# -- history and batches ----------------------------------------------------------------------------


def test_item_history_and_get_batch_show_what_was_recorded(validation: ValidationClient, audit: AuditClient) -> None:
    result = validation.validate_time_entries(ENTRIES, correlation_id="corr-history")
    [batch_id] = result.batch_ids
    rejected = next(d for d in result.decisions if d.outcome.value == "reject")
    history = audit.item_history(rejected.item_id, "time_entry")
    [mine] = [d for d in history if d["batch"]["batch_id"] == batch_id]
    assert mine["outcome"] == "reject" and [r["code"] for r in mine["reasons"]] == rejected.codes
    assert mine["input"]["entry_id"] == rejected.item_id  # the ledger keeps inputs whole
    assert mine["batch"]["correlation_id"] == "corr-history" and mine["batch"]["acceptance"] == "partial"
    assert audit.item_history(rejected.item_id, "expense_line") == []
    whole = audit.batch(batch_id)
    assert [d["item_id"] for d in whole["decisions"]] == [d.item_id for d in result.decisions]
    assert whole["counts"] == {"total": len(ENTRIES), "accepted": result.summary.accepted,
                               "enriched": result.summary.enriched, "rejected": result.summary.rejected}
    assert whole["answered_at"].endswith("+00:00")


def test_audit_show_and_batch_commands_go_through_the_server(validation: ValidationClient, target: str) -> None:
    result = validation.validate_time_entries(ENTRIES[:3], correlation_id="corr-cli")
    [batch_id] = result.batch_ids
    shown = run_cli("audit", "show", ENTRIES[0]["entry_id"], "--server", target, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert batch_id in {d["batch"]["batch_id"] for d in json.loads(shown.stdout)}
    table = run_cli("audit", "batch", batch_id, "--server", target)
    assert table.returncode == 0, table.stderr
    assert batch_id in table.stdout and "corr-cli" in table.stdout and ENTRIES[2]["entry_id"] in table.stdout
    missing = run_cli("audit", "batch", str(uuid.uuid4()), "--server", target)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


@pytest.mark.parametrize("batch_id", ["", "garbage", "x" * 100_000, "8B0C7E4A-1F2D-4E6A-9C3B-5D7E9F1A2B3C",
                                      "00000000-0000-0000-0000-000000000000; DROP TABLE batches"])
def test_a_batch_id_that_is_not_one_is_refused_naming_the_field(target: str, batch_id: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        for call in (lambda: stub.GetBatch(audit_pb2.GetBatchRequest(batch_id=batch_id), timeout=10),
                     lambda: stub.Replay(audit_pb2.ReplayRequest(batch_id=batch_id), timeout=10)):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert _code(refused) is grpc.StatusCode.INVALID_ARGUMENT
            assert bad_request_field(refused.value) == "batch_id"


@pytest.mark.parametrize(("item_id", "kind", "field"), [("", "", "item_id"), ("x" * 10_001, "", "item_id"),
                                                        ("TE-1", "invoice", "item_kind")])
def test_item_history_refuses_what_is_not_an_item(target: str, item_id: str, kind: str, field: str) -> None:
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
        audit_pb2_grpc.AuditServiceStub(channel).ItemHistory(
            audit_pb2.ItemHistoryRequest(item_id=item_id, item_kind=kind), timeout=10)
    assert _code(refused) is grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(refused.value) == field


# -- replay -------------------------------------------------------------------------------------------


def test_replay_is_identical_after_the_rulesets_on_disk_changed_and_a_newer_snapshot_came(
        audited: tuple[RunningServer, Path], validation: ValidationClient, audit: AuditClient, target: str) -> None:
    running, rulesets = audited
    before = validation.validate_time_entries(ENTRIES)
    [batch_id] = before.batch_ids
    status = rulesets / "time_entry" / "10-project-status.yaml"
    status.write_text(status.read_text().replace("charge the time to an open\n      project", "book it elsewhere"))
    with AdminClient(target) as admin:
        assert admin.reload().rulesets_reloaded
    projects = list(csv.DictReader((ROOT / "examples" / "refdata" / "projects.csv").open()))
    with RefDataClient(target) as refdata:
        changed = refdata.upsert("project", [{**p, "status": "ACTIVE"} for p in projects if p["project_id"] == "P-300"])
    assert running.runtime.generation.snapshot.snapshot_id != before.decisions[0].provenance.snapshot_id
    assert changed.snapshot.snapshot_id == running.runtime.generation.snapshot.snapshot_id
    now = validation.validate_time_entries(ENTRIES)
    def judged(result: Any) -> list[Any]:
        return [(d.outcome, d.reasons, d.enrichments) for d in result.decisions]

    assert judged(now) != judged(before)  # what decides has changed
    replayed = audit.replay(batch_id)
    assert replayed["identical"] is True and replayed["differences"] == []
    assert replayed["items"] == len(ENTRIES)
    assert replayed["snapshot_id"] == before.decisions[0].provenance.snapshot_id
    said = run_cli("audit", "replay", batch_id, "--server", target)
    assert said.returncode == 0 and "identical" in said.stdout, said.stdout + said.stderr


def test_a_tampered_decision_is_reported_as_a_difference(validation: ValidationClient, audit: AuditClient,
                                                         engine: Engine, target: str) -> None:
    result = validation.validate_time_entries(ENTRIES[:6])
    [batch_id] = result.batch_ids
    position = next(i for i, d in enumerate(result.decisions) if d.outcome.value != "reject")
    with engine.begin() as connection:
        connection.execute(update(decisions).where((decisions.c.batch_id == batch_id)
                                                   & (decisions.c.position == position)).values(outcome="reject"))
    replayed = audit.replay(batch_id)
    assert replayed["identical"] is False
    [difference] = replayed["differences"]
    assert difference["position"] == position and difference["differs"] == ["outcome"]
    assert (difference["recorded_outcome"], difference["replayed_outcome"]) == \
        ("reject", result.decisions[position].outcome.value)
    said = run_cli("audit", "replay", batch_id, "--server", target)
    assert said.returncode == 1 and "1 of 6 decisions differ" in said.stdout, said.stdout + said.stderr


def test_a_tampered_reason_message_is_reported(validation: ValidationClient, audit: AuditClient,
                                               engine: Engine) -> None:
    result = validation.validate_time_entries(ENTRIES)
    [batch_id] = result.batch_ids
    position = next(i for i, d in enumerate(result.decisions) if d.reasons)
    with engine.begin() as connection:
        row = connection.execute(select(decisions.c.reasons).where(
            (decisions.c.batch_id == batch_id) & (decisions.c.position == position))).scalar_one()
        reasons = json.loads(row)
        reasons[0]["message"] = "nothing to see here"
        connection.execute(update(decisions).where((decisions.c.batch_id == batch_id)
                                                   & (decisions.c.position == position))
                           .values(reasons=json.dumps(reasons)))
    [difference] = audit.replay(batch_id)["differences"]
    assert difference["differs"] == ["reasons"]
    assert difference["recorded_reasons"][0]["message"] == "nothing to see here"
    assert difference["replayed_reasons"][0]["message"] == result.decisions[position].reasons[0].message


def test_all_or_nothing_expense_and_invoice_batches_replay_identical(validation: ValidationClient,
                                                                     audit: AuditClient) -> None:
    grouped = validation.validate_time_entries(ENTRIES, all_or_nothing=True)
    assert any(r.code == "GROUP_REJECTED" for d in grouped.decisions for r in d.reasons)
    expenses = validation.validate_expense_lines(EXPENSES)
    invoices = validation.validate_invoices(INVOICES)
    for result in (grouped, expenses, invoices):
        [batch_id] = result.batch_ids
        replayed = audit.replay(batch_id)
        assert replayed["identical"] is True, replayed["differences"][:2]


def test_a_batch_whose_snapshot_is_no_longer_kept_cannot_be_replayed(validation: ValidationClient,
                                                                     audit: AuditClient, engine: Engine) -> None:
    [batch_id] = validation.validate_time_entries(ENTRIES[:2]).batch_ids
    with engine.begin() as connection:
        connection.execute(update(batches).where(batches.c.batch_id == batch_id)
                           .values(snapshot_id="snap-0123456789ab"))
    with pytest.raises(grpc.RpcError) as refused:
        audit.replay(batch_id)
    assert _code(refused) is grpc.StatusCode.NOT_FOUND
    assert "no longer kept" in refused.value.details() and "snap-0123456789ab" in refused.value.details()
    with pytest.raises(grpc.RpcError) as absent:
        audit.replay(str(uuid.uuid4()))
    assert _code(absent) is grpc.StatusCode.NOT_FOUND


def test_a_ruleset_text_changed_in_the_database_is_refused(validation: ValidationClient, audit: AuditClient,
                                                           engine: Engine) -> None:
    [batch_id] = validation.validate_time_entries(ENTRIES[:2]).batch_ids
    fake = "e" * 64
    with engine.begin() as connection:
        named = json.loads(connection.execute(select(batches.c.rulesets).where(batches.c.batch_id == batch_id))
                           .scalar_one())
        source = connection.execute(select(ruleset_sources).where(ruleset_sources.c.digest == named[0]["digest"])
                                    ).one()
        connection.execute(insert(ruleset_sources).values(digest=fake, ruleset_id=source.ruleset_id,
                                                          version=source.version, path=source.path,
                                                          source=source.source + "\n# edited\n"))
        named[0]["digest"] = fake
        connection.execute(update(batches).where(batches.c.batch_id == batch_id).values(rulesets=json.dumps(named)))
    with pytest.raises(grpc.RpcError) as refused:
        audit.replay(batch_id)
    assert _code(refused) is grpc.StatusCode.FAILED_PRECONDITION and "does not hash" in refused.value.details()


# -- export -------------------------------------------------------------------------------------------


def _expenses_with_personal_fields() -> list[dict[str, Any]]:
    lines = [dict(line) for line in EXPENSES[:4]]
    lines[0]["custom"] = {"employee_ssn": "123-45-6789", "cost_center": "CC-1"}
    lines[1]["custom"] = {"employee_ssn": "123-45-6789"}
    lines[1]["purpose"] = lines[0]["purpose"] = "Dinner with Jane Roe"
    lines[2]["attendees"] = "Jane Roe|John Doe"
    return lines


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


@pytest.mark.parametrize("form", ["parquet", "csv", "jsonl"])
def test_an_export_reads_back_with_personal_fields_masked_consistently(validation: ValidationClient, target: str,
                                                                        tmp_path: Path, form: str) -> None:
    sent = _expenses_with_personal_fields()
    [batch_id] = validation.validate_expense_lines(sent).batch_ids
    out = tmp_path / f"decisions.{form}"
    done = run_cli("audit", "export", "--from", _today(), "--to", _today(), "--format", form, str(out),
                   "--server", target)
    assert done.returncode == 0, done.stderr
    assert "masked: attendees, purpose, custom.employee_ssn" in done.stderr
    if form == "parquet":
        rows = pq.read_table(out).to_pylist()
    elif form == "csv":
        rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    else:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    mine = sorted((r for r in rows if r["batch_id"] == batch_id), key=lambda r: int(r["position"]))
    assert [r["item_id"] for r in mine] == [line["expense_id"] for line in sent]
    inputs = [json.loads(r["input"]) for r in mine]
    assert inputs[0]["purpose"] == inputs[1]["purpose"] == _token("Dinner with Jane Roe")  # joinable
    assert inputs[2]["purpose"] == _token(sent[2]["purpose"]) != inputs[0]["purpose"]
    assert inputs[2]["attendees"] == [_token("Jane Roe"), _token("John Doe")]
    assert inputs[0]["custom"] == {"employee_ssn": _token("123-45-6789"), "cost_center": "CC-1"}
    assert inputs[1]["custom"]["employee_ssn"] == inputs[0]["custom"]["employee_ssn"]
    assert inputs[0]["amount"] == sent[0]["amount"] and inputs[0]["worker_id"] == sent[0]["worker_id"]
    assert "Jane Roe" not in out.read_bytes().decode("utf-8", "replace") or form == "parquet"
    assert all(json.loads(r["reasons"]) is not None and r["outcome"] in ("accept", "enrich", "reject") for r in mine)
    assert {r["caller"] for r in mine} == {"anonymous"} and all(r["answered_at"].endswith("+00:00") for r in mine)


def test_an_export_is_streamed_in_chunks_with_its_count_first(validation: ValidationClient, audit: AuditClient) -> None:
    validation.validate_time_entries([{**e, "entry_id": f"{e['entry_id']}-{k}"} for k in range(32) for e in ENTRIES])
    export = audit.export(_today(), _today())
    chunks = list(export.chunks)
    assert len(chunks) >= 2 and all(len(chunk) <= 1_000 for chunk in chunks)
    assert sum(len(chunk) for chunk in chunks) == export.total >= 32 * len(ENTRIES)
    assert export.masked_fields == ["attendees", "purpose", "custom.employee_ssn"]


@pytest.mark.parametrize(("start", "end", "field"), [
    ("yesterday", "2026-11-30", "from_time"), ("2026-11-01", "2026-13-45", "to_time"),
    ("2026-12-01", "2026-11-01", "to_time"), ("", "2026-11-30", "from_time"),
    ("2026-11-01", "9" * 100, "to_time"), ("2026-11-01T00:00:00+25:00", "2026-11-30", "from_time"),
])
def test_an_export_of_a_period_that_is_not_one_is_refused_and_writes_nothing(target: str, tmp_path: Path,
                                                                             start: str, end: str, field: str) -> None:
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
        next(audit_pb2_grpc.AuditServiceStub(channel).Export(audit_pb2.ExportRequest(from_time=start, to_time=end),
                                                             timeout=10))
    assert _code(refused) is grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(refused.value) == field
    done = run_cli("audit", "export", "--from", start, "--to", end, "--format", "csv", str(tmp_path / "out.csv"),
                   "--server", target)
    assert done.returncode == 2 and "INVALID_ARGUMENT" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no half file, no temporary left


def test_export_refuses_an_existing_file_a_missing_directory_and_an_unknown_format(target: str,
                                                                                  tmp_path: Path) -> None:
    existing = tmp_path / "there.csv"
    existing.write_text("keep me")
    common = ("--from", _today(), "--to", _today(), "--server", target)
    refused = run_cli("audit", "export", *common, "--format", "csv", str(existing))
    assert refused.returncode == 2 and "--force" in refused.stderr and existing.read_text() == "keep me"
    forced = run_cli("audit", "export", *common, "--format", "csv", "--force", str(existing))
    assert forced.returncode == 0, forced.stderr
    assert existing.read_text().startswith("batch_id,")
    missing = run_cli("audit", "export", *common, "--format", "csv", str(tmp_path / "nowhere" / "out.csv"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    unknown = run_cli("audit", "export", *common, "--format", "xlsx", str(tmp_path / "out.xlsx"))
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there.csv"]


# -- purge and retention --------------------------------------------------------------------------------


def _age(engine: Engine, batch_id: str, days: float) -> None:
    with engine.begin() as connection:
        connection.execute(update(batches).where(batches.c.batch_id == batch_id)
                           .values(answered_at=datetime.now(UTC) - timedelta(days=days)))


def _on_record(audit: AuditClient, batch_id: str) -> bool:
    try:
        audit.batch(batch_id)
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.NOT_FOUND
        return False
    return True


def test_purge_removes_what_is_older_than_the_date_and_keeps_the_rest(validation: ValidationClient,
                                                                      audit: AuditClient, engine: Engine,
                                                                      target: str) -> None:
    ids = [validation.validate_time_entries(ENTRIES[i:i + 2]).batch_ids[0] for i in range(3)]
    for batch_id, days in zip(ids, (500, RETENTION_DAYS + 1.5, RETENTION_DAYS - 1), strict=True):
        _age(engine, batch_id, days)
    orphan = "f" * 64  # a ruleset text only the oldest batch names: it goes with it
    with engine.begin() as connection:
        named = json.loads(connection.execute(select(batches.c.rulesets).where(batches.c.batch_id == ids[0]))
                           .scalar_one())
        connection.execute(insert(ruleset_sources).values(digest=orphan, ruleset_id="gone", version="0",
                                                          path="gone.yaml", source="ruleset: gone"))
        connection.execute(update(batches).where(batches.c.batch_id == ids[0])
                           .values(rulesets=json.dumps([*named, {"id": "gone", "version": "0", "digest": orphan}])))
    floor = (datetime.now(UTC) - timedelta(days=RETENTION_DAYS)).date().isoformat()
    purged = run_cli("audit", "purge", "--before", floor, "--server", target, "--format", "json")
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout) | {"before": ""} == {"batches": "2", "decisions": "4", "ruleset_sources": "1",
                                                          "before": ""}
    assert [_on_record(audit, b) for b in ids] == [False, False, True]
    with engine.connect() as connection:
        digests = set(connection.execute(select(ruleset_sources.c.digest)).scalars())
    assert orphan not in digests and {r["digest"] for r in named} <= digests  # still named by kept batches
    assert audit.purge(floor) == {"batches": "0", "decisions": "0", "ruleset_sources": "0",
                                  "before": f"{floor}T00:00:00+00:00"}


# "today" and "inside the window" are worked out in the test: a value of now in a parameter id differs between
# pytest-xdist's workers, which then refuse to run the suite
@pytest.mark.parametrize("before", ["2099-01-01", "today", "yesterday", "", "2026-02-30", "1" * 80,
                                    "inside the window"])
def test_purge_refuses_a_date_that_is_not_one_or_newer_than_the_retention_floor(audit: AuditClient,
                                                                                before: str) -> None:
    before = {"today": _today(), "inside the window": (datetime.now(UTC) - timedelta(days=RETENTION_DAYS - 1))
              .isoformat()}.get(before, before)
    with pytest.raises(grpc.RpcError) as refused:
        audit.purge(before)
    assert _code(refused) is grpc.StatusCode.INVALID_ARGUMENT and bad_request_field(refused.value) == "before"


def test_purge_goes_slice_by_slice_and_keeps_batches_held_by_open_exceptions(
        validation: ValidationClient, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [validation.validate_time_entries(ENTRIES[i:i + 1]).batch_ids[0] for i in range(4)]
    for batch_id in ids:
        _age(engine, batch_id, 900)
    slices: list[list[str]] = []

    def held(_connection: Any, batch_ids: Any) -> set[str]:
        slices.append(list(batch_ids))
        return {ids[1]}

    monkeypatch.setattr(retention, "BATCHES_PER_SLICE", 3)
    monkeypatch.setattr(retention, "DECISIONS_PER_SLICE", 1)
    purged = retention.purge(engine, datetime.now(UTC) - timedelta(days=800), kept_batches=held)
    assert (purged.batches, purged.decisions) == (3, 3)
    assert len(slices) == 4 and all(len(s) == 1 for s in slices)  # one batch per slice: the decisions bound it
    with engine.connect() as connection:
        left = set(connection.execute(select(batches.c.batch_id).where(batches.c.batch_id.in_(ids))).scalars())
    assert left == {ids[1]}
    retention.purge(engine, datetime.now(UTC) - timedelta(days=800))  # the hook's default holds nothing


def test_the_retention_loop_purges_at_start(server: RunningServer, validation: ValidationClient,
                                            engine: Engine) -> None:
    assert server.retention is not None and server.retention.days == RETENTION_DAYS
    old, new = (validation.validate_time_entries(ENTRIES[:1]).batch_ids[0] for _ in range(2))
    _age(engine, old, 10)
    loop = retention.RetentionLoop(engine, 5, set, interval_seconds=3600)
    loop.start()
    loop.stop()
    loop.join(timeout=30)
    with engine.connect() as connection:
        left = set(connection.execute(select(batches.c.batch_id).where(batches.c.batch_id.in_([old, new]))).scalars())
    assert left == {new}


@pytest.mark.parametrize("days", ["0", "-1", "abc", "1.5", "100000"])
def test_a_retention_that_is_not_one_is_refused_naming_the_setting(days: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(ledger_retention_days=days)  # type: ignore[arg-type]
    assert refused.value.errors()[0]["loc"] == ("ledger_retention_days",)


def test_serve_refuses_a_retention_of_zero_naming_the_flag() -> None:
    done = run_cli("serve", "--port", "0", "--workers", "1", "--ledger-retention-days", "0")
    assert done.returncode == 2 and "--ledger-retention-days" in done.stderr


# -- masking ------------------------------------------------------------------------------------------------


def _key_file(tmp_path: Path, content: bytes, mode: int) -> Path:
    path = tmp_path / "masking.key"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("content", "mode", "said"), [
    (KEY, 0o644, "group or others"), (KEY, 0o640, "group or others"), (b"", 0o600, "holds 0 bytes"),
    (b"  \n", 0o600, "holds 0 bytes"), (b"short", 0o600, "at least 16"), (b"k" * 5000, 0o600, "larger than"),
])
def test_a_masking_key_file_that_will_not_do_refuses_the_start(tmp_path: Path, content: bytes, mode: int,
                                                               said: str) -> None:
    settings = Settings(masking_key_file=_key_file(tmp_path, content, mode))
    with pytest.raises(ProblemsError) as refused:
        masking_policy(settings)
    [problem] = refused.value.problems
    assert problem.path == "masking_key_file" and said in problem.message


def test_a_missing_masking_key_file_or_a_bad_policy_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ProblemsError) as missing:
        masking_policy(Settings(masking_key_file=tmp_path / "absent.key"))
    assert missing.value.problems[0].path == "masking_key_file"
    for policy in ("purpose,atendees", "custom.", "custom.a b", "custom." + "x" * 200):
        with pytest.raises(ProblemsError) as refused:
            masking_policy(Settings(masked_fields=policy))
        assert refused.value.problems[0].path == "masked_fields", policy
    with pytest.raises(ProblemsError) as both:
        masking_policy(Settings(masking_key="k" * 20, masking_key_file=_key_file(tmp_path, KEY, 0o600)))
    assert both.value.problems[0].path == "masking_key"
    assert masking_policy(Settings(masked_fields=" , ")).masks_nothing


def test_serve_refuses_a_world_readable_masking_key_file(tmp_path: Path) -> None:
    key = _key_file(tmp_path, KEY, 0o644)
    done = run_cli("serve", "--port", "0", "--workers", "1", "--data-dir", str(tmp_path), "--masking-key-file",
                   str(key))
    assert done.returncode == 2 and "masking_key_file" in done.stderr + done.stdout


def test_log_lines_mask_the_policys_fields_wherever_they_are() -> None:
    processor = MaskPersonalFields()
    processor.policy = masking_policy(Settings(masked_fields=MASKED, masking_key=KEY.decode()))
    out = io.StringIO()
    structlog.configure(processors=[processor, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.WriteLoggerFactory(file=out))
    try:
        structlog.get_logger("t").info("item", purpose="Dinner with Jane Roe", nested={"attendees": ["Jane Roe"]},
                                       items=[{"employee_ssn": "123-45-6789", "amount": "12.00"}])
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert line["purpose"] == _token("Dinner with Jane Roe") and line["nested"]["attendees"] == [_token("Jane Roe")]
    assert line["items"] == [{"employee_ssn": _token("123-45-6789"), "amount": "12.00"}]
    processor.policy = masking_policy(Settings())  # no key: withheld, never in clear
    assert processor(None, "info", {"purpose": "Dinner"})["purpose"] == "[masked]"


# -- roles, no key, the ledger off ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Identities]]:
    """Authenticating, on SQLite, without a masking key."""
    work = tmp_path_factory.mktemp("audit-secured")
    identities = Identities.make(work)
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, identities_file=identities.path,
                             data_dir=work))
    yield running, identities
    running.stop()


def test_roles_apply_to_every_audit_command(secured: tuple[RunningServer, Identities], tmp_path: Path) -> None:
    running, identities = secured
    target = f"127.0.0.1:{running.port}"
    with ValidationClient(target, security=ChannelSecurity(token=identities.tokens[Role.CALLER])) as client:
        [batch_id] = client.validate_time_entries(ENTRIES[:2]).batch_ids
    auditor = ("--server", target, "--token", identities.tokens[Role.AUDITOR])
    assert run_cli("audit", "batch", batch_id, *auditor).returncode == 0
    assert run_cli("audit", "replay", batch_id, *auditor).returncode == 0
    floor = (datetime.now(UTC) - timedelta(days=400)).date().isoformat()
    denied = run_cli("audit", "purge", "--before", floor, *auditor)
    assert denied.returncode == 2 and "PERMISSION_DENIED" in denied.stderr
    operator = run_cli("audit", "purge", "--before", floor, "--server", target, "--token",
                       identities.tokens[Role.OPERATOR])
    assert operator.returncode == 0, operator.stderr
    caller = run_cli("audit", "show", ENTRIES[0]["entry_id"], "--server", target, "--token",
                     identities.tokens[Role.CALLER])
    assert caller.returncode == 2 and "PERMISSION_DENIED" in caller.stderr
    nobody = run_cli("audit", "batch", batch_id, "--server", target)
    assert nobody.returncode == 2 and "UNAUTHENTICATED" in nobody.stderr
    # No masking key on this server: an export would show personal fields in clear, so there is none.
    refused = run_cli("audit", "export", "--from", _today(), "--to", _today(), "--format", "jsonl",
                      str(tmp_path / "out.jsonl"), *auditor)
    assert refused.returncode == 2 and "FAILED_PRECONDITION" in refused.stderr and "masking key" in refused.stderr
    assert list(tmp_path.iterdir()) == []
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as no_key:
        next(audit_pb2_grpc.AuditServiceStub(channel).Export(
            audit_pb2.ExportRequest(from_time=_today(), to_time=_today()),
            metadata=bearer(identities.tokens[Role.AUDITOR]), timeout=10))
    assert error_info(no_key.value).reason == "MASKING_KEY_MISSING"


def test_with_the_ledger_off_every_audit_call_says_so(tmp_path: Path) -> None:
    running = start(Settings(port=0, threads=1, shutdown_grace_seconds=1, ledger=False, data_dir=tmp_path))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            calls = [lambda: stub.ItemHistory(audit_pb2.ItemHistoryRequest(item_id="TE-1"), timeout=10),
                     lambda: stub.GetBatch(audit_pb2.GetBatchRequest(batch_id=str(uuid.uuid4())), timeout=10),
                     lambda: next(stub.Export(audit_pb2.ExportRequest(from_time="2026-11-01", to_time="2026-11-30"),
                                              timeout=10)),
                     lambda: stub.Replay(audit_pb2.ReplayRequest(batch_id=str(uuid.uuid4())), timeout=10),
                     lambda: stub.Purge(audit_pb2.PurgeRequest(before="2020-01-01"), timeout=10)]
            for call in calls:
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert _code(refused) is grpc.StatusCode.FAILED_PRECONDITION
                assert error_info(refused.value).reason == "LEDGER_OFF" and "--ledger false" in refused.value.details()
        assert running.retention is None
    finally:
        running.stop()


def test_an_input_tampered_into_something_else_is_refused_naming_its_position(validation: ValidationClient,
                                                                              audit: AuditClient,
                                                                              engine: Engine) -> None:
    [batch_id] = validation.validate_time_entries(ENTRIES[:3]).batch_ids
    with engine.begin() as connection:
        connection.execute(update(decisions).where((decisions.c.batch_id == batch_id) & (decisions.c.position == 1))
                           .values(input=json.dumps({"entry_id": "TE-1", "no_such_field": "x"})))
    with pytest.raises(grpc.RpcError) as refused:
        audit.replay(batch_id)
    assert _code(refused) is grpc.StatusCode.FAILED_PRECONDITION and "position 1" in refused.value.details()
