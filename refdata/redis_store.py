"""Snapshots in Redis, shared by every replica; each replica holds the current one in its own memory.

The layout and the publishing protocol are ``shared_store``'s. Keys, under a prefix (default ``tollgate``):

- ``{prefix}:segment:{digest}``: one segment of a table, compressed.
- ``{prefix}:snapshot:{id}``: the manifest of a snapshot.
- ``{prefix}:current``: the id of the current snapshot; ``{prefix}:kept``: kept ids, newest first.
- channel ``{prefix}:published``: the id of each snapshot made current.

Pending segments and manifests are written with an expiry; the commit is one Lua script (atomic in
Redis) that checks they are all there, makes them permanent, sets current, trims the kept list to N,
deletes what only trimmed snapshots used, and notifies. The watcher listens on the channel; a message
only wakes it, and it pings the connection at every recheck.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .shared_store import PENDING_SECONDS, SharedStore, Wait
from .store import DEFAULT_KEEP, SnapshotConflictError, StoreUnavailableError

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

# Query parameters of a Redis URL that carry a secret (redis-py reads ``password`` from the query too).
_SECRET_PARAMETERS = ("password", "pass", "pwd", "secret", "token", "auth")


def safe_url(url: str) -> str:
    """The URL with every secret masked (``***``), for status, logs and errors: the password of
    ``redis://user:pw@host`` and ``redis://:pw@host``, and ``?password=...`` (or any parameter whose name
    says it holds a secret)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    credentials, at, host = netloc.rpartition("@")
    if at:
        user, colon, _password = credentials.partition(":")
        # A credential alone may be a password written where the user name goes: masked too.
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = "&".join(
        f"{name}={'***' if name.lower() in _SECRET_PARAMETERS else value}" if equals else name
        for name, equals, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if "://" not in url:
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return f"{parts.scheme}://{netloc}{parts.path}{'?' if query else ''}{query}" \
           f"{'#' if parts.fragment else ''}{parts.fragment}"


@contextmanager
def _reaching(description: str) -> Iterator[None]:
    """Redis errors as the store's: unreachable (StoreUnavailableError), or a conflict the script found."""
    try:
        yield
    except redis.ResponseError as error:
        if str(error).startswith("CONFLICT"):
            raise SnapshotConflictError(str(error).removeprefix("CONFLICT ")) from None
        raise StoreUnavailableError(f"{description}: {error}") from error
    except redis.RedisError as error:
        raise StoreUnavailableError(f"{description}: {error}") from error


class RedisSnapshotStore(SharedStore):
    def __init__(self, url: str, *, prefix: str = "tollgate", keep: int = DEFAULT_KEEP,
                 timeout_seconds: float = 2.0) -> None:
        super().__init__(f"redis {safe_url(url)} prefix {prefix}", keep)
        self.prefix = prefix
        # No retries inside a call: a replica must not stall for long on Redis; the watcher reconnects.
        try:
            self._redis = redis.Redis.from_url(
                url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                retry=Retry(NoBackoff(), 0), health_check_interval=self.recheck_seconds,
            )
        except ValueError as error:  # its message may quote the URL, password and all
            raise ValueError(f"{safe_url(url)} is not a Redis URL (redis://[[user]:password@]host[:port][/db])") \
                from error.__cause__
        self._publish = self._redis.register_script(_PUBLISH_SCRIPT)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _write_pending(self, segments: Mapping[str, bytes], snapshot_id: str, manifest: str) -> None:
        with _reaching(self.description):
            present = self._redis.pipeline(transaction=False)
            for digest in segments:
                # Extend the expiry of a blob a killed loader left behind (GT: never shorten one, and a
                # permanent blob stays permanent).
                present.expire(self._key("segment", digest), PENDING_SECONDS, gt=True)
                present.exists(self._key("segment", digest))
            answers = present.execute()[1::2]
            writes = self._redis.pipeline(transaction=False)
            for (digest, blob), exists in zip(segments.items(), answers, strict=True):
                if not exists:
                    writes.set(self._key("segment", digest), blob, ex=PENDING_SECONDS)
            # A snapshot of the same content published before keeps its manifest (NX), and a permanent one
            # stays permanent (GT), even when this publish turns out to conflict.
            writes.expire(self._key("snapshot", snapshot_id), PENDING_SECONDS, gt=True)
            writes.set(self._key("snapshot", snapshot_id), manifest, ex=PENDING_SECONDS, nx=True)
            writes.execute()

    def _commit(self, snapshot_id: str, if_current: str) -> None:
        with _reaching(self.description):
            self._publish(args=[self.prefix, snapshot_id, self.keep, if_current])

    def _read_manifest(self, snapshot_id: str) -> bytes | None:
        with _reaching(self.description):
            raw = self._redis.get(self._key("snapshot", snapshot_id))
        return raw if isinstance(raw, bytes) else None

    def _read_segments(self, digests: list[str]) -> list[bytes | None]:
        with _reaching(self.description):
            blobs = self._redis.mget([self._key("segment", digest) for digest in digests])
        return [blob if isinstance(blob, bytes) else None for blob in blobs]

    def _kept_ids(self) -> list[str]:
        with _reaching(self.description):
            ids = self._redis.lrange(self._key("kept"), 0, -1)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def current_id(self) -> str | None:
        with _reaching(self.description):
            value = self._redis.get(self._key("current"))
        return value.decode() if isinstance(value, bytes) else None

    @contextmanager
    def _signs_of_change(self) -> Iterator[Wait]:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            with _reaching(self.description):
                pubsub.subscribe(self._key("published"))

            def wait(seconds: float) -> None:
                with _reaching(self.description):
                    pubsub.get_message(timeout=seconds)

            yield wait
        finally:
            pubsub.close()

    def _release(self) -> None:
        self._redis.close()
