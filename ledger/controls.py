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

import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Engine, Text, bindparam, delete, func, literal, null, select, union_all, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from tollgate.evaluators.accounts import AccountsUnavailableError, Entry
from tollgate.ledger.schema import account_keys, consumption
from tollgate.ledger.store import bound_list, bulk_insert, insert_ignoring_duplicates, listed, out_of_reach, text_array

# Keys per statement. SQLite: well under its limit on bound parameters. PostgreSQL gets each list as one array
# literal (ledger/store.py listed): a list of 500 placeholders cost more to parse client side (psycopg splits the
# query) than the statement took to run, and a row-value IN list was not planned as index look-ups (a 10,000-entry
# call spent 9 s in the lock and the version bump).
_KEYS_PER_QUERY = {"sqlite": 500, "postgresql": 20_000}
_T = TypeVar("_T")


def _chunks(values: Sequence[_T], dialect: str) -> Iterator[Sequence[_T]]:
    size = _KEYS_PER_QUERY.get(dialect, 500)
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _by_account(groups: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Groups by account, both in order: the order every call locks in (PostgreSQL compares keys bytewise,
    COLLATE "C", as Python's sort does), so two calls never wait for each other's rows crosswise."""
    accounts: dict[str, list[str]] = {}
    for account, key in sorted(set(groups)):
        accounts.setdefault(account, []).append(key)
    return accounts


class _Statements(NamedTuple):
    priors: Any  # the groups' versions and their consumption: account, keys
    own: Any  # what a batch's items consumed before: kind, ids
    insert_keys: Any  # a row per group, created at version 0 unless it exists
    lock: Any  # the groups' rows locked, in order, with their versions: account, keys
    bump: Any  # the groups' versions moved on: account, keys
    forget: Any  # the items' consumption removed: kind, ids


@functools.cache
def _statements(dialect: str) -> _Statements:
    """Built once per dialect: a statement made per call cost more than running it (SQLAlchemy's coercions, ~1 ms a
    batch)."""
    keys, ids = account_keys.c, consumption.c
    in_account = (keys.account == bindparam("b_account"), listed(keys.group_key, "b_keys", dialect))
    # the groups' rows, then their consumption, in one statement (one snapshot: the versions and the amounts agree),
    # each part an index look-up by (account, group_key)
    nothing = null()
    priors = union_all(
        select(keys.group_key, keys.version, nothing.label("item_kind"), nothing.label("item_id"),
               nothing.label("amount")).where(*in_account),
        select(ids.group_key, nothing, ids.item_kind, ids.item_id, ids.amount)
        .where(ids.account == bindparam("b_account"), listed(ids.group_key, "b_keys", dialect)))
    own = (select(ids.account, ids.group_key, ids.item_id, ids.amount)
           .where(ids.item_kind == bindparam("b_kind"), listed(ids.item_id, "b_ids", dialect)))
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        # one statement for every key of the account, made rows by the server
        insert_keys = (postgresql_insert(account_keys)
                       .from_select(["account", "group_key", "version"],
                                    select(bindparam("b_account", type_=Text), func.unnest(text_array("b_keys")),
                                           literal(0)))
                       .on_conflict_do_nothing(index_elements=["account", "group_key"]))
        order: ColumnElement[Any] = keys.group_key.collate("C")
    else:
        insert_keys = insert_ignoring_duplicates(account_keys, dialect)  # executemany: one prepared statement
        order = keys.group_key
    return _Statements(
        priors=priors, own=own, insert_keys=insert_keys,
        lock=select(keys.group_key, keys.version).where(*in_account).order_by(order).with_for_update(),
        bump=update(account_keys).where(*in_account).values(version=keys.version + 1),
        forget=delete(consumption).where(ids.item_kind == bindparam("b_kind"), listed(ids.item_id, "b_ids", dialect)),
    )


def read_priors(connection: Connection, account: str, kind: str, keys: Collection[str], *, own: Collection[str],
                released: Callable[[str], bool] | None, versions: dict[tuple[str, str], int]) -> dict[str, Decimal]:
    """What ``account`` holds for ``keys`` (see evaluators/accounts.PriorReader), noting each key's version in
    ``versions``: one statement per chunk of keys, each group's row (version) and its consumption rows (a group with
    consumption always has its row: settle writes the row first). Read in one statement, the versions and the
    amounts agree; a call settling after it shows as a changed version."""
    dialect = connection.dialect.name
    statement = _statements(dialect).priors
    held: dict[str, Decimal] = {}
    for chunk in _chunks(sorted(keys), dialect):
        for key, version, item_kind, item_id, amount in connection.execute(
                statement, {"b_account": account, "b_keys": bound_list(chunk, dialect)}):
            if version is not None:
                versions[(account, key)] = version
                continue
            if item_kind == kind and (item_id in own or (released is not None and released(item_id))):
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
            if not out_of_reach(self.engine, error):  # a bug in a statement, not the database out of reach
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
    dialect = connection.dialect.name
    statements = _statements(dialect)
    locked: dict[tuple[str, str], int] = {}
    for account, keys in _by_account(groups).items():
        for chunk in _chunks(keys, dialect):
            if dialect == "postgresql":
                connection.execute(statements.insert_keys, {"b_account": account, "b_keys": bound_list(chunk, dialect)})
            else:
                connection.execute(statements.insert_keys,
                                   [{"account": account, "group_key": key, "version": 0} for key in chunk])
            rows = connection.execute(statements.lock, {"b_account": account, "b_keys": bound_list(chunk, dialect)})
            locked.update(((account, key), version) for key, version in rows)
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
    dialect = connection.dialect.name
    statements = _statements(dialect)
    before: dict[tuple[str, str, str], Decimal] = {}
    for ids in _chunks(sorted(own), dialect):
        own_rows = connection.execute(statements.own, {"b_kind": kind, "b_ids": bound_list(ids, dialect)})
        for account, key, item_id, amount in own_rows:
            before[(account, key, item_id)] = Decimal(amount)
    after = {(e.account, e.key, e.item_id): e.amount for e in entries}
    changed = {entry for entry, amount in after.items() if before.get(entry) != amount}
    adding = {(account, key) for account, key, _item in changed}
    locked = lock(connection, adding)
    if versions_read is not None and any(locked[group] != versions_read.get(group, 0) for group in adding):
        raise Stale
    # an item whose rows change has all of them rewritten: its earlier rows go, its new ones come
    rewritten = sorted({item for _account, _key, item in changed | (before.keys() - after.keys())})
    for ids in _chunks(rewritten, dialect):
        connection.execute(statements.forget, {"b_kind": kind, "b_ids": bound_list(ids, dialect)})
    for account, keys in _by_account(adding).items():
        for chunk in _chunks(keys, dialect):
            connection.execute(statements.bump, {"b_account": account, "b_keys": bound_list(chunk, dialect)})
    written = set(rewritten)
    rows = [(e.account, e.key, kind, e.item_id, format(e.amount, "f"), batch_id) for e in entries
            if e.item_id in written]
    if rows:
        bulk_insert(connection, consumption, _CONSUMPTION_COLUMNS, rows)


_CONSUMPTION_COLUMNS = ("account", "group_key", "item_kind", "item_id", "amount", "batch_id")
