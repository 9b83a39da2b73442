"""The exception queue: every item whose latest decision rejected or held it waits here until fixed or waived.

One row per (item kind, item id), kept by :func:`update_exceptions` inside the transaction that records the call
(ledger/recorder.py), so the queue never disagrees with the decisions on record:

- A rejected item, or a held one (an enrichment setting ``bill_status`` to ``HOLD``), opens its exception or
  updates it: the latest reasons, codes and rule ids, the latest decision's batch and position (its recorded
  input), last_seen, times_seen + 1. A resolved exception is re-opened.
- A waived exception stays waived when the item fails again: the waiver says the item may stand as it is, so
  failing again is what was waived; last_seen, times_seen and the reasons still follow it, so a steward sees it
  keep coming.
- A decision that accepts the item (or enriches it without a hold) resolves its open exception, naming that
  decision (resolved_batch_id, resolved_position). A waived one stays waived.
- In one batch, an item's last decision counts. Decisions are applied in answered order: one older than what the
  row already holds (concurrent calls committing out of order) only adds to times_seen.
- An item the engine could not name (its id unreadable, decided as "(item N)") opens none: that name is a
  position in a batch, not an item.

Every write is an upsert (INSERT ... ON CONFLICT) or a guarded UPDATE, after the rows the batch touches are
locked in item-id order, so concurrent calls on the same items neither lose counts nor fail (nor deadlock) on
SQLite or PostgreSQL; a batch costs a look-up per 5,000 items, one upsert and one update, whatever its
rejections.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Connection, Engine, Text, and_, bindparam, case, cast, column, func, null, select, update
from sqlalchemy.sql.elements import ColumnElement

from tollgate.ledger.schema import decisions, exceptions
from tollgate.ledger.store import bound_list, listed
from tollgate.rules.item_kinds import ITEM_KINDS

OPEN, RESOLVED, WAIVED = "open", "resolved", "waived"
STATUSES = (OPEN, RESOLVED, WAIVED)
REJECT, HOLD = "reject", "hold"
# Project, customer and worker ids longer than this (or holding NUL, which PostgreSQL's text cannot) are not
# copied from the input: a hostile value costs its own filterability, never the call.
LONGEST_REFERENCE = 256
_IN_CHUNK = 5_000  # ids per IN (...): under SQLite's and PostgreSQL's limits on bound parameters


def _tokens(values: Iterable[str]) -> str:
    """``" A B "``: matched whole with LIKE '% A %' (filters never match part of a code)."""
    unique = list(dict.fromkeys(values))
    return f" {' '.join(unique)} " if unique else " "


def _reference(fields: Mapping[str, Any], name: str) -> str | None:
    header = fields.get("invoice")
    value = fields.get(name) or (header.get(name) if isinstance(header, dict) else None)
    if isinstance(value, str) and value and len(value) <= LONGEST_REFERENCE and "\x00" not in value:
        return value
    return None


def _hold_rules(enrichments: str) -> list[str]:
    """The rules that set bill_status to HOLD in a decision's enrichments (JSON, as recorded)."""
    if '"bill_status"' not in enrichments:  # most enrichments hold none: skip parsing them
        return []
    return [e["rule_id"] for e in orjson.loads(enrichments) if e["field"] == "bill_status" and e["new_value"] == "HOLD"]


def _opening(row: Mapping[str, Any], id_field: str, answered_at: datetime, held_by: list[str]) -> dict[str, Any] | None:
    """The exception row a rejecting or holding decision row writes; None for an item the engine could not name."""
    fields = orjson.loads(row["input"])
    if fields.get(id_field) != row["item_id"]:
        return None
    reasons = orjson.loads(row["reasons"])
    if held_by:
        why = [r for r in reasons if r["rule_id"] in held_by]
        codes, rule_ids = [r["code"] for r in why] or ["HOLD"], [r["rule_id"] for r in why] or held_by
    else:
        why = [r for r in reasons if r["severity"] == "error"] or reasons
        codes, rule_ids = [r["code"] for r in why], [r["rule_id"] for r in why]
    return {"item_kind": row["item_kind"], "item_id": row["item_id"], "status": OPEN,
            "outcome": HOLD if held_by else REJECT, "reasons": row["reasons"], "codes": _tokens(codes),
            "rule_ids": _tokens(rule_ids), "first_seen": answered_at, "last_seen": answered_at, "times_seen": 1,
            "batch_id": row["batch_id"], "position": row["position"],
            "project_id": _reference(fields, "project_id"), "customer_id": _reference(fields, "customer_id"),
            "worker_id": _reference(fields, "worker_id")}


