"""Reference data (projects, workers, contracts, rate cards...) as an immutable, versioned snapshot.

A snapshot is built from export files (see ``reference_loaders``) or from a previous snapshot and a
few changed records (upserts and deletes). Every row is validated by its entity model; a bad row is
reported with file, line and field, and a load with any bad row changes nothing, unless it is asked
to be partial, in which case the bad rows are left out and every one of them is reported. Rows of
one key with several effective ranges are versions; lookups return the version in force on the
item's business date, never the server clock.

A snapshot's id is a hash of its content (each table encoded canonically, ``codec``): the
same data has the same id whichever files, formats or changes it came from, so a decision names
exactly the data it used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from tollgate.rules.entities import ENTITIES, Entity
from tollgate.rules.problems import Problem, ProblemsError

from . import codec
from .loaders import LocatedRow, file_stem, read_exports, validate_row

__all__ = ["ByKey", "LoadedExports", "ReferenceSnapshot", "Replacement", "Row", "Segment", "Table", "apply_changes",
           "build_snapshot", "build_table", "file_stem", "group_rows", "load_exports", "load_snapshot", "ranges_meet",
           "replacing", "split_versions", "version_as_of"]

Row = Mapping[str, Any]
Key = tuple[Any, ...]
# A key's versions, by start; tuples: tables derived from one another share them, so they must not change.
Versions = tuple[Row, ...]

_DAWN = dt.datetime.min.replace(tzinfo=dt.UTC)


def in_force(row: Row, day: dt.datetime) -> bool:
    """Whether a row's effective range (inclusive; open where empty) holds ``day``."""
    start, end = row["effective_from"], row["effective_to"]
    return (start is None or start <= day) and (end is None or day <= end)


def version_as_of(versions: Sequence[Row], day: dt.datetime) -> Row | None:
    for row in versions:
        start, end = row["effective_from"], row["effective_to"]  # in_force, inlined: this runs per lookup
        if (start is None or start <= day) and (end is None or day <= end):
            return row
    return None


def starts(row: Row) -> dt.datetime:
    return row["effective_from"] or _DAWN


def ranges_meet(a: Row, b: Row) -> bool:
    """Whether two rows' effective ranges (inclusive; open where empty) share a day."""
    return ((b["effective_from"] is None or a["effective_to"] is None or b["effective_from"] <= a["effective_to"])
            and (a["effective_from"] is None or b["effective_to"] is None
                 or a["effective_from"] <= b["effective_to"]))


@dataclass(frozen=True, slots=True)
class Segment:
    """The rows of a table whose keys hash to one segment (``codec``), as stored."""

    keys: list[Key]  # sorted
    blob: bytes  # codec.segment_blob: header and lines, compressed
    digest: str  # of the blob's uncompressed content: the name it is stored under


def _undated(row: Row) -> bool:
    return row["effective_from"] is None and row["effective_to"] is None


def split_versions(by_key: Mapping[Key, Sequence[Row]]) -> tuple[dict[Key, Row], dict[Key, Versions]]:
    """The keys with a single undated version (their row), and the others (their versions)."""
    timeless: dict[Key, Row] = {}
    dated: dict[Key, Versions] = {}
    for key, versions in by_key.items():
        if len(versions) == 1 and _undated(versions[0]):
            timeless[key] = versions[0]
        else:
            dated[key] = tuple(versions)
    return timeless, dated


def group_rows(entity: Entity, rows: list[dict[str, Any]]) -> tuple[dict[Key, Row], dict[Key, Versions]]:
    """Rows in canonical order (keys sorted, versions by start) by key, split as ``split_versions`` does."""
    keys = _values_of(entity.key, rows)
    if len(set(keys)) == len(keys):  # one version per key, as most are: grouped in C loops
        undated = list(map(operator.and_, map(operator.is_, map(itemgetter("effective_from"), rows), repeat(None)),
                           map(operator.is_, map(itemgetter("effective_to"), rows), repeat(None))))
        timeless: dict[Key, Row] = dict(compress(zip(keys, rows, strict=True), undated))
        if len(timeless) == len(keys):
            return timeless, {}
        return timeless, dict(compress(zip(keys, zip(rows), strict=True), map(operator.not_, undated)))
    grouped: dict[Key, list[Row]] = defaultdict(list)
    for key, row in zip(keys, rows, strict=True):
        grouped[key].append(row)
    return split_versions(grouped)


