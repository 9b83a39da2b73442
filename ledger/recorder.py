"""Recording one call: its write set (the batch row, a decision row per item, the rulesets' sources) built by a pure
function, then written in one transaction.

``build_write_set`` makes the rows, by table name (a plain value: the spool keeps it on disk while the database
cannot be reached); ``write`` writes a write set in the caller's transaction, skipping one whose batch is already on
record, so a spool drained twice writes each call once. A table joins the write set by adding its key.

A call is answered only once its write set has committed, or, while the database cannot be reached, once it is
appended and fsync'd to the spool (ledger/spool.py). When neither can take it the call fails
(server/validation_service.py: UNAVAILABLE, ErrorInfo LEDGER_UNAVAILABLE): nothing is answered unrecorded. Each call
commits its own transaction, in the deciding thread that decided it (docs/ledger.md: why not group commit).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from sqlalchemy import Connection, Engine, Integer, String, Table, insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from tollgate.ledger.schema import metadata
from tollgate.rules.decisions import Decision
from tollgate.rules.typecheck import CompiledRuleset

if TYPE_CHECKING:
    from tollgate.ledger.spool import Spool

BATCH_TABLE = "batches"  # the write set's key: its row carries the batch_id that makes writing idempotent
# Rows other calls write too (a source stored by every worker that runs it): inserted ignoring duplicates.
SHARED_TABLES = frozenset({"ruleset_sources"})
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


# sqlite3 raises OperationalError for a missing table or bad SQL too: only these mean the file cannot be written now.
_SQLITE_UNREACHABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL",
                       "SQLITE_PROTOCOL")


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached now (refused, reset, timed out, busy past its timeout),
    rather than that the write is wrong (a constraint violated, a table missing: a bug, which must fail loudly, not
    be spooled)."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, (OperationalError, InterfaceError)):
        return False
    sqlite_error = getattr(error.orig, "sqlite_errorname", None)
    return sqlite_error is None or sqlite_error.startswith(_SQLITE_UNREACHABLE)


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


def _reasons(decision: Decision) -> str:
    if not decision.reasons:
        return EMPTY_LIST
    # Severity is a StrEnum: json writes it as its value.
    return _to_json([{"rule_id": r.rule_id, "code": r.code, "severity": r.severity, "field": r.field,
                      "message": r.message, "ruleset_id": r.ruleset_id} for r in decision.reasons])


def _enrichments(decision: Decision) -> str:
    if not decision.enrichments:
        return EMPTY_LIST
    return _to_json([{"field": e.field, "old_value": e.old_value, "new_value": e.new_value, "rule_id": e.rule_id}
                     for e in decision.enrichments])


_DECISION_COLUMNS = ("batch_id", "position", "item_kind", "item_id", "input", "outcome", "reasons", "enrichments")
_BATCH_COLUMNS = ("batch_id", "request_id", "correlation_id", "caller", "received_at", "answered_at", "item_kind",
                  "snapshot_id", "engine_version", "rulesets", "total", "accepted", "enriched", "rejected")
_SOURCE_COLUMNS = ("digest", "ruleset_id", "version", "path", "source")


def build_write_set(batch: Batch, items: Sequence[Any], headers: Sequence[Any] | None, decided: Sequence[Decision],
                    stored_digests: Collection[str] = ()) -> WriteSet:
    """The rows recording one call: its batch, a decision per item in request order, and the sources of its
    rulesets but those in ``stored_digests`` (known to be in the database already)."""
    counts = {"accept": 0, "enrich": 0, "reject": 0}
    rows = []
    batch_id, kind = batch.batch_id, batch.item_kind
    for position, (item, decision) in enumerate(zip(items, decided, strict=True)):
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
                 len(rows), counts["accept"], counts["enrich"], counts["reject"])
    sources = [(s.digest, s.id, s.version, s.path, s.text)
               for s in {s.digest: s for s in batch.rulesets if s.digest not in stored_digests}.values()]
    tables = {BATCH_TABLE: TableRows(_BATCH_COLUMNS, [batch_row]), "decisions": TableRows(_DECISION_COLUMNS, rows)}
    if sources:
        tables["ruleset_sources"] = TableRows(_SOURCE_COLUMNS, sources)
    return WriteSet(batch_id, tables)


def write(connection: Connection, write_set: WriteSet) -> bool:
    """Write ``write_set`` in ``connection``'s transaction (the caller commits). False, writing nothing, when its
    batch is already on record: the batch row goes first, and a duplicate batch_id is skipped rather than refused."""
    for name, table_rows in write_set.tables.items():
        if not table_rows.rows:
            continue
        table = metadata.tables[name]
        if name == BATCH_TABLE or name in SHARED_TABLES:
            written = connection.execute(_insert_ignoring_duplicates(connection.dialect.name, table),
                                         [dict(zip(table_rows.columns, row, strict=True))
                                          for row in table_rows.rows])
            if name == BATCH_TABLE and written.rowcount == 0:
                return False
        else:
            _bulk_insert(connection, table, table_rows)
    return True


@functools.cache
def _plain(table: Table) -> bool:
    """Whether every column of ``table`` takes its Python value as the driver does (text and integers), so its rows
    can skip SQLAlchemy's per-row processing; a datetime column needs SQLAlchemy's (SQLite stores it as text)."""
    return all(isinstance(column.type, (String, Integer)) for column in table.columns)


def _bulk_insert(connection: Connection, table: Table, table_rows: TableRows) -> None:
    """Many rows at once through the driver: COPY on PostgreSQL, executemany on SQLite. SQLAlchemy's own
    executemany spent 40% of a 10,000-row insert building each row's parameters (benchmarks/profile_ledger.py)."""
    if not _plain(table):
        connection.execute(insert(table), [dict(zip(table_rows.columns, row, strict=True))
                                           for row in table_rows.rows])
        return
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(c) for c in table_rows.columns)
    postgres = dialect.name == "postgresql"
    statement = f"COPY {quote(table.name)} ({columns}) FROM STDIN" if postgres else \
        f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({', '.join('?' * len(table_rows.columns))})"
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if postgres:
            with cursor.copy(statement) as copy:
                for row in table_rows.rows:
                    copy.write_row(row)
        else:
            cursor.executemany(statement, table_rows.rows)
    except dialect.loaded_dbapi.Error as error:
        # As SQLAlchemy's own execution would raise it (OperationalError, IntegrityError, ...), so that callers
        # tell an unreachable database from a refused write the same way whichever path wrote.
        lost = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
        raise DBAPIError.instance(statement, None, error, dialect.loaded_dbapi.Error, connection_invalidated=lost,
                                  dialect=dialect) from error
    finally:
        cursor.close()


