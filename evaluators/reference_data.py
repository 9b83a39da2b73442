"""Reference data (projects, workers, contracts, rate cards...) as an immutable, versioned snapshot.

A snapshot is built from export files (see ``reference_loaders``) or from a previous snapshot and a
few changed records (upserts and deletes). Every row is validated by its entity model; a bad row is
reported with file, line and field, and a load with any bad row changes nothing, unless it is asked
to be partial, in which case the bad rows are left out and every one of them is reported. Rows of
one key with several effective ranges are versions; lookups return the version in force on the
item's business date, never the server clock.

A snapshot's id is a hash of its content (each table encoded canonically, ``snapshot_codec``): the
same data has the same id whichever files, formats or changes it came from, so a decision names
exactly the data it used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rules.problems import Problem, ProblemsError
from rules.schema import ENTITIES, Entity

from . import snapshot_codec
from .reference_loaders import LocatedRow, file_stem, read_exports, validate_row

__all__ = ["LoadedExports", "ReferenceSnapshot", "Row", "Table", "apply_changes", "build_snapshot", "build_table",
           "file_stem", "load_exports", "load_snapshot", "version_as_of"]

Row = Mapping[str, Any]
Key = tuple[Any, ...]

_DAWN = dt.datetime.min.replace(tzinfo=dt.UTC)


def _in_force(row: Row, day: dt.datetime) -> bool:
    start, end = row["effective_from"], row["effective_to"]
    return (start is None or start <= day) and (end is None or day <= end)


def version_as_of(versions: Sequence[Row], day: dt.datetime) -> Row | None:
    for row in versions:
        if _in_force(row, day):
            return row
    return None


def starts(row: Row) -> dt.datetime:
    return row["effective_from"] or _DAWN


@dataclass(slots=True)
class Table:
    """The rows of one entity, indexed by key; more indexes are built on first use."""

    entity: Entity
    by_key: dict[Key, list[Row]]
    _indexes: dict[tuple[str, ...], dict[Key, list[Row]]] = field(default_factory=dict)
    # Keys with a single version in force at all times, as most are: found without looking at dates.
    _timeless: dict[Key, Row] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._timeless = {
            key: versions[0]
            for key, versions in self.by_key.items()
            if len(versions) == 1 and versions[0]["effective_from"] is None and versions[0]["effective_to"] is None
        }

    def get(self, key: Key, day: dt.datetime) -> Row | None:
        row = self._timeless.get(key)
        if row is not None:
            return row
        versions = self.by_key.get(key)
        return version_as_of(versions, day) if versions else None

    def find(self, fields: tuple[str, ...], values: Key) -> list[Row]:
        """All rows (every version) whose ``fields`` equal ``values``."""
        index = self._indexes.get(fields)
        if index is None:
            index = defaultdict(list)
            for versions in self.by_key.values():
                for row in versions:
                    index[tuple(row[f] for f in fields)].append(row)
            self._indexes[fields] = index = dict(index)
        return index.get(values, [])

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_key.values())


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
    by_key: dict[Key, list[Row]] = defaultdict(list)
    for row in rows:
        by_key[tuple(row[k] for k in entity.key)].append(row)
    for versions in by_key.values():
        versions.sort(key=starts)
    return Table(entity, dict(by_key))


def snapshot_id_of(digests: Mapping[str, str]) -> str:
    manifest = "\n".join(f"{name}:{digests[name]}" for name in sorted(digests))
    return "snap-" + hashlib.sha256(manifest.encode()).hexdigest()[:12]


def build_snapshot(tables: Mapping[str, Table], source: str, *, known_digests: Mapping[str, str] | None = None,
                   loaded_at: dt.datetime | None = None) -> ReferenceSnapshot:
    """A snapshot of every entity's table; ``known_digests`` spares encoding tables taken over unchanged."""
    known = known_digests or {}
    digests = {
        name: known.get(name) or snapshot_codec.digest_rows(table.entity, table.by_key)
        for name, table in tables.items()
    }
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
            if in_force is not None:
                end = in_force[1].values["effective_to"]
                begins = row.values["effective_from"]
                if end is None or begins is None or begins <= end:
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
    # Only the version groups an upsert touches can have changed; check those, not the whole table.
    touched = {tuple(row.values[k] for k in entity.versioned_by) for row in upserted}
    neighbours = [LocatedRow(f"snapshot {base.snapshot_id}", None, dict(row))
                  for key, versions in table.by_key.items() if key not in replaced
                  for row in versions if tuple(row[k] for k in entity.versioned_by) in touched]
    _checked(entity, [*neighbours, *upserted], problems)
    if problems:
        raise ProblemsError(problems)
    by_key = {key: versions for key, versions in table.by_key.items() if key not in replaced}
    by_key.update(build_table(entity, (row.values for row in upserted)).by_key)
    tables = {**base.tables, entity.name: Table(entity, by_key)}
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