_OPENED = ("item_kind", "item_id", "status", "outcome", "reasons", "codes", "rule_ids", "first_seen", "last_seen",
           "times_seen", "batch_id", "position", "project_id", "customer_id", "worker_id")


def _on_conflict(statement: Any) -> Any:
    """... ON CONFLICT (item_kind, item_id) DO UPDATE, as the module's rules say."""
    new, old = statement.excluded, exceptions.c
    newer = new.last_seen >= old.last_seen
    reopened = and_(old.status == RESOLVED, old.resolved_at <= new.last_seen)
    latest = {name: case((newer, new[name]), else_=old[name])
              for name in ("outcome", "reasons", "codes", "rule_ids", "last_seen", "batch_id", "position",
                           "project_id", "customer_id", "worker_id")}
    return statement.on_conflict_do_update(index_elements=["item_kind", "item_id"], set_={
        **latest, "times_seen": old.times_seen + 1, "status": case((reopened, OPEN), else_=old.status),
        **{name: case((reopened, null()), else_=old[name])
           for name in ("resolved_at", "resolved_batch_id", "resolved_position")},
    })


@functools.cache
def _upsert(dialect: str) -> Any:
    """The statement that opens or updates exceptions, built once per dialect (built per call, its CASE clauses
    cost more than running it: ~1 ms a batch). PostgreSQL gets the rows as one JSON document, made rows by the
    server (an executemany there is a statement per row, pipelined; arrays cost more to send); SQLite's executemany
    reuses one prepared statement in process."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        rows = (func.json_to_recordset(cast(bindparam("rows", type_=Text), JSON))
                .table_valued(*[column(name, exceptions.c[name].type) for name in _OPENED])
                .render_derived(with_types=True))
        return _on_conflict(postgresql_insert(exceptions).from_select(_OPENED, select(rows)))
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return _on_conflict(sqlite_insert(exceptions))


def _open(connection: Connection, opening: list[dict[str, Any]]) -> None:
    """Upsert the exceptions of ``opening`` in one statement (see ``_upsert``)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(_upsert(dialect), {"rows": orjson.dumps(opening).decode()})
        return
    connection.execute(_upsert(dialect), opening)


_RESOLVE = (update(exceptions)
            .where(exceptions.c.exception_id == bindparam("b_exception_id"), exceptions.c.status == OPEN,
                   exceptions.c.last_seen <= bindparam("b_answered_at"))
            .values(status=RESOLVED, resolved_at=bindparam("b_answered_at"),
                    resolved_batch_id=bindparam("b_batch_id"), resolved_position=bindparam("b_position")))


@functools.cache
def _lock(dialect: str) -> Any:
    """The rows of a batch's items, locked in item-id order (bytewise on PostgreSQL, as SQLite's BINARY), built once
    per dialect."""
    order = exceptions.c.item_id.collate("C") if dialect == "postgresql" else exceptions.c.item_id
    return (select(exceptions.c.exception_id, exceptions.c.item_id, exceptions.c.status)
            .where(exceptions.c.item_kind == bindparam("b_kind"), listed(exceptions.c.item_id, "b_ids", dialect))
            .order_by(order).with_for_update())


