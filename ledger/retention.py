"""Retention: batches (with their decisions) answered before a date removed, a bounded slice per transaction.

The server purges what is older than ``ledger_retention_days`` at start and then daily (server/app.py); an
operator can purge on demand (AuditService.Purge), never anything newer than that floor. Ruleset texts are
removed only once no kept batch names them (and none of the rulesets loaded now is one of them: the recorder
takes a text it stored once as stored for good).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, delete, exists, select, tuple_

from tollgate.ledger.periodic import Periodic
from tollgate.ledger.schema import batches, decisions, ruleset_sources

log = structlog.get_logger("tollgate.retention")

# One transaction removes at most this many batches, and past the first batch at most this many decisions:
# a purge of a year never holds one giant transaction (nor locks the tables long for the calls being recorded).
BATCHES_PER_SLICE = 500
DECISIONS_PER_SLICE = 20_000
SECONDS_PER_DAY = 86_400.0

# Given a slice's batch ids, those to keep: batches with decisions that open exceptions point at.
KeptBatches = Callable[[Connection, Sequence[str]], Collection[str]]


def no_open_exceptions(_connection: Connection, _batch_ids: Sequence[str]) -> Collection[str]:
    """The hook for the exception queue: until it exists, no decision is held by one.
    (It is to return the batch ids among ``_batch_ids`` whose (batch_id, position) an open exception names.)"""
    return ()


@dataclass(frozen=True, slots=True)
class Purged:
    batches: int
    decisions: int
    ruleset_sources: int


def retention_floor(days: int, now: datetime | None = None) -> datetime:
    """The oldest answer time kept: now - ``days``."""
    return (now or datetime.now(UTC)) - timedelta(days=days)


def purge(engine: Engine, before: datetime, *, keep_sources: Collection[str] = (),
          kept_batches: KeptBatches = no_open_exceptions) -> Purged:
    """Remove the batches answered before ``before`` and their decisions, slice by slice, oldest first;
    then the ruleset texts (not in ``keep_sources``) that no batch names any more."""
    removed_batches = removed_decisions = 0
    named: set[str] = set()
    cursor: tuple[datetime, str] | None = None
    order = (batches.c.answered_at, batches.c.batch_id)
    while True:
        with engine.begin() as connection:
            query = (select(batches.c.batch_id, batches.c.answered_at, batches.c.total, batches.c.rulesets)
                     .where(batches.c.answered_at < before).order_by(*order).limit(BATCHES_PER_SLICE))
            if cursor is not None:
                query = query.where(tuple_(*order) > tuple_(*cursor))
            candidates = list(connection.execute(query))
            if not candidates:
                break
            chosen: list[Any] = []
            held = 0
            for row in candidates:
                if chosen and held + row.total > DECISIONS_PER_SLICE:
                    break
                chosen.append(row)
                held += row.total
            cursor = (chosen[-1].answered_at, chosen[-1].batch_id)
            kept = set(kept_batches(connection, [row.batch_id for row in chosen]))
            going = [row for row in chosen if row.batch_id not in kept]
            ids = [row.batch_id for row in going]
            if ids:
                removed_decisions += connection.execute(
                    delete(decisions).where(decisions.c.batch_id.in_(ids))).rowcount
                removed_batches += connection.execute(delete(batches).where(batches.c.batch_id.in_(ids))).rowcount
            named.update(entry["digest"] for row in going for entry in json.loads(row.rulesets))
    return Purged(removed_batches, removed_decisions, _purge_sources(engine, named - set(keep_sources)))


def _purge_sources(engine: Engine, digests: Collection[str]) -> int:
    removed = 0
    for digest in sorted(digests):
        with engine.begin() as connection:
            # A digest is 64 hex digits: found in a batch's JSON list of rulesets only where that batch names it.
            named = connection.execute(select(exists().where(batches.c.rulesets.contains(digest)))).scalar_one()
            if not named:
                removed += connection.execute(delete(ruleset_sources).where(ruleset_sources.c.digest == digest)
                                              ).rowcount
    return removed


class RetentionLoop(Periodic):
    """Purges what is older than ``days`` at start and then daily, in a daemon thread, until stopped."""

    def __init__(self, engine: Engine, days: int, keep_sources: Callable[[], Collection[str]],
                 interval_seconds: float = SECONDS_PER_DAY) -> None:
        super().__init__("tollgate-retention", self._purge, interval_seconds, at_start=True,
                         failed="ledger_purge_failed")
        self.engine = engine
        self.days = days
        self.keep_sources = keep_sources

    def _purge(self) -> None:
        before = retention_floor(self.days)
        purged = purge(self.engine, before, keep_sources=self.keep_sources())
        log.info("ledger_purged", before=before.isoformat(), retention_days=self.days,
                 batches=purged.batches, decisions=purged.decisions, ruleset_sources=purged.ruleset_sources)
