"""Reading the ledger back: every decision on an item, and one batch whole (``tollgate audit``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select

from tollgate.ledger.schema import batches, decisions


def _batch(row: Any) -> dict[str, Any]:
    return {
        "batch_id": row.batch_id, "request_id": row.request_id, "correlation_id": row.correlation_id,
        "caller": row.caller, "received_at": row.received_at.isoformat(), "answered_at": row.answered_at.isoformat(),
        "item_kind": row.item_kind, "rulesets": json.loads(row.rulesets), "snapshot_id": row.snapshot_id,
        "engine_version": row.engine_version,
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