class ByKey(Mapping[Key, Versions]):
    """A table's rows by key, every version, by start: a read-only view over how the table keeps them."""

    __slots__ = ("_dated", "_timeless")

    def __init__(self, timeless: dict[Key, Row], dated: dict[Key, Versions]) -> None:
        self._timeless = timeless
        self._dated = dated

    def __getitem__(self, key: Key) -> Versions:
        row = self._timeless.get(key)
        return (row,) if row is not None else self._dated[key]

    def __contains__(self, key: object) -> bool:
        return key in self._timeless or key in self._dated

    def __iter__(self) -> Iterator[Key]:
        return chain(self._timeless, self._dated)

    def __len__(self) -> int:
        return len(self._timeless) + len(self._dated)


def _values_of(fields: tuple[str, ...], rows: Sequence[Row]) -> list[Key]:
    """Each row's values of ``fields``, as tuples."""
    return list(zip(*(map(itemgetter(name), rows) for name in fields), strict=True))


class _Index:
    """Rows by the values of some fields; kept as ``Table`` keeps its rows (values found once apart)."""

    __slots__ = ("many", "one")

    def __init__(self, one: dict[Key, Row], many: dict[Key, Versions]) -> None:
        self.one = one
        self.many = many

    @classmethod
    def build(cls, fields: tuple[str, ...], rows: Iterable[Row], *, sliced: bool) -> _Index:
        rows = list(rows)
        values = _values_of(fields, rows)
        if len(set(values)) == len(values):  # unique values: built in C loops
            return cls(dict(zip(values, rows, strict=True)), {})
        grouped: dict[Key, list[Row]] = defaultdict(list)
        for done, (value, row) in enumerate(zip(values, rows, strict=True), start=1):
            grouped[value].append(row)
            if sliced and done % 1000 == 0:
                codec.pause_between_slices()
        one = {value: found[0] for value, found in grouped.items() if len(found) == 1}
        return cls(one, {value: tuple(found) for value, found in grouped.items() if len(found) > 1})

    def find(self, value: Key) -> Versions:
        row = self.one.get(value)
        return (row,) if row is not None else self.many.get(value, ())

    def patched(self, fields: tuple[str, ...], gone: list[Row], came: list[Row]) -> _Index:
        """A copy without the rows ``gone`` and with the rows ``came``; never changes this one (it may be
        serving)."""
        one, many = self.one.copy(), self.many.copy()
        for row in gone:
            value = tuple(row[f] for f in fields)
            if one.get(value) is row:
                del one[value]
            elif value in many:
                remaining = tuple(r for r in many.pop(value) if r is not row)
                if len(remaining) == 1:
                    one[value] = remaining[0]
                elif remaining:
                    many[value] = remaining
        for row in came:
            value = tuple(row[f] for f in fields)
            if value in one:
                many[value] = (one.pop(value), row)
            elif value in many:
                many[value] = (*many[value], row)
            else:
                one[value] = row
        return _Index(one, many)


