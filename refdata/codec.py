"""Tables as canonical bytes: what a snapshot id is a hash of, and what Redis stores.

A table is cut into segments by a stable hash of each row's key (the number of segments, a power of
two, grows with the table), so that a change to a few records re-encodes, stores, transfers and
decodes only the segments holding them. A table's canonical encoding is a header line (format,
entity, field names, segments), then each segment's rows in key order (versions by start date),
segment after segment: the same data always encodes to the same bytes whatever file, format or order
it came from, and the table's digest is the hash of those bytes. A segment is stored on its own,
with a header of its own, compressed.

Rows are written column by column, ROWS_PER_LINE rows to a JSON line: each line is one short call
into json and a few ``map`` calls per column, so encoding and decoding are fast and a replica doing
either in the background hands the GIL back often. Values are written by field kind (decimals and
dates as strings) and read back by field kind, without validating again: only tables this service
encoded are decoded. JSON rather than pickle, so that whoever can write to Redis cannot make a
replica run code. Compression and hashing run without the GIL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import operator
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import Any

from tollgate.rules.entities import ENTITIES, Entity
from tollgate.rules.fields import FieldKind, date_value

FORMAT = 3
ROWS_PER_LINE = 200
# Rows a segment holds on average; the count of segments is the smallest power of two reaching it.
SEGMENT_ROWS = 2048
MAX_SEGMENTS = 4096

Key = tuple[Any, ...]
Row = Mapping[str, Any]

# Encoding and decoding a big table, or indexing it, is long work done off the threads answering calls
# (by a loader, or a replica's watcher), in slices: after SLICE_SECONDS of it, the thread doing it sleeps
# PAUSE_SECONDS. Sleeping hands the GIL over at once, where merely running on would hand it over only
# when the answering thread has waited the whole switch interval (5 ms); and an answering thread,
# once it has the GIL, keeps it for a switch interval. So an answer waits at most about SLICE_SECONDS
# for the GIL, while the long work still gets most of the time.
SLICE_SECONDS = 0.001
PAUSE_SECONDS = 0.0002
_slices = threading.local()


def pause_between_slices() -> None:
    """Called often by long work: sleeps once SLICE_SECONDS have passed since this thread's last pause."""
    now = time.perf_counter()
    if now - getattr(_slices, "started", 0.0) >= SLICE_SECONDS:
        time.sleep(PAUSE_SECONDS)
        _slices.started = time.perf_counter()


def segment_count(rows: int) -> int:
    count = 1
    while count * SEGMENT_ROWS < rows and count < MAX_SEGMENTS:
        count *= 2
    return count


def _key_text(key: Key) -> bytes:
    return "\x1f".join(map(str, key)).encode()


def segment_of(key: Key, count: int) -> int:
    """The segment of ``key`` among ``count``: the same in every process (unlike ``hash``)."""
    return zlib.crc32(_key_text(key)) & (count - 1)


def _encode_date(value: dt.datetime) -> str:
    return value.date().isoformat()


def _encode_datetime(value: dt.datetime) -> str:
    return value.isoformat()


_ENCODERS: dict[FieldKind, Callable[[Any], Any]] = {
    FieldKind.DECIMAL: str,  # exact: Decimal(str(d)) == d, digits and exponent included
    FieldKind.MONEY: str,
    FieldKind.DATE: _encode_date,
    FieldKind.DATETIME: _encode_datetime,
    FieldKind.STRING_LIST: list,
}


@lru_cache(maxsize=65536)
def _date(text: str) -> dt.datetime:
    # Dates repeat across rows; sharing one object per date also keeps a big snapshot small in memory.
    return date_value(dt.date.fromisoformat(text))


_DECODERS: dict[FieldKind, Callable[[Any], Any]] = {
    FieldKind.DECIMAL: Decimal,
    FieldKind.MONEY: Decimal,
    FieldKind.DATE: _date,
    FieldKind.DATETIME: dt.datetime.fromisoformat,
    FieldKind.STRING_LIST: tuple,
    FieldKind.STRING_MAP: dict,
}


def _convert(convert: Callable[[Any], Any] | None, values: list[Any]) -> list[Any]:
    """``values`` converted one by one, None kept; a column without None goes through ``map`` alone."""
    if convert is None:
        return values
    if None in values:
        return [None if value is None else convert(value) for value in values]
    return list(map(convert, values))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode() + b"\n"


def table_header(entity: Entity, segments: int) -> bytes:
    return _dumps({"format": FORMAT, "entity": entity.name, "fields": list(entity.fields), "segments": segments})


