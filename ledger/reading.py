"""Reading the ledger back (the AuditService's library): every decision on an item, one batch whole, the
decisions answered in a period page by page (exports)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, tuple_

from tollgate.ledger.schema import batches, decisions


def instant(value: datetime) -> str:
    """A recorded time as ISO 8601 in UTC (SQLite gives its times back without their zone, which was UTC)."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _batch(row: Any) -> dict[str, Any]:
    return {
        "batch_id": row.batch_id, "request_id": row.request_id, "correlation_id": row.correlation_id,
        "caller": row.caller, "received_at": instant(row.received_at), "answered_at": instant(row.answered_at),
        "item_kind": row.item_kind, "rulesets": json.loads(row.rulesets), "snapshot_id": row.snapshot_id,
        "engine_version": row.engine_version, "acceptance": row.acceptance,
        "counts": {"total": row.total, "accepted": row.accepted, "enriched": row.enriched, "rejected": row.rejected},
    }


def _decision(row: Any) -> dict[str, Any]:
    return {"position": row.position, "item_kind": row.item_kind, "item_id": row.item_id,
            "input": json.loads(row.input), "outcome": row.outcome, "reasons": json.loads(row.reasons),
            "enrichments": json.loads(row.enrichments)}


def decisions_on(engine: Engine, item_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Every decision on ``item_id`` (of ``kind``), oldest first, each with its batch."""
    query = (select(decisions, *[c for c in batches.c if c.name not in ("batch_id", "item_kind")])
             .join(batches, batches.c.batch_id == decisions.c.batch_id)
             .where(decisions.c.item_id == item_id)
             .order_by(batches.c.answered_at, decisions.c.position))
    if kind is not None:
        query = query.where(decisions.c.item_kind == kind)
    with engine.connect().execution_options(ledger_read=True) as connection:
        return [{**_decision(row), "batch": _batch(row)} for row in connection.execute(query)]


def batch(engine: Engine, batch_id: str) -> dict[str, Any] | None:
    """The batch ``batch_id`` with its decisions in request order; None when there is no such batch."""
    with engine.connect().execution_options(ledger_read=True) as connection:
        row = connection.execute(select(batches).where(batches.c.batch_id == batch_id)).first()
        if row is None:
            return None
        rows = connection.execute(select(decisions).where(decisions.c.batch_id == batch_id)
                                  .order_by(decisions.c.position))
        return {**_batch(row), "decisions": [_decision(r) for r in rows]}


_EXPORT_BATCH_COLUMNS = ("batch_id", "request_id", "correlation_id", "caller", "received_at", "answered_at",
                         "item_kind", "rulesets", "snapshot_id", "engine_version", "acceptance")
_EXPORT_DECISION_COLUMNS = ("position", "item_id", "outcome", "input", "reasons", "enrichments")
# Where a page of an export ends: the next page starts after it.
ExportCursor = tuple[datetime, str, int]


def _answered_in(start: datetime, end: datetime) -> Any:
    return (batches.c.answered_at >= start) & (batches.c.answered_at < end)


def count_answered(engine: Engine, start: datetime, end: datetime) -> int:
    """How many decisions were answered in [start, end)."""
    query = (select(func.count()).select_from(decisions.join(batches, batches.c.batch_id == decisions.c.batch_id))
             .where(_answered_in(start, end)))
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def answered_page(engine: Engine, start: datetime, end: datetime, after: ExportCursor | None,
                  limit: int) -> tuple[list[dict[str, Any]], ExportCursor | None]:
    """Up to ``limit`` decisions answered in [start, end), after ``after``, in answer order, with their batch's
    fields (the JSON columns as their text); and the cursor of the last one (None when there are no more).
    Each page is a short query of its own: an export of a year holds no transaction open."""
    columns = [batches.c[name] for name in _EXPORT_BATCH_COLUMNS] + \
        [decisions.c[name] for name in _EXPORT_DECISION_COLUMNS]
    order = (batches.c.answered_at, decisions.c.batch_id, decisions.c.position)
    query = (select(*columns).join(batches, batches.c.batch_id == decisions.c.batch_id)
             .where(_answered_in(start, end)).order_by(*order).limit(limit))
    if after is not None:
        query = query.where(tuple_(*order) > tuple_(*after))
    with engine.connect() as connection:
        rows = list(connection.execute(query))
    page = [{**row._asdict(), "received_at": instant(row.received_at), "answered_at": instant(row.answered_at),
             "acceptance": row.acceptance or ""} for row in rows]
    last = rows[-1] if len(rows) == limit else None
    return page, (last.answered_at, last.batch_id, last.position) if last is not None else None