class Table:
    """The rows of one entity, by key; indexes by other fields are built on first use.

    Rows are kept in two dicts: keys with a single version in force at all times, as most are, map to
    their row (found without looking at dates), and the others to their versions. No object per key
    beyond its key and row, both of which the cyclic GC stops tracking: a table of a million rows adds
    nothing to the full collections of the process, which would otherwise walk it and stop every
    thread for the time it takes (about a second).

    A table derived from another by a few changed keys (``changed``, ``patched``) shares everything
    else with it: its unchanged segments are not encoded again, and its indexes are patched.
    """

    __slots__ = ("_dated", "_digest", "_indexes", "_rows", "_segments", "_timeless", "by_key", "entity")

    def __init__(self, entity: Entity, by_key: Mapping[Key, Sequence[Row]], *, digest: str | None = None,
                 segments: list[Segment] | None = None) -> None:
        timeless, dated = split_versions(by_key)
        self._set(entity, timeless, dated, digest=digest, segments=segments)

    @classmethod
    def of(cls, entity: Entity, timeless: dict[Key, Row], dated: dict[Key, Versions], *, digest: str | None = None,
           segments: list[Segment] | None = None) -> Table:
        """A table of rows already split (``split_versions``, ``group_rows``)."""
        table = cls.__new__(cls)
        table._set(entity, timeless, dated, digest=digest, segments=segments)
        return table

    def _set(self, entity: Entity, timeless: dict[Key, Row], dated: dict[Key, Versions], *, digest: str | None,
             segments: list[Segment] | None, indexes: dict[tuple[str, ...], _Index] | None = None,
             rows: int | None = None) -> None:
        self.entity = entity
        self._timeless = timeless
        self._dated = dated
        self.by_key = ByKey(timeless, dated)
        self._indexes = indexes or {}
        self._rows = len(timeless) + sum(map(len, dated.values())) if rows is None else rows
        self._segments = segments
        self._digest = digest

    def get(self, key: Key, day: dt.datetime) -> Row | None:
        row = self._timeless.get(key)
        if row is not None:
            return row
        versions = self._dated.get(key)
        return version_as_of(versions, day) if versions else None

    def find(self, fields: tuple[str, ...], values: Key) -> Versions:
        """All rows (every version) whose ``fields`` equal ``values``."""
        return self.index(fields).find(values)

    def index(self, fields: tuple[str, ...]) -> _Index:
        """The rows by the values of ``fields``, built on first use; for callers probing it per item."""
        index = self._indexes.get(fields)
        if index is None:
            index = self._indexes[fields] = _Index.build(fields, self._all_rows(), sliced=False)
        return index

    def _all_rows(self) -> Iterator[Row]:
        return chain(self._timeless.values(), chain.from_iterable(self._dated.values()))

    def index_fields(self) -> list[tuple[str, ...]]:
        """The fields of every index built so far (what lookups have needed)."""
        return list(self._indexes)

    def build_indexes(self, wanted: Iterable[tuple[str, ...]]) -> None:
        """Build the indexes ``wanted`` now, in slices, so that no call waits for one to be built."""
        for fields in wanted:
            if fields not in self._indexes:
                self._indexes[fields] = _Index.build(fields, self._all_rows(), sliced=True)

    def __len__(self) -> int:
        return self._rows

    # -- canonical encoding --------------------------------------------------------------------------

    def segments(self) -> list[Segment]:
        if self._segments is None:
            self._encode()
        assert self._segments is not None
        return self._segments

    def digest(self) -> str:
        """The hash of the table's canonical encoding (``codec``)."""
        if self._digest is None:
            segments = self.segments()
            if self._digest is None:  # segments taken over from another table: hash their lines again
                hashed = hashlib.sha256(codec.table_header(self.entity, len(segments)))
                for segment in segments:
                    hashed.update(codec.segment_body(segment.blob))
                self._digest = hashed.hexdigest()
        return self._digest

    def _encode_segment(self, keys: list[Key]) -> tuple[Segment, bytes]:
        body = codec.encode_segment(self.entity, codec.canonical_rows(self.by_key, keys))
        blob, digest = codec.segment_blob(self.entity, body)
        return Segment(keys, blob, digest), body

    def _encode(self) -> None:
        count = codec.segment_count(self._rows)
        hashed = hashlib.sha256(codec.table_header(self.entity, count))
        segments = []
        for keys in codec.split_keys(self.by_key, count):
            segment, body = self._encode_segment(keys)
            hashed.update(body)
            segments.append(segment)
        self._segments, self._digest = segments, hashed.hexdigest()

    # -- deriving ------------------------------------------------------------------------------------

    def changed(self, removed: Iterable[Key], added: Table) -> Table:
        """This table without the keys ``removed`` and with the rows of ``added`` (replacing every version
        of their keys)."""
        touched = set(removed) | set(added.by_key)
        table = self.patched(touched, added._timeless, added._dated)
        codec.pause_between_slices()
        count = codec.segment_count(table._rows)
        if self._segments is not None and len(self._segments) == count:
            segments = list(self._segments)
            for index in {codec.segment_of(key, count) for key in touched}:
                kept = [key for key in segments[index].keys if key not in touched]
                keys = sorted([*kept, *(key for key in added.by_key if codec.segment_of(key, count) == index)])
                segments[index] = table._encode_segment(keys)[0]
            table._segments = segments
        return table

    def patched(self, touched: set[Key], timeless: Mapping[Key, Row], dated: Mapping[Key, Versions], *,
                segments: list[Segment] | None = None, digest: str | None = None) -> Table:
        """A new table: this one with every key in ``touched`` removed, then the rows given put in.

        Dicts are copied (in C), not rebuilt; indexes are patched for the rows that went and came.
        """
        kept_timeless, kept_dated = self._timeless.copy(), self._dated.copy()
        gone: list[Row] = []
        for key in touched:
            row = kept_timeless.pop(key, None)
            if row is not None:
                gone.append(row)
            gone.extend(kept_dated.pop(key, ()))
        kept_timeless.update(timeless)
        kept_dated.update(dated)
        came = [*timeless.values(), *chain.from_iterable(dated.values())]
        table = Table.__new__(Table)
        table._set(self.entity, kept_timeless, kept_dated, digest=digest, segments=segments,
                   indexes={fields: index.patched(fields, gone, came) for fields, index in self._indexes.items()},
                   rows=self._rows - len(gone) + len(came))
        return table


