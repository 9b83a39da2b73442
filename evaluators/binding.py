"""Bind each item to its reference records (project, worker, rate row, ...) as of its business date.

The bindings an item kind has are declared in rules/schema.py (rules are typed against them); how
each one is found in a reference snapshot is defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from evaluators.reference_data import ReferenceSnapshot, Row, version_as_of
from rules.schema import TIME_ENTRY, Binding, HoldScope, ItemKind, RateScope, format_value

Scope = dict[str, Any]


class Binder(Protocol):
    def bind(self, binding: Binding, scope: Scope) -> Row | None: ...

    def describe_missing(self, binding: Binding, scope: Scope) -> str: ...


Resolver = Callable[[ReferenceSnapshot, Scope], Row | None]


def _project(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    return snapshot.table("project").get((scope["project_id"],), scope["work_date"])


def _task(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    return snapshot.table("task").get((scope["project_id"], scope["task_id"]), scope["work_date"])


def _worker(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    return snapshot.table("worker").get((scope["worker_id"],), scope["work_date"])


def _covers(row: Row, day: Any) -> bool:
    return bool(row["start_date"] <= day and (row["finish_date"] is None or day <= row["finish_date"]))


def _assignment(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    table = snapshot.table("assignment")
    day = scope["work_date"]
    if scope["assignment_id"]:
        return table.get((scope["assignment_id"],), day)
    candidates = table.find(("worker_id", "project_id"), (scope["worker_id"], scope["project_id"]))
    # Deterministic when several cover the date: the earliest-starting, then the lowest id.
    covering = sorted(
        (row for row in candidates if _covers(row, day) and version_as_of([row], day)),
        key=lambda row: (row["start_date"], row["assignment_id"]),
    )
    return covering[0] if covering else None


def _contract(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    project = scope["project"]
    if project is None or project["contract_id"] is None:
        return None
    return snapshot.table("contract").get((project["contract_id"],), scope["work_date"])


def _job(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    worker = scope["worker"]
    if worker is None or worker["job_code"] is None:
        return None
    return snapshot.table("job_code").get((worker["job_code"],), scope["work_date"])


def _rate(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    """The most specific rate row in force (RC-1, RC-2): worker > assignment > contract > project > standard."""
    category = scope["labor_category"]
    if category is None:
        return None
    project, assignment = scope["project"], scope["assignment"]
    scope_ids = {
        RateScope.WORKER: scope["worker_id"],
        RateScope.ASSIGNMENT: assignment["assignment_id"] if assignment else None,
        RateScope.CONTRACT: project["contract_id"] if project else None,
        RateScope.PROJECT: scope["project_id"],
        RateScope.STANDARD: "",
    }
    table = snapshot.table("rate_card")
    for rate_scope, scope_id in scope_ids.items():
        if scope_id is None:
            continue
        rows = table.find(("scope", "scope_id", "labor_category"), (rate_scope, scope_id, category))
        row = version_as_of(rows, scope["work_date"])
        if row is not None:
            where = f"{rate_scope} {scope_id}" if scope_id else str(rate_scope)
            source = f"{where} (rate {row['rate_id']})"
            return {**row, "source": source}
    return None


def _fx(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    """The FX rate from the rate row's currency to the contract's (RC-4), published on the work date or,
    for a day without a rate (a weekend, a holiday), the latest one before it."""
    rate, contract = scope["rate"], scope["contract"]
    if rate is None or contract is None or rate["currency"] == contract["currency"]:
        return None
    day = scope["work_date"]
    best: Row | None = None
    pair = (rate["currency"], contract["currency"])
    for row in snapshot.table("fx_rate").find(("from_currency", "to_currency"), pair):
        if row["rate_date"] <= day and (best is None or row["rate_date"] > best["rate_date"]) \
                and version_as_of([row], day) is not None:
            best = row
    return best


def _hold(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    """A billing hold in force on the work date (BE-5): on the project, else its contract, else its customer;
    among several on one scope, the lowest hold id."""
    project, contract = scope["project"], scope["contract"]
    if project is None:
        return None
    customer = project["customer_id"] or (contract["customer_id"] if contract is not None else None)
    day = scope["work_date"]
    table = snapshot.table("billing_hold")
    for hold_scope, scope_id in ((HoldScope.PROJECT, scope["project_id"]), (HoldScope.CONTRACT, project["contract_id"]),
                                 (HoldScope.CUSTOMER, customer)):
        if scope_id is None:
            continue
        holds = [row for row in table.find(("scope", "scope_id"), (hold_scope, scope_id))
                 if version_as_of([row], day) is not None]
        if holds:
            return min(holds, key=lambda row: row["hold_id"])
    return None


_CONTROL_FIELDS = ("task_id", "activity_code", "worker_id")


def _control(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    """The transaction control deciding the entry (BE-3): of the controls on the project in force on the work
    date whose task, activity and worker are the entry's or empty (any), the one naming the most of them;
    then the lowest control id."""
    day = scope["work_date"]
    best: tuple[int, str] | None = None
    found: Row | None = None
    for row in snapshot.table("transaction_control").find(("project_id",), (scope["project_id"],)):
        if any(row[f] is not None and row[f] != scope[f] for f in _CONTROL_FIELDS):
            continue
        if version_as_of([row], day) is None:
            continue
        rank = (-sum(row[f] is not None for f in _CONTROL_FIELDS), row["control_id"])
        if best is None or rank < best:
            best, found = rank, row
    return found


def _billed(snapshot: ReferenceSnapshot, scope: Scope) -> Row | None:
    return snapshot.table("billed_item").get((scope["entry_id"],), scope["work_date"])


RESOLVERS: dict[str, dict[str, Resolver]] = {
    TIME_ENTRY.name: {
        "project": _project,
        "task": _task,
        "worker": _worker,
        "assignment": _assignment,
        "contract": _contract,
        "job": _job,
        "rate": _rate,
        "fx": _fx,
        "hold": _hold,
        "control": _control,
        "billed": _billed,
    },
}

class SnapshotBinder:
    """Finds bindings in one reference snapshot."""

    def __init__(self, kind: ItemKind, snapshot: ReferenceSnapshot) -> None:
        self.kind = kind
        self.snapshot = snapshot
        self.resolvers = RESOLVERS[kind.name]

    def bind(self, binding: Binding, scope: Scope) -> Row | None:
        return self.resolvers[binding.name](self.snapshot, scope)

    def describe_missing(self, binding: Binding, scope: Scope) -> str:
        fields = tuple(f for f in binding.entity.key if f in self.kind.fields)
        key = " / ".join(format_value(scope[f]) for f in fields)
        day = format_value(scope[self.kind.date_field])
        table = self.snapshot.table(binding.entity.name)
        exists = bool(fields) and bool(table.by_key.get(tuple(scope[f] for f in fields)))
        what = f"{binding.name} {key}".strip()
        if exists:
            return f"{what} has no version in force on {day} in reference snapshot {self.snapshot.snapshot_id}"
        return f"{what} is not in reference snapshot {self.snapshot.snapshot_id} (looked up as of {day})"


class FixedBinder:
    """Bindings given outright, as in a ruleset's tests: ``refs: {project: {...}, rate: null}``."""

    def __init__(self, records: Mapping[str, Row | None]) -> None:
        self.records = records

    def bind(self, binding: Binding, scope: Scope) -> Row | None:
        return self.records.get(binding.name)

    def describe_missing(self, binding: Binding, scope: Scope) -> str:
        return f"{binding.name} is not given in the test's refs"
