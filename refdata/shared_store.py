"""What the stores shared among processes have in common, whatever holds the bytes (Redis, a directory).

A shared store holds content-addressed blobs and manifests:

- a *segment*: one segment of a table (the rows whose keys hash to it), canonical encoding (``codec``),
  compressed, named by its digest. A snapshot made by upserting one project shares every other table,
  and every other segment of the project table, with its base: the publisher writes, and a replica
  fetches and decodes, only the segments it does not hold yet;
- a *manifest* per snapshot: source, loaded at, counts, table digests and each table's segment digests;
- *current* (the id of the current snapshot) and *kept* (kept ids, newest first).

Publishing writes the segments and the manifest first, as pending, then commits in one atomic step of
the backend: check they are all there, set current, trim kept to N, delete what only trimmed snapshots
used. A publisher killed before the commit leaves only pending blobs that the backend expires;
current never names a snapshot that is not whole.

A watcher thread per process waits for a sign of change (a message, a poll), then reads current and
switches to it, so signs that arrive late or were missed cannot put a process on an older snapshot.
It also re-reads current every few seconds and after every reconnection, which is how a process
catches up after the backend comes back.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import structlog

from tollgate.rules.entities import ENTITIES, Entity

from . import codec
from .snapshot import Key, ReferenceSnapshot, Row, Segment, Table, Versions, group_rows
from .store import (
    ANY_CURRENT,
    DEFAULT_KEEP,
    OnCurrent,
    OnState,
    SnapshotInfo,
    SnapshotNotFoundError,
    StoreState,
    StoreUnavailableError,
)

log = structlog.get_logger("tollgate.refdata.shared")

# Blobs written before their snapshot is published expire unless the publish makes them permanent.
PENDING_SECONDS = 6 * 3600
RECONNECT_BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0)

# Waits up to the given seconds for a sign that current may have changed.
Wait = Callable[[float], None]


def manifest_of(snapshot: ReferenceSnapshot) -> str:
    return json.dumps({
        "snapshot_id": snapshot.snapshot_id,
        "source": snapshot.source,
        "loaded_at": snapshot.loaded_at.isoformat(),
        "digests": dict(snapshot.digests),
        "segments": {name: [segment.digest for segment in table.segments()] for name, table in snapshot.tables.items()},
        "counts": snapshot.counts(),
    })


def segment_digests(manifest: Mapping[str, Any]) -> list[str]:
    """Every segment a manifest names."""
    return [digest for digests in manifest.get("segments", {}).values() for digest in digests]


def _info(manifest: dict[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(manifest["snapshot_id"], manifest["source"], dt.datetime.fromisoformat(manifest["loaded_at"]),
                        dict(manifest["counts"]))


class _Plan:
    """How a process makes one table of a snapshot it fetches: from the latest table of the entity it
    holds, replacing only the segments that differ, or from every segment when it holds none cut the
    same way."""

    def __init__(self, layout: list[str], base: Table | None) -> None:
        self.layout = layout  # the table's segment digests
        self.held = base.segments() if base is not None else None
        if self.held is not None and len(self.held) != len(layout):
            self.held = None
        self.base = base if self.held is not None else None

    def missing(self) -> list[str]:
        if self.held is None:
            return list(self.layout)
        return [digest for digest, segment in zip(self.layout, self.held, strict=True) if digest != segment.digest]

    def build(self, entity: Entity, digest: str, blobs: Mapping[str, object], where: str) -> Table:
        segments: list[Segment] = []
        timeless: dict[Key, Row] = {}
        dated: dict[Key, Versions] = {}
        replaced: set[Key] = set()
        for index, segment_digest in enumerate(self.layout):
            if self.held is not None and self.held[index].digest == segment_digest:
                segments.append(self.held[index])
                continue
            blob = blobs.get(segment_digest)
            if not isinstance(blob, bytes):
                raise SnapshotNotFoundError(f"a segment of table {entity.name} of {where} is gone")
            _, rows = codec.decode_rows(codec.decompress(blob))
            segment_timeless, segment_dated = group_rows(entity, rows)
            segments.append(Segment(sorted([*segment_timeless, *segment_dated]), blob, segment_digest))
            timeless.update(segment_timeless)
            dated.update(segment_dated)
            if self.held is not None:
                replaced.update(self.held[index].keys)
        if self.base is None:
            return Table.of(entity, timeless, dated, segments=segments, digest=digest)
        return self.base.patched(replaced, timeless, dated, segments=segments, digest=digest)


class SharedStore(ABC):
    """A snapshot store shared among processes; backends say how blobs, current and kept are held.

    Every backend method raises StoreUnavailableError when the backend cannot be reached.
    """

    # How often the watcher re-reads current even without a sign of change.
    recheck_seconds: float = 2.0

    def __init__(self, description: str, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError("a store keeps at least the current snapshot")
        self.description = description
        self.keep = keep
        # Decoded tables by digest, for the last ``keep`` snapshots seen: a new snapshot that shares
        # tables with one of them (an upsert changes one table) decodes only what is new, and a changed
        # table is derived from the latest one of its entity, decoding only the segments that differ.
        self._tables: dict[str, Table] = {}
        self._recent: OrderedDict[str, dict[str, str]] = OrderedDict()  # snapshot id -> table digests, oldest first
        self._tables_lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- what a backend provides ---------------------------------------------------------------------

    @abstractmethod
    def _write_pending(self, segments: Mapping[str, bytes], snapshot_id: str, manifest: str) -> None:
        """Store the segments not stored yet and the manifest, pending (they expire unless committed)."""

    @abstractmethod
    def _commit(self, snapshot_id: str, if_current: str) -> None:
        """Atomically: make the snapshot current and first among the kept, trim the kept to ``keep`` and
        delete what only trimmed snapshots used. SnapshotConflictError if ``if_current`` is not current."""

    @abstractmethod
    def _read_manifest(self, snapshot_id: str) -> bytes | None:
        """A snapshot's manifest, or None if the store does not keep it."""

    @abstractmethod
    def _read_segments(self, digests: list[str]) -> list[bytes | None]:
        """The segments of these digests, in order (None for one that is gone)."""

    @abstractmethod
    def _kept_ids(self) -> list[str]:
        """The kept snapshot ids, newest first."""

    @abstractmethod
    def current_id(self) -> str | None:
        """The id of the current snapshot, or None before the first publish."""

    @abstractmethod
    def _signs_of_change(self) -> AbstractContextManager[Wait]:
        """Listen for signs that current changed, for as long as the block lasts (one connection)."""

    def _release(self) -> None:  # noqa: B027 - a backend without connections has nothing to release
        """Release the backend's connections (the watcher has stopped)."""

    # -- writing -------------------------------------------------------------------------------------

    def publish(self, snapshot: ReferenceSnapshot, *, if_current: str = ANY_CURRENT) -> None:
        segments = {segment.digest: segment.blob for table in snapshot.tables.values() for segment in table.segments()}
        self._write_pending(segments, snapshot.snapshot_id, manifest_of(snapshot))
        self._commit(snapshot.snapshot_id, if_current)
        self._remember(snapshot)
        log.info("snapshot_published", snapshot_id=snapshot.snapshot_id, source=snapshot.source,
                 counts=snapshot.counts(), store=self.description)

    # -- reading -------------------------------------------------------------------------------------

    def current(self) -> ReferenceSnapshot | None:
        snapshot_id = self.current_id()
        return None if snapshot_id is None else self.fetch(snapshot_id)

    def fetch(self, snapshot_id: str) -> ReferenceSnapshot:
        raw = self._read_manifest(snapshot_id)
        if raw is None:
            raise SnapshotNotFoundError(f"snapshot {snapshot_id} is not kept in {self.description}")
        manifest = json.loads(raw)
        if "segments" not in manifest:
            raise SnapshotNotFoundError(f"snapshot {snapshot_id} in {self.description} was stored by an earlier "
                                        "version of Tollgate, in a format this one does not read: load the "
                                        "reference data again")
        digests: dict[str, str] = manifest["digests"]
        layouts: dict[str, list[str]] = manifest["segments"]
        with self._tables_lock:
            tables = {name: self._tables.get(digest) for name, digest in digests.items()}
            bases = {name: self._latest(name) for name, table in tables.items() if table is None}
        plans = {name: _Plan(layouts[name], base) for name, base in bases.items()}
        wanted = sorted({digest for plan in plans.values() for digest in plan.missing()})
        blobs = dict(zip(wanted, self._read_segments(wanted), strict=True)) if wanted else {}
        for name, plan in plans.items():
            tables[name] = plan.build(ENTITIES[name], digests[name], blobs,
                                      f"snapshot {snapshot_id} in {self.description}")
        whole = {name: table for name, table in tables.items() if table is not None}
        snapshot = ReferenceSnapshot(snapshot_id, manifest["source"], dt.datetime.fromisoformat(manifest["loaded_at"]),
                                     whole, digests)
        self._remember(snapshot)
        return snapshot

    def _latest(self, entity: str) -> Table | None:
        """The table of ``entity`` in the latest snapshot seen (what a changed table is derived from)."""
        for digests in reversed(self._recent.values()):
            table = self._tables.get(digests.get(entity, ""))
            if table is not None:
                return table
        return None

    def _remember(self, snapshot: ReferenceSnapshot) -> None:
        with self._tables_lock:
            for name, digest in snapshot.digests.items():
                self._tables[digest] = snapshot.tables[name]
            self._recent.pop(snapshot.snapshot_id, None)
            self._recent[snapshot.snapshot_id] = dict(snapshot.digests)
            while len(self._recent) > self.keep:
                self._recent.popitem(last=False)
            live = {digest for digests in self._recent.values() for digest in digests.values()}
            self._tables = {digest: table for digest, table in self._tables.items() if digest in live}

    def kept(self) -> list[SnapshotInfo]:
        manifests = [self._read_manifest(snapshot_id) for snapshot_id in self._kept_ids()]
        return [_info(json.loads(m)) for m in manifests if m is not None]

    # -- watching ------------------------------------------------------------------------------------

    def watch(self, on_current: OnCurrent, on_state: OnState) -> None:
        if self._watcher is not None:
            raise RuntimeError("this store is already watched")
        self._watcher = threading.Thread(target=self._watch, args=(on_current, on_state),
                                         name="refdata-watcher", daemon=True)
        self._watcher.start()

    def _watch(self, on_current: OnCurrent, on_state: OnState) -> None:
        delivered: str | None = None
        told: tuple[bool, str | None] | None = None  # the reachability and loss last told
        failures = 0
        while not self._closed.is_set():
            try:
                with self._signs_of_change() as wait:
                    for current in self._currents(wait):
                        failures = 0
                        gone = None
                        if current is not None and current != delivered:
                            seen_at = time.perf_counter()
                            try:
                                snapshot = self.fetch(current)
                            except SnapshotNotFoundError as error:
                                if self.current_id() != current:
                                    # Trimmed between reading current and fetching it: a newer one is current.
                                    log.warning("snapshot_vanished", error=str(error))
                                    continue
                                gone = str(error)
                            else:
                                self._deliver(on_current, snapshot, seen_at)
                                delivered = current
                        # The store had a snapshot (this process took it from there) and now has none, or
                        # cannot give the one it calls current: its data is lost.
                        lost = gone or ("the store holds no current snapshot any more"
                                        if current is None and delivered is not None else None)
                        if told != (True, lost):
                            told = (True, lost)
                            on_state(StoreState(True, dt.datetime.now(dt.UTC), current, lost))
            except (StoreUnavailableError, OSError) as error:
                if told is None or told[0]:
                    told = (False, None)
                    log.warning("store_unreachable", store=self.description, error=str(error))
                    on_state(StoreState(False, dt.datetime.now(dt.UTC), delivered))
                self._closed.wait(RECONNECT_BACKOFF_SECONDS[min(failures, len(RECONNECT_BACKOFF_SECONDS) - 1)])
                failures += 1

    def _currents(self, wait: Wait) -> Iterator[str | None]:
        """Current, read now and after each sign of change or recheck interval, until the store is closed."""
        while not self._closed.is_set():
            yield self.current_id()
            wait(self.recheck_seconds)

    @staticmethod
    def _deliver(on_current: OnCurrent, snapshot: ReferenceSnapshot, seen_at: float) -> None:
        try:
            on_current(snapshot, seen_at)
        except Exception:
            # The process could not use it (it logs why); trying the same snapshot again would fail again.
            log.exception("snapshot_not_adopted", snapshot_id=snapshot.snapshot_id)

    def close(self) -> None:
        self._closed.set()
        if self._watcher is not None:
            self._watcher.join(timeout=self.recheck_seconds + 1)
        self._release()
