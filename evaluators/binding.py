"""Bind each item to its reference records (project, worker, rate row, ...) as of its business date.

The bindings an item kind has are declared in rules/item_kinds.py (rules are typed against them); how
each one is found in a reference snapshot is defined here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from tollgate.refdata.snapshot import ReferenceSnapshot, Row, in_force, ranges_meet, starts, version_as_of
from tollgate.rules.entities import HoldScope
from tollgate.rules.fields import format_message_value, format_value
from tollgate.rules.item_kinds import EXPENSE_LINE, INVOICE_LINE, TIME_ENTRY, Binding, ItemKind
from tollgate.rules.problems import Problem
from tollgate.rules.typecheck import LOOKUP_PRECEDENCE, CompiledLookup, CompiledRuleset

Scope = dict[str, Any]


class Binder(Protocol):
    def bind(self, binding: Binding, scope: Scope) -> Row | None: ...

    def describe_missing(self, binding: Binding, scope: Scope) -> str: ...

    def lookup(self, lookup: CompiledLookup, scope: Scope) -> Row | None: ...

    def lookup_problems(self, rulesets: Sequence[CompiledRuleset]) -> list[Problem]: ...

    def lists(self, table: str, key: str) -> bool:
        """Whether the reference table (keyed by one field) has a row, any version, under ``key``."""
        ...


Resolver = Callable[[ReferenceSnapshot, Scope, Any], Row | None]  # (snapshot, item scope, business date)


def _project(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("project").get((scope["project_id"],), day)


def _task(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("task").get((scope["project_id"], scope["task_id"]), day)


def _worker(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("worker").get((scope["worker_id"],), day)


def _covers(row: Row, day: Any) -> bool:
    return bool(row["start_date"] <= day and (row["finish_date"] is None or day <= row["finish_date"]))


def _assignment(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    table = snapshot.table("assignment")
    if scope["assignment_id"]:
        return table.get((scope["assignment_id"],), day)
    candidates = table.find(("worker_id", "project_id"), (scope["worker_id"], scope["project_id"]))
    if len(candidates) < 2:  # as most workers have on a project: nothing to choose between
        return candidates[0] if candidates and _covers(candidates[0], day) and in_force(candidates[0], day) else None
    # Deterministic when several cover the date: the earliest-starting, then the lowest id.
    covering = sorted(
        (row for row in candidates if _covers(row, day) and in_force(row, day)),
        key=lambda row: (row["start_date"], row["assignment_id"]),
    )
    return covering[0] if covering else None


def _contract(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    project = scope["project"]
    if project is None or project["contract_id"] is None:
        return None
    return snapshot.table("contract").get((project["contract_id"],), day)


def _job(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    worker = scope["worker"]
    if worker is None or worker["job_code"] is None:
        return None
    return snapshot.table("job_code").get((worker["job_code"],), day)


# Read once: on Python 3.11 reading a member through its enum class costs about as much as a dict probe of the index.
_PROJECT, _CONTRACT, _CUSTOMER = HoldScope.PROJECT, HoldScope.CONTRACT, HoldScope.CUSTOMER


def _first_hold(snapshot: ReferenceSnapshot, day: Any, scopes: Iterable[tuple[HoldScope, str | None]]) -> Row | None:
    """The billing hold in force on ``day`` on the first scope that has one; among several, the lowest id."""
    find = snapshot.table("billing_hold").index(("scope", "scope_id")).find
    for hold_scope, scope_id in scopes:
        if scope_id is None:
            continue
        rows = find((hold_scope, scope_id))
        if not rows:
            continue  # most scopes have no hold: no more work for them
        holds = [row for row in rows if in_force(row, day)]
        if holds:
            return min(holds, key=lambda row: row["hold_id"])
    return None


def _hold(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    """A billing hold in force on the business date (BE-5): on the project, else its contract, else its customer."""
    project, contract = scope["project"], scope["contract"]
    if project is None:
        return None
    customer = project["customer_id"] or (contract["customer_id"] if contract is not None else None)
    return _first_hold(snapshot, day, ((_PROJECT, scope["project_id"]), (_CONTRACT, project["contract_id"]),
                                       (_CUSTOMER, customer)))


_CONTROL_FIELDS = ("task_id", "activity_code", "worker_id")


def _control(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    """The transaction control deciding the entry (BE-3): of the controls on the project in force on the work
    date whose task, activity and worker are the entry's or empty (any), the one naming the most of them;
    then the lowest control id."""
    best: tuple[int, str] | None = None
    found: Row | None = None
    for row in snapshot.table("transaction_control").find(("project_id",), (scope["project_id"],)):
        named = _named_by_control(row, scope)
        if named is None or not in_force(row, day):
            continue
        rank = (-named, row["control_id"])
        if best is None or rank < best:
            best, found = rank, row
    return found


def _named_by_control(row: Row, scope: Scope) -> int | None:
    """How many of the entry's task, activity and worker the control names; None if it names another."""
    named = 0
    for name in _CONTROL_FIELDS:
        value = row[name]
        if value is not None:
            if value != scope[name]:
                return None
            named += 1
    return named