@dataclass(frozen=True, slots=True)
class ReferenceSnapshot:
    snapshot_id: str
    source: str
    loaded_at: dt.datetime
    tables: Mapping[str, Table]
    # Per entity, the hash of the table's canonical encoding; the snapshot id is a hash of these.
    digests: Mapping[str, str] = field(default_factory=dict)

    def table(self, entity: str) -> Table:
        return self.tables[entity]

    def counts(self) -> dict[str, int]:
        return {name: len(table) for name, table in self.tables.items()}


def build_table(entity: Entity, rows: Iterable[Row]) -> Table:
    """A table of rows already checked (validated, no overlapping versions); versions sorted by start."""
    grouped: dict[Key, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[tuple(row[k] for k in entity.key)].append(row)
    for versions in grouped.values():
        versions.sort(key=starts)
    return Table.of(entity, *split_versions(grouped))


def snapshot_id_of(digests: Mapping[str, str]) -> str:
    manifest = "\n".join(f"{name}:{digests[name]}" for name in sorted(digests))
    return "snap-" + hashlib.sha256(manifest.encode()).hexdigest()[:12]


def build_snapshot(tables: Mapping[str, Table], source: str, *, known_digests: Mapping[str, str] | None = None,
                   loaded_at: dt.datetime | None = None) -> ReferenceSnapshot:
    """A snapshot of every entity's table; ``known_digests`` spares encoding tables taken over unchanged."""
    known = known_digests or {}
    digests = {name: known.get(name) or table.digest() for name, table in tables.items()}
    return ReferenceSnapshot(snapshot_id_of(digests), source, loaded_at or dt.datetime.now(dt.UTC), dict(tables),
                             digests)


def _where(row: LocatedRow, relative_to: LocatedRow) -> str:
    if row.path == relative_to.path and row.line is not None:
        return f"line {row.line}"
    return f"{row.path}:{row.line}" if row.line is not None else row.path


def _checked(entity: Entity, rows: list[LocatedRow], problems: list[Problem]) -> list[LocatedRow]:
    """The rows that conflict with no earlier row; each conflicting row is reported and left out.

    Versions of one thing must not overlap in time (which one is in force has to be unambiguous), and
    an entity whose versions are grouped by more than its key (rate rows) must not repeat a key.
    """
    refused: set[int] = set()
    groups: dict[Key, list[tuple[int, LocatedRow]]] = defaultdict(list)
    for position, row in enumerate(rows):
        groups[tuple(row.values[k] for k in entity.versioned_by)].append((position, row))
    for key, versions in groups.items():
        versions.sort(key=lambda version: starts(version[1].values))
        in_force: tuple[int, LocatedRow] | None = None
        for position, row in versions:
            if in_force is not None and ranges_meet(in_force[1].values, row.values):
                problems.append(Problem(row.path, row.line, "/".join(map(str, key)),
                                        f"effective range overlaps the version on {_where(in_force[1], row)}"))
                refused.add(position)
                continue
            in_force = (position, row)
    if entity.versioned_by != entity.key:
        first: dict[Key, LocatedRow] = {}
        for position, row in enumerate(rows):
            key = tuple(row.values[k] for k in entity.key)
            if key in first and position not in refused:
                problems.append(Problem(row.path, row.line, "/".join(map(str, key)),
                                        f"{'/'.join(entity.key)} repeats {_where(first[key], row)}"))
                refused.add(position)
            first.setdefault(key, row)
    return [row for position, row in enumerate(rows) if position not in refused]


@dataclass(frozen=True, slots=True)
class LoadedExports:
    """A snapshot loaded from exports, and the rows a partial load left out (empty unless partial)."""

    snapshot: ReferenceSnapshot
    rejected: list[Problem]
    files: dict[str, list[Path]]


def load_exports(directory: Path, *, partial: bool = False, source: str | None = None) -> LoadedExports:
    """Load every entity export under ``directory`` into a new snapshot.

    Any bad row raises ProblemsError with every problem found, unless ``partial``: then bad rows are
    left out and returned in ``rejected``. A file that cannot be read at all, or an entity with two
    exports, refuses the load even when partial: which rows are missing would not be known.
    """
    if not directory.is_dir():
        raise ProblemsError([Problem(str(directory), None, None, "no such reference data directory")])
    exports = read_exports(directory)
    problems = list(exports.problems)
    tables = {}
    for entity in ENTITIES.values():
        kept = _checked(entity, exports.rows[entity.name], problems)
        tables[entity.name] = build_table(entity, (row.values for row in kept))
    if exports.fatal or (problems and not partial):
        raise ProblemsError([*exports.fatal, *problems])
    problems.sort(key=lambda p: (p.path, p.line or 0))
    return LoadedExports(build_snapshot(tables, source or str(directory)), problems, exports.files)


@dataclass(frozen=True, slots=True)
class Replacement:
    """A loaded snapshot as it replaces the current one: what it empties and what it takes over."""

    snapshot: ReferenceSnapshot
    previous_id: str  # "" if there was none
    emptied: dict[str, int]  # entity -> rows it had in the previous snapshot
    kept: list[str]  # entities not sent, taken over from the previous snapshot


def replacing(loaded: LoadedExports, current: ReferenceSnapshot | None, *, keep_missing: bool = False,
              allow_emptying: bool = False, where: str = ".") -> Replacement:
    """``loaded`` as the snapshot that replaces ``current``.

    A load replaces the current snapshot whole: an entity it has no export for would be emptied. With
    ``keep_missing`` those entities' tables are taken over from ``current`` instead. A table the result
    would leave empty while ``current`` has rows for it (left out, an export with no rows, every row
    left out by a partial load) refuses the load (ProblemsError, one problem per table naming its row
    count) unless ``allow_emptying``. ``where``: the export directory, for the problems' paths.
    """
    if current is None:
        return Replacement(loaded.snapshot, "", {}, [])
    tables, known = dict(loaded.snapshot.tables), dict(loaded.snapshot.digests)
    kept = [name for name in ENTITIES if name not in loaded.files and name in current.tables] if keep_missing else []
    for name in kept:
        tables[name], known[name] = current.tables[name], current.digests[name]
    emptied = {name: len(current.tables[name]) for name, table in tables.items()
               if not len(table) and name in current.tables and len(current.tables[name])}
    if emptied and not allow_emptying:
        problems = []
        for name, rows in emptied.items():
            stem = file_stem(ENTITIES[name])
            if name in loaded.files:
                why = "its export has no rows" + (" that load" if loaded.rejected else "")
                files = loaded.files[name]
                path = str(files[0]) if len(files) == 1 else str(Path(where) / stem)
            else:
                why, path = f"this load has no {stem} export; send it, or keep_missing (--keep-missing) takes them " \
                            "over", str(Path(where) / stem)
            problems.append(Problem(path, None, name, f"would empty the table, {rows:,} row(s) in "
                                    f"{current.snapshot_id}: {why}; allow_emptying (--allow-emptying) empties it"))
        raise ProblemsError(problems)
    snapshot = loaded.snapshot
    if kept:
        snapshot = build_snapshot(tables, snapshot.source, known_digests=known, loaded_at=snapshot.loaded_at)
    return Replacement(snapshot, current.snapshot_id, emptied, kept)


def load_snapshot(directory: Path) -> ReferenceSnapshot:
    """Load every entity export under ``directory``, all or nothing (ProblemsError on any bad row)."""
    return load_exports(directory).snapshot


def apply_changes(base: ReferenceSnapshot, entity_name: str, *, upserts: Sequence[Mapping[str, Any]] = (),
                  deletes: Sequence[Key] = (), source: str | None = None) -> ReferenceSnapshot:
    """A new snapshot: ``base`` with records of one entity replaced (upserts) or removed (deletes).

    An upserted key's records replace every version of that key in ``base`` (send all the versions it
    should have: closing a project from today is its old version ending yesterday and a new one from
    today). Deleting a key removes all its versions; deleting a key that is not there is a problem,
    as it usually means a wrong key. All or nothing: ProblemsError names each bad record.
    """
    entity = ENTITIES.get(entity_name)
    if entity is None:
        raise ProblemsError([Problem("request", None, "entity",
                                     f"unknown entity {entity_name!r}; one of {', '.join(ENTITIES)}")])
    where = f"upsert {entity.name}"
    problems: list[Problem] = []
    new_rows = [validate_row(entity, _without_empty(raw), where, number, problems)
                for number, raw in enumerate(upserts, start=1)]
    table = base.table(entity.name)
    for key in deletes:
        if len(key) != len(entity.key) or key not in table.by_key:
            problems.append(Problem(f"delete {entity.name}", None, "/".join(entity.key),
                                    f"{'/'.join(map(str, key))} is not in snapshot {base.snapshot_id}"))
    if problems:
        raise ProblemsError(problems)
    upserted = [row for row in new_rows if row is not None]
    replaced = {tuple(row.values[k] for k in entity.key) for row in upserted} | set(deletes)
    # Only the version groups an upsert touches can have changed; check those, not the whole table. Where
    # versions are grouped by the key itself, every row of those groups is replaced: nothing to check against.
    neighbours: list[LocatedRow] = []
    if entity.versioned_by != entity.key:
        for group in {tuple(row.values[k] for k in entity.versioned_by) for row in upserted}:
            neighbours.extend(LocatedRow(f"snapshot {base.snapshot_id}", None, dict(row))
                              for row in table.find(entity.versioned_by, group)
                              if tuple(row[k] for k in entity.key) not in replaced)
    _checked(entity, [*neighbours, *upserted], problems)
    if problems:
        raise ProblemsError(problems)
    tables = {**base.tables,
              entity.name: table.changed(replaced, build_table(entity, (row.values for row in upserted)))}
    known = {name: d for name, d in base.digests.items() if name != entity.name}
    description = source or _describe_change(entity, upserted, deletes, base.snapshot_id)
    return build_snapshot(tables, description, known_digests=known)


def _without_empty(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if v is not None and v != ""}


def _describe_change(entity: Entity, upserted: Sequence[LocatedRow], deletes: Sequence[Key], base_id: str) -> str:
    parts = []
    if upserted:
        keys = sorted({"/".join(str(row.values[k]) for k in entity.key) for row in upserted})
        parts.append(f"upsert {entity.name} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
    if deletes:
        keys = sorted("/".join(map(str, key)) for key in deletes)
        parts.append(f"delete {entity.name} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
    return f"{'; '.join(parts)} on {base_id}"
