"""Group commit: the calls of one process waiting to be recorded at once share one transaction and one commit.

A deciding thread hands its call's work (a function of the open transaction's connection) to ``GroupCommit.run``
and waits for the commit. The first to arrive while no transaction is open leads: it takes the calls waiting (up
to ``max_calls`` calls and ``max_items`` items, its own first), runs each one's work in the same transaction, each
inside a savepoint of its own, commits once (one fsync for them all), and hands the lead to the first call that
arrived meanwhile. So:

- a call is answered only once the transaction holding it has committed (ledger/recorder.py);
- one call's failure (a refused row, a request id recorded by a racing retry, PostgreSQL choosing it to give way
  on a deadlock, a bug) rolls back its own savepoint and is raised in its own thread; the others commit;
- a commit that fails (the database lost) fails every call of the group, each of which then goes its own way
  (the spool, a retry);
- each call's work runs in that call's own context (``contextvars``: its correlation id, its caller), whichever
  thread runs it.

A lone caller, one call at a time, commits alone as before: nothing waits for calls that may never come.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine

_T = TypeVar("_T")
MAX_CALLS = 32  # calls a transaction takes at most
# items a transaction takes at most, past its first call: a group of large batches stays a transaction of about a
# second's writing, so another worker waiting on SQLite's write lock (busy timeout 10 s) is not kept past it
MAX_ITEMS = 20_000


@dataclass(eq=False, slots=True)
class _Call(Generic[_T]):
    work: Callable[[Connection], _T]
    context: contextvars.Context
    items: int
    done: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    result: _T | None = None
    error: BaseException | None = None
    finished: bool = False


class GroupCommit:
    """Runs the work of concurrent calls in shared transactions (see the module's docstring). ``on_commit(calls)``
    is told how many calls each commit held (the metrics)."""

    def __init__(self, max_calls: int = MAX_CALLS, max_items: int = MAX_ITEMS,
                 on_commit: Callable[[int], None] | None = None) -> None:
        self.max_calls = max_calls
        self.max_items = max_items
        self.on_commit = on_commit
        self._lock = threading.Lock()
        self._waiting: list[_Call[object]] = []
        self._leading = False

    def waiting(self) -> int:
        """Calls waiting for a transaction to take them now."""
        with self._lock:
            return len(self._waiting)

    def run(self, engine: Engine, work: Callable[[Connection], _T], items: int = 1) -> _T:
        """``work(connection)`` (a call of ``items`` items) committed on ``engine`` (the leader's: one ledger's calls
        name the same), with whatever other calls joined its transaction; what it returned. What it raised is
        raised here, and nothing of it is committed."""
        call: _Call[_T] = _Call(work, contextvars.copy_context(), items)
        with self._lock:
            self._waiting.append(call)  # type: ignore[arg-type]
            if not self._leading:
                self._leading = call.leads = True
        if not call.leads:
            call.done.wait()  # committed, or made the leader of the next group
        if not call.finished:
            self._lead(engine)
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _lead(self, engine: Engine) -> None:
        with self._lock:
            taken, items = 1, self._waiting[0].items
            while (taken < min(self.max_calls, len(self._waiting))
                   and items + self._waiting[taken].items <= self.max_items):
                items += self._waiting[taken].items
                taken += 1
            group, self._waiting = self._waiting[:taken], self._waiting[taken:]
        try:
            self._commit(engine, group)
        finally:
            with self._lock:
                following = self._waiting[0] if self._waiting else None
                if following is None:
                    self._leading = False
                else:
                    following.leads = True
            for call in group:
                call.finished = True
                call.done.set()
            if following is not None:
                following.done.set()

    def _commit(self, engine: Engine, group: list[_Call[object]]) -> None:
        try:
            with engine.begin() as connection:
                if len(group) == 1:  # alone: the transaction is its own, no savepoint (two statements) needed
                    group[0].result = group[0].context.run(group[0].work, connection)
                else:
                    for call in group:
                        lost = self._run_one(connection, call)
                        if lost is not None:
                            raise lost
        except Exception as error:  # the transaction could not commit: no call of the group is recorded
            for call in group:
                if call.error is None:
                    call.error, call.result = error, None
            return
        if self.on_commit is not None:
            self.on_commit(len(group))

    @staticmethod
    def _run_one(connection: Connection, call: _Call[object]) -> Exception | None:
        """Run one call's work in a savepoint of its own; what it raised is the call's alone, unless the savepoint
        cannot even be rolled back (the connection lost): then that first error is returned, for the whole group
        (a call told "the database cannot be reached" goes to the spool; the error of the failed rollback would
        hide why)."""
        savepoint = connection.begin_nested()
        try:
            call.result = call.context.run(call.work, connection)
            savepoint.commit()
        except Exception as error:
            call.error, call.result = error, None
            try:
                savepoint.rollback()
            except Exception:
                return error
        return None
