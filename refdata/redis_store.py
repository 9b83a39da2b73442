"""Snapshots in Redis, shared by every replica; each replica holds the current one in its own memory.

Keys, under a prefix (default ``tollgate``):

- ``{prefix}:segment:{digest}``: one segment of a table (the rows whose keys hash to it), canonical
  encoding (``codec``), compressed. Content-addressed, so a snapshot made by upserting one
  project shares every other table, and every other segment of the project table, with its base: the
  publisher writes, and a replica fetches and decodes, only the segments it does not hold yet.
- ``{prefix}:snapshot:{id}``: the manifest of a snapshot: source, loaded at, counts, table digests and
  each table's segment digests.
- ``{prefix}:current``: the id of the current snapshot; ``{prefix}:kept``: kept ids, newest first.
- channel ``{prefix}:published``: the id of each snapshot made current.

Publishing writes the segments and the manifest first, with an expiry, then one Lua script (atomic in
Redis) checks they are all there, makes them permanent, sets current, trims the kept list to N,
deletes what only trimmed snapshots used, and notifies. A loader killed before the script leaves
only blobs that expire; current never names a snapshot that is not whole.

A watcher thread per replica listens on the channel. A message only wakes it: it then reads
``current`` and switches to it, so messages that arrive late or were missed while Redis was away
cannot put a replica on an older snapshot. It also re-reads ``current`` every few seconds and on
every reconnection, which is how a replica catches up after Redis comes back.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from tollgate.rules.entities import ENTITIES, Entity

from . import codec
from .snapshot import Key, ReferenceSnapshot, Row, Segment, Table, Versions, group_rows
from .store import (
    ANY_CURRENT,
    DEFAULT_KEEP,
    OnCurrent,
    OnState,
    SnapshotConflictError,
    SnapshotInfo,
    SnapshotNotFoundError,
    StoreState,
    StoreUnavailableError,
)

log = structlog.get_logger("tollgate.refdata.redis")

# Blobs written before their snapshot is published expire unless the publish makes them permanent.
PENDING_SECONDS = 6 * 3600
# How often the watcher re-reads current even without a message, and pings the connection.
RECHECK_SECONDS = 2.0
RECONNECT_BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0)

_PUBLISH_SCRIPT = """
local prefix, id, keep, if_current = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local current_key, kept_key = prefix .. ':current', prefix .. ':kept'
local current = redis.call('GET', current_key) or ''
if if_current ~= '*' and if_current ~= current then
  return redis.error_reply('CONFLICT current snapshot is ' .. current)
end
local manifest_key = prefix .. ':snapshot:' .. id
local manifest_json = redis.call('GET', manifest_key)
if not manifest_json then return redis.error_reply('INCOMPLETE manifest of ' .. id .. ' is missing') end
local manifest = cjson.decode(manifest_json)
for entity, digests in pairs(manifest.segments) do
  for _, digest in ipairs(digests) do
    if redis.call('PERSIST', prefix .. ':segment:' .. digest) == 0
       and redis.call('EXISTS', prefix .. ':segment:' .. digest) == 0 then
      return redis.error_reply('INCOMPLETE a segment of table ' .. entity .. ' of ' .. id .. ' is missing')
    end
  end
