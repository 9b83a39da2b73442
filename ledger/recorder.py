"""Recording one call: its write set (the batch row, a decision row per item, the rulesets' sources, the request id
with its response) built by a pure function, then written in one transaction with what the call consumed of the
accounts (ledger/controls.py) and the exceptions it opens or resolves (ledger/exceptions.py).

``build_write_set`` makes the rows, by table name (a plain value: the spool keeps it on disk while the database
cannot be reached); ``write`` writes a write set in the caller's transaction, skipping one whose batch is already on
record, so a spool drained twice writes each call once. A table joins the write set by adding its key.

A call is answered only once its write set has committed, or, while the database cannot be reached, once it is
appended and fsync'd to the spool (ledger/spool.py). When neither can take it the call fails
(server/validation_service.py: UNAVAILABLE, ErrorInfo LEDGER_UNAVAILABLE): nothing is answered unrecorded. Calls of one
process waiting to be recorded at once share a transaction and its commit (ledger/group_commit.py), each in a
savepoint of its own; a lone call commits alone, in its own deciding thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.exc import DBAPIError

from tollgate.evaluators.accounts import Accounts, PriorReader, UnreadableAccounts
from tollgate.ledger.controls import LedgerPriors, LockedPriors, Stale, lock, settle
from tollgate.ledger.exceptions import update_exceptions
from tollgate.ledger.group_commit import GroupCommit
from tollgate.ledger.schema import metadata, requests
from tollgate.ledger.store import bulk_insert, insert_ignoring_duplicates, out_of_reach
from tollgate.rules.decisions import Acceptance, Decision, Outcome
from tollgate.rules.typecheck import CompiledRuleset

if TYPE_CHECKING:
    from tollgate.ledger.spool import Spool

BATCH_TABLE = "batches"  # the write set's key: its row carries the batch_id that makes writing idempotent
REQUESTS_TABLE = "requests"
# Rows other calls write too (a source stored by every worker that runs it; a request id a retry recorded while this
# call waited in the spool): inserted ignoring duplicates.
SHARED_TABLES = frozenset({"ruleset_sources", REQUESTS_TABLE})
EMPTY_LIST = "[]"


def _to_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept as it is (a StrEnum as its value). orjson: an item's three columns in 3 us
    rather than 14 us with the standard library's encoder, the same text (benchmarks/profile_ledger.py)."""
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    request_id: str
    correlation_id: str
    caller: str
    received_at: datetime
    answered_at: datetime
    item_kind: str
    rulesets: tuple[CompiledRuleset, ...]  # with their file's text and digest, taken at load
    snapshot_id: str
    engine_version: str
    acceptance: Acceptance


class TableRows(NamedTuple):
    """Rows of one table: the column names once, then each row's values in that order."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class WriteSet:
    """One call's rows by table name, in the order they are written (a parent before the rows that refer to it).

    Values are those the tables' columns take (str, int, None, datetime): ledger/spool.py encodes them."""

    batch_id: str
    tables: dict[str, TableRows] = field(default_factory=dict)


class LedgerUnavailableError(RuntimeError):
    """Neither the database nor the spool can take a call's write set: the call is not answered."""


@functools.cache
def _message_fields(descriptor: Any) -> tuple[dict[Any, str], tuple[tuple[str, bool, bool], ...]]:
    """A message type's field names by field descriptor, and its map and repeated fields: (name, is a map, holds
    messages); every other field is a scalar JSON takes as it comes from ListFields."""
    containers = []
    for entry in descriptor.fields:
        is_map = entry.message_type is not None and entry.message_type.GetOptions().map_entry
        if is_map or entry.is_repeated:
            containers.append((entry.name, bool(is_map), entry.message_type is not None and not is_map))
    return {entry: entry.name for entry in descriptor.fields}, tuple(containers)


def wire_fields(message: Any) -> dict[str, Any]:
    """A protobuf item's fields as received (those set), as JSON values: maps as objects, repeated as lists."""
    # One comprehension over ListFields, then only the container fields fixed up: the field kinds are looked up
    # once per message type rather than probed with hasattr per field (a third of wire_fields' time), and the
    # names too (descriptor.name makes a new string each time: 30% of the comprehension).
    names, containers = _message_fields(message.DESCRIPTOR)
    fields = {names[descriptor]: value for descriptor, value in message.ListFields()}
    for name, is_map, holds_messages in containers:
        value = fields.get(name)
        if value is not None:
            fields[name] = dict(value) if is_map else [wire_fields(v) for v in value] if holds_messages \
                else list(value)
    return fields