def _insert_ignoring_duplicates(dialect: str, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: another worker may store the same source at the same moment; a batch
    drained from the spool may be on record already."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


class Recorder:
    """Writes calls to the ledger's database, or to the spool while it cannot be reached. Thread-safe: each call
    takes a connection of its own."""

    def __init__(self, engine: Engine, spool: Spool | None = None) -> None:
        self.engine = engine
        self.spool = spool
        self._stored: set[str] = set()  # digests known to be in ruleset_sources

    def record(self, batch: Batch, items: Sequence[Any], headers: Sequence[Any] | None,
               decided: Sequence[Decision]) -> None:
        """Put one call on record: committed to the database, or appended to the spool while the database cannot
        be reached (or the spool still holds earlier calls, which go first). LedgerUnavailableError when neither
        can take it; any other database error (a constraint violated) is raised as it is."""
        write_set = build_write_set(batch, items, headers, decided, self._stored)
        spool = self.spool
        if spool is not None and spool.spooling:
            spool.append(write_set)
            return
        try:
            with self.engine.begin() as connection:
                write(connection, write_set)
        except DBAPIError as error:
            if spool is None or not unreachable(error):
                raise
            spool.append(write_set, cause=error)
            return
        self.stored(write_set)

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


def open_recorder(database_url: str | None, data_dir: Path, spool_dir: Path | None = None,
                  spool_max_bytes: int = 0) -> Recorder:
    """The ledger of settings ``database_url`` / ``data_dir``: connected, migrated, and with a spool in ``spool_dir``
    (default data_dir/spool) draining when ``spool_max_bytes`` is not 0 (ProblemsError otherwise)."""
    from tollgate.ledger.spool import Spool
    from tollgate.ledger.store import database_url as resolve
    from tollgate.ledger.store import open_database

    engine = open_database(resolve(database_url, data_dir))
    if not spool_max_bytes:
        return Recorder(engine)
    try:
        spool = Spool(spool_dir if spool_dir is not None else data_dir / "spool", spool_max_bytes)
    except BaseException:
        engine.dispose()
        raise
    recorder = Recorder(engine, spool)
    spool.start(recorder)
    return recorder
