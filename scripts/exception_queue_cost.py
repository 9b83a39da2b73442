"""What keeping the exception queue costs a recorded batch: ledger.exceptions.update_exceptions alone, on 10,000
decision rows (all rejected and new, all rejected again, a tenth rejected, none), on SQLite and on PostgreSQL.

    python scripts/exception_queue_cost.py      # PostgreSQL at TOLLGATE_TEST_POSTGRES_URL, in a schema of its own

Each figure is the time of one transaction (min and median of 3), as Recorder.record runs it at the end of its own.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ledger_support import postgres_schema  # noqa: E402
from tollgate.ledger.exceptions import update_exceptions  # noqa: E402
from tollgate.ledger.store import database_url, open_database  # noqa: E402

ITEMS = 10_000
REASONS = json.dumps([{"rule_id": "BE-4", "code": "NO_ASSIGNMENT", "severity": "error", "field": "worker_id",
                       "message": "Worker W-2 has no assignment on project P-300 on 2026-11-10; ask the project "
                                  "manager to add one.", "ruleset_id": "billing-eligibility"}])


def decision_rows(tag: str, rejected_every: int) -> tuple[str, list[dict[str, Any]]]:
    """A batch's decision rows as Recorder.record builds them; every ``rejected_every``-th rejected (0: none)."""
    batch_id = str(uuid.uuid4())
    rows = []
    for position in range(ITEMS):
        rejected = bool(rejected_every) and position % rejected_every == 0
        item_id = f"{tag}-{position}"
        rows.append({"batch_id": batch_id, "position": position, "item_kind": "time_entry", "item_id": item_id,
                     "input": json.dumps({"entry_id": item_id, "timesheet_id": "TS-1", "worker_id": "W-2",
                                          "project_id": "P-300", "task_id": "T-1", "work_date": "2026-11-10",
                                          "hours": "8", "time_type": "REG", "source_ref": f"psa:{position}"}),
                     "outcome": "reject" if rejected else "accept", "reasons": REASONS if rejected else "[]",
                     "enrichments": "[]"})
    return batch_id, rows


def measure(engine: Engine, backend: str) -> None:
    for case, every, again in (("all rejected, new", 1, False), ("all rejected again", 1, True),
                               ("a tenth rejected, new", 10, False), ("none rejected", 0, False)):
        seconds = []
        for run in range(3):
            batch_id, rows = decision_rows(f"{backend}-{'all rejected, new' if again else case}-{run}", every)
            started = time.perf_counter()
            with engine.begin() as connection:
                update_exceptions(connection, batch_id, "time_entry", datetime.now(UTC), rows)
            seconds.append(time.perf_counter() - started)
        print(f"{backend}: {ITEMS:,} items, {case}: min {min(seconds) * 1000:.0f} ms, "
              f"median {statistics.median(seconds) * 1000:.0f} ms")


def main() -> int:
    sqlite = open_database(database_url(None, Path(tempfile.mkdtemp(prefix="tollgate-cost-"))))
    measure(sqlite, "sqlite")
    sqlite.dispose()
    with postgres_schema() as url:
        postgres = open_database(database_url(url, Path(".")))
        measure(postgres, "postgres")
        postgres.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