def reason_records(decision: Decision) -> list[dict[str, Any]]:
    """The decision's reasons as the ledger keeps them (JSON objects); a replay compares its own with these."""
    return [{"rule_id": r.rule_id, "code": r.code, "severity": r.severity.value, "field": r.field,
             "message": r.message, "ruleset_id": r.ruleset_id} for r in decision.reasons]


def enrichment_records(decision: Decision) -> list[dict[str, Any]]:
    return [{"field": e.field, "old_value": e.old_value, "new_value": e.new_value, "rule_id": e.rule_id}
            for e in decision.enrichments]


def _reasons(decision: Decision) -> str:
    return _to_json(reason_records(decision)) if decision.reasons else EMPTY_LIST


def _enrichments(decision: Decision) -> str:
    return _to_json(enrichment_records(decision)) if decision.enrichments else EMPTY_LIST


_DECISION_COLUMNS = ("batch_id", "position", "item_kind", "item_id", "input", "outcome", "reasons", "enrichments")
_BATCH_COLUMNS = ("batch_id", "request_id", "correlation_id", "caller", "received_at", "answered_at", "item_kind",
                  "snapshot_id", "engine_version", "rulesets", "total", "accepted", "enriched", "rejected",
                  "acceptance", "priors")
_SOURCE_COLUMNS = ("digest", "ruleset_id", "version", "path", "source")
_REQUEST_COLUMNS = ("caller", "request_id", "payload_digest", "batch_id", "response", "recorded_at")


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A request id as the caller gave it (AIP-155), and what its payload hashes to."""

    caller: str
    request_id: str
    payload_digest: str  # sha256 of the method and the request's bytes, hex


class RequestIdReusedError(Exception):
    """The request id was recorded with another payload."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(batch_id)
        self.batch_id = batch_id


class RequestRecordedError(Exception):
    """The request was recorded already (a retry): its response, as answered then."""

    def __init__(self, response: bytes) -> None:
        super().__init__("recorded")
        self.response = response


@dataclass(frozen=True, slots=True)
class Decided:
    """A call's decisions, its response (with the batch id set), and what it read of the accounts."""

    decisions: Sequence[Decision]
    response: Any = None  # a ValidationResponse; needed with a request id (the recorded response)
    accounts: Accounts | None = None


Redecide = Callable[[Accounts], Decided]


def build_write_set(batch: Batch, items: Sequence[Any], headers: Sequence[Any] | None, decided: Decided, *,
                    stored_digests: Collection[str] = (), request: RequestKey | None = None) -> WriteSet:
    """The rows recording one call: its batch, a decision per item in request order, the sources of its rulesets
    but those in ``stored_digests`` (known to be in the database already), and its request id with the response."""
    counts = {"accept": 0, "enrich": 0, "reject": 0}
    rows = []
    batch_id, kind = batch.batch_id, batch.item_kind
    for position, (item, decision) in enumerate(zip(items, decided.decisions, strict=True)):
        outcome = decision.outcome.value
        counts[outcome] += 1
        fields = wire_fields(item)
        if headers is not None:  # an invoice line: the invoice's header fields it carries, without its lines
            header = wire_fields(headers[position])
            header.pop("lines", None)
            fields["invoice"] = header
        rows.append((batch_id, position, kind, decision.item_id, _to_json(fields), outcome, _reasons(decision),
                     _enrichments(decision)))
    batch_row = (batch_id, batch.request_id, batch.correlation_id, batch.caller, batch.received_at,
                 batch.answered_at, kind, batch.snapshot_id, batch.engine_version,
                 _to_json([{"id": s.id, "version": s.version, "digest": s.digest} for s in batch.rulesets]),
                 len(rows), counts["accept"], counts["enrich"], counts["reject"], batch.acceptance.value,
                 _to_json(priors) if (priors := decided.accounts.recorded_priors() if decided.accounts else None)
                 else None)
    sources = [(s.digest, s.id, s.version, s.path, s.text)
               for s in {s.digest: s for s in batch.rulesets if s.digest not in stored_digests}.values()]
    tables = {BATCH_TABLE: TableRows(_BATCH_COLUMNS, [batch_row]), "decisions": TableRows(_DECISION_COLUMNS, rows)}
    if sources:
        tables["ruleset_sources"] = TableRows(_SOURCE_COLUMNS, sources)
    if request is not None:
        tables[REQUESTS_TABLE] = TableRows(_REQUEST_COLUMNS, [(
            request.caller, request.request_id, request.payload_digest, batch_id,
            decided.response.SerializeToString(), batch.answered_at)])
    return WriteSet(batch_id, tables)


