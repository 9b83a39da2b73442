"""Snapshots in a directory, shared by every process on the host that uses it; no other server needed.

This is how the workers of ``tollgate serve --workers N`` share reference data without Redis (the
supervisor gives them a directory of their own for the run), and, with ``--snapshot-dir``, a store
that outlives restarts. The layout and the publishing protocol are ``shared_store``'s:

- ``segments/{digest}``: one segment of a table, compressed; ``snapshots/{id}.json``: a manifest;
- ``current``: the id of the current snapshot; ``kept``: kept ids, newest first (JSON);
- ``lock``: held (``flock``) by the one commit at a time.

Every file is written whole to a temporary name, flushed to disk and renamed into place, so a reader
sees the old file or the new one, never a part. Segments and manifests are immutable once written; a
commit, under the lock, checks the snapshot is whole, writes ``kept`` and then ``current``, and deletes
what only trimmed snapshots used, and pending files older than ``PENDING_SECONDS`` that no kept snapshot
uses (left by a publisher killed before its commit). Watchers poll ``current`` (a read of a few bytes);
a commit wakes its own process's watcher at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .shared_store import PENDING_SECONDS, SharedStore, Wait, segment_digests
from .store import ANY_CURRENT, DEFAULT_KEEP, SnapshotConflictError, StoreUnavailableError

# How often a watcher reads ``current``: the most another worker lags behind a change.
POLL_SECONDS = 0.1


def _write_whole(path: Path, data: bytes) -> None:
    """``data`` into ``path`` atomically and durably: a reader sees the old content or the new, whole."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _names_a_file(snapshot_id: str) -> bool:
    """Ids name files: ASCII letters, digits and dashes only, never a path of a caller's choosing."""
    return 0 < len(snapshot_id) <= 64 and snapshot_id.isascii() and snapshot_id.replace("-", "").isalnum()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class DirectorySnapshotStore(SharedStore):
    recheck_seconds = POLL_SECONDS

    def __init__(self, root: Path, *, keep: int = DEFAULT_KEEP) -> None:
        super().__init__(f"directory {root}", keep)
        self.root = root
        self._segments = root / "segments"
        self._manifests = root / "snapshots"
        self._committed = threading.Event()  # wakes this process's watcher after its own commit
        with self._reaching():
            self._segments.mkdir(parents=True, exist_ok=True)
            self._manifests.mkdir(exist_ok=True)

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            raise StoreUnavailableError(f"{self.description}: {error}") from error

    def _manifest_path(self, snapshot_id: str) -> Path:
        if not _names_a_file(snapshot_id):
            raise ValueError(f"{snapshot_id!r} is not a snapshot id")
        return self._manifests / f"{snapshot_id}.json"

    def _write_pending(self, segments: Mapping[str, bytes], snapshot_id: str, manifest: str) -> None:
        with self._reaching():
            # A file already there stays (a snapshot of the same content published before keeps its manifest,
            # even when this publish turns out to conflict); touched, so it is not expired as pending meanwhile.
            for path, data in (*((self._segments / digest, blob) for digest, blob in segments.items()),
                               (self._manifest_path(snapshot_id), manifest.encode())):
                if path.exists():
                    os.utime(path)
                else:
                    _write_whole(path, data)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit(self, snapshot_id: str, if_current: str) -> None:
        with self._reaching(), self._locked():
            current = self.current_id() or ""
            if if_current not in (ANY_CURRENT, current):
                raise SnapshotConflictError(f"current snapshot is {current}")
            raw = _read(self._manifest_path(snapshot_id))
            if raw is None:
                raise StoreUnavailableError(f"{self.description}: the manifest of {snapshot_id} is missing")
            if any(not (self._segments / digest).exists() for digest in segment_digests(json.loads(raw))):
                raise StoreUnavailableError(f"{self.description}: a segment of {snapshot_id} is missing")
            kept = [snapshot_id, *(i for i in self._kept_ids() if i != snapshot_id)]
            _write_whole(self.root / "kept", json.dumps(kept[:self.keep]).encode())
            _write_whole(self.root / "current", snapshot_id.encode())
            self._collect(kept[:self.keep], dropped=kept[self.keep:])
        self._committed.set()

    def _collect(self, kept: list[str], *, dropped: list[str]) -> None:
        """Delete what only the dropped snapshots used, and pending files no kept snapshot uses that are
        older than PENDING_SECONDS (left by a publisher killed before its commit)."""
        manifests = {snapshot_id: json.loads(_read(self._manifest_path(snapshot_id)) or b"{}")
                     for snapshot_id in (*kept, *dropped)}
        live_manifests = {f"{snapshot_id}.json" for snapshot_id in kept}
        live_segments = {digest for snapshot_id in kept for digest in segment_digests(manifests[snapshot_id])}
        for snapshot_id in dropped:
            for digest in set(segment_digests(manifests[snapshot_id])) - live_segments:
                (self._segments / digest).unlink(missing_ok=True)
            self._manifest_path(snapshot_id).unlink(missing_ok=True)
        expired = time.time() - PENDING_SECONDS
        for directory, live in ((self._manifests, live_manifests), (self._segments, live_segments)):
            for entry in os.scandir(directory):
                try:
                    if entry.name not in live and entry.stat().st_mtime < expired:
                        os.unlink(entry.path)
                except FileNotFoundError:  # collected by another commit meanwhile
                    continue

    def _read_manifest(self, snapshot_id: str) -> bytes | None:
        if not _names_a_file(snapshot_id):  # a caller's replay id, say: not one this store could keep
            return None
        with self._reaching():
            return _read(self._manifest_path(snapshot_id))

    def _read_segments(self, digests: list[str]) -> list[bytes | None]:
        with self._reaching():
            return [_read(self._segments / digest) for digest in digests]

    def _kept_ids(self) -> list[str]:
        with self._reaching():
            raw = _read(self.root / "kept")
        return list(json.loads(raw)) if raw else []

    def current_id(self) -> str | None:
        with self._reaching():
            raw = _read(self.root / "current")
        return raw.decode() if raw else None

    @contextmanager
    def _signs_of_change(self) -> Iterator[Wait]:
        def wait(seconds: float) -> None:
            self._committed.wait(seconds)
            self._committed.clear()

        yield wait
