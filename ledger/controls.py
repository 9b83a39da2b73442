"""The accounts in the ledger's database: reading what they hold, and settling a batch's consumption.

Reading (``LedgerPriors``) takes no lock: a batch is decided against what the accounts held when it read them, and
notes the version of each group it read. Settling (``settle``, inside the recording transaction) locks the rows of
``account_keys`` for the groups the batch adds to, in one ordered statement (so two calls lock in the same order),
and checks their versions: unchanged, the decisions stand; changed (another call settled on the same cap in
between), the batch must be decided again under the locks (``Stale``). Only calls on the same groups wait for each
other. On SQLite the recording transaction holds the database's one write lock (BEGIN IMMEDIATE, ledger/store.py):
writers take turns, which is what a single-node SQLite can do.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.exc import DBAPIError

from tollgate.evaluators.accounts import AccountsUnavailableError, Entry
from tollgate.ledger.schema import account_keys, consumption
from tollgate.ledger.store import insert_ignoring_duplicates, unreachable

# Keys per statement: well under SQLite's and PostgreSQL's limits on bound parameters.
_KEYS_PER_QUERY = 500
_T = TypeVar("_T")


def _chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), _KEYS_PER_QUERY):
        yield values[start:start + _KEYS_PER_QUERY]


# Built once: a select made per call cost more than running it (SQLAlchemy's coercions, ~1 ms a batch).
_PRIORS = (select(account_keys.c.group_key, account_keys.c.version, consumption.c.item_kind, consumption.c.item_id,
                  consumption.c.amount)
           .select_from(account_keys.outerjoin(consumption, (consumption.c.account == account_keys.c.account)
                                               & (consumption.c.group_key == account_keys.c.group_key)))
           .where(account_keys.c.account == bindparam("account"),
                  account_keys.c.group_key.in_(bindparam("keys", expanding=True))))


# What a batch's items consumed before (built once, as _PRIORS).
_OWN = (select(consumption.c.account, consumption.c.group_key, consumption.c.item_id, consumption.c.amount)
        .where(consumption.c.item_kind == bindparam("kind"),
               consumption.c.item_id.in_(bindparam("ids", expanding=True))))


def read_priors(connection: Connection, account: str, kind: str, keys: Collection[str], *, own: Collection[str],
                released: Callable[[str], bool] | None, versions: dict[tuple[str, str], int]) -> dict[str, Decimal]:
    """What ``account`` holds for ``keys`` (see evaluators/accounts.PriorReader), noting each key's version in
    ``versions``: one statement per chunk of keys, each group's row with its consumption joined (a group with
    consumption always has its row: settle writes the row first). Read in one statement, the version and the amounts
    agree; a call settling after it shows as a changed version."""
    held: dict[str, Decimal] = {}
    for chunk in _chunks(sorted(keys)):
        for key, version, item_kind, item_id, amount in connection.execute(
                _PRIORS, {"account": account, "keys": list(chunk)}):
            versions[(account, key)] = version
            if amount is None or (item_kind == kind and (item_id in own or (released is not None
                                                                          and released(item_id)))):
                continue
            held[key] = held.get(key, Decimal(0)) + Decimal(amount)
    return held


class LedgerPriors:
    """Reads the accounts for one batch, without locks, remembering the versions it read: through one connection
    (one checkout, and on PostgreSQL one pre-ping, a batch rather than one an account), given back by ``close``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.versions: dict[tuple[str, str], int] = {}
        self._connection: Connection | None = None

    def prior(self, account: str, kind: str, keys: Collection[str], own: Collection[str],
              released: Callable[[str], bool] | None) -> Mapping[str, Decimal]:
        try:
            if self._connection is None:
                self._connection = self.engine.connect().execution_options(ledger_read=True)
            return read_priors(self._connection, account, kind, keys, own=own, released=released,
                               versions=self.versions)
        except DBAPIError as error:
            self.close()
            if not unreachable(error):  # a bug in a statement, not the database out of reach
                raise
            raise AccountsUnavailableError(str(error).splitlines()[0] if str(error) else type(error).__name__) \
                from error

    def close(self) -> None:
        """Give the connection back: the batch has read what it decides with."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class LockedPriors:
    """Reads the accounts inside the recording transaction, after ``lock`` took the groups' rows."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.versions: dict[tuple[str, str], int] = {}

    def prior(self, account: str, kind: str, keys: Collection[str], own: Collection[str],
              released: Callable[[str], bool] | None) -> Mapping[str, Decimal]:
        return read_priors(self.connection, account, kind, keys, own=own, released=released, versions=self.versions)

    def close(self) -> None:
        """Nothing to give back: the connection is the recording transaction's."""