def write(connection: Connection, write_set: WriteSet) -> bool:
    """Write ``write_set`` in ``connection``'s transaction (the caller commits). False, writing nothing, when its
    batch is already on record: the batch row goes first, and a duplicate batch_id is skipped rather than refused."""
    for name, table_rows in write_set.tables.items():
        if not table_rows.rows:
            continue
        table = metadata.tables[name]
        if name == BATCH_TABLE or name in SHARED_TABLES:
            written = connection.execute(insert_ignoring_duplicates(table, connection.dialect.name),
                                         [dict(zip(table_rows.columns, row, strict=True))
                                          for row in table_rows.rows])
            if name == BATCH_TABLE and written.rowcount == 0:
                return False
        else:
            bulk_insert(connection, table, table_rows.columns, table_rows.rows)
    decisions = write_set.tables["decisions"]
    batch_row = dict(zip(write_set.tables[BATCH_TABLE].columns, write_set.tables[BATCH_TABLE].rows[0], strict=True))
    update_exceptions(connection, write_set.batch_id, batch_row["item_kind"], batch_row["answered_at"],
                      [dict(zip(decisions.columns, row, strict=True)) for row in decisions.rows])
    return True


# A request id's recorded response within the window, and its row from before the window (built once, as the
# statements of ledger/controls.py).
_SAME_REQUEST = (requests.c.caller == bindparam("b_caller"), requests.c.request_id == bindparam("b_request_id"))
_RECORDED_REQUEST = (select(requests.c.payload_digest, requests.c.batch_id, requests.c.response)
                     .where(*_SAME_REQUEST, requests.c.recorded_at >= bindparam("b_since")))
_EXPIRED_REQUEST = requests.delete().where(*_SAME_REQUEST, requests.c.recorded_at < bindparam("b_since"))


class Recorder:
    """Writes calls to the ledger's database, or to the spool while it cannot be reached. Thread-safe: each call
    takes a connection of its own."""

    def __init__(self, engine: Engine, spool: Spool | None = None,
                 request_window: timedelta = timedelta(hours=24)) -> None:
        self.engine = engine
        self.spool = spool
        self.request_window = request_window  # how long a request id is remembered
        self.group = GroupCommit()  # concurrent calls of this process share a commit (ledger/group_commit.py)
        self._stored: set[str] = set()  # digests known to be in ruleset_sources

    def accounts_reader(self) -> PriorReader:
        """A reader of the accounts for one batch (it remembers the versions it read); while the spool takes the
        calls, none: the items that would add to an account are held (docs/controls.md)."""
        if self.spool is not None and self.spool.spooling:
            return UnreadableAccounts()
        return LedgerPriors(self.engine)

    def recorded_response(self, request: RequestKey, connection: Connection | None = None) -> bytes | None:
        """The response recorded for the request within the window; None if there is none. A recorded id with
        another payload raises RequestIdReusedError."""
        values = {"b_caller": request.caller, "b_request_id": request.request_id,
                  "b_since": datetime.now(UTC) - self.request_window}
        if connection is None:
            with self.engine.connect().execution_options(ledger_read=True) as reading:
                row = reading.execute(_RECORDED_REQUEST, values).first()
        else:
            row = connection.execute(_RECORDED_REQUEST, values).first()
        if row is None:
            return None
        if row.payload_digest != request.payload_digest:
            raise RequestIdReusedError(row.batch_id)
        return bytes(row.response)

    def record(self, batch: Batch, items: Sequence[Any], headers: Sequence[Any] | None, decided: Decided, *,
               redecide: Redecide | None = None, request: RequestKey | None = None) -> Decided:
        """Put one call on record: committed to the database with what it consumed of the accounts, or appended to
        the spool while the database cannot be reached (or the spool still holds earlier calls, which go first).
        What was recorded: ``decided``, or, when another call settled on the same caps after this one read them,
        the batch decided again under their locks by ``redecide``. A retry of a recorded request raises
        RequestRecordedError with the recorded response; LedgerUnavailableError when neither the database nor the
        spool can take the call; any other database error (a constraint violated) is raised as it is."""
        if decided.accounts is not None:
            decided.accounts.reader.close()  # what the batch read it has decided with
        spool = self.spool
        if spool is not None and spool.spooling:
            decided = _unsettled(decided, redecide)
            spool.append(build_write_set(batch, items, headers, decided, stored_digests=self._stored, request=request))
            return decided
        try:
            decided, write_set = self.group.run(self.engine, functools.partial(
                self._write, batch=batch, items=items, headers=headers, decided=decided, redecide=redecide,
                request=request), items=len(items))
        except DBAPIError as error:
            if spool is None or not out_of_reach(self.engine, error):
                raise
            decided = _unsettled(decided, redecide)
            spool.append(build_write_set(batch, items, headers, decided, stored_digests=self._stored,
                                         request=request), cause=error)
            return decided
        self.stored(write_set)
        return decided

    def _write(self, connection: Connection, *, batch: Batch, items: Sequence[Any], headers: Sequence[Any] | None,
               decided: Decided, redecide: Redecide | None, request: RequestKey | None) -> tuple[Decided, WriteSet]:
        """The request id checked, the accounts settled (the batch decided again if they moved), the write set
        written; the request's row is inserted plainly, so a concurrent attempt of the same request that recorded
        it first makes this one fail (IntegrityError) rather than be recorded twice."""
        kind = batch.item_kind
        if request is not None:
            recorded = self.recorded_response(request, connection)
            if recorded is not None:
                raise RequestRecordedError(recorded)
        accounts = decided.accounts
        if accounts is not None:
            read = accounts.reader.versions if isinstance(accounts.reader, LedgerPriors) else None
            try:
                _settle(connection, kind, batch.batch_id, decided, read)
            except Stale:
                locked = LockedPriors(connection)
                lock(connection, ((account, key) for account, keys in accounts.priors.items() for key in keys))
                assert redecide is not None, "a batch that read the accounts can be decided again"
                decided = redecide(Accounts(locked, kind))
                _settle(connection, kind, batch.batch_id, decided, None)
        write_set = build_write_set(batch, items, headers, decided, stored_digests=self._stored, request=request)
        request_rows = write_set.tables.get(REQUESTS_TABLE)
        if request_rows is not None:
            # the id's row from before the window, if any, makes way; one within it stays, and the insert fails
            connection.execute(_EXPIRED_REQUEST, {"b_caller": request_rows.rows[0][0],
                                                  "b_request_id": request_rows.rows[0][1],
                                                  "b_since": datetime.now(UTC) - self.request_window})
            connection.execute(insert(requests), [dict(zip(request_rows.columns, request_rows.rows[0], strict=True))])
        write(connection, replace(write_set, tables={name: rows for name, rows in write_set.tables.items()
                                                     if name != REQUESTS_TABLE}))
        return decided, write_set

    def close(self) -> None:
        """Stop the spool's drainer (what it holds stays for the next start) and close the database's connections."""
        if self.spool is not None:
            self.spool.close()
        self.engine.dispose()

    def stored(self, write_set: WriteSet) -> None:
        """Note the ruleset sources ``write_set`` committed, so later calls leave them out."""
        sources = write_set.tables.get("ruleset_sources")
        if sources is not None:
            self._stored.update(row[0] for row in sources.rows)