def update_exceptions(connection: Connection, batch_id: str, kind: str, answered_at: datetime,
                      rows: Sequence[Mapping[str, Any]]) -> None:
    """Open, update and resolve the exceptions of one recorded batch; ``rows``: its decision rows as
    Recorder.record writes them (item_id, position, item_kind, input, outcome, reasons, enrichments as JSON)."""
    last = {row["item_id"]: row for row in rows}  # in one batch, an item's last decision counts
    id_field = ITEM_KINDS[kind].id_field
    opening: list[dict[str, Any]] = []
    passing: dict[str, int] = {}  # item id -> position of the decision that passed it
    for item_id, row in sorted(last.items()):
        held_by = _hold_rules(row["enrichments"]) if row["outcome"] == "enrich" else []
        if row["outcome"] == "reject" or held_by:
            entry = _opening(row, id_field, answered_at, held_by)
            if entry is not None:
                opening.append(entry)
        else:
            passing[item_id] = row["position"]
    # Every row the batch touches, locked first in one order (item ids, bytewise; PostgreSQL, as SQLite has one
    # writer at a time): concurrent batches sharing items wait for one another instead of deadlocking.
    ids = sorted(last)
    statement = _lock(connection.dialect.name)
    open_ids: dict[str, int] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        locked = connection.execute(statement, {"b_kind": kind, "b_ids": bound_list(ids[start:start + _IN_CHUNK],
                                                                                     connection.dialect.name)})
        open_ids.update((item_id, exception_id) for exception_id, item_id, status in locked if status == OPEN)
    if opening:
        _open(connection, opening)
    resolving = [{"b_exception_id": open_ids[item_id], "b_answered_at": answered_at, "b_batch_id": batch_id,
                  "b_position": position} for item_id, position in passing.items() if item_id in open_ids]
    if resolving:
        connection.execute(_RESOLVE, resolving)  # in item-id order, as locked


# ---------------------------------------------------------------------------------------------------
# Reading and waiving (server/exception_service.py)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which exceptions: every given field must match (codes and rule ids: any of the exception's)."""

    code: str = ""
    rule_id: str = ""
    project_id: str = ""
    customer_id: str = ""
    worker_id: str = ""
    since: datetime | None = None  # last seen at or after
    status: str = ""  # one of STATUSES, or "" for any

    def where(self) -> list[ColumnElement[bool]]:
        c = exceptions.c
        clauses: list[ColumnElement[bool]] = []
        if self.code:
            clauses.append(c.codes.contains(f" {self.code} ", autoescape=True))
        if self.rule_id:
            clauses.append(c.rule_ids.contains(f" {self.rule_id} ", autoescape=True))
        for matched, value in ((c.project_id, self.project_id), (c.customer_id, self.customer_id),
                               (c.worker_id, self.worker_id), (c.status, self.status)):
            if value:
                clauses.append(matched == value)
        if self.since is not None:
            clauses.append(c.last_seen >= self.since.astimezone(UTC))
        return clauses


