"""Where reference snapshots live: the interface, and the in-process store (the default).

A store keeps the last N published snapshots, one of them current. Publishing makes a snapshot
current atomically (readers see the old one or the new one, never a mix) and tells every watcher.
A replica holds the current snapshot in its own memory and decides from it; the store is only asked
when a new snapshot is published or an old one is replayed, never per item.

``RedisSnapshotStore`` (``redis_store``) shares the snapshots among replicas, and
``DirectorySnapshotStore`` (``directory_store``) among the processes of one host; this module's
``InProcessStore`` keeps them in one process, so a single command runs the service.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .snapshot import ReferenceSnapshot

DEFAULT_KEEP = 10
# ``if_current`` for a publish that does not depend on what is current (a full load: last one wins).
ANY_CURRENT = "*"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    snapshot_id: str
    source: str
    loaded_at: dt.datetime
    counts: dict[str, int]

    @classmethod
    def of(cls, snapshot: ReferenceSnapshot) -> SnapshotInfo:
        return cls(snapshot.snapshot_id, snapshot.source, snapshot.loaded_at, snapshot.counts())


@dataclass(frozen=True, slots=True)
class StoreState:
    """Whether the store can be reached, and since when (UTC) it has been in that state."""

    reachable: bool
    since: dt.datetime
    current_id: str | None = None  # the store's current snapshot, as last seen
    # Why the store no longer has what it had (no current snapshot after one was; the current snapshot's
    # manifest or segments gone): a Redis restarted without persistence, a FLUSHDB, an eviction.
    lost: str | None = None


class SnapshotNotFoundError(LookupError):
    """A snapshot id the store does not keep (never loaded, or older than the last N)."""


class SnapshotConflictError(RuntimeError):
    """The current snapshot moved on since the change was based on it; read it again and retry."""


class StoreUnavailableError(RuntimeError):
    """The store cannot be reached; what is already held in memory keeps serving."""


# Called with each new current snapshot and when the store saw it become current (time.perf_counter()).
OnCurrent = Callable[[ReferenceSnapshot, float], None]
OnState = Callable[[StoreState], None]


class SnapshotStore(Protocol):
    @property
    def description(self) -> str:
        """Where the snapshots live, for status and logs (never a password)."""

    def publish(self, snapshot: ReferenceSnapshot, *, if_current: str = ANY_CURRENT) -> None:
        """Make ``snapshot`` current and keep it among the last N.

        ``if_current``: publish only if this id is current ("" for none), else SnapshotConflictError.
        """

    def current(self) -> ReferenceSnapshot | None:
        """The current snapshot, or None before the first publish."""

    def fetch(self, snapshot_id: str) -> ReferenceSnapshot:
        """A kept snapshot by id; SnapshotNotFoundError if it is not kept."""

    def kept(self) -> list[SnapshotInfo]:
        """The snapshots kept, newest first (the first is current)."""

    def watch(self, on_current: OnCurrent, on_state: OnState) -> None:
        """Call ``on_current`` with each new current snapshot, in publish order, and ``on_state`` when
        reachability changes. The calls come from one thread at a time."""

    def close(self) -> None:
        """Stop watching and release connections."""


class InProcessStore:
    """Snapshots in this process's memory: no other server needed; not shared with other processes."""

    description = "in-process"

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError("a store keeps at least the current snapshot")
        self.keep = keep
        self._lock = threading.RLock()  # publishes and their notifications happen one at a time, in order
        self._snapshots: OrderedDict[str, ReferenceSnapshot] = OrderedDict()  # oldest first
        self._watchers: list[OnCurrent] = []

    def publish(self, snapshot: ReferenceSnapshot, *, if_current: str = ANY_CURRENT) -> None:
        with self._lock:
            current = next(reversed(self._snapshots), "")
            if if_current not in (ANY_CURRENT, current):
                raise SnapshotConflictError(f"current snapshot is {current or 'none'}, not {if_current or 'none'}")
            self._snapshots.pop(snapshot.snapshot_id, None)
            self._snapshots[snapshot.snapshot_id] = snapshot
            while len(self._snapshots) > self.keep:
                self._snapshots.popitem(last=False)
            seen_at = time.perf_counter()
            for notify in self._watchers:
                notify(snapshot, seen_at)

    def current(self) -> ReferenceSnapshot | None:
        with self._lock:
            return self._snapshots[next(reversed(self._snapshots))] if self._snapshots else None

    def fetch(self, snapshot_id: str) -> ReferenceSnapshot:
        with self._lock:
            found = self._snapshots.get(snapshot_id)
        if found is None:
            raise SnapshotNotFoundError(f"snapshot {snapshot_id} is not kept (the last {self.keep} are)")
        return found

    def kept(self) -> list[SnapshotInfo]:
        with self._lock:
            return [SnapshotInfo.of(s) for s in reversed(self._snapshots.values())]

    def watch(self, on_current: OnCurrent, on_state: OnState) -> None:
        with self._lock:
            self._watchers.append(on_current)
            current = next(reversed(self._snapshots), None)
        on_state(StoreState(True, dt.datetime.now(dt.UTC), current))

    def close(self) -> None:
        with self._lock:
            self._watchers.clear()
