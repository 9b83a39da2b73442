"""Recording one call: its batch row, a decision row per item, and the sources of its rulesets, in one transaction.

A call is answered only once this has committed. When the database cannot be written, the call fails
(server/validation_service.py: UNAVAILABLE, ErrorInfo LEDGER_UNAVAILABLE): nothing is answered unrecorded.
A spool that keeps decisions through an outage is a later slice; so is group commit across concurrent
calls (each call commits its own transaction here, in the deciding thread that decided it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select

from tollgate.ledger.exceptions import update_exceptions
from tollgate.ledger.schema import batches, decisions, ruleset_sources
from tollgate.rules.decisions import Decision
from tollgate.rules.typecheck import CompiledRuleset


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


def wire_fields(message: Any) -> dict[str, Any]:
    """A protobuf item's fields as received (those set), as JSON values: maps as objects, repeated as lists."""
    fields: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        if hasattr(value, "keys"):  # a map
            fields[descriptor.name] = dict(value)
        elif hasattr(value, "extend"):  # repeated
            fields[descriptor.name] = [wire_fields(v) if hasattr(v, "ListFields") else v for v in value]
        else:
            fields[descriptor.name] = value
    return fields


def _reasons(decision: Decision) -> str:
    return json.dumps([{"rule_id": r.rule_id, "code": r.code, "severity": r.severity.value, "field": r.field,
                        "message": r.message, "ruleset_id": r.ruleset_id} for r in decision.reasons],
                      ensure_ascii=False)


def _enrichments(decision: Decision) -> str:
    return json.dumps([{"field": e.field, "old_value": e.old_value, "new_value": e.new_value, "rule_id": e.rule_id}
                       for e in decision.enrichments], ensure_ascii=False)


class Recorder:
    """Writes calls to the ledger's database. Thread-safe: each call takes a connection of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._stored: set[str] = set()  # digests known to be in ruleset_sources

    def record(self, batch: Batch, items: Sequence[Any], headers: Sequence[Any] | None,
               decided: Sequence[Decision]) -> None:
        """One transaction: the batch, its decisions (one multi-row insert), the ruleset sources not yet stored, and
        the exception queue brought up to date (ledger/exceptions.py)."""
        counts = {"accept": 0, "enrich": 0, "reject": 0}
        rows = []
        kind = batch.item_kind
        for position, (item, decision) in enumerate(zip(items, decided, strict=True)):
            counts[decision.outcome.value] += 1
            fields = wire_fields(item)
            if headers is not None:  # an invoice line: the invoice's header fields it carries, without its lines
                header = wire_fields(headers[position])
                header.pop("lines", None)
                fields["invoice"] = header
            rows.append({"batch_id": batch.batch_id, "position": position, "item_kind": kind,
                         "item_id": decision.item_id, "input": json.dumps(fields, ensure_ascii=False),
                         "outcome": decision.outcome.value, "reasons": _reasons(decision),
                         "enrichments": _enrichments(decision)})
        batch_row = {
            "batch_id": batch.batch_id, "request_id": batch.request_id, "correlation_id": batch.correlation_id,
            "caller": batch.caller, "received_at": batch.received_at, "answered_at": batch.answered_at,
            "item_kind": kind, "snapshot_id": batch.snapshot_id, "engine_version": batch.engine_version,
            "rulesets": json.dumps([{"id": s.id, "version": s.version, "digest": s.digest}
                                    for s in batch.rulesets], ensure_ascii=False),
            "total": len(rows), "accepted": counts["accept"], "enriched": counts["enrich"],
            "rejected": counts["reject"],
        }
        with self.engine.begin() as connection:
            missing = {s.digest: s for s in batch.rulesets if s.digest not in self._stored}
            if missing:
                present = set(connection.execute(select(ruleset_sources.c.digest).where(
                    ruleset_sources.c.digest.in_(missing))).scalars())
                new = [{"digest": s.digest, "ruleset_id": s.id, "version": s.version, "path": s.path,
                        "source": s.text} for d, s in missing.items() if d not in present]
                if new:
                    connection.execute(_insert_ignoring_duplicates(connection.dialect.name), new)
            connection.execute(insert(batches), [batch_row])
            if rows:
                connection.execute(insert(decisions), rows)  # executemany: multi-row INSERTs (insertmanyvalues)
            update_exceptions(connection, batch.batch_id, kind, batch.answered_at, rows)
        self._stored.update(missing)


def _insert_ignoring_duplicates(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: another worker may store the same source at the same moment."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(ruleset_sources).on_conflict_do_nothing(index_elements=["digest"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(ruleset_sources).on_conflict_do_nothing(index_elements=["digest"])


def open_recorder(database_url: str | None, data_dir: Path) -> Recorder:
    """The ledger of settings ``database_url`` / ``data_dir``: connected, migrated (ProblemsError otherwise)."""
    from tollgate.ledger.store import database_url as resolve
    from tollgate.ledger.store import open_database

    return Recorder(open_database(resolve(database_url, data_dir)))