end
redis.call('PERSIST', manifest_key)
redis.call('SET', current_key, id)
redis.call('LREM', kept_key, 0, id)
redis.call('LPUSH', kept_key, id)
local dropped = redis.call('LRANGE', kept_key, keep, -1)
redis.call('LTRIM', kept_key, 0, keep - 1)
-- The blobs a manifest names: its segments, or the whole tables of a snapshot stored by an earlier version.
local function blobs(manifest_json)
  local manifest, keys = cjson.decode(manifest_json), {}
  if manifest.segments then
    for _, digests in pairs(manifest.segments) do
      for _, digest in ipairs(digests) do keys[#keys + 1] = prefix .. ':segment:' .. digest end
    end
  else
    for _, digest in pairs(manifest.digests) do keys[#keys + 1] = prefix .. ':table:' .. digest end
  end
  return keys
end
if #dropped > 0 then
  local live = {}
  for _, kept_id in ipairs(redis.call('LRANGE', kept_key, 0, -1)) do
    local kept_manifest = redis.call('GET', prefix .. ':snapshot:' .. kept_id)
    if kept_manifest then
      for _, key in ipairs(blobs(kept_manifest)) do live[key] = true end
    end
  end
  for _, dropped_id in ipairs(dropped) do
    local dropped_manifest = redis.call('GET', prefix .. ':snapshot:' .. dropped_id)
    if dropped_manifest then
      for _, key in ipairs(blobs(dropped_manifest)) do
        if not live[key] then redis.call('DEL', key) end
      end
    end
    redis.call('DEL', prefix .. ':snapshot:' .. dropped_id)
  end
end
redis.call('PUBLISH', prefix .. ':published', id)
return id
"""


def _manifest(snapshot: ReferenceSnapshot) -> str:
    return json.dumps({
        "snapshot_id": snapshot.snapshot_id,
        "source": snapshot.source,
        "loaded_at": snapshot.loaded_at.isoformat(),
        "digests": dict(snapshot.digests),
        "segments": {name: [segment.digest for segment in table.segments()] for name, table in snapshot.tables.items()},
        "counts": snapshot.counts(),
    })


def _info(manifest: dict[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(manifest["snapshot_id"], manifest["source"], dt.datetime.fromisoformat(manifest["loaded_at"]),
                        dict(manifest["counts"]))


def _safe_url(url: str) -> str:
    """The URL without its password, for status and logs."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':')[0] + ':***@' if at else ''}{host}"


class _Plan:
    """How a replica makes one table of a snapshot it fetches: from the latest table of the entity it
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


class RedisSnapshotStore:
    def __init__(self, url: str, *, prefix: str = "tollgate", keep: int = DEFAULT_KEEP,
                 timeout_seconds: float = 2.0) -> None:
        if keep < 1:
            raise ValueError("a store keeps at least the current snapshot")
        self.prefix = prefix
        self.keep = keep
        self.description = f"redis {_safe_url(url)} prefix {prefix}"
        # No retries inside a call: a replica must not stall for long on Redis; the watcher reconnects.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0), health_check_interval=RECHECK_SECONDS,
        )
        self._publish = self._redis.register_script(_PUBLISH_SCRIPT)
        # Decoded tables by digest, for the last ``keep`` snapshots seen: a new snapshot that shares
        # tables with one of them (an upsert changes one table) decodes only what is new, and a changed
        # table is derived from the latest one of its entity, decoding only the segments that differ.
        self._tables: dict[str, Table] = {}
        self._recent: OrderedDict[str, dict[str, str]] = OrderedDict()  # snapshot id -> table digests, oldest first
        self._tables_lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- writing -------------------------------------------------------------------------------------

    def publish(self, snapshot: ReferenceSnapshot, *, if_current: str = ANY_CURRENT) -> None:
        try:
            segments = {segment.digest: segment for table in snapshot.tables.values() for segment in table.segments()}
            present = self._redis.pipeline(transaction=False)
            for digest in segments:
                # Extend the expiry of a blob a killed loader left behind (GT: never shorten one, and a
                # permanent blob stays permanent).
                present.expire(self._key("segment", digest), PENDING_SECONDS, gt=True)
                present.exists(self._key("segment", digest))
            answers = present.execute()[1::2]
            writes = self._redis.pipeline(transaction=False)
            for segment, exists in zip(segments.values(), answers, strict=True):
                if not exists:
                    writes.set(self._key("segment", segment.digest), segment.blob, ex=PENDING_SECONDS)
            writes.set(self._key("snapshot", snapshot.snapshot_id), _manifest(snapshot), ex=PENDING_SECONDS)
            writes.execute()
            self._publish(args=[self.prefix, snapshot.snapshot_id, self.keep, if_current])
        except redis.ResponseError as error:
            if str(error).startswith("CONFLICT"):
                raise SnapshotConflictError(str(error).removeprefix("CONFLICT ")) from None
            raise StoreUnavailableError(f"{self.description}: {error}") from error
        except redis.RedisError as error:
            raise StoreUnavailableError(f"{self.description}: {error}") from error
        self._remember(snapshot)
        log.info("snapshot_published", snapshot_id=snapshot.snapshot_id, source=snapshot.source,
                 counts=snapshot.counts())

    # -- reading -------------------------------------------------------------------------------------

    def current_id(self) -> str | None:
        try:
            value = self._redis.get(self._key("current"))
        except redis.RedisError as error:
            raise StoreUnavailableError(f"{self.description}: {error}") from error
        return value.decode() if isinstance(value, bytes) else None

    def current(self) -> ReferenceSnapshot | None:
        snapshot_id = self.current_id()
        return None if snapshot_id is None else self.fetch(snapshot_id)

    def fetch(self, snapshot_id: str) -> ReferenceSnapshot:
        try:
            raw = self._redis.get(self._key("snapshot", snapshot_id))
            if not isinstance(raw, bytes):
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
            blobs = dict(zip(wanted, self._redis.mget([self._key("segment", d) for d in wanted]), strict=True)) \
                if wanted else {}
        except redis.RedisError as error:
            raise StoreUnavailableError(f"{self.description}: {error}") from error
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
        try:
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in self._redis.lrange(self._key("kept"), 0, -1)]
            manifests = self._redis.mget([self._key("snapshot", i) for i in ids]) if ids else []
        except redis.RedisError as error:
            raise StoreUnavailableError(f"{self.description}: {error}") from error
        return [_info(json.loads(m)) for m in manifests if isinstance(m, bytes)]

    # -- watching ------------------------------------------------------------------------------------

    def watch(self, on_current: OnCurrent, on_state: OnState) -> None:
        if self._watcher is not None:
            raise RuntimeError("this store is already watched")
        self._watcher = threading.Thread(target=self._watch, args=(on_current, on_state),
                                         name="refdata-watcher", daemon=True)
        self._watcher.start()

    def _watch(self, on_current: OnCurrent, on_state: OnState) -> None:
        delivered: str | None = None
        reachable: bool | None = None
        failures = 0
        while not self._closed.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._key("published"))
                while not self._closed.is_set():
                    current = self.current_id()
                    if reachable is not True:
                        reachable, failures = True, 0
                        on_state(StoreState(True, dt.datetime.now(dt.UTC), current))
                    if current is not None and current != delivered:
                        seen_at = time.perf_counter()
                        self._deliver(on_current, self.fetch(current), seen_at)
                        delivered = current
                    # Wait for a message or the recheck interval, whichever comes first.
                    pubsub.get_message(timeout=RECHECK_SECONDS)
            except (redis.RedisError, StoreUnavailableError, OSError) as error:
                if reachable is not False:
                    reachable = False
                    log.warning("store_unreachable", store=self.description, error=str(error))
                    on_state(StoreState(False, dt.datetime.now(dt.UTC), delivered))
                self._closed.wait(RECONNECT_BACKOFF_SECONDS[min(failures, len(RECONNECT_BACKOFF_SECONDS) - 1)])
                failures += 1
            except SnapshotNotFoundError as error:
                # Trimmed between reading current and fetching it: a newer one is current; read again.
                log.warning("snapshot_vanished", error=str(error))
            finally:
                pubsub.close()

    @staticmethod
    def _deliver(on_current: OnCurrent, snapshot: ReferenceSnapshot, seen_at: float) -> None:
        try:
            on_current(snapshot, seen_at)
        except Exception:
            # The replica could not use it (it logs why); trying the same snapshot again would fail again.
            log.exception("snapshot_not_adopted", snapshot_id=snapshot.snapshot_id)

    def close(self) -> None:
        self._closed.set()
        if self._watcher is not None:
            self._watcher.join(timeout=RECHECK_SECONDS + 1)
        self._redis.close()
