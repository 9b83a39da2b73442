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
_ZERO, _ONE = Decimal(0), Decimal(1)


@dataclass(slots=True)
class _Member:
    position: int
    item_id: str
    counts: bool
    amount: Decimal
    start: Decimal
    limit: Decimal | None


def _named(ids: Sequence[str], count: int) -> tuple[str, ...]:
    """The first ids of ``count`` items, then how many more."""
    return (*ids, f"and {count - ITEMS_NAMED} more") if count > ITEMS_NAMED else tuple(ids)


def _assign(figures: dict[str, Any], name: str, items_name: str, value: Decimal, named: tuple[str, ...], *,
            several: bool) -> None:
    if not several or name not in figures or value > figures[name]:
        figures[name], figures[items_name] = value, named


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
        values_of, per = aggregate.values, aggregate.spec.per
        counts_items = aggregate.spec.sum is None
        for position in order:
            scope = scopes[position]
            try:
                *key, amount, start, limit, each = values_of(scope)
            except Exception:  # e.g. a record the item lacks: it is rejected for that already
                figures[position][name], figures[position][items_name] = _ZERO, ()
                continue
            if per == "day":
                key.append(scope[date_field].date())
            elif per == "week":
                key.extend(scope[date_field].isocalendar()[:2])
            amount = _ONE if counts_items else (amount if amount is not None else _ZERO)
            if aggregate.round_amount is not None:
                amount = aggregate.round_amount(amount)
            start = start if start is not None else _ZERO
            elements = None if aggregate.spec.each is None else dict.fromkeys(each or ())
            member = _Member(position, str(scope[id_field]), counting[position], amount, start, limit)
            if elements is None:
                groups.setdefault(tuple(key), []).append(member)
                continue
            if not elements:
                figures[position][name], figures[position][items_name] = _ZERO, ()  # in no group
            for element in elements:
                groups.setdefault((*key, element), []).append(member)
        several = aggregate.spec.each is not None  # an item in several groups reads the largest figure
        names_all = counts_items  # a count names every item counted; a sum, the items that add to it
        for members in groups.values():
            if running:
                so_far, ids, count = members[0].start, [], 0
                for member in members:
                    total = so_far + member.amount
                    counted = member.counts and (member.limit is None or total <= member.limit)
                    if counted:
                        so_far = total  # an item the limit leaves out does not count for the items after it
                    if counted and (names_all or member.amount):
                        count += 1
                        if count <= ITEMS_NAMED:
                            ids.append(member.item_id)
                        named = _named(ids, count)
                    else:  # the item the figure is about is named too
                        named = _named(ids if count >= ITEMS_NAMED else [*ids, member.item_id], count + 1)
                    _assign(figures[member.position], name, items_name, total, named, several=several)
            else:
                total = sum((member.amount for member in members if member.counts), _ZERO)
                named_ids = [m.item_id for m in members if m.counts and (names_all or m.amount)]
                named = _named(named_ids[:ITEMS_NAMED], len(named_ids))
                for member in members:
                    value = total if member.counts else total + member.amount
                    _assign(figures[member.position], name, items_name, value, named, several=several)
    return figures
