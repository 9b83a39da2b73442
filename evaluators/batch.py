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

import functools
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from tollgate.evaluators.accounts import Accounts, group_key
from tollgate.rules.item_kinds import ItemKind
from tollgate.rules.typecheck import ITEMS_SUFFIX, CompiledAggregate

# How many ids ``<name>_items`` names: a reason names the items involved, but a group of hundreds would
# make every one of its messages hundreds of ids long. Past this, the last element says how many more.
ITEMS_NAMED = 10
_ZERO, _ONE = Decimal(0), Decimal(1)


# A member of a group: (position in the batch, whether it counts, amount, start, limit). A tuple rather than a
# class: one is made per item and aggregate.
_Member = tuple[int, bool, Decimal, Decimal, "Decimal | None"]


def _named(ids: Sequence[str], count: int) -> tuple[str, ...]:
    """The first ids of ``count`` items, then how many more."""
    return (*ids, f"and {count - ITEMS_NAMED} more") if count > ITEMS_NAMED else tuple(ids)


def _assign(figures: dict[str, Any], name: str, items_name: str, value: Decimal, named: tuple[str, ...], *,
            several: bool) -> None:
    if not several or name not in figures or value > figures[name]:
        figures[name], figures[items_name] = value, named


# Items whose share of a figure could not be worked out: position -> (aggregate name, the error). Such an item
# reads zero and is rejected by the engine, naming the aggregate; the others' figures leave it out.
Failures = dict[int, tuple[str, Exception]]


def batch_figures(kind: ItemKind, aggregates: Sequence[CompiledAggregate], scopes: Sequence[Mapping[str, Any]],
                  counting: Sequence[bool], failures: Failures | None = None, *, accounts: Accounts | None = None,
                  lists: Callable[[str, str], bool] | None = None) -> list[dict[str, Any]]:
    """For each item (its scope as it enters the ruleset), the batch figures its rules read.

    ``counting[i]``: whether item i counts in the figures (false: rejected by an earlier ruleset).
    ``failures`` receives the items whose share of a figure could not be worked out (one bad item costs
    only itself: the figures of the others are worked out without it).
    ``accounts``: where the running totals of aggregates with an ``account`` start from, across calls, and
    where what each counted item adds is noted (evaluators/accounts.py); ``lists(table, item_id)``: whether
    the reference data lists the item in a ``released_by`` table.
    """
    failures = {} if failures is None else failures
    figures: list[dict[str, Any]] = [{} for _ in scopes]
    date_field, id_field = kind.date_field, kind.id_field
    ids = [str(scope[id_field]) for scope in scopes]
    # sorted in C: (date, id, position) tuples rather than a key function called per item
    order = [position for _day, _id, position in
             sorted(zip([scope[date_field] for scope in scopes], ids, range(len(scopes)), strict=True))]
    for aggregate in aggregates:
        groups = _groups(aggregate, scopes, order, figures, counting=counting, date_field=date_field,
                         failures=failures)
        name, items_name = aggregate.name, aggregate.name + ITEMS_SUFFIX
        several = aggregate.spec.each is not None  # an item in several groups reads the largest figure
        names_all = aggregate.spec.sum is None  # a count names every item counted; a sum, the items that add to it
        running = aggregate.spec.running
        account = aggregate.spec.account if accounts is not None else None
        keys: dict[tuple[Any, ...], str | None] = {}
        priors: Mapping[str, Decimal] = {}
        if account is not None and accounts is not None:
            keys = {values: group_key(values) for values in groups}
            released_by = aggregate.spec.released_by
            released = functools.partial(lists, released_by) if released_by is not None and lists else None
            priors = accounts.prior(account, [key for key in keys.values() if key is not None], released)
        for values, members in groups.items():
            key = keys.get(values)
            noted = functools.partial(accounts.add, account, key) \
                if key is not None and account is not None and accounts is not None else None
            held = priors[key] if key is not None else _ZERO
            if len(members) == 1:
                # Alone in its group, as most items are in most groups: the same figure, worked out directly.
                position, counts, amount, start, limit = members[0]
                try:
                    if running:
                        total = start + held + amount
                        _assign(figures[position], name, items_name, total, (ids[position],), several=several)
                        if noted is not None and counts and (limit is None or total <= limit):
                            noted(ids[position], amount)
                    else:
                        alone: tuple[str, ...] = (ids[position],) if counts and (names_all or amount) else ()
                        _assign(figures[position], name, items_name, _ZERO + amount, alone, several=several)
                except ArithmeticError as error:
                    _failed(figures, failures, position, (name, items_name), error)
                continue
            if running:
                _running(members, ids, figures, (name, items_name), names_all=names_all, several=several,
                         failures=failures, held=held, noted=noted)
                continue
            total, named_ids, left_out = _ZERO, [], set()
            for position, counts, amount, _start, _limit in members:
                if counts:
                    try:
                        total += amount
                    except ArithmeticError as error:
                        _failed(figures, failures, position, (name, items_name), error)
                        left_out.add(position)
                        continue
                    if names_all or amount:
                        named_ids.append(ids[position])
            named = _named(named_ids[:ITEMS_NAMED], len(named_ids))
            for position, counts, amount, _start, _limit in members:
                if position in left_out:
                    continue
                try:
                    _assign(figures[position], name, items_name, total if counts else total + amount, named,
                            several=several)
                except ArithmeticError as error:
                    _failed(figures, failures, position, (name, items_name), error)
    return figures


