"""Planner statistics for the ledger's tables on a PostgreSQL whose autovacuum is off.

A call reads and settles the accounts by key lists (ledger/controls.py); PostgreSQL plans those look-ups from its
statistics on the tables. With none (a table never analyzed) it guessed a few rows per account and filtered every
row of it instead of looking the keys up: a 40-line timesheet's account reads took 30 ms rather than 2 ms once
the ledger held 30,000 entries. Autovacuum, on by default, keeps the statistics; where a server runs without it,
the keeper does what autovacuum's analyze would: every ``interval`` it asks which of the schema's tables changed by
more than autovacuum's own threshold since they were last analyzed, and analyzes those. On SQLite, whose planner
reads the indexes without statistics, and where autovacuum is on, it does nothing.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from tollgate.ledger.periodic import Periodic

log = structlog.get_logger("tollgate.statistics")

INTERVAL_SECONDS = 10.0

# Tables of the current schema changed since their last analyze by more than autovacuum's threshold
# (autovacuum_analyze_threshold + autovacuum_analyze_scale_factor * rows), or never analyzed.
_DUE = text("""
    SELECT s.relname FROM pg_stat_user_tables s
    WHERE s.schemaname = current_schema()
      AND (coalesce(s.last_analyze, s.last_autoanalyze) IS NULL AND s.n_mod_since_analyze > 0
           OR s.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::float8
                                      + current_setting('autovacuum_analyze_scale_factor')::float8 * s.n_live_tup)
    ORDER BY s.relname
""")


def autovacuum_on(connection: Connection) -> bool:
    """Whether the server's autovacuum keeps the statistics (its ``autovacuum`` setting)."""
    return bool(connection.execute(text("SELECT current_setting('autovacuum')")).scalar_one() == "on")


def analyze_due(connection: Connection) -> list[str]:
    """Analyze the tables of the current schema that are due (see ``_DUE``); their names. The names come from the
    catalog and are quoted as identifiers."""
    due = [str(name) for name in connection.execute(_DUE).scalars()]
    quote = connection.dialect.identifier_preparer.quote
    for name in due:
        connection.execute(text(f"ANALYZE {quote(name)}"))
    return due


class StatisticsKeeper(Periodic):
    """Keeps the ledger's statistics in a daemon thread, until stopped: only for a PostgreSQL without autovacuum."""

    def __init__(self, engine: Engine, interval_seconds: float = INTERVAL_SECONDS) -> None:
        super().__init__("tollgate-statistics", self._analyze, interval_seconds, at_start=False,
                         failed="ledger_analyze_failed")
        self.engine = engine

    def needed(self) -> bool:
        """Whether this database needs a keeper: PostgreSQL with autovacuum off."""
        if self.engine.dialect.name != "postgresql":
            return False
        try:
            with self.engine.connect() as connection:
                return not autovacuum_on(connection)
        except SQLAlchemyError:  # cannot tell now: keep them, harmless where autovacuum does too
            return True

    def _analyze(self) -> None:
        with self.engine.begin() as connection:
            analyzed = analyze_due(connection)
        if analyzed:
            log.info("ledger_analyzed", tables=analyzed)
