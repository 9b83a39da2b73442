"""Figures over a whole batch (``aggregates:`` in a ruleset), which rules read as ``batch.<name>``.

Daily and weekly hours per worker, duplicates, running totals against a cap: each item gets the figure
of its group, and ``<name>_items``, the ids of the items counted in the group (the first ten, then
"and N more"). Groups and running totals are taken in a fixed order (business date, then id, then
position), so the answer is the same whatever order the items arrive in.

The items counted are those still standing when the ruleset runs (well-formed, not rejected by an
earlier ruleset). An item that does not count, or that a running total's limit leaves out, still gets
the figure it would have had, without changing anyone else's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rules.compile import ITEMS_SUFFIX, CompiledAggregate
from rules.schema import ItemKind

# How many ids ``<name>_items`` names: a reason names the items involved, but a group of hundreds would
# make every one of its messages hundreds of ids long. Past this, the last element says how many more.
ITEMS_NAMED = 10
_ZERO = Decimal(0)


@dataclass(slots=True)
class _Member:
    position: int
    item_id: str
    counts: bool
    amount: Decimal
    start: Decimal
    limit: Decimal | None


def _group_key(aggregate: CompiledAggregate, scope: Mapping[str, Any], date_field: str) -> tuple[Any, ...]:
    key = tuple(expression.evaluate(scope) for expression in aggregate.by)
    per = aggregate.spec.per
    if per == "day":
        return (*key, scope[date_field].date())
    if per == "week":
        year, week, _day = scope[date_field].isocalendar()
        return (*key, year, week)
    return key


def _decimal(expression: Any, scope: Mapping[str, Any], default: Decimal | None) -> Decimal | None:
    if expression is None:
        return default
    value = expression.evaluate(scope)
    return default if value is None else value


def _named(members: Sequence[_Member], last: _Member | None = None) -> tuple[str, ...]:
    """The ids of ``members`` (and ``last``), the first ten, then how many more."""
    count = len(members) + (last is not None)
    ids = [member.item_id for member in members[:ITEMS_NAMED]]
    if last is not None and len(ids) < ITEMS_NAMED:
        ids.append(last.item_id)
    if count > ITEMS_NAMED:
        ids.append(f"and {count - ITEMS_NAMED} more")
    return tuple(ids)


def _names_so_far(members: Sequence[_Member], counted: Sequence[_Member]) -> dict[int, tuple[str, ...]]:
    """For a running figure, each item names the counted items up to itself (and itself, if it is not one
    of them: the item the figure is about)."""
    counted_positions = {member.position for member in counted}
    so_far: list[_Member] = []
    names = {}
    for member in members:
        if member.position in counted_positions:
            so_far.append(member)
            names[member.position] = _named(so_far)
        else:
            names[member.position] = _named(so_far, member)
    return names


def batch_figures(kind: ItemKind, aggregates: Sequence[CompiledAggregate], scopes: Sequence[Mapping[str, Any]],
                  counting: Sequence[bool]) -> list[dict[str, Any]]:
    """For each item (its scope as it enters the ruleset), the batch figures its rules read.

    ``counting[i]``: whether item i counts in the figures (false: rejected by an earlier ruleset).
    """
    figures: list[dict[str, Any]] = [{} for _ in scopes]
    date_field, id_field = kind.date_field, kind.id_field
    order = sorted(range(len(scopes)), key=lambda i: (scopes[i][date_field], str(scopes[i][id_field]), i))
    for aggregate in aggregates:
        name, items_name, running = aggregate.name, aggregate.name + ITEMS_SUFFIX, aggregate.spec.running
        groups: dict[tuple[Any, ...], list[_Member]] = {}
        for position in order:
            scope = scopes[position]
            try:
                key = _group_key(aggregate, scope, date_field)
                elements = None if aggregate.each is None else dict.fromkeys(aggregate.each.evaluate(scope) or ())
                amount = _decimal(aggregate.sum, scope, _ZERO) if aggregate.sum else Decimal(1)
                start = _decimal(aggregate.start, scope, _ZERO)
                limit = _decimal(aggregate.limit, scope, None)
            except Exception:  # e.g. a record the item lacks: it is rejected for that already
                figures[position][name], figures[position][items_name] = _ZERO, ()
                continue
            assert amount is not None and start is not None
            if aggregate.round_amount is not None:
                amount = aggregate.round_amount(amount)
            member = _Member(position, str(scope[id_field]), counting[position], amount, start, limit)
            if elements is None:
                groups.setdefault(key, []).append(member)
                continue
            if not elements:
                figures[position][name], figures[position][items_name] = _ZERO, ()  # in no group
            for element in elements:
                groups.setdefault((*key, element), []).append(member)
        for members in groups.values():
            left_out: set[int] = set()  # positions a limit leaves out: the items after them do not count them
            group_figures: dict[int, Decimal] = {}
            if running:
                so_far = members[0].start
                for member in members:
                    total = so_far + member.amount
                    group_figures[member.position] = total
                    if not member.counts:
                        continue
                    if member.limit is None or total <= member.limit:
                        so_far = total
                    else:
                        left_out.add(member.position)
            # A sum names the items that add to it; a count, every item counted.
            counted = [member for member in members if member.counts and member.position not in left_out
                       and (member.amount or not aggregate.sum)]
            if running:
                names = _names_so_far(members, counted)
            else:
                total = sum((member.amount for member in members if member.counts), _ZERO)
                for member in members:
                    group_figures[member.position] = total if member.counts else total + member.amount
                names = dict.fromkeys(group_figures, _named(counted))
            for position, value in group_figures.items():
                # An item in several groups (``each``) reads the largest figure, and that group's items.
                if name not in figures[position] or value > figures[position][name]:
                    figures[position][name], figures[position][items_name] = value, names[position]
    return figures