def _failed(figures: list[dict[str, Any]], failures: Failures, position: int, names: tuple[str, str],
            error: Exception) -> None:
    """An item whose share of a figure cannot be worked out: it reads zero, and is named in ``failures``."""
    figures[position][names[0]], figures[position][names[1]] = _ZERO, ()
    failures.setdefault(position, (names[0], error))


def _groups(aggregate: CompiledAggregate, scopes: Sequence[Mapping[str, Any]], order: Sequence[int],
            figures: list[dict[str, Any]], *, counting: Sequence[bool], date_field: str,
            failures: Failures) -> dict[tuple[Any, ...], list[_Member]]:
    """The aggregate's groups, each with its members in the batch's fixed order; an item whose values cannot be
    worked out (named in ``failures``), or with an empty ``each``, is in none and reads zero."""
    groups: dict[tuple[Any, ...], list[_Member]] = {}
    name, items_name = aggregate.name, aggregate.name + ITEMS_SUFFIX
    values_of, per, round_amount = aggregate.values, aggregate.spec.per, aggregate.round_amount
    counts_items, each = aggregate.spec.sum is None, aggregate.spec.each is not None
    keys = len(aggregate.spec.by)  # the values start with the ``by`` values, then sum, start, limit and each
    for position in order:
        scope = scopes[position]
        try:
            values = values_of(scope)
            key = values[:keys]
            if per == "day":
                key += (scope[date_field].date(),)
            elif per == "week":
                year, week, _weekday = scope[date_field].isocalendar()
                key += (year, week)
            amount, start, limit, elements = values[keys:]
            amount = _ONE if counts_items else (amount if amount is not None else _ZERO)
            if round_amount is not None:
                amount = round_amount(amount)
        except Exception as error:  # a record the item lacks (it is rejected for that already), or a bad value
            _failed(figures, failures, position, (name, items_name), error)
            continue
        member = (position, counting[position], amount, start if start is not None else _ZERO, limit)
        try:  # hashing the key: a value that cannot be one (a signalling NaN) fails here, for this item alone
            if not each:
                group = groups.get(key)
                if group is None:
                    groups[key] = [member]
                else:
                    group.append(member)
                continue
            elements = dict.fromkeys(elements or ())
            if not elements:
                figures[position][name], figures[position][items_name] = _ZERO, ()  # in no group
            for element in elements:
                groups.setdefault((*key, element), []).append(member)
        except TypeError as error:
            _failed(figures, failures, position, (name, items_name), error)
    return groups


def _running(members: Sequence[_Member], ids: Sequence[str], figures: list[dict[str, Any]], names: tuple[str, str],
             *, names_all: bool, several: bool, failures: Failures, held: Decimal,
             noted: Callable[[str, Decimal], None] | None) -> None:
    """A running total through a group's members, in order: each reads the total up to and including itself.
    ``held``: what the group's account holds from other calls; ``noted`` is told what each counted item adds."""
    name, items_name = names
    so_far, named_ids, count = members[0][3] + held, [], 0
    for position, counts, amount, _start, limit in members:
        try:
            total = so_far + amount
            counted = counts and (limit is None or total <= limit)
        except ArithmeticError as error:  # this item's amount or limit: it alone is left out
            _failed(figures, failures, position, names, error)
            continue
        if counted:
            so_far = total  # an item the limit leaves out does not count for the items after it
            if noted is not None:
                noted(ids[position], amount)
        if counted and (names_all or amount):
            count += 1
            if count <= ITEMS_NAMED:
                named_ids.append(ids[position])
            named = _named(named_ids, count)
        else:  # the item the figure is about is named too
            named = _named(named_ids if count >= ITEMS_NAMED else [*named_ids, ids[position]], count + 1)
        _assign(figures[position], name, items_name, total, named, several=several)
