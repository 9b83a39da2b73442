"""The spool: calls' write sets kept on local disk while the ledger's database cannot be reached, written to it
in order when it can again.

Each server process appends to a file of its own in the spool directory (``spool-<pid>-<random>.spool``), which it
holds an exclusive flock on for its life. A record is appended and fsync'd (and a new file's directory too) before
its call is answered. A background thread of the process, the drainer, writes the records to the database in the
order they were appended, a few per transaction, and forgets them only once that transaction has committed (the
file is emptied when all of it is). A file whose flock can be taken belongs to no live process (the kernel drops a
killed process's locks): a drainer claims it, writes its records, then removes it. Writing is idempotent by
batch_id (ledger/recorder.py:write), so a record drained again after a crash is skipped, never written twice.

The drainer is a thread rather than a process of its own: the file, its lock and the database engine are the
process's already, it waits on I/O (disk, database) nearly all the time, and it needs no lifecycle of its own.

File format: the header ``TOLLGATE-SPOOL 1\\n``, then records, each a 4-byte big-endian payload length, the
payload's 4-byte CRC-32, and the payload (JSON: the write set and when it was spooled). Reading tells:

- a torn last record (cut short by a crash, or ending in bytes that fail their checksum, as a crash mid-append
  leaves): dropped, as its call was never answered (a call is answered only after the fsync);
- a bad record with more after it, or a file without the header: corrupt. The records before it, each verified,
  are written; the file is renamed ``*.bad`` and logged, and nothing past the bad record is replayed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from sqlalchemy.exc import SQLAlchemyError

from tollgate.ledger.recorder import LedgerUnavailableError, Recorder, TableRows, WriteSet, write
from tollgate.ledger.store import unreachable
from tollgate.rules.problems import Problem, ProblemsError

log = structlog.get_logger("tollgate.ledger.spool")

HEADER = b"TOLLGATE-SPOOL 1\n"
_FRAME = struct.Struct(">II")  # payload length, CRC-32 of the payload
SUFFIX = ".spool"
QUARANTINE_SUFFIX = ".bad"
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
# A drainer's transaction: at most this many records, or this many payload bytes, whichever comes first.
DRAIN_RECORDS = 64
DRAIN_BYTES = 16 * 1024 * 1024
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # between attempts while the database stays unreachable
CLAIM_EVERY_SECONDS = 5.0  # how often a drainer looks for files killed processes left


class SpoolFormatError(ValueError):
    """A spool file's bytes cannot be trusted from ``offset`` on."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


# -- encoding ---------------------------------------------------------------------------------------------------