def _segment_header(entity: Entity) -> bytes:
    return _dumps({"format": FORMAT, "entity": entity.name, "fields": list(entity.fields)})


def encode_segment(entity: Entity, rows: Sequence[Row]) -> bytes:
    """Rows (already in canonical order) as lines of columns."""
    columns = [(itemgetter(name), _ENCODERS.get(spec.kind)) for name, spec in entity.fields.items()]
    lines = []
    for start in range(0, len(rows), ROWS_PER_LINE):
        chunk = rows[start:start + ROWS_PER_LINE]
        lines.append(_dumps([_convert(encode, list(map(get, chunk))) for get, encode in columns]))
        pause_between_slices()
    return b"".join(lines)


def canonical_rows(by_key: Mapping[Key, Sequence[Row]], keys: Iterable[Key]) -> list[Row]:
    """The rows of ``keys`` in canonical order: keys sorted, each key's versions as given (by start)."""
    return [row for key in sorted(keys) for row in by_key[key]]


def split_keys(keys: Iterable[Key], count: int) -> list[list[Key]]:
    """Keys by segment, each segment's keys sorted."""
    if count == 1:
        return [sorted(keys)]
    keys = list(keys)
    try:  # segment_of for every key, in C loops: keys are strings, as they all are (joined as _key_text does)
        texts = list(map(str.encode, map("\x1f".join, keys)))
    except TypeError:
        texts = list(map(_key_text, keys))
    segments: list[list[Key]] = [[] for _ in range(count)]
    for key, index in zip(keys, map(operator.and_, map(zlib.crc32, texts), repeat(count - 1)), strict=True):
        segments[index].append(key)
    for segment in segments:
        segment.sort()
    return segments


def encode_rows(entity: Entity, by_key: Mapping[Key, Sequence[Row]]) -> bytes:
    """A whole table's canonical encoding (what its digest is the hash of)."""
    count = segment_count(sum(map(len, by_key.values())))
    return table_header(entity, count) + b"".join(
        encode_segment(entity, [row for key in keys for row in by_key[key]]) for keys in split_keys(by_key, count)
    )


def digest(encoded: bytes) -> str:
    return hashlib.sha256(encoded).hexdigest()


def segment_blob(entity: Entity, body: bytes) -> tuple[bytes, str]:
    """A segment as stored (its own header, so that it decodes alone, and its lines, compressed), and its
    digest: the hash of what was compressed."""
    content = _segment_header(entity) + body
    return compress(content), digest(content)


def segment_body(blob: bytes) -> bytes:
    """The lines of a stored segment, without its header."""
    return decompress(blob).partition(b"\n")[2]


def _read_header(line: bytes) -> tuple[Entity, list[str]]:
    header = json.loads(line)
    if header.get("format") != FORMAT:
        raise ValueError(f"table encoded in format {header.get('format')!r}; this service reads {FORMAT}")
    entity = ENTITIES[header["entity"]]
    names: list[str] = header["fields"]
    if set(names) != set(entity.fields):
        raise ValueError(f"table of {entity.name} has fields {names}; this service expects {list(entity.fields)}")
    return entity, names


def decode_lines(entity: Entity, names: Sequence[str], body: bytes) -> list[dict[str, Any]]:
    converters = [_DECODERS.get(entity.fields[name].kind) for name in names]
    # Rows start as copies of a dict already holding every field (no resizing as fields go in), then are
    # filled column by column: twice as fast as building each from its pairs.
    template = dict.fromkeys(names)
    rows: list[dict[str, Any]] = []
    for line in body.splitlines():
        columns = json.loads(line)
        chunk = [template.copy() for _ in columns[0]]
        for name, convert, values in zip(names, converters, columns, strict=True):
            for row, value in zip(chunk, _convert(convert, values), strict=True):
                row[name] = value
        rows.extend(chunk)
        pause_between_slices()
    return rows


def decode_rows(encoded: bytes) -> tuple[Entity, list[dict[str, Any]]]:
    """A whole table's rows (from ``encode_rows``) or one stored segment's (decompressed), in canonical order."""
    header_line, _, body = encoded.partition(b"\n")
    entity, names = _read_header(header_line)
    return entity, decode_lines(entity, names, body)


def compress(encoded: bytes) -> bytes:
    return zlib.compress(encoded, 1)  # fast: the network and Redis memory gain most of it at level 1


def decompress(blob: bytes) -> bytes:
    return zlib.decompress(blob)