def _unsettled(decided: Decided, redecide: Redecide | None) -> Decided:
    """The call as the spool may take it. Consumption is settled only with the database, so a call decided against
    the accounts that adds to them is decided again as if they could not be read: the items that would add are held
    and add nothing (what they consumed before stays until they are decided again)."""
    accounts = decided.accounts
    if accounts is None or not accounts.entries or redecide is None:
        return decided
    return redecide(Accounts(UnreadableAccounts(), accounts.kind))


def _settle(connection: Connection, kind: str, batch_id: str, decided: Decided,
            versions_read: Mapping[tuple[str, str], int] | None) -> None:
    """The accounts' consumption of the items accepted (an item's first entry per group counts once)."""
    accounts = decided.accounts
    assert accounts is not None
    accepted = {d.item_id for d in decided.decisions if d.outcome is not Outcome.REJECT}
    entries = list({(e.account, e.key, e.item_id): e for e in reversed(accounts.entries)
                    if e.item_id in accepted}.values())
    settle(connection, kind=kind, batch_id=batch_id, own=accounts.own, entries=entries, versions_read=versions_read)


def open_recorder(database_url: str | None, data_dir: Path, spool_dir: Path | None = None,
                  spool_max_bytes: int = 0, request_window: timedelta = timedelta(hours=24)) -> Recorder:
    """The ledger of settings ``database_url`` / ``data_dir``: connected, migrated, and with a spool in ``spool_dir``
    (default data_dir/spool) draining when ``spool_max_bytes`` is not 0 (ProblemsError otherwise)."""
    from tollgate.ledger.spool import Spool
    from tollgate.ledger.store import database_url as resolve
    from tollgate.ledger.store import open_database

    engine = open_database(resolve(database_url, data_dir))
    if not spool_max_bytes:
        return Recorder(engine, request_window=request_window)
    try:
        spool = Spool(spool_dir if spool_dir is not None else data_dir / "spool", spool_max_bytes)
    except BaseException:
        engine.dispose()
        raise
    recorder = Recorder(engine, spool, request_window)
    spool.start(recorder)
    return recorder