# A datetime in a row is written {"$datetime": ISO 8601}, bytes {"$bytes": base64}, and read back as they were (a
# row's values are otherwise text, numbers and nulls).
def _tagged(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    raise TypeError(f"a write set cannot hold {type(value).__name__}")


def _untagged(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return datetime.fromisoformat(value["$datetime"]) if "$datetime" in value else base64.b64decode(value["$bytes"])


def encode(write_set: WriteSet, spooled_at: float) -> bytes:
    """One record: the framed payload of ``write_set``."""
    payload = orjson.dumps({"spooled_at": spooled_at, "batch_id": write_set.batch_id,
                            "tables": {name: [rows.columns, rows.rows] for name, rows in write_set.tables.items()}},
                           default=_tagged, option=orjson.OPT_PASSTHROUGH_DATETIME)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> tuple[WriteSet, float]:
    """The write set in a record's payload, and when it was spooled (epoch seconds)."""
    document = orjson.loads(payload)
    tables = {name: TableRows(tuple(columns), [tuple(_untagged(value) for value in row) for row in rows])
              for name, (columns, rows) in document["tables"].items()}
    return WriteSet(document["batch_id"], tables), float(document["spooled_at"])


# -- reading ----------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class SpoolReader:
    """The records of a spool file from ``start`` (past the header) to ``end``; iterate for (payload, offset just
    past it). After iterating, ``torn`` says a torn last record was dropped; a corrupt file raises
    SpoolFormatError at the first record that cannot be trusted (those before it were yielded)."""

    fd: int
    end: int
    start: int = len(HEADER)
    torn: bool = field(default=False, init=False)

    @classmethod
    def checking_header(cls, fd: int) -> SpoolReader:
        """A reader of the whole file ``fd``, its header checked: SpoolFormatError if it is not a spool."""
        size = os.fstat(fd).st_size
        head = os.pread(fd, len(HEADER), 0)
        reader = cls(fd, size)
        if size < len(HEADER) and HEADER.startswith(head):
            reader.start = size  # created, header cut short by a crash: nothing in it
            reader.torn = size > 0
        elif head != HEADER:
            raise SpoolFormatError(0, f"not a spool file (it does not start with {HEADER!r})")
        return reader

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        offset = self.start
        while offset < self.end:
            frame = os.pread(self.fd, _FRAME.size, offset)
            payload_at = offset + _FRAME.size
            if len(frame) < _FRAME.size:
                self.torn = True  # a frame header cut short: the last append, never answered
                return
            length, checksum = _FRAME.unpack(frame)
            if payload_at + length > self.end:
                self.torn = True
                return
            payload = os.pread(self.fd, length, payload_at)
            following = payload_at + length
            if length == 0 or zlib.crc32(payload) != checksum:
                if following == self.end or self._only_zeros(offset):
                    self.torn = True  # the crash left the last append's bytes unwritten (zeros) or garbled
                    return
                raise SpoolFormatError(offset, "a record fails its checksum, and more follow it")
            yield payload, following
            offset = following

    def _only_zeros(self, offset: int) -> bool:
        return not os.pread(self.fd, self.end - offset, offset).strip(b"\x00")


# -- the spool --------------------------------------------------------------------------------------------------

def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Spool:
    """This process's spool file in ``directory`` (at most ``max_bytes``), and its drainer once ``start``ed."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / f"spool-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.write(self._fd, HEADER)
            os.fsync(self._fd)
            _fsync_directory(directory)
        except OSError as error:
            raise ProblemsError([Problem("spool_dir", None, str(directory),
                                         f"the ledger's spool cannot be written there: {error.strerror or error}")]
                                ) from error
        self._lock = threading.Lock()  # appends, the drained offset, the spooling state
        self._end = len(HEADER)  # past the last whole record appended
        self._drained = len(HEADER)  # past the last record committed to the database
        self._waiting: deque[float] = deque()  # when each record not yet drained was spooled, oldest first
        # Records of a claimed file not yet drained, and when its first was spooled (the oldest of them).
        self._claimed = 0
        self._claimed_since: float | None = None
        self._spooling = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- calls ----------------------------------------------------------------------------------------------

    @property
    def spooling(self) -> bool:
        """Whether calls go to the spool: the database was found unreachable and the spool is not drained yet."""
        return self._spooling

    def append(self, write_set: WriteSet, cause: BaseException | None = None) -> None:
        """Append ``write_set`` and fsync it; LedgerUnavailableError when the spool is full or cannot be written.
        ``cause``: the error that found the database unreachable, when this append is what enters the spooled state
        (calls go to the spool from then on, until the drainer has emptied it)."""
        now = time.time()
        record = encode(write_set, now)
        with self._lock:
            if self._end + len(record) > self.max_bytes:
                raise LedgerUnavailableError(f"the ledger's spool is full ({self._end:,} of {self.max_bytes:,} "
                                             f"bytes, spool_max_bytes) and the database cannot be reached")
            try:
                written = os.write(self._fd, record)
                if written != len(record):
                    raise OSError(f"short write: {written} of {len(record)} bytes")
                os.fsync(self._fd)
            except OSError as error:
                # Whatever part was written is past _end: the next append starts after it, the reader drops it.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._end)
                raise LedgerUnavailableError(f"the ledger's spool cannot be written: {error}") from error
            self._end += len(record)
            self._waiting.append(now)
            entering = not self._spooling
            self._spooling = True
        if entering and cause is not None:
            log.warning("ledger_spooling", spool=str(self.path), error_type=type(cause).__name__,
                        error=str(cause).splitlines()[0] if str(cause) else "",
                        hint="calls are answered once in the spool; it is written to the database when it is back")
        self._wake.set()

    # -- what the metrics show ------------------------------------------------------------------------------

    def waiting(self) -> int:
        """Records spooled and not yet in the database (this process's, and a claimed file's being drained)."""
        return len(self._waiting) + self._claimed

    def oldest_seconds(self) -> float:
        """How long the oldest record waiting has waited (a claimed file's first, until all of it is drained); 0 when
        none is."""
        with self._lock:
            since = [t for t in (self._waiting[0] if self._waiting else None, self._claimed_since) if t is not None]
        return max(0.0, time.time() - min(since)) if since else 0.0

    # -- draining -------------------------------------------------------------------------------------------

    def start(self, recorder: Recorder) -> None:
        """Start the drainer: files killed processes left first, then this process's own records as they come."""
        self._thread = threading.Thread(target=self._drain_forever, args=(recorder,), name="tollgate-spool",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the drainer; what is not drained stays in the file for the next start (or another process)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            empty = self._drained == self._end
            if empty:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            os.close(self._fd)

    def _drain_forever(self, recorder: Recorder) -> None:
        failures = 0
        claimed_at = -CLAIM_EVERY_SECONDS
        while not self._stopping.is_set():
            self._wake.clear()  # before looking: an append from now on wakes the wait below
            try:
                if time.monotonic() - claimed_at >= CLAIM_EVERY_SECONDS:
                    self.claim_left_over(recorder)
                    claimed_at = time.monotonic()
                self.drain_own(recorder)
                failures = 0
                self._wake.wait(CLAIM_EVERY_SECONDS)
            except SQLAlchemyError as error:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                if not unreachable(error):  # a record the database refuses: a bug; kept, and said loudly
                    log.error("spool_record_refused", error_type=type(error).__name__,
                              error=str(error).splitlines()[0], spool=str(self.path), exc_info=True)
                self._stopping.wait(delay)
            except Exception:  # the drainer must outlive any surprise; the records stay in the file
                log.exception("spool_drainer_failed", spool=str(self.path))
                self._stopping.wait(RETRY_SECONDS[-1])

    def drain_own(self, recorder: Recorder) -> None:
        """Write this process's spooled records to the database, in order; empty the file once all are."""
        while not self._stopping.is_set():
            with self._lock:
                start, end = self._drained, self._end
                if start == end:
                    if start > len(HEADER):
                        os.ftruncate(self._fd, len(HEADER))
                        self._drained = self._end = len(HEADER)
                    if self._spooling and not self._claimed:
                        self._spooling = False
                        log.info("ledger_spool_drained", spool=str(self.path),
                                 hint="calls are written to the database again")
                    return
            for count, offset in self._write_records(recorder, SpoolReader(self._fd, end, start)):
                with self._lock:
                    self._drained = offset
                    for _ in range(count):
                        self._waiting.popleft()

    def _write_records(self, recorder: Recorder, records: SpoolReader) -> Iterator[tuple[int, int]]:
        """Write ``records`` in transactions of a few; after each commit yield how many it held and the offset past
        the last. SQLAlchemyError when the database fails (what was not committed stays); SpoolFormatError at a
        record that cannot be trusted, once those before it are committed."""
        chunk: list[WriteSet] = []
        size = 0
        offset = records.start
        try:
            for payload, past in records:
                write_set, _spooled_at = decode(payload)
                chunk.append(write_set)
                size += len(payload)
                offset = past
                if len(chunk) >= DRAIN_RECORDS or size >= DRAIN_BYTES:
                    self._commit(recorder, chunk)
                    yield len(chunk), offset
                    chunk, size = [], 0
        finally:  # the records read before a bad one (or the end) still go in
            if chunk:
                self._commit(recorder, chunk)
                yield len(chunk), offset

    @staticmethod
    def _commit(recorder: Recorder, write_sets: list[WriteSet]) -> None:
        with recorder.engine.begin() as connection:
            for write_set in write_sets:
                write(connection, write_set)
        for write_set in write_sets:
            recorder.stored(write_set)

    def claim_left_over(self, recorder: Recorder) -> None:
        """Drain every spool file in the directory no live process holds (a killed one's), then remove it; a corrupt
        one is renamed *.bad after its verified records are written."""
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path == self.path or self._stopping.is_set():
                continue
            with contextlib.suppress(FileNotFoundError), _claimed(path) as fd:
                if fd is not None:
                    self._drain_claimed(recorder, path, fd)

    def _drain_claimed(self, recorder: Recorder, path: Path, fd: int) -> None:
        try:
            reader = SpoolReader.checking_header(fd)
        except SpoolFormatError as error:
            self._quarantine(path, error, 0)
            return
        # For the metrics, how many records it holds and when the first was spooled: read once through (each record
        # is verified again as it is written).
        for payload, _ in _verified_prefix(reader):
            if self._claimed_since is None:
                self._claimed_since = decode(payload)[1]
            self._claimed += 1
        written = 0
        try:
            for count, _offset in self._write_records(recorder, SpoolReader(fd, reader.end, reader.start)):
                written += count
                self._claimed -= count
        except SpoolFormatError as error:
            self._quarantine(path, error, written)
            return
        finally:
            self._claimed, self._claimed_since = 0, None
        path.unlink()
        log.info("spool_claimed", spool=str(path), records=written, torn_record_dropped=reader.torn,
                 hint="a spool left by a process that ended without draining it, now in the database")

    @staticmethod
    def _quarantine(path: Path, error: SpoolFormatError, written: int) -> None:
        bad = path.with_name(path.name + QUARANTINE_SUFFIX)
        path.rename(bad)
        log.error("spool_file_corrupt", spool=str(path), moved_to=str(bad), reason=error.reason, offset=error.offset,
                  records_written_before=written,
                  hint="nothing past the bad record was replayed; the file is kept for inspection")


def _verified_prefix(reader: SpoolReader) -> Iterator[tuple[bytes, int]]:
    """The records a reader yields up to the first it cannot trust (stops there without raising)."""
    with contextlib.suppress(SpoolFormatError):
        yield from SpoolReader(reader.fd, reader.end, reader.start)


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[int | None]:
    """The file's descriptor under an exclusive flock, or None when a live process holds it (or it was removed or
    replaced since it was listed)."""
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield fd if same else None
    finally:
        os.close(fd)