def _billed(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("billed_item").get((scope["entry_id"],), day)


def _contract_line_of(item_class: str) -> Resolver:
    def resolve(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
        """The contract's line for this item class covering the date, else its first such line (by id), so
        that a date outside every line can be told apart from a class the contract does not bill (CT-1, CT-2)."""
        contract = scope["contract"]
        if contract is None:
            return None
        rows = snapshot.table("contract_line").find(("contract_id", "item_class"),
                                                    (contract["contract_id"], item_class))
        if len(rows) < 2:  # as most contracts have per class: covering or not, the line is the one in force
            return rows[0] if rows and in_force(rows[0], day) else None
        lines = [row for row in rows if in_force(row, day)]
        lines.sort(key=lambda row: row["line_id"])
        covering = [row for row in lines
                    if row["start_date"] <= day and (row["end_date"] is None or day <= row["end_date"])]
        chosen = covering or lines
        return chosen[0] if chosen else None
    return resolve


def _policy(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("expense_policy").get((scope["expense_type"],), day)


def _mileage(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("mileage_rate").get((scope["currency"],), day)


def _expense_terms(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    contract = scope["contract"]
    if contract is None:
        return None
    table = snapshot.table("contract_expense_term")
    return table.get((contract["contract_id"], scope["expense_type"]), day) or \
        table.get((contract["contract_id"], "*"), day)


def _invoice_contract(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("contract").get((scope["contract_id"],), day)


def _customer(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("customer").get((scope["customer_id"],), day)


def _invoice_hold(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return _first_hold(snapshot, day, ((_CONTRACT, scope["contract_id"]), (_CUSTOMER, scope["customer_id"])))


def _receivables_period(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    periods = [row for row in snapshot.table("accounting_period").find(("module",), ("AR",))
               if row["start_date"] <= day <= row["end_date"] and in_force(row, day)]
    return min(periods, key=lambda row: row["period_id"]) if periods else None


def jurisdiction(customer: Row) -> str:
    """Where a customer is taxed: its country, or country-region where the region taxes (US states)."""
    if customer["country"] == "US" and customer["region"]:
        return f"US-{customer['region']}"
    return str(customer["country"])


def _exemption(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    """The exemption certificate valid on the date (TX-5), else the latest expired one, so a rule can warn."""
    customer = scope["customer"]
    if customer is None:
        return None
    certificates = [row for row in snapshot.table("exemption_certificate").find(
        ("customer_id", "jurisdiction"), (customer["customer_id"], jurisdiction(customer)))
        if row["effective_from"] is None or row["effective_from"] <= day]
    valid = [row for row in certificates if in_force(row, day)]
    if valid:
        return min(valid, key=lambda row: row["certificate_id"])
    expired = sorted(certificates, key=lambda row: (row["effective_to"], row["certificate_id"]))
    return expired[-1] if expired else None


def _tax(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    return snapshot.table("tax_code").get((scope["tax_code"],), day) if scope["tax_code"] else None


def _sources(snapshot: ReferenceSnapshot, scope: Scope, day: Any) -> Row | None:
    """What the ledger says of the line's source items (IV-1, IV-2), as one record rules can read."""
    table = snapshot.table("work_item")
    missing, unaccepted, elsewhere, other_contract = [], [], [], []
    total = Decimal(0)
    for item_id in scope["source_ids"]:
        row = table.get((item_id,), day)
        if row is None:
            missing.append(item_id)
            continue
        if row["status"] != "ACCEPTED":
            unaccepted.append(item_id)
        if row["invoice_id"] is not None and row["invoice_id"] != scope["invoice_id"]:
            elsewhere.append(item_id)
        if row["contract_id"] is not None and row["contract_id"] != scope["contract_id"]:
            other_contract.append(item_id)
        if row["status"] == "ACCEPTED" and item_id not in elsewhere:
            total += row["amount"]
    return {
        "count": Decimal(len(scope["source_ids"])),
        "missing_ids": tuple(missing),
        "unaccepted_ids": tuple(unaccepted),
        "invoiced_elsewhere_ids": tuple(elsewhere),
        "other_contract_ids": tuple(other_contract),
        "billable_total": total,
    }


RESOLVERS: dict[str, dict[str, Resolver]] = {
    TIME_ENTRY.name: {
        "project": _project,
        "task": _task,
        "worker": _worker,
        "assignment": _assignment,
        "contract": _contract,
        "job": _job,
        "hold": _hold,
        "control": _control,
        "billed": _billed,
        "contract_line": _contract_line_of("TIME"),
    },
    EXPENSE_LINE.name: {
        "project": _project,
        "task": _task,
        "worker": _worker,
        "assignment": _assignment,
        "contract": _contract,
        "hold": _hold,
        "contract_line": _contract_line_of("EXPENSE"),
        "policy": _policy,
        "mileage": _mileage,
        "expense_terms": _expense_terms,
    },
    INVOICE_LINE.name: {
        "contract": _invoice_contract,
        "customer": _customer,
        "hold": _invoice_hold,
        "period": _receivables_period,
        "exemption": _exemption,
        "tax": _tax,
        "sources": _sources,
    },
}

def _overlaps(rows: Sequence[Row], columns: tuple[str, ...], latest: str | None) -> Iterator[str]:
    """Describe each pair of rows agreeing on ``columns`` that could both be found on one day."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row[c] for c in columns), []).append(row)
    for values, group in groups.items():
        if len(group) < 2:
            continue
        if latest is not None:
            dates: dict[Any, Row] = {}
            for row in group:
                if row[latest] in dates and ranges_meet(dates[row[latest]], row):
                    yield f"{_describe(columns, values)} twice for {format_value(row[latest])}"
                dates.setdefault(row[latest], row)
            continue
        for earlier, later in itertools.pairwise(sorted(group, key=starts)):
            if ranges_meet(earlier, later):
                yield (f"{_describe(columns, values)} from {format_value(earlier['effective_from'])} to "
                       f"{format_value(earlier['effective_to'])} and from {format_value(later['effective_from'])} "
                       f"to {format_value(later['effective_to'])}")


def _describe(columns: tuple[str, ...], values: tuple[Any, ...]) -> str:
    return ", ".join(f"{c} {format_value(v)}" for c, v in zip(columns, values, strict=True))


# Per way of a lookup: its precedence, the function giving the values it matches, and the rows of the table with
# those values in its columns (the table's index by them).
_IndexedWays = tuple[tuple[int, Callable[[Any], tuple[Any, ...]], Callable[[Any], Sequence[Row]]], ...]


class SnapshotBinder:
    """Finds bindings in one reference snapshot."""

    def __init__(self, kind: ItemKind, snapshot: ReferenceSnapshot) -> None:
        self.kind = kind
        self.snapshot = snapshot
        self.resolvers = RESOLVERS[kind.name]
        self.date_field = kind.date_field
        self._found_rows: dict[tuple[int, int], Row] = {}
        # id of a lookup -> (the lookup, kept so that its id is not reused while keyed here; its indexed ways)
        self._ways: dict[int, tuple[CompiledLookup, _IndexedWays]] = {}

    def bind(self, binding: Binding, scope: Scope) -> Row | None:
        return self.resolvers[binding.name](self.snapshot, scope, scope[self.date_field])

    def lists(self, table: str, key: str) -> bool:
        return (key,) in self.snapshot.table(table).by_key

    def lookup(self, lookup: CompiledLookup, scope: Scope) -> Row | None:
        """The row the first way of the lookup finds in force on the day (see LookupSpec), or None."""
        day = lookup.as_of.evaluate(scope) if lookup.as_of is not None else scope[self.date_field]
        if day is None:
            return None
        known = self._ways.get(id(lookup))
        ways = known[1] if known is not None else self._index_ways(lookup)
        latest = lookup.latest_on_or_before
        for precedence, values_of, find in ways:
            values = values_of(scope)
            if None in values:
                continue  # this way does not apply to the item (e.g. no assignment)
            rows = find(values)
            if not rows:
                continue  # most ways of a lookup find nothing: no more work for them
            if latest is None:
                row = version_as_of(rows, day)
            else:
                row = None  # the latest on or before the day, in force on it (the first such, on a tie)
                for candidate in rows:
                    when = candidate[latest]
                    if when <= day and (row is None or when > row[latest]) and in_force(candidate, day):
                        row = candidate
            if row is not None:
                return self._found(row, precedence)
        return None

    def _index_ways(self, lookup: CompiledLookup) -> _IndexedWays:
        """Each way of the lookup with the table index it probes, found once per snapshot rather than per item."""
        table = self.snapshot.table(lookup.entity.name)
        ways = tuple((precedence, values_of, table.index(columns).find)
                     for precedence, (columns, values_of) in enumerate(lookup.ways, start=1))
        self._ways[id(lookup)] = (lookup, ways)
        return ways

    def _found(self, row: Row, precedence: int) -> Row:
        """The row as a lookup gives it, with the way that found it; made once per row and way."""
        key = (id(row), precedence)  # rows live as long as the snapshot this binder holds
        found = self._found_rows.get(key)
        if found is None:
            found = self._found_rows[key] = {**row, LOOKUP_PRECEDENCE: Decimal(precedence)}
        return found

    def lookup_problems(self, rulesets: Sequence[CompiledRuleset]) -> list[Problem]:
        """Rows one way of a lookup could find together, in force on the same day: the lookup would depend
        on the order rows happen to be stored in, so the pairing of ruleset and data is refused."""
        problems = []
        for ruleset in rulesets:
            for lookup in ruleset.lookups:
                table = self.snapshot.table(lookup.entity.name)
                for precedence, (columns, _values_of) in enumerate(lookup.ways, start=1):
                    rows = [row for versions in table.by_key.values() for row in versions]
                    for clash in _overlaps(rows, columns, lookup.latest_on_or_before):
                        problems.append(Problem(
                            ruleset.path, lookup.line, lookup.name,
                            f"lookups.{lookup.name}: way {precedence} ({', '.join(columns)}) finds more than one "
                            f"{lookup.entity.name} row in force on the same day in reference snapshot "
                            f"{self.snapshot.snapshot_id}: {clash}; correct the data or make the match more specific"))
                        break  # one example per way is enough to act on
        return problems

    def describe_missing(self, binding: Binding, scope: Scope) -> str:
        fields = tuple(f for f in binding.entity.key if f in self.kind.fields)
        key = " / ".join(format_message_value(scope[f]) for f in fields)  # a reason's message: each value cut
        day = format_value(scope[self.kind.date_field])
        table = self.snapshot.table(binding.entity.name)
        exists = bool(fields) and bool(table.by_key.get(tuple(scope[f] for f in fields)))
        what = f"{binding.name} {key}".strip()
        if exists:
            return f"{what} has no version in force on {day} in reference snapshot {self.snapshot.snapshot_id}"
        return f"{what} is not in reference snapshot {self.snapshot.snapshot_id} (looked up as of {day})"


class FixedBinder:
    """Bindings and lookups given outright, as in a ruleset's tests: ``refs: {project: {...}, rate: null}``."""

    def __init__(self, records: Mapping[str, Row | None]) -> None:
        self.records = records

    def bind(self, binding: Binding, scope: Scope) -> Row | None:
        return self.records.get(binding.name)

    def lookup(self, lookup: CompiledLookup, scope: Scope) -> Row | None:
        return self.records.get(lookup.name)

    def lists(self, table: str, key: str) -> bool:
        return False  # a ruleset's test decides one batch: nothing is held across calls

    def lookup_problems(self, rulesets: Sequence[CompiledRuleset]) -> list[Problem]:
        return []

    def describe_missing(self, binding: Binding, scope: Scope) -> str:
        return f"{binding.name} is not given in the test's refs"