class Stale(Exception):  # noqa: N818 - not an error: the batch is decided again
    """Another call settled on a group this batch adds to after this batch read it."""


def lock(connection: Connection, groups: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Lock the rows of ``groups`` (created at version 0 if new), in order; their versions."""
    wanted = sorted(set(groups))
    if not wanted:
        return {}
    connection.execute(insert_ignoring_duplicates(account_keys, connection.dialect.name),
                       [{"account": account, "group_key": key, "version": 0} for account, key in wanted])
    locked: dict[tuple[str, str], int] = {}
    for chunk in _chunks(wanted):
        rows = connection.execute(
            select(account_keys.c.account, account_keys.c.group_key, account_keys.c.version)
            .where(tuple_(account_keys.c.account, account_keys.c.group_key).in_(chunk))
            .order_by(account_keys.c.account, account_keys.c.group_key)
            .with_for_update())
        locked.update(((account, key), version) for account, key, version in rows)
    return locked


def settle(connection: Connection, *, kind: str, batch_id: str, own: Collection[str], entries: Sequence[Entry],
           versions_read: Mapping[tuple[str, str], int] | None) -> None:
    """File the batch's consumption: what its items consumed before is replaced by ``entries`` (of the items it
    accepted). Only what changes is written, and only the groups it adds to are locked and checked: an item decided
    again that consumes what it did (a month revalidated) changes nothing, and every call that read its group since
    counted it.

    ``versions_read``: the versions the batch was decided against; if another call has settled on one of the
    groups it adds to since, raises Stale (nothing written). None: decided under the locks already.
    """
    before: dict[tuple[str, str, str], Decimal] = {}
    for ids in _chunks(sorted(own)):
        for account, key, item_id, amount in connection.execute(_OWN, {"kind": kind, "ids": list(ids)}):
            before[(account, key, item_id)] = Decimal(amount)
    after = {(e.account, e.key, e.item_id): e.amount for e in entries}
    changed = {entry for entry, amount in after.items() if before.get(entry) != amount}
    adding = {(account, key) for account, key, _item in changed}
    locked = lock(connection, adding)
    if versions_read is not None and any(locked[group] != versions_read.get(group, 0) for group in adding):
        raise Stale
    # an item whose rows change has all of them rewritten: its earlier rows go, its new ones come
    rewritten = sorted({item for _account, _key, item in changed | (before.keys() - after.keys())})
    for ids in _chunks(rewritten):
        connection.execute(delete(consumption).where(consumption.c.item_kind == kind, consumption.c.item_id.in_(ids)))
    for chunk in _chunks(sorted(adding)):
        connection.execute(update(account_keys)
                           .where(tuple_(account_keys.c.account, account_keys.c.group_key).in_(chunk))
                           .values(version=account_keys.c.version + 1))
    written = set(rewritten)
    rows = [{"account": e.account, "group_key": e.key, "item_kind": kind, "item_id": e.item_id,
             "amount": format(e.amount, "f"), "batch_id": batch_id} for e in entries if e.item_id in written]
    if rows:
        connection.execute(insert(consumption), rows)