def _utc(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their zone; every one stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _exception(row: Any) -> dict[str, Any]:
    found = dict(row._mapping)
    for name in ("first_seen", "last_seen", "resolved_at", "waived_at"):
        if found[name] is not None:
            found[name] = _utc(found[name])
    found["reasons"] = json.loads(found["reasons"])
    found["codes"], found["rule_ids"] = found["codes"].split(), found["rule_ids"].split()
    return found


def list_exceptions(engine: Engine, which: Filter, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` exceptions matching ``which`` with ids above ``after``, by id (the order they opened in)."""
    query = (select(exceptions).where(exceptions.c.exception_id > after, *which.where())
             .order_by(exceptions.c.exception_id).limit(limit))
    with engine.connect() as connection:
        return [_exception(row) for row in connection.execute(query)]


def get_exception(engine: Engine, exception_id: int) -> dict[str, Any] | None:
    """The exception, with ``input``: the latest recorded input it was rejected or held on."""
    query = (select(exceptions, decisions.c.input)
             .join(decisions, and_(decisions.c.batch_id == exceptions.c.batch_id,
                                   decisions.c.position == exceptions.c.position))
             .where(exceptions.c.exception_id == exception_id))
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    found = _exception(row)
    found["input"] = json.loads(found["input"])
    return found


@dataclass(frozen=True, slots=True)
class Group:
    code: str
    project_id: str | None
    customer_id: str | None
    worker_id: str | None
    open: int


@dataclass(frozen=True, slots=True)
class Summary:
    groups: list[Group]  # most open first
    total_open: int
    oldest_open: tuple[int, datetime] | None  # (exception id, first seen)

    def open_by_code(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for group in self.groups:
            counts[group.code] = counts.get(group.code, 0) + group.open
        return counts


def summary(engine: Engine) -> Summary:
    """Open exceptions counted by code x project x customer x worker (the database counts; an exception with two
    codes counts under each), and the oldest open one."""
    c = exceptions.c
    grouped = (select(c.codes, c.project_id, c.customer_id, c.worker_id, func.count())
               .where(c.status == OPEN).group_by(c.codes, c.project_id, c.customer_id, c.worker_id))
    oldest = (select(c.exception_id, c.first_seen).where(c.status == OPEN)
              .order_by(c.first_seen, c.exception_id).limit(1))
    counts: dict[tuple[str, str | None, str | None, str | None], int] = {}
    total = 0
    with engine.connect() as connection:
        for codes, project, customer, worker, count in connection.execute(grouped):
            total += count
            for code in codes.split():
                key = (code, project, customer, worker)
                counts[key] = counts.get(key, 0) + count
        first = connection.execute(oldest).first()
    groups = sorted((Group(*key, count) for key, count in counts.items()),
                    key=lambda g: (-g.open, g.code, g.project_id or "", g.customer_id or "", g.worker_id or ""))
    return Summary(groups, total, None if first is None else (first.exception_id, _utc(first.first_seen)))


class WaiveRefusedError(Exception):
    """The exception is not open (resolved, or waived already): nothing changed."""

    def __init__(self, found: dict[str, Any]) -> None:
        super().__init__(f"exception {found['exception_id']} is {found['status']}, not open")
        self.found = found


def waive(engine: Engine, exception_id: int, by: str, reason: str, at: datetime) -> dict[str, Any] | None:
    """Waive an open exception (one guarded UPDATE: two stewards at once, one wins); None when there is no such
    exception, WaiveRefusedError when it is not open."""
    with engine.begin() as connection:
        changed = connection.execute(update(exceptions).where(
            exceptions.c.exception_id == exception_id, exceptions.c.status == OPEN).values(
            status=WAIVED, waived_by=by, waived_at=at, waive_reason=reason)).rowcount
    found = get_exception(engine, exception_id)
    if found is not None and not changed:
        raise WaiveRefusedError(found)
    return found


def open_inputs(engine: Engine, which: Filter, after: int, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
    """(exception id, item kind, latest recorded input) of up to ``limit`` open exceptions matching ``which`` with
    ids above ``after``, by id."""
    query = (select(exceptions.c.exception_id, exceptions.c.item_kind, decisions.c.input)
             .join(decisions, and_(decisions.c.batch_id == exceptions.c.batch_id,
                                   decisions.c.position == exceptions.c.position))
             .where(exceptions.c.exception_id > after, exceptions.c.status == OPEN, *which.where())
             .order_by(exceptions.c.exception_id).limit(limit))
    with engine.connect() as connection:
        return [(exception_id, kind, json.loads(text)) for exception_id, kind, text in connection.execute(query)]


def statuses(engine: Engine, exception_ids: Sequence[int]) -> dict[str, int]:
    """How many of ``exception_ids`` are in each status now."""
    counts = dict.fromkeys(STATUSES, 0)
    with engine.connect() as connection:
        for start in range(0, len(exception_ids), _IN_CHUNK):
            for status, count in connection.execute(
                    select(exceptions.c.status, func.count()).where(
                        exceptions.c.exception_id.in_(exception_ids[start:start + _IN_CHUNK]))
                    .group_by(exceptions.c.status)):
                counts[status] += count
    return counts
