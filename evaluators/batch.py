"""Figures over a whole batch (``aggregates:`` in a ruleset), which rules read as ``batch.<name>``.

Daily and weekly hours per worker, duplicates, running totals: each item gets the figure of its
group, and ``<name>_items``, the ids of the items in the group (the first ten, then "and N more").
Groups and running totals are taken in a fixed order (business date, then id, then position), so
the answer is the same whatever order the items arrive in. Only well-formed items count; a
malformed one is rejected on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from rules.model import AggregateSpec
from rules.schema import ItemKind

ITEMS_SUFFIX = "_items"
# How many ids ``<name>_items`` names: a reason names the items involved, but a group of hundreds would
# make every one of its messages hundreds of ids long. Past this, the last element says how many more.
ITEMS_NAMED = 10


def _group_key(spec: AggregateSpec, values: Mapping[str, Any], date_field: str) -> tuple[Any, ...]:
    key = tuple(values[field] for field in spec.by)
    if spec.per == "day":
        return (*key, values[date_field].date())
    if spec.per == "week":
        year, week, _day = values[date_field].isocalendar()
        return (*key, year, week)
    return key


def batch_figures(kind: ItemKind, aggregates: Mapping[str, AggregateSpec],
                  items: Sequence[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """For each item (its values, or None if malformed), the batch figures its rules read."""
    figures: list[dict[str, Any]] = [{} for _ in items]
    present = sorted(
        ((position, values) for position, values in enumerate(items) if values is not None),
        key=lambda pair: (pair[1][kind.date_field], str(pair[1][kind.id_field]), pair[0]),
    )
    for name, spec in aggregates.items():
        groups: dict[tuple[Any, ...], list[tuple[int, Mapping[str, Any]]]] = {}
        for position, values in present:
            groups.setdefault(_group_key(spec, values, kind.date_field), []).append((position, values))
        for members in groups.values():
            ids = tuple(str(values[kind.id_field]) for _position, values in members[:ITEMS_NAMED])
            if len(members) > ITEMS_NAMED:
                ids += (f"and {len(members) - ITEMS_NAMED} more",)
            amounts = [(values[spec.sum] or Decimal(0)) if spec.sum else Decimal(1) for _position, values in members]
            total = sum(amounts, Decimal(0))
            so_far = Decimal(0)
            for (position, _values), amount in zip(members, amounts, strict=True):
                so_far += amount
                figures[position][name] = so_far if spec.running else total
                figures[position][name + ITEMS_SUFFIX] = ids
    return figures
