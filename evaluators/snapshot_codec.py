"""Tables as canonical bytes: what a snapshot id is a hash of, and what Redis stores.

A table is encoded as lines of JSON: a header (format, entity, field names), then the rows as arrays
of values, ROWS_PER_LINE to a line, rows in key order and versions by start date, so the same data
always encodes to the same bytes whatever file, format or order it came from. Lines keep each
json call short: a replica encoding or decoding a big table in the background must not hold the GIL
for long while other threads are answering calls. Values are written by field kind (decimals and dates as strings) and
read back by field kind, without validating again: only tables this service encoded are decoded.
JSON rather than pickle, so that whoever can write to Redis cannot make a replica run code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from rules.schema import ENTITIES, Entity, FieldKind, date_value

FORMAT = 2
ROWS_PER_LINE = 500


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


def _identity(value: Any) -> Any:
    return value


def _optional(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else decode(value)


_DECODERS: dict[FieldKind, Callable[[Any], Any]] = {
    FieldKind.STRING: _identity,
    FieldKind.DECIMAL: _optional(Decimal),
    FieldKind.MONEY: _optional(Decimal),
    FieldKind.DATE: _optional(_date),
    FieldKind.DATETIME: _optional(dt.datetime.fromisoformat),
    FieldKind.BOOLEAN: _identity,
    FieldKind.STRING_LIST: _optional(tuple),
    FieldKind.STRING_MAP: _optional(dict),
}


def encode_lines(entity: Entity, by_key: Mapping[tuple[Any, ...], Sequence[Mapping[str, Any]]]) -> Iterator[bytes]:
    """The canonical encoding, line by line: keys in order, each key's versions in the order given (by start)."""
    names = list(entity.fields)
    encoders = [_optional(_ENCODERS.get(entity.fields[name].kind, _identity)) for name in names]
    columns = list(zip(names, encoders, strict=True))
    yield _dumps({"format": FORMAT, "entity": entity.name, "fields": names})
    batch: list[list[Any]] = []
    for key in sorted(by_key):
        for row in by_key[key]:
            batch.append([encode(row[name]) for name, encode in columns])
            if len(batch) == ROWS_PER_LINE:
                yield _dumps(batch)
                batch = []
    if batch:
        yield _dumps(batch)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encode_rows(entity: Entity, by_key: Mapping[tuple[Any, ...], Sequence[Mapping[str, Any]]]) -> bytes:
    return b"".join(encode_lines(entity, by_key))


def digest_rows(entity: Entity, by_key: Mapping[tuple[Any, ...], Sequence[Mapping[str, Any]]]) -> str:
    """The hash of a table's canonical encoding, computed line by line (never the whole encoding at once)."""
    hashed = hashlib.sha256()
    for line in encode_lines(entity, by_key):
        hashed.update(line)
    return hashed.hexdigest()


def digest(encoded: bytes) -> str:
    return hashlib.sha256(encoded).hexdigest()


def decode_rows(encoded: bytes) -> tuple[Entity, list[dict[str, Any]]]:
    header_line, _, body = encoded.partition(b"\n")
    header = json.loads(header_line)
    if header.get("format") != FORMAT:
        raise ValueError(f"table encoded in format {header.get('format')!r}; this service reads {FORMAT}")
    entity = ENTITIES[header["entity"]]
    names: list[str] = header["fields"]
    if set(names) != set(entity.fields):
        raise ValueError(f"table of {entity.name} has fields {names}; this service expects {list(entity.fields)}")
    decoders = [_DECODERS[entity.fields[name].kind] for name in names]
    columns = list(zip(names, decoders, strict=True))
    rows = [
        {name: decode(value) for (name, decode), value in zip(columns, values, strict=True)}
        for line in body.splitlines()
        for values in json.loads(line)
    ]
    return entity, rows


def compress(encoded: bytes) -> bytes:
    return zlib.compress(encoded, 1)  # fast: the network and Redis memory gain most of it at level 1


def decompress(blob: bytes) -> bytes:
    return zlib.decompress(blob)
