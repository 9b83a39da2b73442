"""Group commit (ledger/group_commit.py) on real SQLite and PostgreSQL: calls that wait while a transaction is open
share the next one; one call's failure costs only itself; a failed commit fails the whole group; each call's work
runs in its own context."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from tests.ledger_support import BACKENDS, ledger_database
from tollgate.ledger.group_commit import GroupCommit
from tollgate.ledger.schema import ruleset_sources
from tollgate.ledger.store import database_url, open_database

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with ledger_database(request.param, tmp_path) as url:
        opened = open_database(database_url(url, tmp_path))
        yield opened
        opened.dispose()


def _mark(name: str) -> Callable[[Connection], str]:
    def work(connection: Connection) -> str:
        connection.execute(insert(ruleset_sources), [{"digest": name, "ruleset_id": "r", "version": "1",
                                                      "path": "p", "source": CALLER.get()}])
        return name
    return work


def _marked(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(select(ruleset_sources.c.digest, ruleset_sources.c.source)).all())


def _in_thread(group: GroupCommit, engine: Engine, work: Callable[[Connection], str], caller: str,  # noqa: PLR0917
               outcomes: dict[str, object], items: int = 1) -> threading.Thread:
    def call() -> None:
        CALLER.set(caller)
        try:
            outcomes[caller] = group.run(engine, work, items)
        except Exception as error:
            outcomes[caller] = error
    thread = threading.Thread(target=call)
    thread.start()
    return thread


def _while_a_transaction_is_open(engine: Engine, others: list[tuple[str, Callable[[Connection], str]]],
                                 group: GroupCommit | None = None, items: int = 1, first_mark: str = "first"
                                 ) -> tuple[list[int], dict[str, object]]:
    """A first call holds its transaction open until ``others`` (of ``items`` items each) all wait; then each one's
    outcome, and the number of calls each commit held."""
    commits: list[int] = []
    group = group or GroupCommit()
    group.on_commit = commits.append
    release, holding = threading.Event(), threading.Event()

    def first(connection: Connection) -> str:
        _mark(first_mark)(connection)
        holding.set()
        assert release.wait(20)
        return "first"

    outcomes: dict[str, object] = {}
    threads = [_in_thread(group, engine, first, "first", outcomes)]
    assert holding.wait(20)
    threads += [_in_thread(group, engine, work, caller, outcomes, items) for caller, work in others]
    deadline = time.monotonic() + 20
    while group.waiting() < len(others) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(20)
    return commits, outcomes


def test_calls_waiting_while_a_transaction_is_open_share_the_next_commit_each_in_its_own_context(
        engine: Engine) -> None:
    commits, outcomes = _while_a_transaction_is_open(engine, [(f"c{n}", _mark(f"m{n}")) for n in range(3)])
    assert commits == [1, 3]  # the first alone, then the three that waited, in one commit
    assert outcomes == {"first": "first", "c0": "m0", "c1": "m1", "c2": "m2"}
    # each work ran in its own call's context, though the leader's thread ran it
    assert _marked(engine) == {"first": "first", "m0": "c0", "m1": "c1", "m2": "c2"}


def test_one_call_failing_costs_only_itself(engine: Engine) -> None:
    def duplicate(connection: Connection) -> str:
        _mark("first")(connection)  # the first call's row again: refused, this call's savepoint rolled back
        return "never"

    def bug(_connection: Connection) -> str:
        raise ValueError("a bug in one call's work")

    commits, outcomes = _while_a_transaction_is_open(
        engine, [("before", _mark("before")), ("duplicate", duplicate), ("bug", bug), ("after", _mark("after"))])
    assert commits == [1, 4]
    assert isinstance(outcomes["duplicate"], IntegrityError)
    assert isinstance(outcomes["bug"], ValueError)
    assert outcomes["before"] == "before" and outcomes["after"] == "after"
    assert set(_marked(engine)) == {"first", "before", "after"}


def test_a_commit_that_fails_fails_every_call_of_its_group(tmp_path: Path) -> None:
    """A constraint checked only at commit (a deferred foreign key) fails the transaction: no call of the group is
    recorded, and each is told."""
    engine = open_database(database_url(None, tmp_path))
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
            connection.execute(text("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
                                    "DEFERRABLE INITIALLY DEFERRED)"))

        def dangling(connection: Connection) -> str:
            connection.execute(text("INSERT INTO child VALUES (42)"))
            return "dangling"

        commits, outcomes = _while_a_transaction_is_open(engine, [("ok", _mark("ok")), ("dangling", dangling)])
        assert commits == [1]  # the first committed alone; the group of two did not commit
        assert outcomes["first"] == "first"
        assert isinstance(outcomes["ok"], IntegrityError) and isinstance(outcomes["dangling"], IntegrityError)
        assert set(_marked(engine)) == {"first"}
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(text("child"))).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_transaction_takes_calls_up_to_its_bounds_and_the_rest_go_in_the_next(engine: Engine) -> None:
    """At most ``max_calls`` calls, and ``max_items`` items past its first call: a group of large batches stays a
    bounded transaction (another worker waiting on SQLite's write lock is not kept past its busy timeout)."""
    by_items, _ = _while_a_transaction_is_open(engine, [(f"i{n}", _mark(f"i{n}")) for n in range(5)],
                                               GroupCommit(max_items=25_000), items=10_000, first_mark="f1")
    assert by_items == [1, 2, 2, 1]
    by_calls, _ = _while_a_transaction_is_open(engine, [(f"c{n}", _mark(f"c{n}")) for n in range(5)],
                                               GroupCommit(max_calls=2), first_mark="f2")
    assert by_calls == [1, 2, 2, 1]
    one_large, _ = _while_a_transaction_is_open(engine, [("huge", _mark("huge"))], GroupCommit(max_items=10),
                                                items=50_000, first_mark="f3")
    assert one_large == [1, 1]  # a call larger than the bound still goes, alone
    assert {"i4", "c4", "huge"} <= set(_marked(engine))


def test_a_lone_caller_commits_alone_at_once(engine: Engine) -> None:
    commits: list[int] = []
    group = GroupCommit(on_commit=commits.append)
    assert [group.run(engine, _mark(f"m{n}")) for n in range(3)] == ["m0", "m1", "m2"]
    assert commits == [1, 1, 1] and group.waiting() == 0
